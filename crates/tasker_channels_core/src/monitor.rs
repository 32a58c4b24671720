//! Saturation watch: the WARN at `log_warning_threshold`, and notices for the event bus.
//!
//! Owns the per-channel armed/disarmed state, the one `tracing` WARN per crossing, and the
//! [`MonitorHook`] that hears saturation, recovery and every overflow. It must never block
//! a sender, never grow with message load, and never deliver a notice raised while a hook
//! is already running on the same thread (that is how an overflowing event-bus channel is
//! kept from notifying itself forever).
//!
//! # Hooks and recursion
//!
//! The event bus (docs/design.md §5) turns notices into `channel.saturated`, `channel.recovered` and
//! `channel.overflow` events and enqueues them on `shared.event_publisher`. That enqueue can
//! itself overflow and raise a notice. Two rules stop the loop:
//! - a hook must only ever *try* to send (never wait), so it cannot block the sender that
//!   triggered it;
//! - while a hook runs, notices raised on the same thread are logged and counted as usual
//!   but not handed to any hook.
//!
//! # Damping
//!
//! A channel hovering around the threshold crosses it constantly. At most one
//! saturated/recovered pair per channel goes out (WARN/INFO and hook alike) per
//! `notice_interval`: a pair is whole, so a saturation that went out always has its recovery
//! go out, and one that was held back has its recovery held back too. Held-back notices are
//! counted; the next notice that goes out carries the count (`suppressed`), and the channel's
//! stats keep the running total. The clock is read only at a crossing, never per message.
//!
//! A hook that holds a channel keeps that channel alive and the channel keeps its monitor
//! (and so the hook) alive: hold a [`WeakChannel`](crate::channel::WeakChannel) instead.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::channel_info::ChannelInfo;
use crate::metrics::{usage_percent, CacheLine};

/// How far (as a fraction of capacity) usage must fall below the threshold to re-arm.
pub const REARM_MARGIN: f64 = 0.10;

/// Receives monitor notices. Called on the sending or receiving thread, in the middle of a
/// channel operation: implementations must return quickly, must only try-send (never wait
/// for room), and must not panic.
pub trait MonitorHook: Send + Sync {
    /// Receives one notice; called on the sending or receiving thread.
    fn on_event(&self, event: MonitorEvent);
}

impl<F: Fn(MonitorEvent) + Send + Sync> MonitorHook for F {
    fn on_event(&self, event: MonitorEvent) {
        self(event)
    }
}

/// What a channel's monitor noticed.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorEvent {
    /// Usage reached the threshold (or a sender found the channel full) while armed.
    Saturated {
        /// The channel that crossed.
        channel: Arc<ChannelInfo>,
        /// Messages queued at the crossing.
        length: usize,
        /// `length` as a percentage of capacity.
        usage_percent: f64,
        /// The configured warning threshold (a fraction).
        threshold: f64,
        /// Saturated/recovered notices of this channel held back since the last one that went
        /// out (see the module docs on damping).
        suppressed: u64,
    },
    /// Usage fell below the threshold minus [`REARM_MARGIN`]; the next crossing warns again.
    Recovered {
        /// The channel that recovered.
        channel: Arc<ChannelInfo>,
        /// Messages queued when it recovered.
        length: usize,
        /// `length` as a percentage of capacity.
        usage_percent: f64,
        /// The configured warning threshold (a fraction).
        threshold: f64,
        /// As for `Saturated`.
        suppressed: u64,
    },
    /// A message was dropped or a send was rejected because the channel was full.
    Overflow {
        /// The channel that overflowed.
        channel: Arc<ChannelInfo>,
        /// Messages queued when it overflowed.
        length: usize,
        /// What became of the message.
        action: OverflowAction,
    },
}

impl MonitorEvent {
    /// The channel the notice is about.
    pub fn channel(&self) -> &ChannelInfo {
        match self {
            MonitorEvent::Saturated { channel, .. }
            | MonitorEvent::Recovered { channel, .. }
            | MonitorEvent::Overflow { channel, .. } => channel,
        }
    }

