//! The scheduler's rules and its steal protocol, single-threaded and racing.

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

/// One step of a random interleaving of workers and the checkpointer.
#[derive(Clone, Debug)]
enum Op {
    /// Worker `w` asks for work (a free range, or a piece of another's).
    Acquire(usize),
    /// Worker `w` writes up to `n` more bytes of its range.
    Write(usize, u64),
    /// Worker `w`'s attempt fails its byte count: its position goes back `n` bytes.
    Rewind(usize, u64),
    /// Worker `w` says its range is read to its end.
    Complete(usize),
    /// The checkpointer takes a snapshot (flushes its bytes later).
    Snapshot,
    /// The checkpointer has flushed the last snapshot and saved the manifest.
    MarkDurable,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let w = 0..WORKERS;
    prop_oneof![
        w.clone().prop_map(Op::Acquire),
        (w.clone(), 0..3 * READ_CHUNK).prop_map(|(w, n)| Op::Write(w, n)),
        (w.clone(), 0..4 * READ_CHUNK).prop_map(|(w, n)| Op::Rewind(w, n)),
        w.prop_map(Op::Complete),
        Just(Op::Snapshot),
        Just(Op::MarkDurable),
    ]
}

const WORKERS: usize = 4;

/// Every range's durable mark is within what its owner has written: a checkpoint never records
/// as durable a byte that is not written (and so flushed), whatever order writes, rewinds,
/// snapshots and their acknowledgements come in.
fn assert_durable_within_written(s: &Scheduler, step: usize) {
    let state = s.lock();
    for e in &state.entries {
        let (start, written) = (e.seg.start, e.seg.pos());
        assert!(
            start <= e.durable && e.durable <= written,
            "step {step}: [{start}..{}) durable {} but written {written}",
            e.seg.end(),
            e.durable
        );
    }
}

proptest::proptest! {
    #[test]
    fn durable_never_passes_written(ops in proptest::collection::vec(op(), 1..300)) {
        let size = 64 * MIB;
        let s = Scheduler::new(&[rec(0, size / 2, 0), rec(size / 2, size, size / 2)], MIB, WORKERS);
        let mut owned: Vec<Option<Arc<Segment>>> = vec![None; WORKERS];
        let mut snap: Option<Snapshot> = None;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Acquire(w) if owned[w].is_none() => {
                    owned[w] = s.try_acquire(w, &Speeds::default());
                }
                Op::Write(w, n) => {
                    if let Some(seg) = &owned[w] {
                        seg.advance((seg.pos() + n).min(seg.end()));
                    }
                }
                Op::Rewind(w, n) => {
                    if let Some(seg) = &owned[w] {
                        s.rewind(seg, seg.pos().saturating_sub(n));
                    }
                }
                Op::Complete(w) => {
                    if let Some(seg) = &owned[w]
                        && seg.pos() >= seg.end()
                        && s.complete(w, seg)
                    {
                        owned[w] = None;
                    }
                }
                Op::Snapshot => {
                    let taken = s.snapshot();
                    for &(from, to) in &taken.to_flush {
                        proptest::prop_assert!(from < to);
                    }
                    snap = Some(taken);
                }
                Op::MarkDurable => {
                    if let Some(taken) = snap.take() {
                        s.mark_durable(&taken);
                    }
                }
                Op::Acquire(_) => {}
            }
            assert_durable_within_written(&s, step);
        }
    }
}
