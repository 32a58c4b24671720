//! Bounded, monitored channels that apply their overflow policy (docs/design.md §4).
//!
//! Owns the queue, its wake-ups, the policy decision on every send, and feeding the
//! channel's counters and saturation watch. It must never grow beyond the configured
//! capacity, never lose a message without counting it, and never wait in a way another
//! thread cannot interrupt.
//!
//! # Why a block queue + event-listener
//!
//! The usual channels each miss something this one must do:
//! - `drop_oldest` needs to displace the oldest message without the length ever passing
//!   capacity and hand it back to be counted ([`BlockQueue::force_push`]); async-channel,
//!   crossbeam and tokio mpsc cannot;
//! - memory must follow what is queued, not the capacity: array-backed bounded queues
//!   (concurrent-queue's, crossbeam's) allocate every slot up front, and the largest
//!   capacity allowed would cost hundreds of megabytes per empty channel;
//! - a `block` send that times out or is interrupted must hand its message back, and the
//!   wait must be stoppable by another thread (the Ruby binding's unblock function):
//!   crossbeam's `send_timeout` returns the message but cannot be interrupted, tokio's
//!   `blocking_send` can do neither;
//! - `close` must wake every waiter while receivers still drain what is queued, from either
//!   side of the channel, with no sender/receiver handle counting;
//! - the same channel is used from plain threads (blocking) and tokio tasks (async).
//!
//! A lock-free bounded queue that allocates in blocks as it fills ([`crate::block_queue`])
//! plus two events (room appeared, data appeared) gives all of it, with waits built on
//! [`crate::wait::block_on`] or `.await`. Every wait listens first and then re-checks the
//! queue before sleeping, so a wake-up between the check and the sleep is never lost.

use std::fmt;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};

use crate::block_queue::{BlockQueue, PopError, PushError};
use crate::config::ChannelSpec;
use crate::metrics::{CacheLine, ChannelMetrics, ChannelSample, ChannelStats, MetricsSnapshot};
use crate::monitor::{Monitor, OverflowAction, SaturationWatch};
use crate::policy::OverflowPolicy;
use crate::wait::{block_on, Interrupt, WaitStopped};

/// The fixed identity and settings of a channel, shared with errors and monitor notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Where the channel's table sits under `[mpsc_channels]`, e.g. `worker.command_processor`.
    pub name: String,
    /// The first segment of the name, e.g. `worker`.
    pub component: String,
    /// How many messages the channel holds at most.
    pub capacity: usize,
    /// What a send does when the channel is full.
    pub policy: OverflowPolicy,
    /// How long a `block` send waits for room; `None`: forever.
    pub send_timeout: Option<Duration>,
}

impl From<&ChannelSpec> for ChannelInfo {
    fn from(spec: &ChannelSpec) -> Self {
        Self {
            name: spec.name.clone(),
            component: spec.component.clone(),
            capacity: spec.capacity,
            policy: spec.overflow,
            send_timeout: spec.send_timeout,
        }
    }
}

/// What happened to a message a send accepted without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "under the `drop` policy the message may have been discarded"]
pub enum SendOutcome {
    /// The message is in the channel (under `drop_oldest`, possibly by displacing the oldest).
    Sent,
    /// `drop`: the channel was full and the message was discarded (and counted).
    Dropped,
}

impl SendOutcome {
    /// Whether the message is in the channel.
    pub fn is_sent(self) -> bool {
        self == SendOutcome::Sent
    }
}

/// Which way a send failed; see [`SendError::kind`] and [`MonitoredChannel::record_rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendErrorKind {
    /// The channel was full and the send could not wait.
    Full,
    /// The channel stayed full until the send's deadline.
    TimedOut,
    /// [`Interrupt::trigger`] stopped the wait for room.
    Interrupted,
    /// The channel is closed.
    Closed,
}

/// A failed send. Every variant hands the message back ([`SendError::into_inner`]) with the
/// channel it was meant for.
pub enum SendError<T> {
    /// The channel was full and the send could not wait: policy `error`, or
    /// [`SendWait::no_wait`].
    Full {
        /// The message, handed back.
        msg: T,
        /// The channel it was meant for.
        channel: Arc<ChannelInfo>,
    },
    /// The channel stayed full until the send's deadline.
    TimedOut {
        /// The message, handed back.
        msg: T,
        /// The channel it was meant for.
        channel: Arc<ChannelInfo>,
        /// How long the send waited for room.
        waited: Duration,
    },
    /// [`Interrupt::trigger`] stopped the wait for room.
    Interrupted {
        /// The message, handed back.
        msg: T,
        /// The channel it was meant for.
        channel: Arc<ChannelInfo>,
    },
    /// The channel is closed.
    Closed {
        /// The message, handed back.
        msg: T,
        /// The channel it was meant for.
        channel: Arc<ChannelInfo>,
    },
}

