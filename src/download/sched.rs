//! Live ranges of one download: who reads what, work stealing, and consistent snapshots.
//!
//! Each [`Segment`] is a byte range `[start, end)` with the offset `pos` written so far. The
//! connection that owns a segment is its only writer; on the hot path it touches two atomics per
//! read (load `end`, store `pos`) and no lock. The scheduler's mutex is taken only when a
//! connection takes or finishes a range, when a steal happens, and at checkpoints.
//!
//! Steal protocol (why a read under way can never cross the cut):
//! * The owner loops: `e = end.load(); read into [pos, min(e, pos + READ_CHUNK)); pos.store(..)`.
//! * A thief (holding the lock) picks `cut` from the owner's `pos` with a margin, stores
//!   `end = cut`, then loads `pos` again as `p2`. Any read started with the old `end` began at a
//!   `pos` the owner had stored before the thief's store, hence at most `p2`, and spans at most
//!   `READ_CHUNK` bytes. So if `p2 + READ_CHUNK <= cut`, no write can reach `[cut, ..)` and the
//!   thief takes `[cut, old_end)`. Otherwise it puts `end` back and takes nothing.
//! * An owner that sees `pos >= end` confirms under the lock before it lets go of the segment,
//!   so a steal that was rolled back is never mistaken for the end of the range.
//!
//! All atomics use `SeqCst`: the argument above needs a single total order, and the cost is
//! two uncontended atomic operations per read of up to `READ_CHUNK` bytes.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::download::plan;
use crate::storage::manifest::RangeRecord;

/// Largest single read into the file. Bounds how far a read under way can reach past a cut.
pub const READ_CHUNK: u64 = 256 << 10;

/// One byte range and its progress.
#[derive(Debug)]
pub struct Segment {
    /// First byte of the range (fixed for the segment's life).
    pub start: u64,
    end: AtomicU64,
    pos: AtomicU64,
    /// When the segment last made progress (or got a new owner), in ms since `born`.
    progress_ms: AtomicU64,
    born: std::time::Instant,
    /// Set (and `preempt` notified) when a free connection takes over from a stalled owner.
    preempted: std::sync::atomic::AtomicBool,
    preempt: tokio::sync::Notify,
    /// Failed attempts in a row without progress, whoever owned the segment: a range that
    /// stalls on every connection must still run out of tries (`--max-tries`).
    failures: std::sync::atomic::AtomicU32,
    /// Where the owner's current transfer ends by itself (a `RANG` piece), `u64::MAX` when it
    /// does not (a `REST` transfer runs to the end of the file and is stopped early). A thief
    /// that cuts exactly there causes no early stop, so nothing is sent past the cut.
    transfer_end: AtomicU64,
}

impl Segment {
    fn new(start: u64, end: u64, pos: u64) -> Arc<Segment> {
        Arc::new(Segment {
            start,
            end: AtomicU64::new(end),
            pos: AtomicU64::new(pos),
            progress_ms: AtomicU64::new(0),
            born: std::time::Instant::now(),
            preempted: std::sync::atomic::AtomicBool::new(false),
            preempt: tokio::sync::Notify::new(),
            failures: std::sync::atomic::AtomicU32::new(0),
            transfer_end: AtomicU64::new(u64::MAX),
        })
    }

    /// The owner announces where its next transfer will end by itself (`None`: it will not),
    /// before it reads any byte of that transfer.
    pub fn set_transfer_end(&self, end: Option<u64>) {
        self.transfer_end.store(end.unwrap_or(u64::MAX), SeqCst);
    }

