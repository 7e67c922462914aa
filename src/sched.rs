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

use crate::manifest::RangeRecord;
use crate::plan;

/// Largest single read into the map. Bounds how far a read under way can reach past a cut.
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
        })
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

    /// Bytes `[start, pos)` are written into the map.
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
            })
            .collect();
        Scheduler {
            inner: Mutex::new(State {
                entries,
                live: workers,
            }),
            min_range,
        }
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
        let found = self.try_acquire(worker);
        if found.is_none() {
            self.retire();
        }
        found
    }

    /// Like [`Scheduler::acquire`], but a worker that finds nothing does not retire: it may
    /// wait for a straggler to be preempted, or for a range to be handed back.
    pub fn try_acquire(&self, worker: usize) -> Option<Arc<Segment>> {
        let mut state = self.lock();
        let seg = Self::find_work(&mut state.entries, worker, self.min_range)?;
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

    /// A free worker's last resort: if another worker's segment has made no progress for
    /// `idle` (a stalled connection), ask its owner to let go. Returns whether a preemption is
    /// under way (the segment becomes free once its owner has stopped writing).
    pub fn preempt_straggler(&self, worker: usize, idle: std::time::Duration) -> bool {
        let state = self.lock();
        let mut pending = false;
        for e in &state.entries {
            let Some(owner) = e.owner else { continue };
            if owner == worker || e.seg.remaining() == 0 {
                continue;
            }
            if e.seg.preempted.load(SeqCst) {
                pending = true;
            } else if e.seg.idle() >= idle {
                e.seg.preempted.store(true, SeqCst);
                e.seg.preempt.notify_one();
                pending = true;
            }
        }
        pending
    }

    /// The owner of a preempted segment has stopped: the segment is free for the others.
    pub fn release_preempted(&self, seg: &Arc<Segment>) {
        let mut state = self.lock();
        if let Some(e) = state.entries.iter_mut().find(|e| Arc::ptr_eq(&e.seg, seg)) {
            e.owner = None;
        }
        seg.preempted.store(false, SeqCst);
        seg.touch();
    }

    fn find_work(entries: &mut Vec<Entry>, worker: usize, min_range: u64) -> Option<Arc<Segment>> {
        let free = plan::largest(entries.iter().map(|e| match e.owner {
            None => e.seg.remaining(),
            Some(_) => 0,
        }));
        if let Some(i) = free {
            entries[i].owner = Some(worker);
            return Some(entries[i].seg.clone());
        }
        let busy = plan::largest(entries.iter().map(|e| match e.owner {
            Some(w) if w != worker => e.seg.remaining(),
            _ => 0,
        }))?;
        let victim = entries[busy].seg.clone();
        let old_end = victim.end();
        let cut = plan::split_point(victim.pos(), old_end, min_range, 2 * READ_CHUNK)?;
        victim.end.store(cut, SeqCst);
        if victim.pos() + READ_CHUNK > cut {
            // The owner got too close to the cut meanwhile: undo, take nothing this time.
            victim.end.store(old_end, SeqCst);
            return None;
        }
        let seg = Segment::new(cut, old_end, cut);
        entries.push(Entry {
            seg: seg.clone(),
            owner: Some(worker),
            durable: cut,
        });
        Some(seg)
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
                                let lim = end.min(pos + READ_CHUNK / (1 + (round % 3) as u64));
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
            let mut w = writes.lock().unwrap().clone();
            w.sort_unstable();
            let mut at = 0;
            for (a, b) in w {
                assert_eq!(a, at, "gap or overlap at {a}");
                at = b;
            }
            assert_eq!(at, size);
        }
    }
}
