//! The channel itself: its shared state, its handles, what can be read about it, and the
//! bookkeeping every operation shares (entering, taking, counting, waking).
//!
//! Everything here is non-blocking; waiting lives in `blocking` and `asynchronous`, and the
//! answer to a full channel in `overflow`.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use event_listener::EventListener;

use crate::block_queue::{BlockQueue, PopError, PushError};
use crate::channel_info::ChannelInfo;
use crate::config::ChannelSpec;
use crate::metrics::{CacheLine, ChannelMetrics, ChannelSample, ChannelStats, MetricsSnapshot};
use crate::monitor::{Monitor, SaturationWatch};
use crate::policy::OverflowPolicy;

use super::wake::{Waiting, WakeUp};
use super::{RecvError, SendError, SendOutcome};

pub(super) struct Shared<T> {
    pub(super) queue: BlockQueue<T>,
    /// Notified when room appears (and on close): senders wait on it. On its own cache
    /// line, like `items`, because waiters write the count while every send and receive
    /// reads the settings next to it.
    pub(super) room: CacheLine<WakeUp>,
    /// Notified when a message arrives (and on close): receivers wait on it.
    pub(super) items: CacheLine<WakeUp>,
    pub(super) info: Arc<ChannelInfo>,
    /// A copy of `info.overflow`, read on every send without following the pointer.
    pub(super) overflow: OverflowPolicy,
    pub(super) metrics: ChannelMetrics,
    pub(super) watch: SaturationWatch,
}

/// A bounded channel with its configured overflow policy, counters and saturation watch.
///
/// Cheap to clone (all clones are the same channel); any clone can send, receive or close.
pub struct MonitoredChannel<T> {
    pub(super) shared: Arc<Shared<T>>,
}

impl<T> Clone for MonitoredChannel<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for MonitoredChannel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitoredChannel")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("overflow", &self.overflow())
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A channel reference that does not keep the channel alive; for monitor hooks that feed a
/// channel whose monitor holds them (see [`crate::monitor`]).
pub struct WeakChannel<T> {
    shared: Weak<Shared<T>>,
}

impl<T> Clone for WeakChannel<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Weak::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for WeakChannel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakChannel").finish_non_exhaustive()
    }
}

impl<T> WeakChannel<T> {
    /// The channel, if it still exists.
    pub fn upgrade(&self) -> Option<MonitoredChannel<T>> {
        self.shared
            .upgrade()
            .map(|shared| MonitoredChannel { shared })
    }
}

impl<T> MonitoredChannel<T> {
    /// Creates the channel `spec` describes, watched by `monitor`.
    ///
    /// # Panics
    /// If `spec.capacity` is zero; configuration validation rejects that before it gets here.
    pub fn new(spec: &ChannelSpec, monitor: &Monitor) -> Self {
        Self::from_info(ChannelInfo::from(spec), monitor)
    }

    /// Creates a channel from its settings alone (tests, benches, ad-hoc channels).
    ///
    /// # Panics
    /// If `info.capacity` is zero.
    pub fn from_info(info: ChannelInfo, monitor: &Monitor) -> Self {
        assert!(info.capacity > 0, "channel {} has capacity 0", info.name);
        Self {
            shared: Arc::new(Shared {
                queue: BlockQueue::new(info.capacity),
                room: CacheLine(WakeUp::new()),
                items: CacheLine(WakeUp::new()),
                watch: monitor.watch(info.capacity),
                metrics: ChannelMetrics::new(),
                overflow: info.overflow,
                info: Arc::new(info),
            }),
        }
    }

    /// The channel's identity and settings.
    pub fn info(&self) -> &Arc<ChannelInfo> {
        &self.shared.info
    }

    /// The channel's name, e.g. `worker.command_processor`.
    pub fn name(&self) -> &str {
        &self.shared.info.name
    }

    /// The channel's component, e.g. `worker`.
    pub fn component(&self) -> &str {
        &self.shared.info.component
    }

