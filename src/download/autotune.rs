//! `-n auto`: how many connections to allow, decided from the throughput they reach.
//!
//! The download starts with [`START`] connections. After each step the tuner waits for the
//! new connections to get going (a settle time of a few setup latencies), measures the total
//! throughput over a window, and allows more connections only while the last step raised the
//! throughput by more than [`MIN_GAIN`]. It stops for good at the first step that did not, when
//! the server refuses a connection ("too many connections": its limit is reached), or at the
//! maximum. Steps add one connection while there are fewer than 4, then half as many again
//! (2, 3, 4, 6, 9, 13, 16): few steps to a large count, small ones where each connection
//! matters.
//!
//! Pure: time and byte counts in, decisions out, so every rule is unit-tested. The engine calls
//! [`AutoTuner::tick`] from its progress tick and lets idle workers start when the count grows.

/// Connections allowed at the start.
pub const START: usize = 2;
/// Most connections `-n auto` will use.
pub const MAX: usize = 16;
/// A step must raise the throughput by more than this fraction to be followed by another.
pub const MIN_GAIN: f64 = 0.05;
/// Length of one throughput measurement, in seconds.
pub const WINDOW: f64 = 0.6;

/// What a tick decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing new.
    Wait,
    /// Allow this many connections now.
    Grow(usize),
    /// Tuning is over: this many connections, and why.
    Settled { connections: usize, why: String },
}

/// The state of the search (see the module documentation).
#[derive(Clone, Debug)]
pub struct AutoTuner {
    allowed: usize,
    max: usize,
    /// When the current step started (seconds, the caller's clock).
    step_start: f64,
    /// Start of the measurement window: (time, total bytes then).
    window: Option<(f64, u64)>,
    /// Throughput measured before the last step (bytes/s).
    before: Option<f64>,
    done: bool,
}

impl AutoTuner {
    /// A tuner allowing `START` connections (fewer if `max` is smaller) from time `now`.
    pub fn new(max: usize, now: f64) -> Self {
        let max = max.max(1);
        AutoTuner {
            allowed: START.min(max),
            max,
            step_start: now,
            window: None,
            before: None,
            done: max <= START,
        }
    }

    /// Connections allowed now.
    pub fn allowed(&self) -> usize {
        self.allowed
    }

    /// One observation: the time, the total bytes fetched so far, the time from asking for a
    /// range to its first byte (seconds), whether the server refused a connection as one too
    /// many since the start, and whether enough is left to download to be worth more
    /// connections.
    pub fn tick(
        &mut self,
        now: f64,
        bytes: u64,
        setup: f64,
        refused: bool,
        worth_more: bool,
    ) -> Decision {
        if self.done {
            return Decision::Wait;
        }
        if refused {
            return self.settle("the server refused a connection as one too many".into());
        }
        if !worth_more {
            return self.settle("too little left to download to measure more".into());
        }
        let settle = (3.0 * setup).max(0.2);
        let Some((t0, b0)) = self.window else {
            if now - self.step_start >= settle {
                self.window = Some((now, bytes));
            }
            return Decision::Wait;
        };
        if now - t0 < WINDOW {
            return Decision::Wait;
        }
        let rate = bytes.saturating_sub(b0) as f64 / (now - t0);
        if let Some(before) = self.before
            && rate <= before * (1.0 + MIN_GAIN)
        {
            let gain = 100.0 * (rate / before.max(1e-9) - 1.0);
            return self.settle(format!(
                "the last step changed the throughput by {gain:+.0}%, not more than {:.0}%",
                MIN_GAIN * 100.0
            ));
        }
        if self.allowed >= self.max {
            return self.settle(format!("the most -n auto uses is {}", self.max));
        }
        self.before = Some(rate);
        self.allowed = (self.allowed + step(self.allowed)).min(self.max);
        self.step_start = now;
        self.window = None;
        Decision::Grow(self.allowed)
    }

    fn settle(&mut self, why: String) -> Decision {
        self.done = true;
        Decision::Settled {
            connections: self.allowed,
            why,
        }
    }
}