    /// Records the end of an attempt that started at `before`: progress clears the failure
    /// count; a failure adds one. Returns the failures in a row now.
    pub fn attempt_ended(&self, before: u64, failed: bool) -> u32 {
        use std::sync::atomic::Ordering::Relaxed;
        if self.pos() > before {
            self.failures.store(0, Relaxed);
        }
        if failed {
            self.failures.fetch_add(1, Relaxed) + 1
        } else {
            self.failures.load(Relaxed)
        }
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.progress_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since this segment last made progress.
    fn idle(&self) -> std::time::Duration {
        let last = self.progress_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.born
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }

    /// Completes when a free connection has asked to take this segment over. The owner runs
    /// its attempt under `select!` with this: dropping the attempt stops every write into
    /// the segment before the owner releases it.
    pub async fn preempted(&self) {
        loop {
            if self.preempted.load(SeqCst) {
                return;
            }
            self.preempt.notified().await;
        }
    }

    /// One past the last byte this segment must fetch (shrinks when a thief takes the tail).
    pub fn end(&self) -> u64 {
        self.end.load(SeqCst)
    }

    /// Bytes `[start, pos)` are written into the file.
    pub fn pos(&self) -> u64 {
        self.pos.load(SeqCst)
    }

    /// Records that bytes up to `pos` are written. Only the owner calls this.
    pub fn advance(&self, pos: u64) {
        self.pos.store(pos, SeqCst);
        self.touch();
    }

    fn remaining(&self) -> u64 {
        self.end().saturating_sub(self.pos())
    }
}

struct Entry {
    seg: Arc<Segment>,
    owner: Option<usize>,
    /// Offset up to which the bytes were flushed and recorded in the manifest.
    durable: u64,
    /// The free connection that asked this segment's owner to let go: it gets the segment
    /// once the owner has stopped, and nobody else does.
    reserved: Option<usize>,
}

/// What a free connection knows about the connections' speeds when it looks for work.
#[derive(Clone, Copy, Debug, Default)]
pub struct Speeds<'a> {
    /// Recent throughput of each worker while it was reading, in bytes/s, indexed by worker;
    /// 0 (or missing) when not measured yet. Empty: choose by bytes left and halve.
    pub rates: &'a [f64],
    /// Seconds each worker has been reading its current transfer (0 or missing: not reading).
    pub reading: &'a [f64],
    /// Seconds from asking for a range on an open session to its first byte.
    pub setup: f64,
    /// A range without any progress for this long is stalled: a free connection takes it over
    /// whole. `None`: never by time alone.
    pub stall: Option<std::time::Duration>,
}

impl Speeds<'_> {
    fn rate(&self, worker: usize) -> Option<f64> {
        self.rates.get(worker).copied().filter(|r| *r > 0.0)
    }

    /// Whether `worker`'s rate was measured over its current transfer long enough to judge it
    /// slow: [`TAKEOVER_MIN_READ`] setups. A loaded server starts and pauses its connections
    /// unevenly; a rate of a few tenths of a second says little there, and a take-over costs
    /// a new transfer (and, without RANG, the bytes the server sends past the old one's stop).
    fn judged(&self, worker: usize) -> bool {
        self.reading.get(worker).copied().unwrap_or(0.0) >= TAKEOVER_MIN_READ * self.setup
    }

    /// The middle of the measured rates: the guess for a connection not measured yet.
    fn typical(&self) -> Option<f64> {
        let mut known: Vec<f64> = self.rates.iter().copied().filter(|r| *r > 0.0).collect();
        if known.is_empty() {
            return None;
        }
        known.sort_by(f64::total_cmp);
        Some(known[known.len() / 2])
    }
}

/// Setups' worth of reading after which a connection may be judged too slow and its range
/// taken over (see [`Speeds::judged`]). Stalled connections are taken over by
/// [`Speeds::stall`] whatever their state.
pub const TAKEOVER_MIN_READ: f64 = 4.0;

struct State {
    entries: Vec<Entry>,
    /// Workers that have not retired. A worker retires when `acquire` finds nothing for it, or
    /// when `give_up` lets it hand its range to the others.
    live: usize,
}

/// The ranges of one download, shared by its connections and its checkpointer.
pub struct Scheduler {
    inner: Mutex<State>,
    min_range: u64,
    /// Notified when a range becomes free (a preempted owner let go, a refused one gave up), so
    /// a waiting connection need not poll for it.
    freed: tokio::sync::Notify,
    /// How many times a range's position was moved back ([`Scheduler::rewind`]): bytes hashed
    /// before a rewind may be written again, so such hashes are thrown away.
    rewinds: AtomicU64,
}

/// What a checkpoint needs: every range with the offset written at the time of the snapshot.
pub struct Snapshot {
    /// `(start, end, written)` of each segment, sorted by start.
    pub ranges: Vec<(u64, u64, u64)>,
    /// `(durable, written)`: the bytes of each segment to flush before the manifest is saved.
    pub to_flush: Vec<(u64, u64)>,
}

impl Scheduler {
    /// Builds the live ranges from the manifest's records (`done` is where each resumes), for
    /// `workers` connections.
    pub fn new(records: &[RangeRecord], min_range: u64, workers: usize) -> Scheduler {
        let entries = records
            .iter()
            .map(|r| Entry {
                seg: Segment::new(r.start, r.end, r.done),
                owner: None,
                durable: r.done,
                reserved: None,
            })
            .collect();
        Scheduler {
            inner: Mutex::new(State {
                entries,
                live: workers,
            }),
            min_range,
            freed: tokio::sync::Notify::new(),
            rewinds: AtomicU64::new(0),
        }
    }