    /// Messages queued when the notice was raised.
    pub fn length(&self) -> usize {
        match *self {
            MonitorEvent::Saturated { length, .. }
            | MonitorEvent::Recovered { length, .. }
            | MonitorEvent::Overflow { length, .. } => length,
        }
    }

    /// The event-bus name of this notice.
    pub fn event_name(&self) -> &'static str {
        match self {
            MonitorEvent::Saturated { .. } => "channel.saturated",
            MonitorEvent::Recovered { .. } => "channel.recovered",
            MonitorEvent::Overflow { .. } => "channel.overflow",
        }
    }
}

/// What the overflow policy did with a message that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverflowAction {
    /// `drop`: the new message was discarded.
    DroppedNew,
    /// `drop_oldest`: the oldest queued message was discarded to make room.
    DroppedOldest,
    /// The send failed and the message went back to the caller (policy `error`, a `block`
    /// timeout, or an interrupted or closed send).
    Rejected,
}

impl OverflowAction {
    /// The name used in events and logs (`dropped_new`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowAction::DroppedNew => "dropped",
            OverflowAction::DroppedOldest => "dropped_oldest",
            OverflowAction::Rejected => "rejected",
        }
    }
}

/// Shared by every channel of a registry: the warning threshold, the notice interval and the
/// (late-bound) hook.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<MonitorShared>,
}

struct MonitorShared {
    threshold: f64,
    notice_interval: Duration,
    hook: OnceLock<Arc<dyn MonitorHook>>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("threshold", &self.shared.threshold)
            .field("notice_interval", &self.shared.notice_interval)
            .field("hook", &self.shared.hook.get().is_some())
            .finish()
    }
}

impl Monitor {
    /// A monitor warning at `threshold` (a fraction of capacity), letting at most one
    /// saturated/recovered pair per channel out per `notice_interval` (zero: every crossing).
    ///
    /// # Panics
    /// If `threshold` is not within (0, 1]; configuration validation rejects such values
    /// before they get here.
    pub fn new(threshold: f64, notice_interval: Duration) -> Self {
        assert!(
            threshold > 0.0 && threshold <= 1.0,
            "log_warning_threshold must be within (0, 1], got {threshold}"
        );
        Self {
            shared: Arc::new(MonitorShared {
                threshold,
                notice_interval,
                hook: OnceLock::new(),
            }),
        }
    }

    /// Sends every notice to `hook` as well as to the log.
    pub fn with_hook(self, hook: Arc<dyn MonitorHook>) -> Self {
        let _ = self.set_hook(hook);
        self
    }

    /// Installs the hook once, after the channels exist, so the event bus can be built on
    /// top of them. Returns the hook back if one is already installed.
    pub fn set_hook(&self, hook: Arc<dyn MonitorHook>) -> Result<(), Arc<dyn MonitorHook>> {
        self.shared.hook.set(hook)
    }

    /// The fraction of capacity at which channels warn.
    pub fn threshold(&self) -> f64 {
        self.shared.threshold
    }

    /// The least time between two saturation notices of one channel.
    pub fn notice_interval(&self) -> Duration {
        self.shared.notice_interval
    }

    pub(crate) fn watch(&self, capacity: usize) -> SaturationWatch {
        SaturationWatch::new(self.clone(), capacity)
    }

