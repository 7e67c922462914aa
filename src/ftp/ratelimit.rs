//! `--limit-rate` and `--limit-rate-per-file`: a byte budget per second shared by connections.
//!
//! One [`RateLimit`] is shared by every connection it governs (all the files of a run for
//! `--limit-rate`, one file's connections for `--limit-rate-per-file`). A connection reports
//! each read after it happened ([`RateLimit::take`]) and sleeps until the bytes fit the rate:
//! the limiter keeps a "next free" instant and hands out time slots of `bytes / rate` in order
//! of arrival, allowing at most [`BURST`] of unused time to be caught up, so a connection that
//! waited for the server does not get a burst above the rate afterwards. TCP's flow control
//! then slows the server down: nothing is read that the limit does not allow.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Unused allowance that may be caught up at once.
pub const BURST: Duration = Duration::from_millis(100);

/// A shared limit of `rate` bytes per second.
#[derive(Debug)]
pub struct RateLimit {
    rate: u64,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A limit of `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Self {
        RateLimit {
            rate: rate.max(1),
            next: Mutex::new(None),
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How much to read at once under this limit: about 50 ms of it (at least 4 KiB), so that
    /// the sleeps stay short and the rate smooth.
    pub fn read_size(&self) -> u64 {
        (self.rate / 20).max(4096)
    }

    /// Accounts for `bytes` just read; returns when they fit the rate.
    pub async fn take(&self, bytes: u64) {
        let slot = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let wake = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Behind the schedule by more than the burst: forgive the rest.
            let floor = now.checked_sub(BURST).unwrap_or(now);
            let start = next.map_or(now, |n| n.max(floor));
            let end = start + slot;
            *next = Some(end);
            end
        };
        tokio::time::sleep_until(wake).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_reader_is_held_to_the_rate() {
        let l = RateLimit::new(1 << 20);
        let t0 = Instant::now();
        for _ in 0..40 {
            l.take(64 << 10).await; // 2.5 MiB in all
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((2.4..=2.6).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn readers_share_one_limit() {
        let l = std::sync::Arc::new(RateLimit::new(2 << 20));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..16 {
                    l.take(64 << 10).await; // 1 MiB each, 4 MiB in all
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((1.9..=2.1).contains(&took), "4 MiB at 2 MiB/s: {took}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_is_not_saved_up_beyond_the_burst() {
        let l = RateLimit::new(1 << 20);
        l.take(1 << 20).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t0 = Instant::now();
        l.take(1 << 20).await;
        let took = t0.elapsed().as_secs_f64();
        assert!(
            (0.85..=0.95).contains(&took),
            "only 100 ms caught up: {took}"
        );
        assert_eq!(RateLimit::new(0).rate(), 1);
        assert_eq!(RateLimit::new(100).read_size(), 4096);
        assert_eq!(RateLimit::new(20 << 20).read_size(), 1 << 20);
    }
}
