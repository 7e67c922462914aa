//! Byte ranges: how a file is split across connections, and how a free connection steals work.
//!
//! Pure arithmetic, no I/O and no shared state, so every rule here is unit- and property-tested.
//! The engine holds the live ranges and applies these decisions under its scheduler lock.
//!
//! * [`initial_ranges`]: `n` nearly equal ranges covering `[0, size)`, fewer when the file is
//!   small, so that no range is below the minimum (tiny files use one connection).
//! * [`split_point`]: where to cut the remaining part `[pos, end)` of a range so that a free
//!   connection can take its upper half, or `None` when that half would be too small.
//! * [`largest`]: which range to steal from (the one with the most bytes left) while speeds are
//!   not known yet.
//! * [`finish_time`], [`balanced_cut`], [`worth_taking_over`]: once each connection's speed is
//!   measured, a free connection helps the range that would finish last, takes as much of it as
//!   makes both finish together, and takes a slow or stalled connection's last bytes over whole
//!   when it would clearly finish them first (the end-game).

use std::ops::Range;

/// Most connections one download may use.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections used when `-n` is not given: enough to fill most per-connection caps, few enough
/// to stay polite to public mirrors (lftp's pget uses 5, axel 4, aria2 5 with -x).
pub const DEFAULT_CONNECTIONS: usize = 8;
/// Smallest range worth its own connection (and smallest half a steal may take), unless set.
pub const DEFAULT_MIN_RANGE: u64 = 1 << 20;
/// Split points are rounded to this, so that ranges start on page boundaries.
pub const ALIGN: u64 = 64 << 10;

/// Splits `[0, size)` into at most `connections` contiguous ranges of nearly equal length, each
/// at least `min_range` long (except the single range of a file smaller than that). A 0-byte
/// file has no ranges at all.
pub fn initial_ranges(size: u64, connections: usize, min_range: u64) -> Vec<Range<u64>> {
    if size == 0 {
        return Vec::new();
    }
    let min_range = min_range.max(1);
    let by_size = (size / min_range).max(1);
    let n = (connections.clamp(1, MAX_CONNECTIONS) as u64).min(by_size);
    let base = size / n;
    let extra = size % n;
    let mut ranges = Vec::with_capacity(n as usize);
    let mut start = 0;
    for i in 0..n {
        let len = base + u64::from(i < extra);
        ranges.push(start..start + len);
        start += len;
    }
    debug_assert_eq!(start, size);
    ranges
}

/// Where to cut the unfinished part `[pos, end)` of a range that another connection is still
/// reading, so that a free connection can take `[cut, end)`.
///
/// The cut lies at about the middle, rounded down to [`ALIGN`], and leaves at least `margin`
/// bytes to the current reader (so a read already under way cannot cross it). Returns `None`
/// when the half to take would be smaller than `min_range`.
pub fn split_point(pos: u64, end: u64, min_range: u64, margin: u64) -> Option<u64> {
    if end <= pos {
        return None;
    }
    let remaining = end - pos;
    let mid = pos + remaining / 2;
    let aligned = mid - mid % ALIGN;
    let cut = if aligned > pos { aligned } else { mid };
    let cut = cut.max(pos.saturating_add(margin));
    if cut >= end || end - cut < min_range.max(1) {
        return None;
    }
    Some(cut)
}

/// The index of the entry with the most bytes left (`end - pos`), ignoring finished ones. Ties go
/// to the earliest entry, so the choice is deterministic.
pub fn largest(remaining: impl IntoIterator<Item = u64>) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, left) in remaining.into_iter().enumerate() {
        if left > 0 && best.is_none_or(|(_, b)| left > b) {
            best = Some((i, left));
        }
    }
    best.map(|(i, _)| i)
}

/// Seconds a connection reading at `rate` bytes/s needs for `remaining` bytes (infinite at 0).
pub fn finish_time(remaining: u64, rate: f64) -> f64 {
    if remaining == 0 {
        0.0
    } else if rate > 0.0 {
        remaining as f64 / rate
    } else {
        f64::INFINITY
    }
}

