//! Bounded exponential backoff with jitter, for reconnecting.
//!
//! Owns the delay between connection attempts: doubling from a first delay up to a ceiling,
//! each delay drawn from its upper half so that many workers cut off by one server restart do
//! not all reconnect in the same millisecond. It must never sleep itself (callers await the
//! delay alongside their stop signal) and never grow past its ceiling.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The delays of one reconnect episode.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    ceiling: Duration,
    current: Duration,
    attempts: u32,
    seed: u64,
}

impl Backoff {
    /// Starts at `first` and never exceeds `ceiling` (which is raised to `first` if lower).
    pub(crate) fn new(first: Duration, ceiling: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self {
            first,
            ceiling: ceiling.max(first),
            current: first,
            attempts: 0,
            seed: seed | 1,
        }
    }

    /// How many delays this episode has handed out.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next delay: in `[d/2, d]` where `d` doubles each time up to the ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        let full = self.current;
        self.current = (self.current * 2).min(self.ceiling);
        let half = full / 2;
        let spread = full.saturating_sub(half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.random() % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Starts a new episode (after a successful connection).
    pub(crate) fn reset(&mut self) {
        self.current = self.first;
        self.attempts = 0;
    }

    fn random(&mut self) -> u64 {
        // xorshift64: jitter needs spread, not cryptographic quality.
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let delay = backoff.next_delay();
            ceilings.push(delay);
        }
        let expected_full = [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000];
        for (delay, full) in ceilings.iter().zip(expected_full) {
            let full = Duration::from_millis(full);
            assert!(
                *delay >= full / 2 && *delay <= full,
                "{delay:?} vs {full:?}"
            );
        }
        assert_eq!(backoff.attempts(), 10);
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_ceiling_below_the_first_delay_is_raised() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(1));
        for _ in 0..5 {
            assert!(backoff.next_delay() <= Duration::from_millis(50));
        }
    }
}
