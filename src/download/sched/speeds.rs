//! What a free connection knows about the others' speeds when it looks for work, and when a
//! connection has read long enough to be judged slow.

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
    pub(super) fn rate(&self, worker: usize) -> Option<f64> {
        self.rates.get(worker).copied().filter(|r| *r > 0.0)
    }

    /// Whether `worker`'s rate was measured over its current transfer long enough to judge it
    /// slow: [`TAKEOVER_MIN_READ`] setups. A loaded server starts and pauses its connections
    /// unevenly; a rate of a few tenths of a second says little there, and a take-over costs
    /// a new transfer (and, without RANG, the bytes the server sends past the old one's stop).
    pub(super) fn judged(&self, worker: usize) -> bool {
        self.reading.get(worker).copied().unwrap_or(0.0) >= TAKEOVER_MIN_READ * self.setup
    }

    /// The middle of the measured rates: the guess for a connection not measured yet.
    pub(super) fn typical(&self) -> Option<f64> {
        let mut known: Vec<f64> = self.rates.iter().copied().filter(|r| *r > 0.0).collect();
        if known.is_empty() {
            return None;
        }
        known.sort_by(f64::total_cmp);
        Some(known[known.len() / 2])
    }
}

/// Setups' worth of reading after which a connection may be judged too slow and its range
/// taken over (see `Speeds::judged`). Stalled connections are taken over by
/// [`Speeds::stall`] whatever their state.
pub const TAKEOVER_MIN_READ: f64 = 4.0;