    /// The number of rewinds so far (see [`Scheduler::rewind`]).
    pub fn rewinds(&self) -> u64 {
        self.rewinds.load(SeqCst)
    }

    /// Completes when a range may have become free (or at once, if one was freed since the
    /// last wait); callers also re-check on a timer.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking worker cannot leave the ranges half-updated (every update is one store),
        // so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes not yet written, over all ranges.
    pub fn remaining(&self) -> u64 {
        self.lock().entries.iter().map(|e| e.seg.remaining()).sum()
    }

    /// Gives `worker` a range to fetch: first an unowned unfinished one (the largest), else the
    /// upper half of the largest range another connection is still reading. `None` when there
    /// is nothing left worth taking: the worker then retires (it must not call again).
    pub fn acquire(&self, worker: usize) -> Option<Arc<Segment>> {
        let found = self.try_acquire(worker, &Speeds::default());
        if found.is_none() {
            self.retire();
        }
        found
    }

    /// Like [`Scheduler::acquire`], but a worker that finds nothing does not retire: it may
    /// wait for a straggler to be preempted, or for a range to be handed back.
    ///
    /// With measured `speeds`, the worker helps the range that would finish last (not merely
    /// the largest), takes as much as makes both finish together ([`plan::balanced_cut`]),
    /// and when nothing can be split it takes over a range whose owner is stalled or clearly
    /// slower ([`plan::worth_taking_over`]): the owner is asked to let go and the range is
    /// reserved for this worker, which gets it on a later call (`None` meanwhile).
    pub fn try_acquire(&self, worker: usize, speeds: &Speeds) -> Option<Arc<Segment>> {
        let mut state = self.lock();
        let seg = Self::find_work(&mut state.entries, worker, self.min_range, speeds)?;
        seg.touch();
        Some(seg)
    }

    /// Retires a worker that found nothing to do (see [`Scheduler::try_acquire`]).
    pub fn retire(&self) {
        let mut state = self.lock();
        state.live = state.live.saturating_sub(1);
    }

    /// Whether any segment still has bytes to fetch.
    pub fn unfinished(&self) -> bool {
        self.lock().entries.iter().any(|e| e.seg.remaining() > 0)
    }

    /// The owner of a preempted segment has stopped: the segment is free for the others.
    pub fn release_preempted(&self, seg: &Arc<Segment>) {
        let mut state = self.lock();
        if let Some(e) = state.entries.iter_mut().find(|e| Arc::ptr_eq(&e.seg, seg)) {
            e.owner = None;
        }
        seg.preempted.store(false, SeqCst);
        seg.touch();
        self.freed.notify_waiters();
        self.freed.notify_one();
    }