    fn deliver(&self, event: impl FnOnce() -> MonitorEvent) {
        let Some(hook) = self.shared.hook.get() else {
            return;
        };
        if IN_HOOK.get() {
            return;
        }
        IN_HOOK.set(true);
        let _reset = LeaveHook;
        hook.on_event(event());
    }
}

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_HOOK`] even if the hook panics.
struct LeaveHook;

impl Drop for LeaveHook {
    fn drop(&mut self) {
        IN_HOOK.set(false);
    }
}

/// One channel's saturation state. Armed means the next crossing warns.
#[derive(Debug)]
pub(crate) struct SaturationWatch {
    monitor: Monitor,
    armed: AtomicBool,
    /// Smallest length whose usage reaches the threshold.
    warn_length: usize,
    /// Lengths below this re-arm the warning.
    rearm_below: usize,
    /// While disarmed: how many more messages may be received before the length could fall
    /// below `rearm_below` (each receive removes one; sends only add). Lets receivers of a
    /// saturated channel skip reading the senders' side of the queue. Its own cache line,
    /// since only receivers write it.
    recv_headroom: CacheLine<AtomicIsize>,
    /// Touched only at crossings, so a lock costs nothing on the message path.
    damper: Mutex<Damper>,
    /// Running total of held-back notices, for stats.
    notices_suppressed: AtomicU64,
}

/// Which crossing is being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crossing {
    Saturated,
    Recovered,
}

/// Decides which crossings of one channel go out under `notice_interval`.
#[derive(Debug, Default)]
struct Damper {
    /// When the last saturated notice (or a lone recovered one) went out.
    window_start: Option<Instant>,
    /// The last saturation went out, so its recovery must go out too.
    pair_open: bool,
    /// Held back since the last notice that went out.
    pending: u64,
}

impl Damper {
    /// `Some(suppressed)` when this crossing's notice goes out, carrying the count of those
    /// held back before it; `None` when it is held back.
    fn decide(&mut self, crossing: Crossing, now: Instant, interval: Duration) -> Option<u64> {
        let window_over = match self.window_start {
            Some(start) => now.saturating_duration_since(start) >= interval,
            None => true,
        };
        let goes_out = match crossing {
            Crossing::Recovered if self.pair_open => true,
            _ => interval.is_zero() || window_over,
        };
        if !goes_out {
            self.pending += 1;
            if crossing == Crossing::Saturated {
                self.pair_open = false;
            }
            return None;
        }
        match crossing {
            Crossing::Saturated => {
                self.window_start = Some(now);
                self.pair_open = true;
            }
            Crossing::Recovered if self.pair_open => self.pair_open = false,
            // A recovery whose saturation was held back: it starts the next window itself.
            Crossing::Recovered => self.window_start = Some(now),
        }
        Some(std::mem::take(&mut self.pending))
    }
}

impl SaturationWatch {
    fn new(monitor: Monitor, capacity: usize) -> Self {
        let threshold = monitor.threshold();
        let warn_length = smallest_length_where(capacity, |ratio| ratio >= threshold);
        let rearm_ratio = threshold - REARM_MARGIN;
        let rearm_below = smallest_length_where(capacity, |ratio| ratio >= rearm_ratio)
            .clamp(1, warn_length.max(1));
        Self {
            monitor,
            armed: AtomicBool::new(true),
            warn_length,
            rearm_below,
            recv_headroom: CacheLine(AtomicIsize::new(0)),
            damper: Mutex::new(Damper::default()),
            notices_suppressed: AtomicU64::new(0),
        }
    }

    /// Saturated/recovered notices held back by damping since the channel was created.
    pub(crate) fn notices_suppressed(&self) -> u64 {
        self.notices_suppressed.load(Ordering::Relaxed)
    }

    /// Whether the notice of this crossing goes out, and with how many held back before it.
    fn admit(&self, crossing: Crossing) -> Option<u64> {
        let interval = self.monitor.notice_interval();
        if interval.is_zero() {
            return Some(0);
        }
        let decided = self
            .damper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(crossing, Instant::now(), interval);
        if decided.is_none() {
            self.notices_suppressed.fetch_add(1, Ordering::Relaxed);
        }
        decided
    }

    pub(crate) fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Called with the length right after a send changed it, and with the capacity when a
    /// sender found the channel full.
    #[inline]
    pub(crate) fn check_send(&self, channel: &Arc<ChannelInfo>, length: usize) {
        if length >= self.warn_length && self.armed.load(Ordering::Relaxed) {
            self.saturate(channel, length);
        }
    }

    /// Called after `count` messages were received; `length` is only read while disarmed
    /// and only once the length could have fallen far enough. Returns whether the warning
    /// re-armed (senders must then look at the length again soon).
    #[inline]
    pub(crate) fn check_recv(
        &self,
        channel: &Arc<ChannelInfo>,
        count: usize,
        length: impl FnOnce() -> usize,
    ) -> bool {
        // Acquire pairs with `saturate`, so a receiver that sees the watch disarmed also sees
        // the headroom reset that came before.
        !self.armed.load(Ordering::Acquire) && self.check_recovery(channel, count, length)
    }

    #[inline(never)]
    fn check_recovery(
        &self,
        channel: &Arc<ChannelInfo>,
        count: usize,
        length: impl FnOnce() -> usize,
    ) -> bool {
        let count = isize::try_from(count).unwrap_or(isize::MAX);
        let left = self
            .recv_headroom
            .0
            .fetch_sub(count, Ordering::Relaxed)
            .saturating_sub(count);
        if left >= 0 {
            return false;
        }
        let length = length();
        if self.maybe_recover(channel, length) {
            return true;
        }
        let headroom = isize::try_from(length.saturating_sub(self.rearm_below)).unwrap_or(0);
        // Only if no other receiver counted down meanwhile; if one did, it checks itself.
        let _ = self.recv_headroom.0.compare_exchange(
            left,
            headroom,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    /// The length at which the next warning fires, or `None` while disarmed.
    pub(crate) fn warn_length_if_armed(&self) -> Option<usize> {
        self.armed
            .load(Ordering::Relaxed)
            .then_some(self.warn_length)
    }

    pub(crate) fn overflow(
        &self,
        channel: &Arc<ChannelInfo>,
        length: usize,
        action: OverflowAction,
    ) {
        self.monitor.deliver(|| MonitorEvent::Overflow {
            channel: Arc::clone(channel),
            length,
            action,
        });
    }

    #[cold]
    fn saturate(&self, channel: &Arc<ChannelInfo>, length: usize) {
        // Receivers start counting down from zero, i.e. they look at the length next time.
        self.recv_headroom.0.store(0, Ordering::Relaxed);
        // Only the thread that flips armed -> disarmed speaks, so one crossing is one WARN.
        if !self.armed.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(suppressed) = self.admit(Crossing::Saturated) else {
            return;
        };
        let threshold = self.monitor.threshold();
        let usage_percent = usage_percent(length, channel.capacity);
        tracing::warn!(
            channel = %channel.name,
            component = %channel.component,
            capacity = channel.capacity,
            length,
            usage_percent,
            threshold,
            suppressed,
            "channel saturated"
        );
        self.monitor.deliver(|| MonitorEvent::Saturated {
            channel: Arc::clone(channel),
            length,
            usage_percent,
            threshold,
            suppressed,
        });
    }

    #[cold]
    fn maybe_recover(&self, channel: &Arc<ChannelInfo>, length: usize) -> bool {
        if length >= self.rearm_below
            || self
                .armed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        // Re-armed either way: damping decides what is said, never the state.
        let Some(suppressed) = self.admit(Crossing::Recovered) else {
            return true;
        };
        let threshold = self.monitor.threshold();
        let usage_percent = usage_percent(length, channel.capacity);
        tracing::info!(
            channel = %channel.name,
            component = %channel.component,
            capacity = channel.capacity,
            length,
            usage_percent,
            threshold,
            suppressed,
            "channel recovered"
        );
        self.monitor.deliver(|| MonitorEvent::Recovered {
            channel: Arc::clone(channel),
            length,
            usage_percent,
            threshold,
            suppressed,
        });
        true
    }
}

/// The smallest length in `0..=capacity` whose usage ratio satisfies `reaches`, found by
/// testing lengths rather than multiplying the threshold out (`0.7 * 100.0` is
/// `70.00000000000001`, which would move the warning to 71).
fn smallest_length_where(capacity: usize, reaches: impl Fn(f64) -> bool) -> usize {
    // Capacities are at most 2^24, so distinct ratios differ by far more than this slack,
    // which only absorbs rounding in thresholds such as `0.8 - 0.1 == 0.7000000000000001`.
    const SLACK: f64 = 1e-9;
    let ratio = |length: usize| length as f64 / capacity as f64 + SLACK;
    // `reaches` is monotonic in length, so a binary search over 0..=capacity finds it.
    let (mut low, mut high) = (0usize, capacity);
    if !reaches(ratio(high)) {
        return capacity + 1;
    }
    while low < high {
        let mid = low + (high - low) / 2;
        if reaches(ratio(mid)) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OverflowPolicy;
    use std::sync::Mutex;

    fn info(capacity: usize) -> Arc<ChannelInfo> {
        Arc::new(ChannelInfo::for_tests(
            OverflowPolicy::Block,
            capacity,
            None,
        ))
    }

    fn recording_monitor(threshold: f64) -> (Monitor, Arc<Mutex<Vec<MonitorEvent>>>) {
        damped_recording_monitor(threshold, Duration::ZERO)
    }

    fn damped_recording_monitor(
        threshold: f64,
        interval: Duration,
    ) -> (Monitor, Arc<Mutex<Vec<MonitorEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let monitor =
            Monitor::new(threshold, interval).with_hook(Arc::new(move |event: MonitorEvent| {
                sink.lock().unwrap().push(event);
            }));
        (monitor, seen)
    }

    fn names(seen: &Mutex<Vec<MonitorEvent>>) -> Vec<&'static str> {
        seen.lock()
            .unwrap()
            .iter()
            .map(MonitorEvent::event_name)
            .collect()
    }

    #[test]
    fn thresholds_are_computed_without_float_surprises() {
        let watch = Monitor::new(0.7, Duration::ZERO).watch(100);
        assert_eq!(watch.warn_length, 70);
        assert_eq!(watch.rearm_below, 60);
        let watch = Monitor::new(0.8, Duration::ZERO).watch(1000);
        assert_eq!((watch.warn_length, watch.rearm_below), (800, 700));
        let watch = Monitor::new(1.0, Duration::ZERO).watch(3);
        assert_eq!((watch.warn_length, watch.rearm_below), (3, 3));
        let watch = Monitor::new(0.05, Duration::ZERO).watch(10);
        assert_eq!((watch.warn_length, watch.rearm_below), (1, 1));
        let watch = Monitor::new(0.8, Duration::ZERO).watch(1);
        assert_eq!((watch.warn_length, watch.rearm_below), (1, 1));
    }

    #[test]
    fn one_notice_per_crossing_rearmed_only_below_the_margin() {
        let (monitor, seen) = recording_monitor(0.8);
        let watch = monitor.watch(10);
        let channel = info(10);
        for length in [8, 9, 10, 9, 8, 7] {
            watch.check_send(&channel, length);
            assert!(!watch.check_recv(&channel, 1, || length));
        }
        assert_eq!(names(&seen), ["channel.saturated"]);
        assert!(watch.check_recv(&channel, 1, || 6));
        assert_eq!(names(&seen), ["channel.saturated", "channel.recovered"]);
        watch.check_send(&channel, 7);
        watch.check_send(&channel, 8);
        assert_eq!(
            names(&seen),
            [
                "channel.saturated",
                "channel.recovered",
                "channel.saturated"
            ]
        );
    }

    fn suppressed_counts(seen: &Mutex<Vec<MonitorEvent>>) -> Vec<u64> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|event| match event {
                MonitorEvent::Saturated { suppressed, .. }
                | MonitorEvent::Recovered { suppressed, .. } => Some(*suppressed),
                MonitorEvent::Overflow { .. } => None,
            })
            .collect()
    }

    /// Crosses the threshold up and down `times` times (capacity 10, threshold 0.8).
    fn flap(watch: &SaturationWatch, channel: &Arc<ChannelInfo>, times: usize) {
        for _ in 0..times {
            watch.check_send(channel, 8);
            assert!(watch.check_recv(channel, 2, || 6));
        }
    }

    #[test]
    fn flapping_within_the_interval_yields_one_pair_and_counts_the_rest() {
        let (monitor, seen) = damped_recording_monitor(0.8, Duration::from_secs(3600));
        let watch = monitor.watch(10);
        let channel = info(10);
        flap(&watch, &channel, 50);
        assert_eq!(names(&seen), ["channel.saturated", "channel.recovered"]);
        assert_eq!(suppressed_counts(&seen), [0, 0]);
        assert_eq!(watch.notices_suppressed(), 98);
        // The state machine still runs underneath: the watch is armed again.
        assert_eq!(watch.warn_length_if_armed(), Some(8));
    }

    #[test]
    fn zero_interval_notifies_every_crossing() {
        let (monitor, seen) = damped_recording_monitor(0.8, Duration::ZERO);
        let watch = monitor.watch(10);
        let channel = info(10);
        flap(&watch, &channel, 50);
        assert_eq!(names(&seen).len(), 100);
        assert!(suppressed_counts(&seen).iter().all(|&n| n == 0));
        assert_eq!(watch.notices_suppressed(), 0);
    }

    #[test]
    fn the_first_notice_after_the_interval_carries_the_suppressed_count() {
        use Crossing::{Recovered, Saturated};
        let interval = Duration::from_millis(1000);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut damper = Damper::default();
        assert_eq!(damper.decide(Saturated, at(0), interval), Some(0));
        // A pair that went out is whole, even when its recovery comes late.
        assert_eq!(damper.decide(Recovered, at(10), interval), Some(0));
        for ms in [20, 30, 40, 50, 60] {
            assert_eq!(damper.decide(Saturated, at(ms), interval), None, "{ms}");
            assert_eq!(damper.decide(Recovered, at(ms + 5), interval), None, "{ms}");
        }
        assert_eq!(damper.decide(Saturated, at(999), interval), None);
        assert_eq!(damper.decide(Recovered, at(999), interval), None);
        assert_eq!(damper.decide(Saturated, at(1000), interval), Some(12));
        assert_eq!(damper.decide(Recovered, at(1200), interval), Some(0));
        // A saturation held back in the new window: its recovery after the window goes out
        // alone, with the count, and opens the next window.
        assert_eq!(damper.decide(Saturated, at(1500), interval), None);
        assert_eq!(damper.decide(Recovered, at(2100), interval), Some(1));
        assert_eq!(damper.decide(Saturated, at(2200), interval), None);
        assert_eq!(damper.decide(Recovered, at(2300), interval), None);
        assert_eq!(damper.decide(Saturated, at(3100), interval), Some(2));
    }

    #[test]
    fn notices_raised_inside_a_hook_are_not_delivered() {
        struct Echo {
            watch: OnceLock<SaturationWatch>,
            channel: Arc<ChannelInfo>,
            calls: Mutex<usize>,
        }
        impl MonitorHook for Echo {
            fn on_event(&self, _event: MonitorEvent) {
                *self.calls.lock().unwrap() += 1;
                // The bus enqueueing its own notice overflows again.
                let watch = self.watch.get().unwrap();
                watch.overflow(&self.channel, 10, OverflowAction::DroppedNew);
            }
        }
        let echo = Arc::new(Echo {
            watch: OnceLock::new(),
            channel: info(10),
            calls: Mutex::new(0),
        });
        let monitor = Monitor::new(0.8, Duration::ZERO).with_hook(echo.clone());
        let _ = echo.watch.set(monitor.watch(10));
        echo.watch
            .get()
            .unwrap()
            .overflow(&echo.channel, 10, OverflowAction::DroppedNew);
        assert_eq!(*echo.calls.lock().unwrap(), 1);
        // The guard is lifted afterwards.
        echo.watch
            .get()
            .unwrap()
            .overflow(&echo.channel, 10, OverflowAction::DroppedNew);
        assert_eq!(*echo.calls.lock().unwrap(), 2);
    }

    #[test]
    fn hook_can_be_installed_once_after_channels_exist() {
        let monitor = Monitor::new(0.5, Duration::ZERO);
        let watch = monitor.watch(4);
        let count = Arc::new(Mutex::new(0));
        let sink = Arc::clone(&count);
        assert!(monitor
            .set_hook(Arc::new(move |_: MonitorEvent| *sink.lock().unwrap() += 1))
            .is_ok());
        assert!(monitor.set_hook(Arc::new(|_: MonitorEvent| {})).is_err());
        watch.overflow(&info(4), 4, OverflowAction::Rejected);
        assert_eq!(*count.lock().unwrap(), 1);
    }

    #[test]
    #[should_panic(expected = "within (0, 1]")]
    fn threshold_outside_the_valid_range_is_refused() {
        let _ = Monitor::new(1.5, Duration::ZERO);
    }
}
