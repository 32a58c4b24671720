//! The live counters of one channel, bumped on its hot path, and the snapshot read from them.
//!
//! Owns what a send, a drop or a wait costs to count. It must never take a lock, allocate,
//! or grow on the hot path: every counter is a fixed atomic, and memory never depends on how
//! many messages flow.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU64, AtomicUsize};
use std::time::Duration;

use super::histogram::{HistogramSnapshot, WaitHistogram};

/// Keeps counters written by different threads on different cache lines, so senders and
/// receivers do not slow each other down by sharing one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub(crate) T);

/// Live counters of one channel.
///
/// Built so monitoring stays within a few percent of the bare queue:
/// - a send that enters without waiting costs one increment, on a cache line only senders
///   write; waits are recorded only for sends that actually waited, and the zero-wait
///   observations of the histogram are that first counter, so `sent` is never counted twice;
/// - receivers write nothing: `received` is derived when a snapshot is taken, as
///   `sent - length - evicted`, which is exact whenever the channel is quiet and never runs
///   ahead of the truth (nor backwards) while it is busy;
/// - senders do not read the queue length on every send: the channel schedules the next
///   length check for the send that could first reach a new high-water mark or the
///   warning (see [`next_length_check`](Self::next_length_check)).
#[derive(Debug, Default)]
pub struct ChannelMetrics {
    senders: CacheLine<SenderCounters>,
    high_water_mark: CacheLine<AtomicUsize>,
    overflow: CacheLine<OverflowCounters>,
    send_wait: WaitHistogram,
}

#[derive(Debug, Default)]
struct SenderCounters {
    sent_without_wait: AtomicU64,
    /// The `sent_without_wait` count at which the next send must look at the length.
    next_length_check: AtomicU64,
}

#[derive(Debug, Default)]
struct OverflowCounters {
    dropped_new: AtomicU64,
    evicted: AtomicU64,
    rejected: AtomicU64,
    blocked: AtomicU64,
    full_events: AtomicU64,
    /// The largest `received` reported so far, so reports never go backwards.
    received_reported: AtomicU64,
}

/// Writes one method a policy outcome calls to count itself: one atomic increment.
macro_rules! overflow_counter {
    ($($(#[$doc:meta])* $method:ident => $field:ident, $ordering:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $method(&self) {
                self.overflow.0.$field.fetch_add(1, $ordering);
            }
        )*
    };
}

impl ChannelMetrics {
    /// Every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message entered the channel without waiting. Returns how many have so far, the
    /// clock [`next_length_check`](Self::next_length_check) is scheduled on.
    #[inline]
    pub fn record_sent(&self) -> u64 {
        // AcqRel chains the senders' increments, so a sender that reads the length after its
        // own increment sees every message whose increment came before.
        self.senders.0.sent_without_wait.fetch_add(1, AcqRel) + 1
    }

    /// A message entered the channel after its sender waited `waited` for room.
    pub fn record_sent_after_wait(&self, waited: Duration) {
        self.send_wait.record(waited);
    }

    /// The count returned by [`record_sent`](Self::record_sent) at which the length must be
    /// looked at again; 0 means at the next send.
    #[inline]
    pub fn next_length_check(&self) -> u64 {
        self.senders.0.next_length_check.load(Relaxed)
    }

    /// Moves the next length check from `due` (what the caller read) to `next`, unless
    /// someone changed it meanwhile (a reset must win over a schedule computed before it).
    pub fn schedule_length_check(&self, due: u64, next: u64) {
        let _ = self
            .senders
            .0
            .next_length_check
            .compare_exchange(due, next, Relaxed, Relaxed);
    }

    /// Makes the next send look at the length (after a message entered some other way, or
    /// the warning re-armed).
    pub fn check_length_at_next_send(&self) {
        self.senders.0.next_length_check.store(0, Relaxed);
    }

    overflow_counter! {
        /// `drop`: the new message was discarded.
        record_dropped_new => dropped_new, Relaxed;
        /// `drop_oldest`: a queued message was discarded to make room.
        record_evicted => evicted, Release;
        /// A send gave up and handed its message back to the caller.
        record_rejected => rejected, Relaxed;
        /// A send started waiting for room.
        record_blocked => blocked, Relaxed;
        /// A sender found the channel full.
        record_full => full_events, Relaxed;
    }

    /// Raises the high-water mark to `length` if it is higher. Loads first so the common
    /// case (no new peak) never writes the shared cache line.
    #[inline]
    pub fn observe_length(&self, length: usize) {
        if length > self.high_water_mark.0.load(Relaxed) {
            self.high_water_mark.0.fetch_max(length, Relaxed);
        }
    }