    fn find_work(
        entries: &mut Vec<Entry>,
        worker: usize,
        min_range: u64,
        speeds: &Speeds,
    ) -> Option<Arc<Segment>> {
        // A range handed over to this worker, or one it is still waiting for.
        for e in entries.iter_mut().filter(|e| e.reserved == Some(worker)) {
            if e.seg.remaining() == 0 {
                e.reserved = None;
            } else if e.owner.is_none() {
                e.reserved = None;
                e.owner = Some(worker);
                return Some(e.seg.clone());
            } else {
                return None;
            }
        }
        let free = plan::largest(entries.iter().map(|e| match (e.owner, e.reserved) {
            (None, None) => e.seg.remaining(),
            _ => 0,
        }));
        if let Some(i) = free {
            entries[i].owner = Some(worker);
            return Some(entries[i].seg.clone());
        }
        // Ranges other workers are reading (and not already being taken over).
        let others = |e: &Entry| {
            e.owner.is_some_and(|w| w != worker)
                && e.reserved.is_none()
                && e.seg.remaining() > 0
                && !e.seg.preempted.load(SeqCst)
        };
        if let Some(stall) = speeds.stall {
            let stalled = plan::largest(entries.iter().map(|e| {
                if others(e) && e.seg.idle() >= stall {
                    e.seg.remaining()
                } else {
                    0
                }
            }));
            if let Some(i) = stalled {
                Self::take_over(&mut entries[i], worker);
                return None;
            }
        }
        let typical = speeds.typical();
        let thief_rate = speeds.rate(worker).or(typical);
        let owner_rate = |e: &Entry| {
            e.owner
                .and_then(|w| speeds.rate(w))
                .or(typical)
                .unwrap_or(0.0)
        };
        let (busy, cut) = match thief_rate {
            // Speeds measured: help the range that would finish last.
            Some(thief_rate) => {
                let mut best: Option<(usize, f64, u64)> = None;
                for (i, e) in entries.iter().enumerate().filter(|(_, e)| others(e)) {
                    let left = e.seg.remaining();
                    let t = plan::finish_time(left, owner_rate(e));
                    if best.is_none_or(|(_, bt, bl)| t > bt || (t == bt && left > bl)) {
                        best = Some((i, t, left));
                    }
                }
                let (i, _, left) = best?;
                let v = &entries[i].seg;
                // A stalled owner's rate decays towards 0; keep it positive for the split.
                let owner = owner_rate(&entries[i]).max(1.0);
                let cut = plan::balanced_cut(
                    v.pos(),
                    v.end(),
                    owner,
                    thief_rate,
                    speeds.setup,
                    min_range,
                    2 * READ_CHUNK,
                );
                if cut.is_none() {
                    // Nothing to split: the end-game. Take the rest over if clearly faster.
                    if entries[i].owner.is_some_and(|w| speeds.judged(w))
                        && plan::worth_taking_over(
                            left,
                            owner_rate(&entries[i]),
                            thief_rate,
                            speeds.setup,
                        )
                    {
                        Self::take_over(&mut entries[i], worker);
                    }
                    return None;
                }
                (i, cut?)
            }
            None => {
                let i = plan::largest(
                    entries
                        .iter()
                        .map(|e| if others(e) { e.seg.remaining() } else { 0 }),
                )?;
                let v = &entries[i].seg;
                (
                    i,
                    plan::split_point(v.pos(), v.end(), min_range, 2 * READ_CHUNK)?,
                )
            }
        };
        let victim = entries[busy].seg.clone();
        let old_end = victim.end();
        // Cut where the owner's current RANG piece ends, if that is about where we would cut
        // anyway: the owner's transfer then ends by itself, and nothing is sent twice.
        let pos = victim.pos();
        let piece_end = victim.transfer_end.load(SeqCst);
        let exact = pos < piece_end
            && piece_end < old_end
            && piece_end - pos <= 2 * (cut - pos).max(2 * READ_CHUNK)
            && old_end - piece_end >= min_range;
        let cut = if exact { piece_end } else { cut };
        victim.end.store(cut, SeqCst);
        let unsafe_cut = if exact {
            // Reads of that transfer stop at its end whatever `end` they loaded; unless the
            // owner has meanwhile announced another transfer (then undo, as below).
            victim.transfer_end.load(SeqCst) != cut
        } else {
            victim.pos() + READ_CHUNK > cut
        };
        if unsafe_cut {
            // The owner got too close to the cut meanwhile: undo, take nothing this time.
            victim.end.store(old_end, SeqCst);
            return None;
        }
        crate::trace!(
            "conn {worker} splits conn {:?}'s range at {cut}: owner keeps [{}..{cut}), takes [{cut}..{old_end})",
            entries[busy].owner,
            victim.pos()
        );
        let seg = Segment::new(cut, old_end, cut);
        entries.push(Entry {
            seg: seg.clone(),
            owner: Some(worker),
            durable: cut,
            reserved: None,
        });
        Some(seg)
    }

    /// Asks the owner of `e` to stop; the segment is reserved for `thief`.
    fn take_over(e: &mut Entry, thief: usize) {
        crate::trace!(
            "conn {thief} takes over [{}..{}) from conn {:?} (idle {:.2} s)",
            e.seg.pos(),
            e.seg.end(),
            e.owner,
            e.seg.idle().as_secs_f64()
        );
        e.reserved = Some(thief);
        e.seg.preempted.store(true, SeqCst);
        e.seg.preempt.notify_one();
    }

    /// Called by the owner when it has read up to the segment's end. Returns `true` if the
    /// segment is really done (it is then released); `false` if a rolled-back steal restored a
    /// later end, in which case the owner goes on reading.
    pub fn complete(&self, worker: usize, seg: &Arc<Segment>) -> bool {
        let mut state = self.lock();
        if seg.pos() < seg.end() {
            return false;
        }
        if let Some(e) = state.entries.iter_mut().find(|e| Arc::ptr_eq(&e.seg, seg)) {
            debug_assert_eq!(e.owner, Some(worker));
            e.owner = None;
        }
        // Idle connections look again: for a range to help with, or, when this was the last
        // one, to end now instead of at their next poll (up to 100 ms at the end of every
        // download, measured on vsftpd capped at 20 MiB/s: 4-7 % of the gap to lftp).
        self.freed.notify_waiters();
        true
    }