/// Where to cut the unfinished part `[pos, end)` of a range whose owner reads at `owner_rate`
/// bytes/s, so that a free connection reading at `thief_rate`, whose first byte comes `setup`
/// seconds after it asks, finishes `[cut, end)` when the owner finishes `[pos, cut)`.
///
/// The owner keeps `x` bytes with `x / owner_rate = setup + (remaining - x) / thief_rate`, that
/// is `x = (remaining + setup * thief_rate) * owner_rate / (owner_rate + thief_rate)`: a slow or
/// stalled owner keeps little, an equal one about half. The cut is rounded down to [`ALIGN`] and
/// leaves at least `margin` bytes to the owner (a read under way cannot cross it). `None` when the
/// thief's part would be below `min_range` or below [`MIN_PIECE_SETUPS`] setups' worth of the
/// thief's bytes, or when the owner finishes before the thief could start. Rates must be
/// positive (a stalled owner: a tiny rate).
pub fn balanced_cut(
    pos: u64,
    end: u64,
    owner_rate: f64,
    thief_rate: f64,
    setup: f64,
    min_range: u64,
    margin: u64,
) -> Option<u64> {
    if end <= pos || !(owner_rate > 0.0 && thief_rate > 0.0) {
        return None;
    }
    let remaining = (end - pos) as f64;
    let keep = (remaining + setup.max(0.0) * thief_rate) * owner_rate / (owner_rate + thief_rate);
    if keep >= remaining {
        return None;
    }
    let raw = pos + keep as u64;
    let aligned = raw - raw % ALIGN;
    let cut = if aligned > pos { aligned } else { raw };
    let cut = cut.max(pos.saturating_add(margin));
    if cut >= end || end - cut < min_piece(min_range, thief_rate, setup) {
        return None;
    }
    Some(cut)
}

/// A thief must spend at least this many times its setup time (asking to first byte) reading
/// the piece it takes. Every cut ends the owner's transfer early, and a server without `RANG`
/// keeps sending until the close reaches it: roughly what a connection reads in one setup
/// time. Pieces of fewer setups cost more in resent bytes and new transfers than they save
/// (the measurements are in docs/benchmarks.md, "Overshoot").
pub const MIN_PIECE_SETUPS: f64 = 4.0;

/// The smallest piece a thief reading at `thief_rate` with `setup` seconds to its first byte
/// may cut off: `min_range`, or [`MIN_PIECE_SETUPS`] setups' worth of its bytes if more.
pub fn min_piece(min_range: u64, thief_rate: f64, setup: f64) -> u64 {
    let by_setup = MIN_PIECE_SETUPS * setup.max(0.0) * thief_rate.max(0.0);
    // `as` saturates: an absurd product cannot wrap.
    min_range.max(1).max(by_setup as u64)
}

/// How much sooner a free connection must expect to finish a range than its owner before it
/// takes the whole range over (dropping the owner's transfer). Large enough that ordinary speed
/// noise between equal connections never triggers it.
pub const TAKEOVER_GAIN: f64 = 2.0;