    /// How many queued messages `drop_oldest` has discarded so far.
    pub fn evicted(&self) -> u64 {
        self.overflow.0.evicted.load(Acquire)
    }

    /// The most messages ever seen queued at once.
    pub fn high_water_mark(&self) -> usize {
        self.high_water_mark.0.load(Relaxed)
    }

    /// Every counter now, with `length` read from the queue. Each value (and every
    /// cumulative bucket) in a later snapshot is at least the earlier one.
    pub fn snapshot(&self, length: impl FnOnce() -> usize) -> MetricsSnapshot {
        // Order matters for the derived `received`: sent first, then length, then evicted,
        // so the difference can only fall short of the messages actually taken.
        let send_wait = self
            .send_wait
            .snapshot(|| self.senders.0.sent_without_wait.load(Acquire));
        let sent = send_wait.count();
        fence(SeqCst);
        let length = length();
        fence(SeqCst);
        let overflow = &self.overflow.0;
        let evicted = overflow.evicted.load(Acquire);
        let taken = sent.saturating_sub(length as u64).saturating_sub(evicted);
        let received = overflow
            .received_reported
            .fetch_max(taken, Relaxed)
            .max(taken);
        MetricsSnapshot {
            sent,
            received,
            dropped: overflow.dropped_new.load(Relaxed) + evicted,
            rejected: overflow.rejected.load(Relaxed),
            blocked: overflow.blocked.load(Relaxed),
            full_events: overflow.full_events.load(Relaxed),
            notices_suppressed: 0,
            high_water_mark: self.high_water_mark().max(length),
            length,
            send_wait,
        }
    }
}

/// Counter values read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Messages that entered the channel.
    pub sent: u64,
    /// Messages taken out by receivers.
    pub received: u64,
    /// Messages discarded by the overflow policy (new ones under `drop`, queued ones under
    /// `drop_oldest`).
    pub dropped: u64,
    /// Sends that gave up and handed their message back.
    pub rejected: u64,
    /// Sends that waited for room.
    pub blocked: u64,
    /// Times a sender found the channel full.
    pub full_events: u64,
    /// Saturated/recovered notices held back by damping; filled in by the channel, whose
    /// saturation watch counts them.
    pub notices_suppressed: u64,
    /// The most messages ever queued at once.
    pub high_water_mark: usize,
    /// Messages queued when the snapshot was taken.
    pub length: usize,
    /// How long the sends waited for room, one observation per message that entered.
    pub send_wait: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_counts_waited_and_unwaited_sends_once() {
        let metrics = ChannelMetrics::new();
        let _ = metrics.record_sent();
        let _ = metrics.record_sent();
        metrics.record_sent_after_wait(Duration::from_micros(150));
        let snap = metrics.snapshot(|| 0);
        assert_eq!(snap.sent, 3);
        assert_eq!(snap.send_wait.count(), 3);
        assert_eq!(snap.send_wait.zero_wait, 2);
        assert_eq!(snap.send_wait.sum_us, 150);
    }

    #[test]
    fn received_never_runs_backwards_while_messages_are_in_flight() {
        let metrics = ChannelMetrics::new();
        for _ in 0..5 {
            let _ = metrics.record_sent();
        }
        assert_eq!(metrics.snapshot(|| 1).received, 4);
        // A message pushed but not yet counted as sent makes the length look larger.
        assert_eq!(metrics.snapshot(|| 3).received, 4);
        assert_eq!(metrics.snapshot(|| 0).received, 5);
    }

    #[test]
    fn length_checks_are_scheduled_and_reset() {
        let metrics = ChannelMetrics::new();
        assert_eq!(metrics.next_length_check(), 0);
        metrics.schedule_length_check(0, 9);
        assert_eq!(metrics.next_length_check(), 9);
        metrics.schedule_length_check(0, 20); // stale: someone moved it since
        assert_eq!(metrics.next_length_check(), 9);
        metrics.check_length_at_next_send();
        assert_eq!(metrics.next_length_check(), 0);
    }

    #[test]
    fn high_water_mark_only_rises() {
        let metrics = ChannelMetrics::new();
        metrics.observe_length(5);
        metrics.observe_length(3);
        assert_eq!(metrics.snapshot(|| 0).high_water_mark, 5);
        metrics.observe_length(8);
        assert_eq!(metrics.snapshot(|| 0).high_water_mark, 8);
    }
}