impl<T> SendError<T> {
    /// The message the send could not deliver.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full { msg, .. }
            | SendError::TimedOut { msg, .. }
            | SendError::Interrupted { msg, .. }
            | SendError::Closed { msg, .. } => msg,
        }
    }

    /// The message the send could not deliver, by reference.
    pub fn message(&self) -> &T {
        match self {
            SendError::Full { msg, .. }
            | SendError::TimedOut { msg, .. }
            | SendError::Interrupted { msg, .. }
            | SendError::Closed { msg, .. } => msg,
        }
    }

    /// The channel the message was meant for.
    pub fn channel(&self) -> &ChannelInfo {
        match self {
            SendError::Full { channel, .. }
            | SendError::TimedOut { channel, .. }
            | SendError::Interrupted { channel, .. }
            | SendError::Closed { channel, .. } => channel,
        }
    }

    /// Which way the send failed.
    pub fn kind(&self) -> SendErrorKind {
        match self {
            SendError::Full { .. } => SendErrorKind::Full,
            SendError::TimedOut { .. } => SendErrorKind::TimedOut,
            SendError::Interrupted { .. } => SendErrorKind::Interrupted,
            SendError::Closed { .. } => SendErrorKind::Closed,
        }
    }

    /// True when the channel was full: what Ruby reports as `Tasker::Backpressure`.
    pub fn is_backpressure(&self) -> bool {
        matches!(self.kind(), SendErrorKind::Full | SendErrorKind::TimedOut)
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ch = self.channel();
        match self {
            SendError::Full { .. } => write!(
                f,
                "channel {} is full (capacity {}, policy {})",
                ch.name, ch.capacity, ch.policy
            ),
            SendError::TimedOut { waited, .. } => write!(
                f,
                "channel {} stayed full for {waited:?} (capacity {}, policy {})",
                ch.name, ch.capacity, ch.policy
            ),
            SendError::Interrupted { .. } => {
                write!(f, "send to channel {} was interrupted", ch.name)
            }
            SendError::Closed { .. } => write!(f, "channel {} is closed", ch.name),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message is left out so errors stay printable for any `T`.
        f.debug_struct("SendError")
            .field("kind", &self.kind())
            .field("channel", &self.channel().name)
            .finish_non_exhaustive()
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why a receive returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RecvError {
    /// `try_recv`: nothing queued right now.
    #[error("channel is empty")]
    Empty,
    /// Nothing arrived before the deadline.
    #[error("timed out waiting for a message")]
    TimedOut,
    /// [`Interrupt::trigger`] stopped the wait.
    #[error("receive was interrupted")]
    Interrupted,
    /// The channel is closed and everything queued has been received.
    #[error("channel is closed and drained")]
    Closed,
}

/// What one logical send has been through, carried across the calls of a sliced wait, so
/// the send is counted as found-full and blocked once and its wait is measured from the
/// first slice.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendProgress {
    waiting_since: Option<Instant>,
    /// Set once the send has been counted as finding the channel full, so a first
    /// non-waiting try followed by waiting slices counts one full event, not two.
    found_full: bool,
}

impl SendProgress {
    /// A send that has not yet found the channel full.
    pub fn new() -> Self {
        Self::default()
    }

    /// When the send started waiting for room, if it has.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.waiting_since
    }
}

#[derive(Debug, Clone, Copy)]
enum Budget {
    /// The channel's own policy and `send_timeout`.
    Policy,
    /// Wait for room until the deadline (`None`: forever) whatever the policy, then fail.
    Until(Option<Instant>),
    /// Try once whatever the policy; fail with `Full`.
    NoWait,
}

/// How long a [`MonitoredChannel::send_with`] may wait for room, what can stop it, and
/// whether its failure is final.
///
/// ```
/// # use tasker_channels_core::channel::{SendWait, SendProgress};
/// # use tasker_channels_core::wait::Interrupt;
/// # use std::time::{Duration, Instant};
/// let interrupt = Interrupt::new();
/// let mut progress = SendProgress::new();
/// // One ≤100 ms slice of a longer wait, stoppable from another thread:
/// let wait = SendWait::until(Instant::now() + Duration::from_millis(100))
///     .interruptible(&interrupt)
///     .slice(&mut progress);
/// ```
#[derive(Debug)]
pub struct SendWait<'a> {
    budget: Budget,
    interrupt: Option<&'a Interrupt>,
    progress: Option<&'a mut SendProgress>,
}

impl<'a> SendWait<'a> {
    /// Apply the channel's policy, as [`MonitoredChannel::send`] does.
    pub fn policy() -> Self {
        Self {
            budget: Budget::Policy,
            interrupt: None,
            progress: None,
        }
    }

    /// Wait for room until `deadline`, whatever the policy, then fail with `TimedOut`
    /// (so an `error` channel can be asked to wait a little before giving up).
    pub fn until(deadline: Instant) -> Self {
        Self {
            budget: Budget::Until(Some(deadline)),
            ..Self::policy()
        }
    }

    /// Try once whatever the policy and fail with `Full` if there is no room: what a
    /// monitor hook uses, since it must never wait or displace.
    pub fn no_wait() -> Self {
        Self {
            budget: Budget::NoWait,
            ..Self::policy()
        }
    }

    /// Wait for room for as long as it takes, whatever the policy.
    pub fn forever() -> Self {
        Self {
            budget: Budget::Until(None),
            ..Self::policy()
        }
    }

    /// Let `interrupt` stop the wait with [`SendError::Interrupted`].
    pub fn interruptible(mut self, interrupt: &'a Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// Mark this call as one slice of a longer send. A failed slice is not counted as a
    /// rejection and notifies no one, because the caller will retry with the message it got
    /// back; when the caller finally gives up it must call
    /// [`MonitoredChannel::record_rejected`]. Under [`SendWait::policy`], a `block`
    /// channel's `send_timeout` runs from the first slice that waited.
    pub fn slice(mut self, progress: &'a mut SendProgress) -> Self {
        self.progress = Some(progress);
        self
    }
}

/// An event plus a count of who is waiting on it. event-listener takes a lock on every
/// notify, even with no listener; the count lets the other side skip that when no one
/// waits, which is almost always.
struct WakeUp {
    event: Event,
    waiting: AtomicUsize,
}

/// Counts one waiter for as long as it is listening; dropping it (also when an async wait
/// is abandoned) stops the count.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl WakeUp {
    fn new() -> Self {
        Self {
            event: Event::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Registers a waiter. The caller must re-check its condition after this and before
    /// sleeping: `listen` fences after registering, and [`notify`](Self::notify) fences
    /// before reading the count, so either the re-check sees the change or the notifier
    /// sees the waiter.
    fn listen(&self) -> (Waiting<'_>, EventListener) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        (Waiting(&self.waiting), self.event.listen())
    }

    /// Wakes up to `count` more waiters, if there are any.
    #[inline]
    fn notify(&self, count: usize) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.event.notify_additional(count);
        }
    }

    fn notify_all(&self) {
        self.event.notify(usize::MAX);
    }
}

struct Shared<T> {
    queue: BlockQueue<T>,
    /// Notified when room appears (and on close): senders wait on it. On its own cache
    /// line, like `items`, because waiters write the count while every send and receive
    /// reads the settings next to it.
    room: CacheLine<WakeUp>,
    /// Notified when a message arrives (and on close): receivers wait on it.
    items: CacheLine<WakeUp>,
    info: Arc<ChannelInfo>,
    /// A copy of `info.policy`, read on every send without following the pointer.
    policy: OverflowPolicy,
    metrics: ChannelMetrics,
    watch: SaturationWatch,
}