/// The end-game rule: a free connection takes over the last `remaining` bytes of a range whose
/// owner reads at `owner_rate` when it expects to finish them (after `setup` seconds to its
/// first byte) [`TAKEOVER_GAIN`] times sooner than the owner would.
pub fn worth_taking_over(remaining: u64, owner_rate: f64, thief_rate: f64, setup: f64) -> bool {
    if remaining == 0 || thief_rate <= 0.0 {
        return false;
    }
    let owner = finish_time(remaining, owner_rate);
    let thief = setup.max(0.0) + finish_time(remaining, thief_rate);
    owner > TAKEOVER_GAIN * thief
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn empty_and_tiny_files() {
        assert!(initial_ranges(0, 8, MIB).is_empty());
        assert_eq!(initial_ranges(1, 8, MIB), vec![0..1]);
        assert_eq!(initial_ranges(MIB - 1, 16, MIB), vec![0..MIB - 1]);
        assert_eq!(initial_ranges(3 * MIB, 16, MIB).len(), 3);
    }

    #[test]
    fn equal_split_with_remainder_up_front() {
        let r = initial_ranges(10 * MIB + 3, 4, MIB);
        assert_eq!(r.len(), 4);
        let lens: Vec<u64> = r.iter().map(|r| r.end - r.start).collect();
        assert_eq!(lens[0], lens[3] + 1);
        assert_eq!(lens[2], lens[3] + 1);
        assert_eq!(r.last().unwrap().end, 10 * MIB + 3);
    }

    #[test]
    fn connections_are_capped() {
        assert_eq!(initial_ranges(1 << 40, 1000, MIB).len(), MAX_CONNECTIONS);
        assert_eq!(initial_ranges(1 << 40, 0, MIB).len(), 1);
    }

    #[test]
    fn split_takes_upper_half_aligned() {
        let cut = split_point(0, 64 * MIB, MIB, 512 << 10).unwrap();
        assert_eq!(cut, 32 * MIB);
        let cut = split_point(100, 10 * MIB + 100, MIB, 0).unwrap();
        assert_eq!(cut % ALIGN, 0);
        assert!(cut > 100 && cut < 10 * MIB + 100);
    }

    #[test]
    fn split_refuses_small_halves() {
        assert_eq!(split_point(0, MIB + 1000, MIB, 0), None);
        assert_eq!(split_point(0, 2 * MIB - 2 * ALIGN, MIB, 0), None);
        assert_eq!(split_point(5, 5, MIB, 0), None);
        assert_eq!(split_point(9, 5, MIB, 0), None);
        // The margin can eat the half: nothing left worth taking.
        assert_eq!(split_point(0, 3 * MIB, MIB, 2 * MIB + 1), None);
    }

    #[test]
    fn largest_picks_most_remaining() {
        assert_eq!(largest([0, 5, 9, 9, 1]), Some(2));
        assert_eq!(largest([0, 0]), None);
        assert_eq!(largest(Vec::<u64>::new()), None);
    }

    #[test]
    fn balanced_cut_gives_a_slow_owner_little() {
        let m = |x: f64| x * MIB as f64;
        // Equal speeds, no setup: about half.
        let cut = balanced_cut(0, 64 * MIB, m(20.0), m(20.0), 0.0, MIB, 512 << 10).unwrap();
        assert_eq!(cut, 32 * MIB);
        // Owner at a tenth of the thief's speed keeps about 1/11.
        let cut = balanced_cut(0, 55 * MIB, m(2.0), m(20.0), 0.0, MIB, 512 << 10).unwrap();
        assert!((4 * MIB..=5 * MIB).contains(&cut), "{cut}");
        // Setup time shifts work to the owner: 0.5 s at 20 MiB/s is 10 MiB the thief cannot do.
        let cut = balanced_cut(0, 128 * MIB, m(20.0), m(20.0), 0.5, MIB, 0).unwrap();
        assert_eq!(cut, 69 * MIB);
        // ... and a piece must be worth 4 setups of the thief's reading (40 MiB here).
        assert_eq!(
            balanced_cut(0, 64 * MIB, m(20.0), m(20.0), 0.5, MIB, 0),
            None
        );
        // A fast link with a slow setup: 100 MiB/s and 20 ms make 8 MiB the smallest piece.
        assert!(balanced_cut(0, 20 * MIB, m(100.0), m(100.0), 0.02, MIB, 0).is_some());
        assert_eq!(
            balanced_cut(0, 12 * MIB, m(100.0), m(100.0), 0.02, MIB, 0),
            None
        );
        // A stalled owner keeps only the margin.
        let cut = balanced_cut(MIB, 64 * MIB, 1.0, m(20.0), 0.01, MIB, 512 << 10).unwrap();
        assert_eq!(cut, MIB + (512 << 10));
        // The owner finishes before the thief would start: no cut.
        assert_eq!(
            balanced_cut(0, 4 * MIB, m(20.0), m(20.0), 1.0, MIB, 0),
            None
        );
        // The thief's part would be too small.
        assert_eq!(
            balanced_cut(0, 3 * MIB, m(20.0), m(20.0), 0.0, 2 * MIB, 0),
            None
        );
        assert_eq!(balanced_cut(0, 3 * MIB, 0.0, m(20.0), 0.0, MIB, 0), None);
    }

    #[test]
    fn takeover_only_for_a_clearly_slower_owner() {
        let m = |x: f64| x * MIB as f64;
        assert!(!worth_taking_over(2 * MIB, m(20.0), m(20.0), 0.01));
        assert!(!worth_taking_over(2 * MIB, m(15.0), m(20.0), 0.01));
        assert!(worth_taking_over(2 * MIB, m(2.0), m(20.0), 0.01));
        assert!(worth_taking_over(MIB, 0.0, m(20.0), 0.5), "stalled owner");
        // Setup dominates a tiny remainder: not worth a new transfer.
        assert!(!worth_taking_over(64 << 10, m(2.0), m(20.0), 0.5));
        assert!(!worth_taking_over(0, 0.0, m(20.0), 0.0));
        assert!(!worth_taking_over(MIB, 0.0, 0.0, 0.0));
    }

    proptest! {
        #[test]
        fn balanced_cut_balances_finish_times(
            pos in 0u64..(1 << 40), len in 1u64..(1 << 34),
            owner in 1.0f64..1e9, thief in 1.0f64..1e9, setup in 0.0f64..2.0,
            min in 1u64..(8 << 20), margin in 0u64..(4 << 20),
        ) {
            let end = pos + len;
            if let Some(cut) = balanced_cut(pos, end, owner, thief, setup, min, margin) {
                prop_assert!(cut >= pos + margin);
                prop_assert!(cut < end);
                prop_assert!(end - cut >= min);
                prop_assert!((end - cut) as f64 >= MIN_PIECE_SETUPS * setup * thief - 1.0);
                // Finish times agree up to the rounding (ALIGN) and the margin.
                let keep_ideal = (len as f64 + setup * thief) * owner / (owner + thief);
                let keep = (cut - pos) as f64;
                prop_assert!(keep <= keep_ideal.max(margin as f64) + 1.0);
                prop_assert!(keep + ALIGN as f64 + 1.0 >= keep_ideal.min(len as f64));
            }
        }

        #[test]
        fn takeover_never_between_equal_connections(rate in 1.0f64..1e10, len in 0u64..(1 << 40), setup in 0.0f64..5.0) {
            prop_assert!(!worth_taking_over(len, rate, rate, setup));
        }

        #[test]
        fn ranges_cover_file_exactly(size in 0u64..(1 << 42), n in 0usize..100, min in 1u64..(64 << 20)) {
            let r = initial_ranges(size, n, min);
            let mut at = 0;
            for range in &r {
                prop_assert_eq!(range.start, at);
                prop_assert!(range.end > range.start);
                at = range.end;
            }
            prop_assert_eq!(at, size);
            prop_assert!(r.len() <= n.clamp(1, MAX_CONNECTIONS));
            if r.len() > 1 {
                prop_assert!(r.iter().all(|x| x.end - x.start >= min));
                let lens: Vec<u64> = r.iter().map(|x| x.end - x.start).collect();
                prop_assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }

        #[test]
        fn split_is_inside_and_fair(pos in 0u64..(1 << 40), len in 0u64..(1 << 36), min in 1u64..(8 << 20), margin in 0u64..(4 << 20)) {
            let end = pos + len;
            if let Some(cut) = split_point(pos, end, min, margin) {
                prop_assert!(cut >= pos + margin);
                prop_assert!(cut < end);
                prop_assert!(end - cut >= min);
                // The thief never takes much more than half.
                prop_assert!(end - cut <= len / 2 + ALIGN + 1);
            } else {
                // Refused only when the upper half is really too small.
                prop_assert!(len / 2 < min + ALIGN || len < margin + min);
            }
        }
    }
}