    /// A worker that the server refuses ("too many connections") asks to hand its unfinished
    /// segment to the others and retire. Allowed only while another worker is live (it will
    /// find the segment on its next `acquire`); otherwise `false`: keep trying.
    pub fn give_up(&self, seg: &Arc<Segment>) -> bool {
        let mut state = self.lock();
        if state.live <= 1 {
            return false;
        }
        if let Some(e) = state.entries.iter_mut().find(|e| Arc::ptr_eq(&e.seg, seg)) {
            e.owner = None;
        }
        state.live -= 1;
        self.freed.notify_waiters();
        self.freed.notify_one();
        true
    }

    /// A worker that gave up (or retired) comes back, to `acquire` again. `false` when nothing
    /// is left to fetch.
    pub fn rejoin(&self) -> bool {
        let mut state = self.lock();
        if state.entries.iter().all(|e| e.seg.remaining() == 0) {
            return false;
        }
        state.live += 1;
        true
    }

    /// The owner moves its segment's position back to `to` (bytes after it will be fetched
    /// again), and the durable mark with it, so the next checkpoint flushes them again.
    pub fn rewind(&self, seg: &Arc<Segment>, to: u64) {
        let mut state = self.lock();
        self.rewinds.fetch_add(1, SeqCst);
        let to = to.max(seg.start).min(seg.pos());
        seg.advance(to);
        if let Some(e) = state.entries.iter_mut().find(|e| Arc::ptr_eq(&e.seg, seg)) {
            e.durable = e.durable.min(to);
        }
    }

