//! Throughput estimates the scheduler decides with: each reader's own rate samples
//! ([`RateProbe`]), the decay of a reader that gets nothing ([`RateMeter`]), and the running
//! averages kept in atomics as `f64` bits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::download::state::{ConnStat, Shared};

/// First guess of the time from asking for a range to its first byte, until measured.
pub(super) const SETUP_GUESS: f64 = 0.05;

/// Interval of a reader's own rate samples ([`RateProbe`]).
const RATE_SAMPLE: Duration = Duration::from_millis(100);

/// A running average kept in an `AtomicU64` as `f64` bits (0.0: none yet).
pub(super) fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

/// Moves the average in `a` a `weight` of the way towards `sample` (the first sample is taken
/// as it is). Racing updates may lose one sample: harmless for an estimate.
pub(super) fn blend_f64(a: &AtomicU64, sample: f64, weight: f64) {
    let old = load_f64(a);
    let new = if old > 0.0 {
        old + weight * (sample - old)
    } else {
        sample
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

/// The measured time from asking for a range to its first byte, or [`SETUP_GUESS`].
pub(super) fn setup_time(shared: &Shared) -> f64 {
    match load_f64(&shared.run.setup) {
        s if s > 0.0 => s,
        _ => SETUP_GUESS,
    }
}

/// A reader measures its own throughput over its reading time only: bytes per second from its
/// first byte on, a sample every [`RATE_SAMPLE`] and one for the rest when the transfer ends.
/// (Sampling connections from outside at fixed ticks misses fast transfers that begin and end
/// between two ticks, and counts setup time as slowness, so others would take a loaded
/// server's ranges over.)
pub(super) struct RateProbe {
    at: Instant,
    bytes: u64,
}

impl RateProbe {
    pub fn start(shared: &Shared, stat: &ConnStat, pos: u64) -> RateProbe {
        stat.sampled_at
            .store(shared.run.micros(), Ordering::Relaxed);
        RateProbe {
            at: Instant::now(),
            bytes: pos,
        }
    }

    /// Called after each read with the reader's position; `last`: the transfer ends here.
    #[inline]
    pub fn sample(&mut self, shared: &Shared, stat: &ConnStat, pos: u64, last: bool) {
        let dt = self.at.elapsed();
        if dt < RATE_SAMPLE && !(last && dt >= RATE_SAMPLE / 10) {
            return;
        }
        let rate = pos.saturating_sub(self.bytes) as f64 / dt.as_secs_f64();
        // A short last piece counts for less than a whole sample.
        let weight = 0.5 * (dt.as_secs_f64() / RATE_SAMPLE.as_secs_f64()).min(1.0);
        blend_f64(&stat.rate, rate.max(1.0), weight);
        *self = RateProbe::start(shared, stat, pos);
    }
}

/// Decays the rate of a connection that is reading but got nothing for a while (a stalled
/// server): every tick, a reader whose own last sample is older than two sample intervals
/// blends in its bytes since the last tick (half weight: a stalled connection's rate halves
/// every tick). Connections not reading keep their last rate.
pub(super) struct RateMeter {
    last: Vec<u64>,
    at: Instant,
}

impl RateMeter {
    pub fn new(shared: &Shared) -> Self {
        RateMeter {
            last: shared
                .conns
                .iter()
                .map(|c| c.bytes.load(Ordering::Relaxed))
                .collect(),
            at: Instant::now(),
        }
    }

    pub fn measure_rates(&mut self, shared: &Shared) {
        let dt = self.at.elapsed().as_secs_f64();
        if dt < 0.05 {
            return;
        }
        self.at = Instant::now();
        for (c, last) in shared.conns.iter().zip(self.last.iter_mut()) {
            let bytes = c.bytes.load(Ordering::Relaxed);
            let delta = bytes.saturating_sub(*last);
            *last = bytes;
            let reading = c.reading();
            let now = shared.run.micros();
            let quiet = now.saturating_sub(c.sampled_at.load(Ordering::Relaxed))
                >= 2 * RATE_SAMPLE.as_micros() as u64;
            if !reading || !quiet {
                continue;
            }
            c.sampled_at.store(now, Ordering::Relaxed);
            let sample = delta as f64 / dt;
            if sample > 0.0 || load_f64(&c.rate) > 0.0 {
                // Keep a measured rate positive: 0 means "not measured".
                blend_f64(&c.rate, sample.max(1.0), 0.5);
            }
        }
    }
}
