//! The send-wait histogram: fixed buckets a sender bumps after waiting for room, and the
//! snapshot that turns them into counts, cumulative buckets and quantiles.
//!
//! Owns the bucket bounds and the quantile estimate. It must never allocate, lock or grow:
//! every bucket is a fixed atomic, whatever the number of waits.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

/// Upper bounds of the send-wait histogram buckets, in microseconds: a 1-2-5 series from
/// 10 µs to 50 s. Fixed so every channel's histogram is comparable and costs the same.
pub const SEND_WAIT_BUCKET_BOUNDS_US: [u64; 21] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
];

const BUCKETS: usize = SEND_WAIT_BUCKET_BOUNDS_US.len();

/// Waits of the sends that entered the channel after waiting; non-cumulative per bucket,
/// the last slot counting waits beyond the largest bound.
#[derive(Debug, Default)]
pub(crate) struct WaitHistogram {
    buckets: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl WaitHistogram {
    /// Counts one send that waited `waited` before it entered.
    pub(crate) fn record(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let bucket = SEND_WAIT_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].fetch_add(1, Release);
        self.sum_us.fetch_add(us, Relaxed);
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
    }

    /// The buckets now, with `zero_wait` (the sends that did not wait, counted elsewhere)
    /// read after them.
    pub(crate) fn snapshot(&self, zero_wait: impl FnOnce() -> u64) -> HistogramSnapshot {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Acquire));
        HistogramSnapshot {
            zero_wait: zero_wait(),
            buckets,
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
        }
    }
}

/// The send-wait histogram read at one moment: one observation per message that entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Sends that entered without waiting.
    pub zero_wait: u64,
    /// Sends that waited, per bucket of [`SEND_WAIT_BUCKET_BOUNDS_US`] (not cumulative);
    /// the last slot holds waits beyond the largest bound.
    pub buckets: [u64; BUCKETS + 1],
    /// Total wait of the sends that waited, in microseconds.
    pub sum_us: u64,
    /// The longest wait seen, in microseconds.
    pub max_us: u64,
}

impl HistogramSnapshot {
    /// Every observation: the sends that did not wait and those that did.
    pub fn count(&self) -> u64 {
        self.zero_wait + self.buckets.iter().sum::<u64>()
    }

    /// Cumulative counts for each finite bound, zero waits included in every one; the
    /// `+Inf` bucket is [`count`](Self::count).
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut running = self.zero_wait;
        std::array::from_fn(|i| {
            running += self.buckets[i];
            running
        })
    }

    /// [`sum_us`](Self::sum_us) in seconds, as Prometheus histograms report it.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// Approximate `q`-quantile (0..=1) of the waits in microseconds, interpolated within
    /// its bucket; 0 when at least that share of sends did not wait at all.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = (q.clamp(0.0, 1.0) * count as f64).ceil().max(1.0) as u64;
        if rank <= self.zero_wait {
            return 0;
        }
        let mut below = self.zero_wait;
        let mut lower_bound = 0u64;
        for (i, &in_bucket) in self.buckets.iter().enumerate() {
            if in_bucket > 0 && rank <= below + in_bucket {
                let upper_bound = SEND_WAIT_BUCKET_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(self.max_us)
                    .min(self.max_us.max(lower_bound));
                let share = (rank - below) as f64 / in_bucket as f64;
                let estimate =
                    lower_bound as f64 + share * upper_bound.saturating_sub(lower_bound) as f64;
                return estimate.round() as u64;
            }
            below += in_bucket;
            lower_bound = SEND_WAIT_BUCKET_BOUNDS_US
                .get(i)
                .copied()
                .unwrap_or(lower_bound);
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ChannelMetrics;

    #[test]
    fn waits_land_in_the_bucket_of_their_upper_bound() {
        let metrics = ChannelMetrics::new();
        metrics.record_sent_after_wait(Duration::from_micros(10));
        metrics.record_sent_after_wait(Duration::from_micros(11));
        metrics.record_sent_after_wait(Duration::from_secs(3600));
        let snap = metrics.snapshot(|| 0).send_wait;
        assert_eq!(snap.buckets[0], 1);
        assert_eq!(snap.buckets[1], 1);
        assert_eq!(snap.buckets[BUCKETS], 1);
        assert_eq!(snap.cumulative()[BUCKETS - 1], 2);
        assert_eq!(snap.max_us, 3_600_000_000);
    }

    #[test]
    fn quantiles_are_zero_when_most_sends_did_not_wait() {
        let metrics = ChannelMetrics::new();
        for _ in 0..99 {
            let _ = metrics.record_sent();
        }
        metrics.record_sent_after_wait(Duration::from_millis(3));
        let snap = metrics.snapshot(|| 0).send_wait;
        assert_eq!(snap.quantile_us(0.5), 0);
        assert_eq!(snap.quantile_us(0.99), 0);
        let p100 = snap.quantile_us(1.0);
        assert!((2_000..=5_000).contains(&p100), "{p100}");
    }

    #[test]
    fn quantiles_fall_within_their_bucket() {
        let metrics = ChannelMetrics::new();
        for _ in 0..50 {
            metrics.record_sent_after_wait(Duration::from_micros(300));
        }
        for _ in 0..50 {
            metrics.record_sent_after_wait(Duration::from_millis(30));
        }
        let snap = metrics.snapshot(|| 0).send_wait;
        let p50 = snap.quantile_us(0.5);
        let p99 = snap.quantile_us(0.99);
        assert!((200..=500).contains(&p50), "{p50}");
        assert!((20_000..=50_000).contains(&p99), "{p99}");
        assert_eq!(
            ChannelMetrics::new()
                .snapshot(|| 0)
                .send_wait
                .quantile_us(0.5),
            0
        );
    }

    #[test]
    fn waits_beyond_the_last_bound_report_the_largest_seen() {
        let metrics = ChannelMetrics::new();
        metrics.record_sent_after_wait(Duration::from_secs(70));
        assert_eq!(
            metrics.snapshot(|| 0).send_wait.quantile_us(0.99),
            70_000_000
        );
    }
}