/// A bounded channel with its configured overflow policy, counters and saturation watch.
///
/// Cheap to clone (all clones are the same channel); any clone can send, receive or close.
pub struct MonitoredChannel<T> {
    shared: Arc<Shared<T>>,
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
            .field("policy", &self.policy())
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
                policy: info.policy,
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
    pub fn policy(&self) -> OverflowPolicy {
        self.shared.info.policy
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
            info.policy,
            MetricsSnapshot {
                notices_suppressed: self.shared.watch.notices_suppressed(),
                ..self.shared.metrics.snapshot(|| self.len())
            },
        )
    }

    /// Sends under the channel's policy:
    /// - `block`: waits for room up to `send_timeout` (forever when unset), then
    ///   [`SendError::TimedOut`];
    /// - `drop`: when full, discards `msg` and returns [`SendOutcome::Dropped`];
    /// - `drop_oldest`: when full, discards the oldest queued message and sends `msg`;
    /// - `error`: when full, [`SendError::Full`] at once.
    ///
    /// A `block` wait here cannot be interrupted; use [`send_with`](Self::send_with) for that.
    pub fn send(&self, msg: T) -> Result<SendOutcome, SendError<T>> {
        if self.shared.policy == OverflowPolicy::DropOldest {
            return self.send_displacing(msg, false);
        }
        // The common case (room available) stays small enough to inline into the caller.
        match self.try_enter(msg, None) {
            Ok(()) => Ok(SendOutcome::Sent),
            Err(PushError::Full(msg)) => {
                self.send_when_full(msg, Budget::Policy, None, &mut SendProgress::new(), false)
            }
            Err(PushError::Closed(msg)) => Err(self.closed(msg, false)),
        }
    }

    /// Sends with the wait the caller chooses (see [`SendWait`]).
    ///
    /// Counting: a message that enters is `sent`; one discarded by policy is `dropped`;
    /// a send that ends in an error is `rejected` — except a [`SendWait::slice`], whose
    /// caller records the final failure with [`record_rejected`](Self::record_rejected).
    /// A send that finds the channel full counts one `full_event`, and one `blocked` if it
    /// then waits, however many slices the wait spans.
    pub fn send_with(&self, msg: T, wait: SendWait<'_>) -> Result<SendOutcome, SendError<T>> {
        let SendWait {
            budget,
            interrupt,
            progress,
        } = wait;
        let sliced = progress.is_some();
        let mut own_progress = SendProgress::new();
        let progress = progress.unwrap_or(&mut own_progress);
        let s = &*self.shared;

        if matches!(budget, Budget::Policy) && s.info.policy == OverflowPolicy::DropOldest {
            return self.send_displacing(msg, sliced);
        }
        match self.try_enter(msg, progress.waiting_since) {
            Ok(()) => Ok(SendOutcome::Sent),
            Err(PushError::Full(msg)) => {
                self.send_when_full(msg, budget, interrupt, progress, sliced)
            }
            Err(PushError::Closed(msg)) => Err(self.closed(msg, sliced)),
        }
    }

    /// The policy's answer to a full channel: drop, reject, or wait for room.
    #[inline(never)]
    fn send_when_full(
        &self,
        msg: T,
        budget: Budget,
        interrupt: Option<&Interrupt>,
        progress: &mut SendProgress,
        sliced: bool,
    ) -> Result<SendOutcome, SendError<T>> {
        let s = &*self.shared;
        if !progress.found_full {
            self.found_full();
            progress.found_full = true;
        }
        let deadline = match (budget, s.info.policy) {
            (Budget::Until(deadline), _) => deadline,
            (Budget::Policy, OverflowPolicy::Block) => match s.info.send_timeout {
                None => None,
                Some(timeout) => {
                    let since = progress.waiting_since.unwrap_or_else(Instant::now);
                    Some(since + timeout)
                }
            },
            (Budget::Policy, OverflowPolicy::Drop) => {
                s.metrics.record_dropped_new();
                s.watch
                    .overflow(&s.info, s.info.capacity, OverflowAction::DroppedNew);
                drop(msg);
                return Ok(SendOutcome::Dropped);
            }
            (Budget::NoWait, _)
            | (Budget::Policy, OverflowPolicy::Error | OverflowPolicy::DropOldest) => {
                return Err(self.rejected_full(
                    SendError::Full {
                        msg,
                        channel: Arc::clone(&s.info),
                    },
                    sliced,
                ));
            }
        };
        self.wait_for_room(msg, deadline, interrupt, progress, sliced)
    }

    /// Counts the final failure of a sliced send (see [`SendWait::slice`]): `rejected`, and
    /// for `Full`/`TimedOut` an overflow notice to the monitor hook.
    pub fn record_rejected(&self, kind: SendErrorKind) {
        let s = &*self.shared;
        s.metrics.record_rejected();
        if matches!(kind, SendErrorKind::Full | SendErrorKind::TimedOut) {
            s.watch
                .overflow(&s.info, self.len(), OverflowAction::Rejected);
        }
    }

    /// Sends under the channel's policy from async code: a `block` send awaits room, up to
    /// `send_timeout` (measured with tokio's timer, so a channel with a timeout must be used
    /// inside a tokio runtime with time enabled). Other policies never wait. Dropping the
    /// future abandons the send (the message is dropped with it, and nothing is counted).
    pub async fn send_async(&self, msg: T) -> Result<SendOutcome, SendError<T>> {
        let info = &self.shared.info;
        if info.policy != OverflowPolicy::Block {
            return self.send(msg);
        }
        self.send_async_waiting(msg, |started| info.send_timeout.map(|t| started + t))
            .await
    }

    /// Awaits room for as long as it takes, whatever the policy: for forwarders that must
    /// never drop what they have already accepted.
    pub async fn send_async_forever(&self, msg: T) -> Result<SendOutcome, SendError<T>> {
        self.send_async_waiting(msg, |_| None).await
    }

    /// Awaits room until `deadline` (`None`: forever), whatever the policy, then fails with
    /// `TimedOut` (see [`send_async`](Self::send_async) for the timer requirement).
    pub async fn send_async_until(
        &self,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<SendOutcome, SendError<T>> {
        self.send_async_waiting(msg, |_| deadline).await
    }

    /// The deadline is computed from the moment the send first found the channel full, so
    /// a send that finds room never reads the clock.
    async fn send_async_waiting(
        &self,
        msg: T,
        deadline: impl FnOnce(Instant) -> Option<Instant>,
    ) -> Result<SendOutcome, SendError<T>> {
        let s = &*self.shared;
        let mut msg = match self.try_enter(msg, None) {
            Ok(()) => return Ok(SendOutcome::Sent),
            Err(PushError::Closed(msg)) => return Err(self.closed(msg, false)),
            Err(PushError::Full(msg)) => msg,
        };
        self.found_full();
        let started = Instant::now();
        let deadline = deadline(started);
        if deadline.is_some_and(|deadline| started >= deadline) {
            return self.last_try(msg, started, false);
        }
        s.metrics.record_blocked();
        let deadline = deadline.map(tokio::time::Instant::from_std);
        loop {
            let (_waiting, listener) = s.room.0.listen();
            msg = match self.try_enter(msg, Some(started)) {
                Ok(()) => return Ok(SendOutcome::Sent),
                Err(PushError::Closed(msg)) => return Err(self.closed(msg, false)),
                Err(PushError::Full(msg)) => msg,
            };
            match deadline {
                None => listener.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, listener).await.is_err() {
                        return self.last_try(msg, started, false);
                    }
                }
            }
        }
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

    /// Waits for a message until `deadline` (`None`: forever) unless `interrupt` stops it.
    /// After [`close`](Self::close) it still returns what is queued, then `Closed`.
    pub fn recv(
        &self,
        deadline: Option<Instant>,
        interrupt: Option<&Interrupt>,
    ) -> Result<T, RecvError> {
        match self.try_recv() {
            Err(RecvError::Empty) => self.wait_to_take(deadline, interrupt, || self.try_recv()),
            done => done,
        }
    }

    /// Waits for at least one message like [`recv`](Self::recv), then takes up to `max` in
    /// all without waiting again, so one wake-up delivers many. `max == 0` returns an empty
    /// batch at once.
    pub fn recv_batch(
        &self,
        max: usize,
        deadline: Option<Instant>,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<T>, RecvError> {
        let mut batch = Vec::new();
        self.recv_batch_into(&mut batch, max, deadline, interrupt)?;
        Ok(batch)
    }

    /// [`recv_batch`](Self::recv_batch) appending to a caller's buffer (which grows by at
    /// most `max`); returns how many were appended.
    pub fn recv_batch_into(
        &self,
        batch: &mut Vec<T>,
        max: usize,
        deadline: Option<Instant>,
        interrupt: Option<&Interrupt>,
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.wait_to_take(deadline, interrupt, || self.take_up_to(batch, max))
    }

    /// Takes up to `max` queued messages without waiting; `Empty` when there are none,
    /// `Closed` once the channel is closed and drained.
    pub fn try_recv_batch_into(&self, batch: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.take_up_to(batch, max)
    }

    /// Awaits a message; `Closed` once the channel is closed and drained.
    pub async fn recv_async(&self) -> Result<T, RecvError> {
        self.await_to_take(|| self.try_recv()).await
    }

    /// Awaits at least one message, then takes up to `max` in all without waiting again.
    pub async fn recv_batch_async(&self, max: usize) -> Result<Vec<T>, RecvError> {
        let mut batch = Vec::new();
        if max > 0 {
            self.await_to_take(|| self.take_up_to(&mut batch, max))
                .await?;
        }
        Ok(batch)
    }

    /// Pushes and, on success, feeds the counters and wakes a receiver. `waiting_since` is
    /// when this send started waiting, if it did.
    #[inline]
    fn try_enter(&self, msg: T, waiting_since: Option<Instant>) -> Result<(), PushError<T>> {
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
    fn entered_without_wait(&self) {
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

    fn observe_length(&self, length: usize) {
        let s = &*self.shared;
        s.metrics.observe_length(length);
        s.watch.check_send(&s.info, length);
    }

    fn send_displacing(&self, msg: T, sliced: bool) -> Result<SendOutcome, SendError<T>> {
        let s = &*self.shared;
        let mut displaced = 0;
        let entered = s.queue.force_push(msg, |oldest| {
            drop(oldest);
            s.metrics.record_evicted();
            displaced += 1;
        });
        match entered {
            Ok(()) if displaced == 0 => self.entered_without_wait(),
            // Displacing leaves the length unchanged, so the schedule stays valid.
            Ok(()) => {
                let _ = s.metrics.record_sent();
            }
            Err(_) => {}
        }
        // Usually one; more when other senders took the room a displacement made. A send
        // that met a close after displacing still displaced.
        for _ in 0..displaced {
            self.found_full();
            s.watch
                .overflow(&s.info, s.info.capacity, OverflowAction::DroppedOldest);
        }
        if let Err(msg) = entered {
            return Err(self.closed(msg, sliced));
        }
        s.items.0.notify(1);
        Ok(SendOutcome::Sent)
    }

    /// A sender found the channel full: counted, and a full channel always reaches the
    /// saturation watch even though its length did not change.
    fn found_full(&self) {
        let s = &*self.shared;
        s.metrics.record_full();
        self.observe_length(s.info.capacity);
    }

    fn wait_for_room(
        &self,
        mut msg: T,
        deadline: Option<Instant>,
        interrupt: Option<&Interrupt>,
        progress: &mut SendProgress,
        sliced: bool,
    ) -> Result<SendOutcome, SendError<T>> {
        let s = &*self.shared;
        let started = match progress.waiting_since {
            Some(since) => since,
            None => {
                let now = Instant::now();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    return self.last_try(msg, now, sliced);
                }
                s.metrics.record_blocked();
                progress.waiting_since = Some(now);
                now
            }
        };
        loop {
            let (_waiting, listener) = s.room.0.listen();
            msg = match self.try_enter(msg, Some(started)) {
                Ok(()) => return Ok(SendOutcome::Sent),
                Err(PushError::Closed(msg)) => return Err(self.closed(msg, sliced)),
                Err(PushError::Full(msg)) => msg,
            };
            match block_on(listener, deadline, interrupt) {
                Ok(()) => {}
                Err(WaitStopped::TimedOut) => return self.last_try(msg, started, sliced),
                Err(WaitStopped::Interrupted) => {
                    if !sliced {
                        s.metrics.record_rejected();
                    }
                    return Err(SendError::Interrupted {
                        msg,
                        channel: Arc::clone(&s.info),
                    });
                }
            }
        }
    }

    /// The deadline passed: room that appeared at the last moment still counts.
    fn last_try(
        &self,
        msg: T,
        started: Instant,
        sliced: bool,
    ) -> Result<SendOutcome, SendError<T>> {
        let s = &*self.shared;
        match self.try_enter(msg, Some(started)) {
            Ok(()) => Ok(SendOutcome::Sent),
            Err(PushError::Closed(msg)) => Err(self.closed(msg, sliced)),
            Err(PushError::Full(msg)) => Err(self.rejected_full(
                SendError::TimedOut {
                    msg,
                    channel: Arc::clone(&s.info),
                    waited: started.elapsed(),
                },
                sliced,
            )),
        }
    }

    fn rejected_full(&self, error: SendError<T>, sliced: bool) -> SendError<T> {
        if !sliced {
            self.record_rejected(error.kind());
        }
        error
    }

    fn closed(&self, msg: T, sliced: bool) -> SendError<T> {
        if !sliced {
            self.shared.metrics.record_rejected();
        }
        SendError::Closed {
            msg,
            channel: Arc::clone(&self.shared.info),
        }
    }

    fn take_up_to(&self, batch: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        let queue = &self.shared.queue;
        let mut taken = 0;
        while taken < max {
            match queue.pop() {
                Ok(msg) => {
                    if taken == 0 {
                        batch.reserve(queue.len().min(max - 1) + 1);
                    }
                    batch.push(msg);
                    taken += 1;
                }
                Err(PopError::Empty) if taken == 0 => return Err(RecvError::Empty),
                Err(PopError::Closed) if taken == 0 => return Err(RecvError::Closed),
                Err(_) => break,
            }
        }
        self.took(taken);
        Ok(taken)
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

    #[inline(never)]
    fn wait_to_take<R>(
        &self,
        deadline: Option<Instant>,
        interrupt: Option<&Interrupt>,
        mut take: impl FnMut() -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        loop {
            match take() {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            let (_waiting, listener) = self.shared.items.0.listen();
            match take() {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            match block_on(listener, deadline, interrupt) {
                Ok(()) => {}
                Err(WaitStopped::TimedOut) => {
                    return match take() {
                        Err(RecvError::Empty) => Err(RecvError::TimedOut),
                        done => done,
                    };
                }
                Err(WaitStopped::Interrupted) => return Err(RecvError::Interrupted),
            }
        }
    }

    async fn await_to_take<R>(
        &self,
        mut take: impl FnMut() -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        loop {
            match take() {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            let (_waiting, listener) = self.shared.items.0.listen();
            match take() {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorEvent;
    use std::sync::Mutex;
    use std::thread;

    fn channel_with(
        policy: OverflowPolicy,
        capacity: usize,
        send_timeout: Option<Duration>,
        monitor: &Monitor,
    ) -> MonitoredChannel<u32> {
        MonitoredChannel::from_info(
            ChannelInfo {
                name: "worker.command_processor".into(),
                component: "worker".into(),
                capacity,
                policy,
                send_timeout,
            },
            monitor,
        )
    }

    fn channel(policy: OverflowPolicy, capacity: usize) -> MonitoredChannel<u32> {
        channel_with(policy, capacity, None, &Monitor::new(0.8, Duration::ZERO))
    }

    fn fill(ch: &MonitoredChannel<u32>) {
        for i in 0..ch.capacity() as u32 {
            assert_eq!(ch.send(i).unwrap(), SendOutcome::Sent);
        }
    }

    fn wait_until(condition: impl Fn() -> bool) {
        while !condition() {
            thread::yield_now();
        }
    }

    fn recording_monitor() -> (Monitor, Arc<Mutex<Vec<MonitorEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let monitor =
            Monitor::new(0.8, Duration::ZERO).with_hook(Arc::new(move |event: MonitorEvent| {
                sink.lock().unwrap().push(event);
            }));
        (monitor, seen)
    }

    #[test]
    fn new_channel_reflects_its_spec() {
        let spec = ChannelSpec {
            name: "shared.ffi".into(),
            component: "shared".into(),
            capacity_key: "ruby_event_buffer_size".into(),
            capacity: 3,
            overflow: OverflowPolicy::Error,
            send_timeout: Some(Duration::from_millis(5)),
        };
        let ch: MonitoredChannel<()> =
            MonitoredChannel::new(&spec, &Monitor::new(0.8, Duration::ZERO));
        assert_eq!(ch.name(), "shared.ffi");
        assert_eq!(ch.component(), "shared");
        assert_eq!(ch.capacity(), 3);
        assert_eq!(ch.policy(), OverflowPolicy::Error);
        assert_eq!(ch.send_timeout(), Some(Duration::from_millis(5)));
        assert!(ch.is_empty() && !ch.is_full() && !ch.is_closed());
    }

    #[test]
    fn messages_come_out_in_order() {
        let ch = channel(OverflowPolicy::Block, 4);
        fill(&ch);
        assert!(ch.is_full());
        assert_eq!(ch.len(), 4);
        let got: Vec<u32> = (0..4).map(|_| ch.try_recv().unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(ch.try_recv(), Err(RecvError::Empty));
        let stats = ch.stats();
        assert_eq!(
            (stats.sent, stats.received, stats.high_water_mark),
            (4, 4, 4)
        );
    }

    #[test]
    fn drop_discards_the_new_message_and_counts_it() {
        let ch = channel(OverflowPolicy::Drop, 2);
        fill(&ch);
        assert_eq!(ch.send(99).unwrap(), SendOutcome::Dropped);
        assert_eq!(ch.try_recv(), Ok(0));
        assert_eq!(ch.try_recv(), Ok(1));
        let stats = ch.stats();
        assert_eq!((stats.sent, stats.dropped, stats.rejected), (2, 1, 0));
        assert_eq!(stats.full_events, 1);
    }

    #[test]
    fn drop_oldest_makes_room_by_discarding_the_oldest() {
        let ch = channel(OverflowPolicy::DropOldest, 2);
        fill(&ch);
        assert_eq!(ch.send(99).unwrap(), SendOutcome::Sent);
        assert_eq!(ch.try_recv(), Ok(1));
        assert_eq!(ch.try_recv(), Ok(99));
        let stats = ch.stats();
        assert_eq!((stats.sent, stats.dropped, stats.received), (3, 1, 2));
        assert_eq!(stats.full_events, 1);
    }

    #[test]
    fn error_fails_at_once_with_the_message_and_context() {
        let ch = channel(OverflowPolicy::Error, 1);
        fill(&ch);
        let err = ch.send(7).unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Full);
        assert!(err.is_backpressure());
        assert_eq!(err.channel().name, "worker.command_processor");
        assert_eq!(err.channel().capacity, 1);
        assert_eq!(err.channel().policy, OverflowPolicy::Error);
        assert_eq!(
            err.to_string(),
            "channel worker.command_processor is full (capacity 1, policy error)"
        );
        assert_eq!(err.into_inner(), 7);
        let stats = ch.stats();
        assert_eq!((stats.sent, stats.rejected, stats.blocked), (1, 1, 0));
    }

    #[test]
    fn block_with_timeout_hands_the_message_back() {
        let ch = channel_with(
            OverflowPolicy::Block,
            1,
            Some(Duration::from_millis(10)),
            &Monitor::new(0.8, Duration::ZERO),
        );
        fill(&ch);
        let err = ch.send(5).unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::TimedOut);
        assert!(
            matches!(err, SendError::TimedOut { waited, .. } if waited >= Duration::from_millis(10))
        );
        assert_eq!(err.into_inner(), 5);
        let stats = ch.stats();
        assert_eq!(
            (stats.rejected, stats.blocked, stats.full_events),
            (1, 1, 1)
        );
        assert_eq!(stats.sent, 1);
    }

    #[test]
    fn block_waits_for_room() {
        let ch = channel(OverflowPolicy::Block, 1);
        fill(&ch);
        let sender = {
            let ch = ch.clone();
            thread::spawn(move || ch.send(1))
        };
        wait_until(|| ch.stats().blocked == 1);
        assert_eq!(ch.recv(None, None), Ok(0));
        assert_eq!(sender.join().unwrap().unwrap(), SendOutcome::Sent);
        assert_eq!(ch.recv(None, None), Ok(1));
        let stats = ch.stats();
        assert_eq!((stats.sent, stats.received, stats.rejected), (2, 2, 0));
        assert_eq!(ch.sample().send_wait.count(), 2);
        assert_eq!(ch.sample().send_wait.zero_wait, 1);
    }

    #[test]
    fn explicit_wait_lets_an_error_channel_wait_for_room() {
        let ch = channel(OverflowPolicy::Error, 1);
        fill(&ch);
        let sender = {
            let ch = ch.clone();
            thread::spawn(move || ch.send_with(1, SendWait::forever()))
        };
        wait_until(|| ch.stats().blocked == 1);
        assert_eq!(ch.try_recv(), Ok(0));
        assert_eq!(sender.join().unwrap().unwrap(), SendOutcome::Sent);

        let err = ch
            .send_with(
                2,
                SendWait::until(Instant::now() + Duration::from_millis(5)),
            )
            .unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::TimedOut);
        assert_eq!(ch.stats().rejected, 1);
    }

    #[test]
    fn interrupt_wakes_a_blocked_send_and_returns_the_message() {
        let ch = channel(OverflowPolicy::Block, 1);
        fill(&ch);
        let interrupt = Arc::new(Interrupt::new());
        let sender = {
            let (ch, interrupt) = (ch.clone(), Arc::clone(&interrupt));
            thread::spawn(move || ch.send_with(9, SendWait::policy().interruptible(&interrupt)))
        };
        wait_until(|| ch.stats().blocked == 1);
        interrupt.trigger();
        let err = sender.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Interrupted);
        assert_eq!(err.into_inner(), 9);
        assert_eq!(ch.stats().rejected, 1);
        assert_eq!(ch.len(), 1);
    }

    #[test]
    fn interrupt_wakes_a_blocked_recv() {
        let ch = channel(OverflowPolicy::Block, 1);
        let interrupt = Arc::new(Interrupt::new());
        let receiver = {
            let (ch, interrupt) = (ch.clone(), Arc::clone(&interrupt));
            thread::spawn(move || ch.recv(None, Some(&interrupt)))
        };
        interrupt.trigger();
        assert_eq!(receiver.join().unwrap(), Err(RecvError::Interrupted));
    }

    #[test]
    fn recv_times_out_when_nothing_arrives() {
        let ch = channel(OverflowPolicy::Block, 1);
        let deadline = Instant::now() + Duration::from_millis(5);
        assert_eq!(ch.recv(Some(deadline), None), Err(RecvError::TimedOut));
        assert_eq!(
            ch.recv_batch(3, Some(Instant::now()), None),
            Err(RecvError::TimedOut)
        );
    }

    #[test]
    fn close_wakes_waiting_senders_and_receivers() {
        let full = channel(OverflowPolicy::Block, 1);
        fill(&full);
        let sender = {
            let ch = full.clone();
            thread::spawn(move || ch.send(1))
        };
        let empty = channel(OverflowPolicy::Block, 1);
        let receiver = {
            let ch = empty.clone();
            thread::spawn(move || ch.recv(None, None))
        };
        wait_until(|| full.stats().blocked == 1);
        assert!(full.close());
        assert!(!full.close(), "close is idempotent");
        empty.close();
        let err = sender.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Closed);
        assert_eq!(err.into_inner(), 1);
        assert_eq!(receiver.join().unwrap(), Err(RecvError::Closed));
    }

    #[test]
    fn closed_channel_refuses_sends_and_drains_to_receivers() {
        let ch = channel(OverflowPolicy::DropOldest, 3);
        assert!(ch.send(1).unwrap().is_sent());
        assert!(ch.send(2).unwrap().is_sent());
        ch.close();
        assert!(ch.is_closed());
        assert_eq!(ch.send(3).unwrap_err().kind(), SendErrorKind::Closed);
        assert_eq!(ch.recv(None, None), Ok(1));
        assert_eq!(ch.recv_batch(10, None, None), Ok(vec![2]));
        assert_eq!(ch.recv(None, None), Err(RecvError::Closed));
        assert_eq!(ch.try_recv(), Err(RecvError::Closed));
        assert_eq!(ch.stats().rejected, 1);
    }

    #[test]
    fn recv_batch_takes_up_to_max_and_wakes_senders() {
        let ch = channel(OverflowPolicy::Block, 2);
        fill(&ch);
        let senders: Vec<_> = (10..12)
            .map(|n| {
                let ch = ch.clone();
                thread::spawn(move || ch.send(n))
            })
            .collect();
        wait_until(|| ch.stats().blocked == 2);
        let mut got = ch.recv_batch(5, None, None).unwrap();
        // A woken sender may slip its message into the same batch; the queued ones come first.
        assert_eq!(got[..2], [0, 1]);
        for sender in senders {
            assert_eq!(sender.join().unwrap().unwrap(), SendOutcome::Sent);
        }
        while got.len() < 4 {
            let before = got.len();
            assert_eq!(ch.recv_batch_into(&mut got, 1, None, None), Ok(1));
            assert_eq!(got.len(), before + 1);
        }
        got[2..].sort_unstable();
        assert_eq!(got, [0, 1, 10, 11]);
        assert_eq!(ch.recv_batch(0, None, None), Ok(vec![]));
        assert_eq!(ch.try_recv(), Err(RecvError::Empty));
        assert_eq!(ch.stats().received, 4);
    }

    #[test]
    fn sliced_wait_counts_one_send_once() {
        let (monitor, seen) = recording_monitor();
        let ch = channel_with(OverflowPolicy::Error, 1, None, &monitor);
        fill(&ch);
        let mut progress = SendProgress::new();
        let mut msg = 5;
        for _ in 0..3 {
            let slice_end = Instant::now() + Duration::from_millis(2);
            let err = ch
                .send_with(msg, SendWait::until(slice_end).slice(&mut progress))
                .unwrap_err();
            assert_eq!(err.kind(), SendErrorKind::TimedOut);
            msg = err.into_inner();
        }
        let stats = ch.stats();
        assert_eq!(
            (stats.rejected, stats.blocked, stats.full_events),
            (0, 1, 1)
        );
        assert!(progress.waiting_since().is_some());
        let overflows = |seen: &Mutex<Vec<MonitorEvent>>| {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, MonitorEvent::Overflow { .. }))
                .count()
        };
        assert_eq!(overflows(&seen), 0);

        ch.record_rejected(SendErrorKind::TimedOut);
        assert_eq!(ch.stats().rejected, 1);
        assert_eq!(overflows(&seen), 1);

        // A later slice that finds room records the wait from the first slice.
        assert_eq!(ch.try_recv(), Ok(0));
        let slice_end = Instant::now() + Duration::from_millis(2);
        assert_eq!(
            ch.send_with(msg, SendWait::until(slice_end).slice(&mut progress))
                .unwrap(),
            SendOutcome::Sent
        );
        let wait = ch.sample().send_wait;
        assert_eq!((wait.zero_wait, wait.count()), (1, 2));
        assert!(wait.sum_us >= 6_000, "{}", wait.sum_us);
    }

    #[test]
    fn scheduled_length_checks_never_miss_a_peak_or_a_crossing() {
        let (monitor, seen) = recording_monitor();
        // Threshold 0.8 of 50: warns at 40, re-arms below 35.
        let ch = channel_with(OverflowPolicy::Error, 50, None, &monitor);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next_random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 100
        };
        let (mut peak, mut armed, mut expected) = (0, true, Vec::new());
        for i in 0..50_000 {
            // Drift up and down so the length sweeps the whole range many times.
            let send_bias = if (i / 2_000) % 2 == 0 { 60 } else { 40 };
            if next_random() < send_bias {
                if ch.len() == ch.capacity() {
                    continue;
                }
                assert!(ch.send(i).unwrap().is_sent());
                peak = peak.max(ch.len());
                if armed && ch.len() >= 40 {
                    expected.push("channel.saturated");
                    armed = false;
                }
            } else if ch.try_recv().is_ok() && !armed && ch.len() < 35 {
                expected.push("channel.recovered");
                armed = true;
            }
        }
        assert!(expected.len() > 4, "the walk should cross several times");
        let names: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(MonitorEvent::event_name)
            .collect();
        assert_eq!(names, expected);
        assert_eq!(ch.stats().high_water_mark, peak);
        assert_eq!(ch.stats().full_events, 0);
    }

    #[test]
    fn every_overflow_reaches_the_hook() {
        let (monitor, seen) = recording_monitor();
        let drop = channel_with(OverflowPolicy::Drop, 1, None, &monitor);
        let oldest = channel_with(OverflowPolicy::DropOldest, 1, None, &monitor);
        let error = channel_with(OverflowPolicy::Error, 1, None, &monitor);
        for ch in [&drop, &oldest, &error] {
            fill(ch);
            let _ = ch.send(1);
        }
        let actions: Vec<OverflowAction> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                MonitorEvent::Overflow { action, .. } => Some(*action),
                _ => None,
            })
            .collect();
        assert_eq!(
            actions,
            [
                OverflowAction::DroppedNew,
                OverflowAction::DroppedOldest,
                OverflowAction::Rejected
            ]
        );
    }

    #[test]
    fn a_sender_finding_the_channel_full_raises_saturation() {
        let (monitor, seen) = recording_monitor();
        let ch = channel_with(OverflowPolicy::Error, 2, None, &monitor);
        // Fill behind the watch's back, so no send ever reported a length change.
        ch.shared.queue.push(1).unwrap();
        ch.shared.queue.push(2).unwrap();
        assert!(seen.lock().unwrap().is_empty());
        let _ = ch.send(3);
        let _ = ch.send(4);
        let names: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(MonitorEvent::event_name)
            .collect();
        assert_eq!(
            names,
            ["channel.saturated", "channel.overflow", "channel.overflow"]
        );
        assert_eq!(ch.stats().high_water_mark, 2);
    }

    #[test]
    fn saturation_warns_once_per_crossing_and_rearms_below_the_margin() {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || CaptureWriter(Arc::clone(&buffer))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let warnings = || {
            String::from_utf8(buffer.lock().unwrap().clone())
                .unwrap()
                .lines()
                .filter(|l| l.contains("WARN") && l.contains("channel saturated"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        tracing::subscriber::with_default(subscriber, || {
            // Threshold 0.8 of 10: warns at 8, re-arms below 7.
            let ch = channel(OverflowPolicy::Block, 10);
            for i in 0..10 {
                assert!(ch.send(i).unwrap().is_sent());
            }
            assert_eq!(warnings().len(), 1);
            for _ in 0..3 {
                ch.try_recv().unwrap(); // down to 7: still not re-armed
            }
            assert!(ch.send(0).unwrap().is_sent());
            assert_eq!(warnings().len(), 1);
            ch.try_recv().unwrap();
            ch.try_recv().unwrap(); // 6 < 7: re-armed
            assert!(ch.send(0).unwrap().is_sent()); // 7
            assert_eq!(warnings().len(), 1);
            assert!(ch.send(0).unwrap().is_sent()); // 8: second crossing
            assert_eq!(warnings().len(), 2);
        });
        let first = &warnings()[0];
        for field in [
            "channel=worker.command_processor",
            "component=worker",
            "capacity=10",
            "length=8",
            "usage_percent=80",
            "threshold=0.8",
        ] {
            assert!(first.contains(field), "{field} missing from {first}");
        }
    }

    struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for CaptureWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn channels_and_their_futures_cross_threads() {
        fn shared_across_threads<X: Send + Sync>(_: &X) {}
        fn movable_to_a_task<X: Send>(_: &X) {}
        let ch = channel(OverflowPolicy::Block, 1);
        shared_across_threads(&ch);
        movable_to_a_task(&ch.send_async(1));
        movable_to_a_task(&ch.send_async_forever(1));
        movable_to_a_task(&ch.recv_async());
        movable_to_a_task(&ch.recv_batch_async(4));
    }

    #[test]
    fn weak_channel_does_not_keep_the_channel_alive() {
        let ch = channel(OverflowPolicy::Block, 1);
        let weak = ch.downgrade();
        assert!(weak.upgrade().is_some());
        drop(ch);
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_send_and_recv_move_every_message() {
        let ch: MonitoredChannel<u32> = channel(OverflowPolicy::Block, 4);
        let producer = {
            let ch = ch.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    assert_eq!(ch.send_async(i).await.unwrap(), SendOutcome::Sent);
                }
                ch.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match ch.recv_batch_async(16).await {
                Ok(batch) => got.extend(batch),
                Err(RecvError::Closed) => break,
                Err(other) => panic!("{other}"),
            }
        }
        producer.await.unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        let stats = ch.stats();
        assert_eq!(
            (stats.sent, stats.received, stats.rejected),
            (1000, 1000, 0)
        );
        assert_eq!(ch.recv_async().await, Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn async_block_send_times_out_with_the_message() {
        let ch = channel_with(
            OverflowPolicy::Block,
            1,
            Some(Duration::from_millis(10)),
            &Monitor::new(0.8, Duration::ZERO),
        );
        assert!(ch.send_async(1).await.unwrap().is_sent());
        let err = ch.send_async(2).await.unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::TimedOut);
        assert_eq!(err.into_inner(), 2);
        assert_eq!(ch.stats().rejected, 1);
        assert_eq!(ch.recv_async().await, Ok(1));
    }

    #[tokio::test]
    async fn async_send_applies_non_blocking_policies() {
        let ch = channel(OverflowPolicy::Drop, 1);
        assert!(ch.send_async(1).await.unwrap().is_sent());
        assert_eq!(ch.send_async(2).await.unwrap(), SendOutcome::Dropped);
        assert_eq!(ch.recv_async().await, Ok(1));
    }

    #[test]
    fn async_sender_and_blocking_receiver_share_a_channel() {
        let ch = channel(OverflowPolicy::Block, 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let receiver = {
            let ch = ch.clone();
            thread::spawn(move || {
                let mut total = 0u64;
                while let Ok(n) = ch.recv(None, None) {
                    total += u64::from(n);
                }
                total
            })
        };
        runtime.block_on(async {
            for i in 0..500 {
                assert!(ch.send_async(i).await.unwrap().is_sent());
            }
        });
        ch.close();
        assert_eq!(receiver.join().unwrap(), (0..500u64).sum::<u64>());
    }

    #[test]
    fn a_first_try_then_waiting_slices_count_one_full_event() {
        let ch = channel(OverflowPolicy::Block, 1);
        assert_eq!(ch.send(1).unwrap(), SendOutcome::Sent);
        let mut progress = SendProgress::new();
        let msg = ch
            .send_with(2, SendWait::no_wait().slice(&mut progress))
            .unwrap_err()
            .into_inner();
        let deadline = Instant::now() + Duration::from_millis(5);
        let refused = ch
            .send_with(msg, SendWait::until(deadline).slice(&mut progress))
            .unwrap_err();
        assert_eq!(refused.kind(), SendErrorKind::TimedOut);
        assert_eq!(ch.stats().full_events, 1);
        assert_eq!(
            ch.stats().rejected,
            0,
            "slices leave the final count to the caller"
        );
    }
}