    /// How many messages the channel holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.info.capacity
    }

    /// What a send does when the channel is full.
    pub fn overflow(&self) -> OverflowPolicy {
        self.shared.overflow
    }

    /// How long a `block` send waits for room; `None`: forever.
    pub fn send_timeout(&self) -> Option<Duration> {
        self.shared.info.send_timeout
    }

    /// The monitor watching this channel.
    pub fn monitor(&self) -> &Monitor {
        self.shared.watch.monitor()
    }

    /// Messages queued right now.
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.shared.queue.is_empty()
    }

    /// Whether the channel is at capacity right now.
    pub fn is_full(&self) -> bool {
        self.shared.queue.is_full()
    }

    /// Closes the channel and wakes every waiter: senders then fail with `Closed`, receivers
    /// get what is still queued and then `Closed`. Returns whether this call closed it.
    pub fn close(&self) -> bool {
        let closed_now = self.shared.queue.close();
        if closed_now {
            self.shared.room.0.notify_all();
            self.shared.items.0.notify_all();
        }
        closed_now
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.queue.is_closed()
    }

    /// A reference that does not keep the channel alive.
    pub fn downgrade(&self) -> WeakChannel<T> {
        WeakChannel {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// How many messages ever entered, counted as each took its place and so before any
    /// receiver could take it: whoever sees a message leave sees it counted here.
    pub fn entered(&self) -> u64 {
        self.shared.queue.pushed()
    }

    /// How many queued messages `drop_oldest` has discarded to make room, so far.
    pub fn evicted(&self) -> u64 {
        self.shared.metrics.evicted()
    }

    /// This channel's row of `stats`.
    pub fn stats(&self) -> ChannelStats {
        self.sample().stats
    }

    /// Stats plus the send-wait histogram, for the Prometheus renderer.
    pub fn sample(&self) -> ChannelSample {
        let info = &self.shared.info;
        ChannelSample::new(
            &info.name,
            &info.component,
            info.capacity,
            info.overflow,
            MetricsSnapshot {
                notices_suppressed: self.shared.watch.notices_suppressed(),
                ..self.shared.metrics.snapshot(|| self.len())
            },
        )
    }

    /// Takes a message if one is queued.
    #[inline(always)]
    pub fn try_recv(&self) -> Result<T, RecvError> {
        match self.shared.queue.pop() {
            Ok(msg) => {
                self.took(1);
                Ok(msg)
            }
            Err(PopError::Empty) => Err(RecvError::Empty),
            Err(PopError::Closed) => Err(RecvError::Closed),
        }
    }

    /// Takes up to `max` queued messages without waiting; `Empty` when there are none,
    /// `Closed` once the channel is closed and drained.
    pub fn try_recv_batch_into(&self, batch: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.take_up_to(batch, max)
    }

    /// Pushes and, on success, feeds the counters and wakes a receiver. `waiting_since` is
    /// when this send started waiting, if it did.
    #[inline]
    pub(super) fn try_enter(
        &self,
        msg: T,
        waiting_since: Option<Instant>,
    ) -> Result<(), PushError<T>> {
        let s = &*self.shared;
        s.queue.push(msg)?;
        match waiting_since {
            None => self.entered_without_wait(),
            Some(since) => {
                s.metrics.record_sent_after_wait(since.elapsed());
                // A send that waited found the channel full, which already set the high-water
                // mark to capacity and checked the warning; it only has to make the next
                // send re-check, since this message is not on the schedule's clock.
                s.metrics.check_length_at_next_send();
            }
        }
        s.items.0.notify(1);
        Ok(())
    }

    /// Counts a message that entered without waiting, and looks at the length only when
    /// it is due.
    #[inline]
    pub(super) fn entered_without_wait(&self) {
        let metrics = &self.shared.metrics;
        let due = metrics.next_length_check();
        let entered = metrics.record_sent();
        if entered >= due {
            self.check_length(entered, due);
        }
    }

    /// Reading the length means reading the receivers' side of the queue (a cache miss
    /// under load), so it is done only when it could matter. Every send that enters without
    /// waiting adds at most one message, and every other way in resets the schedule, so
    /// until `entered` grows by the headroom computed here the length cannot reach the next
    /// level that matters: a new high-water mark, or the warning while armed.
    #[inline(never)]
    fn check_length(&self, entered: u64, due: u64) {
        let s = &*self.shared;
        let length = s.queue.len();
        self.observe_length(length);
        let next_peak = s.metrics.high_water_mark().max(length) + 1;
        let next_level = s
            .watch
            .warn_length_if_armed()
            .map_or(next_peak, |warn| warn.min(next_peak));
        let headroom = next_level.saturating_sub(length).max(1) as u64;
        s.metrics.schedule_length_check(due, entered + headroom);
    }

    pub(super) fn observe_length(&self, length: usize) {
        let s = &*self.shared;
        s.metrics.observe_length(length);
        s.watch.check_send(&s.info, length);
    }

    pub(super) fn take_up_to(&self, batch: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        match self.shared.queue.pop_batch(batch, max) {
            Ok(taken) => {
                self.took(taken);
                Ok(taken)
            }
            Err(PopError::Empty) => Err(RecvError::Empty),
            Err(PopError::Closed) => Err(RecvError::Closed),
        }
    }

    /// Wakes as many waiting senders as messages were taken, and lets the watch re-arm.
    /// Nothing is counted here: `received` is derived from the other counters.
    #[inline]
    fn took(&self, count: usize) {
        let s = &*self.shared;
        s.room.0.notify(count);
        if s.watch.check_recv(&s.info, count, || s.queue.len()) {
            s.metrics.check_length_at_next_send();
        }
    }

    /// Enters if it can; otherwise listens for room and tries once more, so room made in
    /// between is not slept through. `Err` holds the send's final answer; `Ok` the
    /// listener to wait on (with the waiter count it holds) and the message back.
    #[allow(clippy::type_complexity)]
    pub(super) fn enter_or_listen(
        &self,
        msg: T,
        started: Instant,
        sliced: bool,
    ) -> Result<(Waiting<'_>, EventListener, T), Result<SendOutcome, SendError<T>>> {
        let (waiting, listener) = self.shared.room.0.listen();
        match self.try_enter(msg, Some(started)) {
            Ok(()) => Err(Ok(SendOutcome::Sent)),
            Err(PushError::Closed(msg)) => Err(Err(self.closed(msg, sliced))),
            Err(PushError::Full(msg)) => Ok((waiting, listener, msg)),
        }
    }

    /// Takes if it can; otherwise listens for the next message and takes once more, so one
    /// that arrived in between is not slept through. `Err` holds the take's final answer;
    /// `Ok` the listener to wait on (and the waiter count it holds).
    pub(super) fn take_or_listen<R>(
        &self,
        take: &mut impl FnMut() -> Result<R, RecvError>,
    ) -> Result<(Waiting<'_>, EventListener), Result<R, RecvError>> {
        match take() {
            Err(RecvError::Empty) => {}
            done => return Err(done),
        }
        let listening = self.shared.items.0.listen();
        match take() {
            Err(RecvError::Empty) => Ok(listening),
            done => Err(done),
        }
    }
}