/// Connections added to `n` in one step.
fn step(n: usize) -> usize {
    if n < 4 { 1 } else { n / 2 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: f64 = 1048576.0;

    /// Drives a tuner against a server where `k` connections reach `rate(k)` bytes/s, in
    /// ticks of 0.2 s, for at most `secs` seconds; returns the decisions that were not Wait.
    fn simulate(
        max: usize,
        rate: impl Fn(usize) -> f64,
        refuse_above: usize,
        secs: f64,
    ) -> (AutoTuner, Vec<Decision>) {
        let mut t = AutoTuner::new(max, 0.0);
        let (mut now, mut bytes, mut out) = (0.0, 0.0, Vec::new());
        while now < secs {
            now += 0.2;
            bytes += rate(t.allowed()) * 0.2;
            let refused = t.allowed() > refuse_above;
            match t.tick(now, bytes as u64, 0.01, refused, true) {
                Decision::Wait => {}
                d => out.push(d),
            }
        }
        (t, out)
    }

    #[test]
    fn grows_while_each_step_pays_then_settles() {
        // 20 MiB/s per connection up to a 100 MiB/s link.
        let (t, d) = simulate(16, |k| (k as f64 * 20.0).min(100.0) * MIB, usize::MAX, 60.0);
        assert_eq!(t.allowed(), 9, "{d:?}");
        assert_eq!(
            d[..4],
            [
                Decision::Grow(3),
                Decision::Grow(4),
                Decision::Grow(6),
                Decision::Grow(9)
            ]
        );
        // 6 -> 9 gained nothing: settled at 9 (the connections stay; no more are added).
        assert!(
            matches!(&d[4], Decision::Settled { connections: 9, .. }),
            "{d:?}"
        );
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn a_capped_server_gets_the_maximum() {
        let (t, d) = simulate(16, |k| k as f64 * 10.0 * MIB, usize::MAX, 60.0);
        assert_eq!(t.allowed(), 16);
        assert!(matches!(
            d.last(),
            Some(Decision::Settled {
                connections: 16,
                ..
            })
        ));
    }

    #[test]
    fn a_refusal_stops_the_growth() {
        let (t, d) = simulate(16, |k| k as f64 * 10.0 * MIB, 3, 60.0);
        assert_eq!(t.allowed(), 4, "the step to 4 was refused: no further step");
        assert!(matches!(d.last(), Some(Decision::Settled { why, .. }) if why.contains("refused")));
    }

    #[test]
    fn one_connection_link_never_grows_past_the_first_step() {
        let (t, d) = simulate(16, |_| 50.0 * MIB, usize::MAX, 60.0);
        assert_eq!(t.allowed(), 3);
        assert_eq!(d.len(), 2, "{d:?}");
        let small = AutoTuner::new(1, 0.0);
        assert_eq!(small.allowed(), 1);
    }

    #[test]
    fn nothing_before_the_settle_time_and_a_full_window() {
        let mut t = AutoTuner::new(16, 0.0);
        assert_eq!(t.tick(0.1, 0, 0.5, false, true), Decision::Wait);
        // Settle is 3 x 0.5 s: the window opens at 1.5 s, and closes WINDOW (0.6 s) later.
        assert_eq!(t.tick(1.4, 0, 0.5, false, true), Decision::Wait);
        assert_eq!(t.tick(1.6, 100, 0.5, false, true), Decision::Wait);
        assert_eq!(t.tick(2.1, 200, 0.5, false, true), Decision::Wait);
        assert_eq!(t.tick(2.3, 300, 0.5, false, true), Decision::Grow(3));
        assert!(matches!(
            t.tick(2.9, 300, 0.5, false, false),
            Decision::Settled { connections: 3, .. }
        ));
        assert_eq!(t.tick(9.0, 900, 0.5, false, true), Decision::Wait);
    }

    proptest! {
        #[test]
        fn never_beyond_max_and_never_shrinks(max in 1usize..64, per in 1.0f64..100.0, cap in 1.0f64..2000.0) {
            let mut t = AutoTuner::new(max, 0.0);
            let (mut now, mut bytes, mut last) = (0.0, 0.0, t.allowed());
            for _ in 0..2000 {
                now += 0.2;
                bytes += (t.allowed() as f64 * per).min(cap) * MIB * 0.2;
                let _ = t.tick(now, bytes as u64, 0.02, false, true);
                prop_assert!(t.allowed() <= max);
                prop_assert!(t.allowed() >= last);
                last = t.allowed();
            }
        }
    }
}