    /// A consistent view for a checkpoint: every range with what is written now.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        let mut ranges = Vec::with_capacity(state.entries.len());
        let mut to_flush = Vec::new();
        for e in &state.entries {
            // One load of `pos`: what is recorded is exactly what gets flushed.
            let pos = e.seg.pos();
            ranges.push((e.seg.start, e.seg.end(), pos));
            if pos > e.durable {
                to_flush.push((e.durable, pos));
            }
        }
        ranges.sort_unstable();
        Snapshot { ranges, to_flush }
    }

    /// After the bytes of `snapshot` were flushed and the manifest saved: remember them as
    /// durable, so the next checkpoint flushes only what is new.
    pub fn mark_durable(&self, snapshot: &Snapshot) {
        let mut state = self.lock();
        for e in state.entries.iter_mut() {
            if let Some(&(_, _, written)) =
                snapshot.ranges.iter().find(|(s, _, _)| *s == e.seg.start)
            {
                e.durable = e.durable.max(written.min(e.seg.pos()));
            }
        }
    }

    /// Whether every byte of `[from, to)` is written in `snapshot`.
    pub fn written(snapshot: &Snapshot, from: u64, to: u64) -> bool {
        snapshot
            .ranges
            .iter()
            .filter(|&&(start, end, _)| start < to && end > from)
            .all(|&(_, end, written)| written >= end.min(to))
    }

    /// The snapshot as manifest records: `done` is the written offset (durable once flushed).
    pub fn records(snapshot: &Snapshot) -> Vec<RangeRecord> {
        snapshot
            .ranges
            .iter()
            .map(|&(start, end, done)| RangeRecord { start, end, done })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn rec(start: u64, end: u64, done: u64) -> RangeRecord {
        RangeRecord { start, end, done }
    }

    #[test]
    fn free_ranges_first_then_steal_upper_half() {
        let s = Scheduler::new(
            &[rec(0, 8 * MIB, 0), rec(8 * MIB, 16 * MIB, 8 * MIB)],
            MIB,
            3,
        );
        let a = s.acquire(0).unwrap();
        let b = s.acquire(1).unwrap();
        assert_ne!(a.start, b.start);
        // Nothing free: worker 2 steals half of the largest busy range.
        let c = s.acquire(2).unwrap();
        assert_eq!(c.start, 4 * MIB);
        assert_eq!(c.end(), 8 * MIB);
        assert_eq!(a.end(), 4 * MIB);
        let snap = s.snapshot();
        let recs = Scheduler::records(&snap);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].end, recs[1].start);
        assert_eq!(recs[1].end, recs[2].start);
    }

    #[test]
    fn completion_and_no_tiny_steals() {
        let s = Scheduler::new(&[rec(0, MIB, 0)], MIB, 2);
        let a = s.acquire(0).unwrap();
        assert!(s.acquire(1).is_none(), "half of 1 MiB is below the minimum");
        a.advance(MIB);
        assert!(s.complete(0, &a));
        assert!(s.acquire(1).is_none());
        assert_eq!(s.remaining(), 0);
    }

    #[test]
    fn steal_refused_when_owner_is_near_the_cut() {
        let s = Scheduler::new(&[rec(0, 4 * MIB, 0)], 1, 2);
        let a = s.acquire(0).unwrap();
        a.advance(4 * MIB - READ_CHUNK);
        assert!(s.acquire(1).is_none());
        assert_eq!(a.end(), 4 * MIB, "a refused steal leaves the range whole");
    }

    #[test]
    fn snapshot_marks_flush_ranges_once() {
        let s = Scheduler::new(&[rec(0, 4 * MIB, MIB)], MIB, 1);
        let a = s.acquire(0).unwrap();
        a.advance(2 * MIB);
        let snap = s.snapshot();
        assert_eq!(snap.to_flush, vec![(MIB, 2 * MIB)]);
        s.mark_durable(&snap);
        assert!(s.snapshot().to_flush.is_empty());
    }

    #[test]
    fn give_up_only_while_another_worker_is_live() {
        let s = Scheduler::new(&[rec(0, MIB, 0), rec(MIB, 2 * MIB, MIB)], 4 * MIB, 2);
        let a = s.acquire(0).unwrap();
        let b = s.acquire(1).unwrap();
        // Worker 1 is refused by the server and hands its range over.
        assert!(s.give_up(&b));
        // Worker 0 finishes its own range and picks up the one handed over.
        a.advance(a.end());
        assert!(s.complete(0, &a));
        let again = s.acquire(0).unwrap();
        assert!(Arc::ptr_eq(&again, &b));
        // It is the last live worker: it may not give up.
        assert!(!s.give_up(&again));
    }

    #[test]
    fn retired_worker_leaves_the_last_one_unable_to_give_up() {
        let s = Scheduler::new(&[rec(0, MIB, 0)], 4 * MIB, 2);
        let a = s.acquire(0).unwrap();
        assert!(s.acquire(1).is_none(), "nothing to steal: worker 1 retires");
        assert!(!s.give_up(&a), "nobody would be left to fetch the range");
    }

    #[test]
    fn rewind_lowers_durable_so_bytes_are_flushed_again() {
        let s = Scheduler::new(&[rec(0, 4 * MIB, 0)], MIB, 1);
        let a = s.acquire(0).unwrap();
        a.advance(3 * MIB);
        let snap = s.snapshot();
        s.mark_durable(&snap);
        s.rewind(&a, MIB);
        a.advance(2 * MIB);
        assert_eq!(s.snapshot().to_flush, vec![(MIB, 2 * MIB)]);
    }

    fn speeds(rates: &[f64]) -> Speeds<'_> {
        Speeds {
            rates,
            reading: &[],
            setup: 0.0,
            stall: None,
        }
    }

    #[test]
    fn a_free_connection_helps_the_range_that_finishes_last() {
        let s = Scheduler::new(
            &[rec(0, 64 * MIB, 0), rec(64 * MIB, 72 * MIB, 64 * MIB)],
            MIB,
            3,
        );
        let rates = [20.0 * MIB as f64, 0.5 * MIB as f64, 20.0 * MIB as f64];
        let big = s.try_acquire(0, &speeds(&rates)).unwrap();
        let small = s.try_acquire(1, &speeds(&rates)).unwrap();
        assert_eq!((big.start, small.start), (0, 64 * MIB));
        // The 8 MiB range at 0.5 MiB/s (16 s) finishes after the 64 MiB one at 20 MiB/s (3.2 s).
        let help = s.try_acquire(2, &speeds(&rates)).unwrap();
        assert!(
            help.start > 64 * MIB && help.end() == 72 * MIB,
            "{}",
            help.start
        );
        // ... and takes most of it: the slow owner keeps about 1/41.
        assert!(
            small.end() - small.start <= MIB,
            "owner keeps {}",
            small.end()
        );
        assert_eq!(big.end(), 64 * MIB, "the fast range is left whole");
    }

    #[test]
    fn without_rates_the_largest_range_is_halved() {
        let s = Scheduler::new(
            &[rec(0, 64 * MIB, 0), rec(64 * MIB, 72 * MIB, 64 * MIB)],
            MIB,
            3,
        );
        s.try_acquire(0, &speeds(&[])).unwrap();
        s.try_acquire(1, &speeds(&[])).unwrap();
        let help = s.try_acquire(2, &speeds(&[])).unwrap();
        assert_eq!((help.start, help.end()), (32 * MIB, 64 * MIB));
    }

    #[test]
    fn a_slow_owner_s_last_bytes_are_taken_over_and_reserved() {
        let s = Scheduler::new(&[rec(0, MIB, 0)], MIB, 3);
        let rates = [0.1 * MIB as f64, 20.0 * MIB as f64, 20.0 * MIB as f64];
        let a = s.try_acquire(0, &speeds(&rates)).unwrap();
        // Too small to split; 10 s for the owner vs 0.05 s: worker 1 asks the owner to stop.
        assert!(s.try_acquire(1, &speeds(&rates)).is_none());
        assert!(a.preempted.load(SeqCst));
        // Worker 1 waits for it; nobody else may take it, even once it is free.
        assert!(s.try_acquire(1, &speeds(&rates)).is_none());
        s.release_preempted(&a);
        assert!(s.try_acquire(2, &speeds(&rates)).is_none());
        assert!(s.try_acquire(0, &speeds(&rates)).is_none());
        let b = s.try_acquire(1, &speeds(&rates)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Equal speeds never take over.
        let s = Scheduler::new(&[rec(0, MIB, 0)], MIB, 2);
        let eq = [20.0 * MIB as f64; 2];
        let a = s.try_acquire(0, &speeds(&eq)).unwrap();
        assert!(s.try_acquire(1, &speeds(&eq)).is_none());
        assert!(!a.preempted.load(SeqCst));
    }

    #[test]
    fn a_slow_owner_is_judged_only_after_reading_a_few_setups() {
        let s = Scheduler::new(&[rec(0, MIB, 0)], MIB, 2);
        let rates = [0.1 * MIB as f64, 20.0 * MIB as f64];
        let reading = |owner: f64| [owner, 1.0];
        let at = |reading: &'_ [f64; 2]| {
            let sp = Speeds {
                rates: &rates,
                reading,
                setup: 0.05,
                stall: None,
            };
            s.try_acquire(1, &sp)
        };
        let a = s.try_acquire(0, &speeds(&rates)).expect("the free range");
        // Not reading yet (still starting its transfer), then reading for 3 setups: too soon.
        assert!(at(&reading(0.0)).is_none());
        assert!(at(&reading(0.15)).is_none());
        assert!(!a.preempted.load(SeqCst));
        // Four setups of reading at a fiftieth of the speed: taken over.
        assert!(at(&reading(0.2)).is_none());
        assert!(a.preempted.load(SeqCst));
    }

    #[test]
    fn a_stalled_range_is_taken_over_whole_after_the_stall_time() {
        let s = Scheduler::new(&[rec(0, 64 * MIB, 0)], MIB, 2);
        let stall = Speeds {
            rates: &[],
            reading: &[],
            setup: 0.0,
            stall: Some(std::time::Duration::from_millis(30)),
        };
        let a = s.try_acquire(0, &stall).unwrap();
        a.advance(MIB);
        // Fresh progress: a plain split.
        let b = s.try_acquire(1, &stall).unwrap();
        assert_eq!(b.start, 32 * MIB + 512 * 1024);
        std::thread::sleep(std::time::Duration::from_millis(60));
        b.advance(b.start + MIB);
        // Worker 1 finished its part; worker 0 has been idle for 60 ms: taken over whole.
        b.advance(b.end());
        assert!(s.complete(1, &b));
        assert!(s.try_acquire(1, &stall).is_none());
        assert!(a.preempted.load(SeqCst));
        s.release_preempted(&a);
        let again = s.try_acquire(1, &stall).unwrap();
        assert!(Arc::ptr_eq(&again, &a));
        assert_eq!(again.pos(), MIB);
    }

    #[test]
    fn a_thief_cuts_where_the_owner_s_rang_piece_ends() {
        let s = Scheduler::new(&[rec(0, 64 * MIB, 0)], MIB, 2);
        let a = s.acquire(0).unwrap();
        a.advance(MIB);
        // The owner's transfer asks for [1 MiB, 9 MiB) and ends there by itself.
        a.set_transfer_end(Some(9 * MIB));
        let rates = [20.0 * MIB as f64; 2];
        let b = s.try_acquire(1, &speeds(&rates)).unwrap();
        // Halfway would be 32.5 MiB; the piece end is well within twice the owner's share.
        assert_eq!((a.end(), b.start), (9 * MIB, 9 * MIB));
        // No piece end (a REST transfer): the usual cut with its margin.
        let s = Scheduler::new(&[rec(0, 64 * MIB, 0)], MIB, 2);
        let a = s.acquire(0).unwrap();
        a.set_transfer_end(None);
        let b = s.try_acquire(1, &speeds(&rates)).unwrap();
        assert_eq!(b.start, 32 * MIB);
        // A piece end beyond twice the owner's fair share is not used (a slow owner).
        let s = Scheduler::new(&[rec(0, 64 * MIB, 0)], MIB, 2);
        let a = s.acquire(0).unwrap();
        a.set_transfer_end(Some(8 * MIB));
        let slow = [0.2 * MIB as f64, 20.0 * MIB as f64];
        let b = s.try_acquire(1, &speeds(&slow)).unwrap();
        assert!(b.start < 2 * MIB, "{}", b.start);
    }

    #[test]
    fn concurrent_pieces_and_exact_cuts_never_overlap() {
        // As below, but owners read in announced pieces (as with RANG), so thieves cut at
        // piece ends without a margin: the announce/cut handshake must still keep every byte
        // written exactly once.
        for round in 0..20u64 {
            let size = 64 * MIB;
            let s = Arc::new(Scheduler::new(&[rec(0, size, 0)], 256 << 10, 4));
            let writes = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
            let mut handles = Vec::new();
            for w in 0..4usize {
                let (s, writes) = (s.clone(), writes.clone());
                handles.push(std::thread::spawn(move || {
                    let rates = [20.0 * MIB as f64; 4];
                    let sp = Speeds {
                        rates: &rates,
                        reading: &[],
                        setup: 0.0,
                        stall: None,
                    };
                    let mut idle = 0;
                    while idle < 200 {
                        let Some(seg) = s.try_acquire(w, &sp) else {
                            if s.remaining() == 0 {
                                break;
                            }
                            idle += 1;
                            std::thread::yield_now();
                            continue;
                        };
                        loop {
                            let mut pos = seg.pos();
                            // Announce the piece before reading any of it.
                            let piece_end = seg.end().min(pos + (512 << 10) * (1 + round % 3));
                            seg.set_transfer_end(Some(piece_end));
                            loop {
                                let end = seg.end().min(piece_end);
                                if pos >= end {
                                    break;
                                }
                                let lim = end.min(pos + READ_CHUNK / 4);
                                writes.lock().unwrap().push((pos, lim));
                                pos = lim;
                                seg.advance(pos);
                            }
                            if pos >= seg.end() && s.complete(w, &seg) {
                                break;
                            }
                        }
                    }
                }));
            }
            for h in handles {
                h.join().unwrap();
            }
            assert_written_once(&writes.lock().unwrap(), size, round);
        }
    }

    /// The writes `[a, b)` tile `[0, size)`: no gap, no byte written twice.
    fn assert_written_once(writes: &[(u64, u64)], size: u64, round: u64) {
        let mut w = writes.to_vec();
        w.sort_unstable();
        let mut at = 0;
        for (a, b) in w {
            assert_eq!(a, at, "gap or overlap at {a} (round {round})");
            at = b;
        }
        assert_eq!(at, size);
    }

    #[test]
    fn concurrent_owner_and_thieves_never_overlap() {
        // An owner races through its range while thieves steal; afterwards every byte must be
        // covered by exactly one writer.
        use std::sync::atomic::AtomicBool;
        for round in 0..20 {
            let size = 64 * MIB;
            let s = Arc::new(Scheduler::new(&[rec(0, size, 0)], 256 << 10, 4));
            let writes = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let mut handles = Vec::new();
            for w in 0..4usize {
                let (s, writes, stop) = (s.clone(), writes.clone(), stop.clone());
                handles.push(std::thread::spawn(move || {
                    while let Some(seg) = s.acquire(w) {
                        loop {
                            let mut pos = seg.pos();
                            loop {
                                let end = seg.end();
                                if pos >= end {
                                    break;
                                }
                                let lim = end.min(pos + READ_CHUNK / (1 + round % 3));
                                writes.lock().unwrap().push((pos, lim));
                                pos = lim;
                                seg.advance(pos);
                            }
                            if s.complete(w, &seg) {
                                break;
                            }
                        }
                    }
                    stop.store(true, SeqCst);
                }));
            }
            for h in handles {
                h.join().unwrap();
            }
            assert_written_once(&writes.lock().unwrap(), size, round);
        }
    }
}
