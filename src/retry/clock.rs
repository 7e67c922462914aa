//! Whether the machine slept: `CLOCK_BOOTTIME` counts the time spent suspended,
//! `CLOCK_MONOTONIC` (Rust's `Instant`, tokio's timers) does not. When their difference grows
//! by more than [`SLEPT_AT_LEAST`] between two looks, the machine was suspended for that long:
//! every connection is then presumed dead (the NAT entry or the Wi-Fi association is gone,
//! usually without a RST), and the download replaces them at once instead of waiting out
//! `--stall-timeout` of post-wake time.
//!
//! Test builds (debug assertions) honour `FTPSEG_TEST_SLEEP=AFTER:SLEPT` (seconds): `AFTER`
//! seconds after the watch starts, the clocks report a suspend of `SLEPT` seconds, once.

use std::time::{Duration, Instant};

/// A jump smaller than this is scheduling noise, not a suspend.
pub const SLEPT_AT_LEAST: Duration = Duration::from_secs(5);

/// Watches the two clocks; one per download run loop.
#[derive(Debug)]
pub struct SleepWatch {
    /// BOOTTIME − MONOTONIC at the last look.
    gap: Duration,
    started: Instant,
    /// The test hook: (after, slept), until it fired.
    simulated: Option<(Duration, Duration)>,
    /// The simulated suspends that fired, added to the gap.
    simulated_slept: Duration,
}

impl Default for SleepWatch {
    fn default() -> Self {
        SleepWatch::new()
    }
}

impl SleepWatch {
    pub fn new() -> SleepWatch {
        SleepWatch {
            gap: clock_gap(),
            started: Instant::now(),
            simulated: test_hook(),
            simulated_slept: Duration::ZERO,
        }
    }

    /// How long the machine slept since the last look, if it did.
    pub fn slept(&mut self) -> Option<Duration> {
        if let Some((after, slept)) = self.simulated
            && self.started.elapsed() >= after
        {
            self.simulated = None;
            self.simulated_slept += slept;
        }
        let gap = clock_gap() + self.simulated_slept;
        let grown = gap.saturating_sub(self.gap);
        self.gap = gap;
        (grown >= SLEPT_AT_LEAST).then_some(grown)
    }
}

/// BOOTTIME − MONOTONIC now.
fn clock_gap() -> Duration {
    let boot = read_clock(libc::CLOCK_BOOTTIME);
    let mono = read_clock(libc::CLOCK_MONOTONIC);
    boot.saturating_sub(mono)
}

fn read_clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux since 2.6.39.
    let r = unsafe { libc::clock_gettime(id, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `FTPSEG_TEST_SLEEP=AFTER:SLEPT`, in builds with debug assertions only.
fn test_hook() -> Option<(Duration, Duration)> {
    if !cfg!(debug_assertions) {
        return None;
    }
    parse_hook(&std::env::var("FTPSEG_TEST_SLEEP").ok()?)
}

fn parse_hook(v: &str) -> Option<(Duration, Duration)> {
    let (after, slept) = v.split_once(':')?;
    Some((
        Duration::from_secs_f64(after.trim().parse().ok()?),
        Duration::from_secs_f64(slept.trim().parse().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sleep_is_seen_between_two_quick_looks() {
        let mut w = SleepWatch {
            simulated: None,
            ..SleepWatch::new()
        };
        assert_eq!(w.slept(), None);
        assert_eq!(w.slept(), None);
    }

    #[test]
    fn a_simulated_suspend_is_seen_once() {
        let mut w = SleepWatch {
            simulated: Some((Duration::ZERO, Duration::from_secs(8000))),
            ..SleepWatch::new()
        };
        let slept = w.slept().unwrap();
        assert!(slept >= Duration::from_secs(8000), "{slept:?}");
        assert_eq!(w.slept(), None);
    }

    #[test]
    fn hook_reads_as_written() {
        assert_eq!(
            parse_hook("2:7980"),
            Some((Duration::from_secs(2), Duration::from_secs(7980)))
        );
        assert_eq!(parse_hook("x"), None);
    }
}
