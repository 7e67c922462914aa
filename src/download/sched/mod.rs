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

mod speeds;

pub use speeds::Speeds;

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
    #[cfg(test)]
    pub fn acquire(&self, worker: usize) -> Option<Arc<Segment>> {
        let found = self.try_acquire(worker, &Speeds::default());
        if found.is_none() {
            self.retire();
        }
        found
    }

    /// Like `Scheduler::acquire` (the tests' entry), but a worker that finds nothing does not retire: it may
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

    /// The work a free `worker` finds, in order: a range reserved for it, a free range, a
    /// stalled one to take over, else part of the range that would finish last (or, in the
    /// end-game, all of it). `None`: nothing now (a take-over may be under way).
    fn find_work(
        entries: &mut Vec<Entry>,
        worker: usize,
        min_range: u64,
        speeds: &Speeds,
    ) -> Option<Arc<Segment>> {
        if let Some(reserved) = Self::reserved_for(entries, worker) {
            return reserved;
        }
        let free = plan::largest(entries.iter().map(|e| match (e.owner, e.reserved) {
            (None, None) => e.seg.remaining(),
            _ => 0,
        }));
        if let Some(i) = free {
            entries[i].owner = Some(worker);
            return Some(entries[i].seg.clone());
        }
        if let Some(i) = Self::stalled(entries, worker, speeds) {
            Self::take_over(&mut entries[i], worker);
            return None;
        }
        let (busy, cut) = Self::victim(entries, worker, min_range, speeds)?;
        Self::split(entries, worker, busy, cut, min_range)
    }

    /// A range handed over to `worker`: `Some(Some(seg))` to take now, `Some(None)` while its
    /// owner is still letting go, `None` when there is none.
    fn reserved_for(entries: &mut [Entry], worker: usize) -> Option<Option<Arc<Segment>>> {
        for e in entries.iter_mut().filter(|e| e.reserved == Some(worker)) {
            if e.seg.remaining() == 0 {
                e.reserved = None;
            } else if e.owner.is_none() {
                e.reserved = None;
                e.owner = Some(worker);
                return Some(Some(e.seg.clone()));
            } else {
                return Some(None);
            }
        }
        None
    }

    /// Whether `e` is a range another worker is reading (and not already being taken over).
    fn others(e: &Entry, worker: usize) -> bool {
        e.owner.is_some_and(|w| w != worker)
            && e.reserved.is_none()
            && e.seg.remaining() > 0
            && !e.seg.preempted.load(SeqCst)
    }

    /// The largest range another worker is reading without progress for the stall time.
    fn stalled(entries: &[Entry], worker: usize, speeds: &Speeds) -> Option<usize> {
        let stall = speeds.stall?;
        plan::largest(entries.iter().map(|e| {
            if Self::others(e, worker) && e.seg.idle() >= stall {
                e.seg.remaining()
            } else {
                0
            }
        }))
    }

    /// The range to help and where to cut it. With measured speeds: the range that would
    /// finish last, cut so both finish together; when nothing can be cut, the end-game (a
    /// take-over if clearly faster) and `None`. Before any rate is measured: the upper half of
    /// the range with the most bytes left.
    fn victim(
        entries: &mut [Entry],
        worker: usize,
        min_range: u64,
        speeds: &Speeds,
    ) -> Option<(usize, u64)> {
        let typical = speeds.typical();
        let owner_rate = |e: &Entry| {
            e.owner
                .and_then(|w| speeds.rate(w))
                .or(typical)
                .unwrap_or(0.0)
        };
        let Some(thief_rate) = speeds.rate(worker).or(typical) else {
            let i = plan::largest(entries.iter().map(|e| {
                if Self::others(e, worker) {
                    e.seg.remaining()
                } else {
                    0
                }
            }))?;
            let v = &entries[i].seg;
            return Some((
                i,
                plan::split_point(v.pos(), v.end(), min_range, 2 * READ_CHUNK)?,
            ));
        };
        let mut best: Option<(usize, f64, u64)> = None;
        for (i, e) in entries
            .iter()
            .enumerate()
            .filter(|(_, e)| Self::others(e, worker))
        {
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
                && plan::worth_taking_over(left, owner_rate(&entries[i]), thief_rate, speeds.setup)
            {
                Self::take_over(&mut entries[i], worker);
            }
            return None;
        }
        Some((i, cut?))
    }

    /// Cuts the range `busy` at `cut` (or where its owner's RANG piece ends, when that is
    /// about there) by the steal protocol above, and gives the tail to `worker`. `None` when
    /// the owner got too close to the cut meanwhile (undone, nothing taken).
    fn split(
        entries: &mut Vec<Entry>,
        worker: usize,
        busy: usize,
        cut: u64,
        min_range: u64,
    ) -> Option<Arc<Segment>> {
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
        // one, to end now instead of at their next poll (a wait at the end of every download;
        // docs/benchmarks.md, "Even caps").
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
mod tests;
