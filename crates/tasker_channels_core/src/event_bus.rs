//! The in-process event bus (docs/design.md §5): from publishers to the dispatch side.
//!
//! Owns the route events take — Ruby publishes into `shared.ffi`, which dispatchers read
//! directly (one hop); Rust emits into `shared.event_publisher`, from which a forwarder task
//! moves events into `worker.in_process_events`, the Rust → Ruby buffer; dispatchers wait on
//! both at once — plus event ids, the bus counters, the monitor notices turned into
//! `channel.*` events, giving back what an unwinding dispatcher could not deliver, and an
//! orderly close. It must never call a subscriber itself (subscribers live on the other side
//! of `next_batch`), never drop an accepted Ruby event, and never wait inside a monitor hook.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;

use crate::channel::{
    MonitoredChannel, RecvError, RecvWait, SendError, SendErrorKind, SendOutcome, SendWait,
    WeakChannel,
};
use crate::config::Config;
use crate::event::{validate_name, Event, EventRef, EventSource, InvalidEventName, Message};
use crate::fork;
use crate::metrics::{MetricKind, PrometheusText};
use crate::monitor::{Monitor, MonitorEvent, MonitorHook};
use crate::payload::Payload;
use crate::policy::OverflowPolicy;
use crate::registry::ChannelRegistry;
use crate::wait::WaitStopped;

/// Where Ruby publishes: full means `Tasker::Backpressure`.
pub const FFI_CHANNEL: &str = "shared.ffi";
/// Where Rust code (and the channel monitor) emits events.
pub const PUBLISHER_CHANNEL: &str = "shared.event_publisher";
/// The Rust → Ruby buffer: Rust events on their way to the dispatchers.
pub const IN_PROCESS_CHANNEL: &str = "worker.in_process_events";

/// How many messages a forwarder moves per wake-up.
const FORWARD_BATCH: usize = 64;

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event name is not a valid dotted name.
    #[error(transparent)]
    InvalidName(#[from] InvalidEventName),
    /// The channel refused the event; the error carries it back with the channel's context.
    #[error(transparent)]
    Refused(#[from] SendError<Message>),
    /// The channel's `drop` policy discarded the event (counted as dropped).
    #[error("event dropped: {channel} is full ({capacity} events) and its policy is drop")]
    Dropped {
        /// The channel that was full.
        channel: String,
        /// Its capacity.
        capacity: usize,
    },
}

/// Counters of the bus as a whole; per-channel numbers live in the channels' stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStats {
    /// Ruby events accepted into `shared.ffi`.
    pub published: u64,
    /// Rust events accepted into `shared.event_publisher`.
    pub emitted: u64,
    /// Events handed to at least one subscriber.
    pub delivered: u64,
    /// Events that reached the dispatch side but matched no subscription.
    pub unmatched: u64,
    /// Subscriber calls that raised.
    pub handler_errors: u64,
    /// Accepted Rust events that `worker.in_process_events`' own policy discarded on the way
    /// to the dispatchers: they will never be delivered. (Ruby events are never discarded.)
    pub undelivered_dropped: u64,
    /// Accepted and not yet delivered: queued on the bus, or taken by a dispatcher that has
    /// not finished with it. `published + emitted == delivered + unmatched +
    /// undelivered_dropped + pending` whenever no event is moving.
    pub pending: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    emitted: AtomicU64,
    delivered: AtomicU64,
    unmatched: AtomicU64,
    handler_errors: AtomicU64,
    undelivered_dropped: AtomicU64,
    /// Taken by dispatchers and not yet recorded as delivered, unmatched or given back.
    in_flight: AtomicU64,
}

/// What the monitor hook needs: ids, the publisher channel (weakly, to avoid a cycle through
/// the monitor), and one "overflow reported" flag per channel so a flood of drops yields one
/// `channel.overflow` event per saturation episode rather than one per message.
struct NoticeState {
    ids: Arc<AtomicU64>,
    publisher: OnceLock<WeakChannel<Message>>,
    overflow_reported: Vec<(String, AtomicBool)>,
    emitted: Arc<Counters>,
}

impl NoticeState {
    fn overflow_flag(&self, channel: &str) -> Option<&AtomicBool> {
        self.overflow_reported
            .iter()
            .find(|(name, _)| name == channel)
            .map(|(_, flag)| flag)
    }
}

impl MonitorHook for NoticeState {
    fn on_event(&self, notice: MonitorEvent) {
        let channel = notice.channel();
        match &notice {
            MonitorEvent::Recovered { .. } => {
                if let Some(flag) = self.overflow_flag(&channel.name) {
                    flag.store(false, Ordering::Relaxed);
                }
            }
            MonitorEvent::Overflow { .. } => {
                let already = self
                    .overflow_flag(&channel.name)
                    .is_some_and(|flag| flag.swap(true, Ordering::Relaxed));
                if already {
                    return;
                }
            }
            MonitorEvent::Saturated { .. } => {}
        }
        let Some(publisher) = self.publisher.get().and_then(WeakChannel::upgrade) else {
            return;
        };
        if publisher.is_closed() {
            // Shut down: notices about the last drain have nowhere to go, and are not refusals.
            return;
        }
        let event = Event {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            name: notice.event_name().to_owned(),
            payload: notice_payload(&notice),
            source: EventSource::Rust,
            published_at: SystemTime::now(),
        };
        // Never wait here: the thread that triggered the notice is in the middle of a send.
        let message = Message::Event(Box::new(event));
        let sent = if publisher.overflow() == OverflowPolicy::Block {
            publisher.send_with(message, SendWait::until(Instant::now()))
        } else {
            publisher.send(message)
        };
        if matches!(sent, Ok(SendOutcome::Sent)) {
            self.emitted.emitted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn notice_payload(notice: &MonitorEvent) -> Payload {
    let channel = notice.channel();
    let mut entries = vec![
        ("channel", Payload::from(channel.name.as_str())),
        ("component", Payload::from(channel.component.as_str())),
        ("capacity", Payload::from(channel.capacity)),
        ("length", Payload::from(notice.length())),
        ("policy", Payload::from(channel.overflow.as_str())),
    ];
    match notice {
        MonitorEvent::Saturated {
            usage_percent,
            threshold,
            suppressed,
            ..
        }
        | MonitorEvent::Recovered {
            usage_percent,
            threshold,
            suppressed,
            ..
        } => {
            entries.push(("usage_percent", Payload::from(*usage_percent)));
            entries.push(("threshold", Payload::from(*threshold)));
            entries.push(("suppressed", Payload::from(*suppressed)));
        }
        MonitorEvent::Overflow { action, .. } => {
            entries.push(("action", Payload::from(action.as_str())));
        }
    }
    Payload::symbol_hash(entries)
}

/// The channels of one configuration and the event routing over them.
pub struct EventBus {
    registry: ChannelRegistry<Message>,
    ffi: MonitoredChannel<Message>,
    publisher: MonitoredChannel<Message>,
    in_process: MonitoredChannel<Message>,
    dispatch: Arc<DispatchSide>,
    ids: Arc<AtomicU64>,
    counters: Arc<Counters>,
    forwarder_running: Arc<AtomicBool>,
    fork_generation: u64,
}

/// What dispatchers wait on besides the two channels: one doorbell that every writer to the
/// dispatch side rings, and the events a dispatcher gave back when it unwound mid-batch.
struct DispatchSide {
    /// tokio's `Notify` hands a wake-up to one waiter and removes it from the waiter list
    /// itself, so while the woken dispatcher waits for the GVL later rings cost one atomic
    /// exchange, never another futex wake.
    doorbell: Notify,
    /// Given back by [`EventBus::give_back`], delivered before anything else. Bounded by what
    /// dispatchers can hold at once: only batches already taken are ever given back.
    returned: Mutex<VecDeque<Message>>,
    returned_len: AtomicUsize,
    /// Which of the two channels a batch takes from first, alternating so neither starves.
    turn: AtomicUsize,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// Creates every configured channel and starts the forwarder of Rust events on the
    /// process's tokio runtime.
    pub fn start(config: &Config) -> Arc<Self> {
        let ids = Arc::new(AtomicU64::new(first_id_base()));
        let counters = Arc::new(Counters::default());
        let notices = Arc::new(NoticeState {
            ids: Arc::clone(&ids),
            publisher: OnceLock::new(),
            overflow_reported: config
                .channels()
                .iter()
                .map(|spec| (spec.name.clone(), AtomicBool::new(false)))
                .collect(),
            emitted: Arc::clone(&counters),
        });
        let monitor = Monitor::new(config.log_warning_threshold(), config.notice_interval())
            .with_hook(notices.clone());
        let registry = ChannelRegistry::with_monitor(config.channels(), monitor);
        let find = |name: &str| {
            registry
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("the config schema always defines {name}"))
        };
        let bus = Arc::new(EventBus {
            ffi: find(FFI_CHANNEL),
            publisher: find(PUBLISHER_CHANNEL),
            in_process: find(IN_PROCESS_CHANNEL),
            registry,
            dispatch: Arc::new(DispatchSide {
                doorbell: Notify::new(),
                returned: Mutex::new(VecDeque::new()),
                returned_len: AtomicUsize::new(0),
                turn: AtomicUsize::new(0),
            }),
            ids,
            counters,
            forwarder_running: Arc::new(AtomicBool::new(true)),
            fork_generation: fork::generation(),
        });
        let _ = notices.publisher.set(bus.publisher.downgrade());
        fork::runtime_handle().spawn(forward_rust_events(
            bus.publisher.clone(),
            bus.in_process.clone(),
            Arc::clone(&bus.dispatch),
            Arc::clone(&bus.counters),
            Arc::clone(&bus.forwarder_running),
        ));
        bus
    }

    /// Every configured channel.
    pub fn registry(&self) -> &ChannelRegistry<Message> {
        &self.registry
    }

    /// True when this bus was built in another process than the current one (before a
    /// fork): its forwarder task does not run here, and it must be leaked, not used.
    pub fn is_stale(&self) -> bool {
        self.fork_generation != fork::generation()
    }

    /// The next event id: unique within this bus, increasing.
    #[inline]
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Builds an event with a fresh id, validating its name.
    pub fn prepare(
        &self,
        name: impl Into<String>,
        payload: Payload,
        source: EventSource,
    ) -> Result<Event, InvalidEventName> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Event {
            id: self.next_id(),
            name,
            payload,
            source,
            published_at: SystemTime::now(),
        })
    }

    /// Offers a prepared event to `shared.ffi` with the caller's wait (see [`SendWait`]);
    /// the event comes back inside the error when refused, so a sliced wait can retry it.
    pub fn publish_prepared(
        &self,
        event: Event,
        wait: SendWait<'_>,
    ) -> Result<u64, SendError<Message>> {
        let id = event.id;
        self.publish_message(Message::Event(Box::new(event)), wait)
            .map(|()| id)
    }

    /// Offers an event published by reference to `shared.ffi` (see [`EventRef`]). The
    /// caller keeps the name and payload until a dispatcher has delivered it, or until this
    /// refuses it (the reference comes back inside the error).
    #[inline]
    pub fn publish_ref(
        &self,
        event: EventRef,
        wait: SendWait<'_>,
    ) -> Result<u64, SendError<Message>> {
        self.publish_message(Message::Ref(event), wait)
            .map(|()| event.id)
    }

    #[inline]
    fn publish_message(
        &self,
        message: Message,
        wait: SendWait<'_>,
    ) -> Result<(), SendError<Message>> {
        match self.ffi.send_with(message, wait)? {
            SendOutcome::Sent => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                self.dispatch.doorbell.notify_one();
                Ok(())
            }
            // shared.ffi is configured "error" by default; should someone configure it
            // "drop", the publisher is still told.
            SendOutcome::Dropped => Err(SendError::new(
                SendErrorKind::Full,
                Message::Value(Payload::Nil),
                self.ffi.info(),
            )),
        }
    }

    /// The FFI buffer, for counting a sliced publish's final failure.
    pub fn ffi(&self) -> &MonitoredChannel<Message> {
        &self.ffi
    }

    /// Emits a Rust event through `shared.event_publisher` under its policy: with `drop`
    /// (the shipped default) a full buffer discards the event and says so; with `error` it
    /// fails; with `block` this waits for room (use [`emit_async`](Self::emit_async) from
    /// async code).
    pub fn emit(&self, name: impl Into<String>, payload: Payload) -> Result<u64, PublishError> {
        let event = self.prepare(name, payload, EventSource::Rust)?;
        let id = event.id;
        let outcome = self.publisher.send(Message::Event(Box::new(event)))?;
        self.count_emitted(id, outcome)
    }

    /// [`emit`](Self::emit) for async code: a `block` policy awaits room.
    pub async fn emit_async(
        &self,
        name: impl Into<String>,
        payload: Payload,
    ) -> Result<u64, PublishError> {
        self.emit_awaiting(name, payload, false).await
    }

    /// Emits like [`emit_async`](Self::emit_async) but awaits room in
    /// `shared.event_publisher` whatever its policy: for producers that must not lose an
    /// event (and accept being slowed down instead).
    pub async fn emit_waiting(
        &self,
        name: impl Into<String>,
        payload: Payload,
    ) -> Result<u64, PublishError> {
        self.emit_awaiting(name, payload, true).await
    }

    async fn emit_awaiting(
        &self,
        name: impl Into<String>,
        payload: Payload,
        whatever_the_policy: bool,
    ) -> Result<u64, PublishError> {
        let event = self.prepare(name, payload, EventSource::Rust)?;
        let id = event.id;
        let message = Message::Event(Box::new(event));
        let outcome = if whatever_the_policy {
            self.publisher.send_async_forever(message).await?
        } else {
            self.publisher.send_async(message).await?
        };
        self.count_emitted(id, outcome)
    }

    fn count_emitted(&self, id: u64, outcome: SendOutcome) -> Result<u64, PublishError> {
        match outcome {
            SendOutcome::Sent => {
                self.counters.emitted.fetch_add(1, Ordering::Relaxed);
                Ok(id)
            }
            SendOutcome::Dropped => Err(PublishError::Dropped {
                channel: self.publisher.name().to_owned(),
                capacity: self.publisher.capacity(),
            }),
        }
    }

    /// A handle for Rust code that moves events onto the dispatch side itself (the
    /// PostgreSQL relay): it waits for room in `worker.in_process_events` whatever its
    /// policy, counts each event as emitted, and wakes a dispatcher.
    pub fn dispatch_sender(&self) -> DispatchSender {
        DispatchSender {
            to: self.in_process.clone(),
            dispatch: Arc::clone(&self.dispatch),
            counters: Arc::clone(&self.counters),
        }
    }

    /// Waits (as long as `wait` allows) for events on the dispatch side — given
    /// back events first, then `shared.ffi` and `worker.in_process_events` in alternation —
    /// and appends up to `max` of them to `batch`. `Err(Closed)` once the bus is closed and
    /// everything accepted has been taken.
    pub fn next_batch_into(
        &self,
        batch: &mut Vec<Message>,
        max: usize,
        wait: RecvWait<'_>,
    ) -> Result<usize, RecvError> {
        loop {
            let notified = self.dispatch.doorbell.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so a ring between the look and the wait is kept.
            notified.as_mut().enable();
            let taken = self.take_ready(batch, max);
            if taken > 0 {
                if self.has_queued() {
                    // More than one batch is waiting: let another dispatcher take the next.
                    self.dispatch.doorbell.notify_one();
                }
                return Ok(taken);
            }
            if self.dispatch_side_finished() {
                return Err(RecvError::Closed);
            }
            match wait.block_on(notified) {
                Ok(()) => {}
                Err(WaitStopped::TimedOut) => {
                    let taken = self.take_ready(batch, max);
                    return if taken > 0 {
                        Ok(taken)
                    } else {
                        Err(RecvError::TimedOut)
                    };
                }
                Err(WaitStopped::Interrupted) => return Err(RecvError::Interrupted),
            }
        }
    }

    /// [`next_batch_into`](Self::next_batch_into) into a new `Vec`.
    pub fn next_batch(&self, max: usize, wait: RecvWait<'_>) -> Result<Vec<Message>, RecvError> {
        let mut batch = Vec::new();
        self.next_batch_into(&mut batch, max, wait)?;
        Ok(batch)
    }

    fn take_ready(&self, batch: &mut Vec<Message>, max: usize) -> usize {
        let taken = self.take_queued(batch, max);
        if taken > 0 {
            self.counters
                .in_flight
                .fetch_add(taken as u64, Ordering::Relaxed);
        }
        taken
    }

    fn take_queued(&self, batch: &mut Vec<Message>, max: usize) -> usize {
        let mut taken = 0;
        if self.dispatch.returned_len.load(Ordering::Acquire) > 0 {
            let mut returned = lock(&self.dispatch.returned);
            while taken < max {
                let Some(message) = returned.pop_front() else {
                    break;
                };
                batch.push(message);
                taken += 1;
            }
            self.dispatch
                .returned_len
                .store(returned.len(), Ordering::Release);
        }
        let ffi_first = self.dispatch.turn.fetch_add(1, Ordering::Relaxed) % 2 == 0;
        let (first, second) = if ffi_first {
            (&self.ffi, &self.in_process)
        } else {
            (&self.in_process, &self.ffi)
        };
        for channel in [first, second] {
            if taken < max {
                taken += channel.try_recv_batch_into(batch, max - taken).unwrap_or(0);
            }
        }
        taken
    }

    fn has_queued(&self) -> bool {
        self.dispatch.returned_len.load(Ordering::Acquire) > 0
            || !self.ffi.is_empty()
            || !self.in_process.is_empty()
    }

    /// Closed, and nothing accepted is left to take.
    fn dispatch_side_finished(&self) -> bool {
        self.ffi.is_closed() && self.in_process.is_closed() && !self.has_queued()
    }

    /// Puts events a dispatcher took but could not deliver (it unwound mid-batch) back at
    /// the front of the dispatch side, in their order, for the next dispatcher.
    pub fn give_back(&self, undelivered: impl DoubleEndedIterator<Item = Message>) {
        let mut returned = lock(&self.dispatch.returned);
        let mut count = 0;
        for message in undelivered.rev() {
            returned.push_front(message);
            count += 1;
        }
        self.counters.in_flight.fetch_sub(count, Ordering::Relaxed);
        self.dispatch
            .returned_len
            .store(returned.len(), Ordering::Release);
        drop(returned);
        self.dispatch.doorbell.notify_one();
    }

    /// Records what the dispatch side did with (part of) a batch it took. A dispatcher must
    /// account for every event it takes: recorded here, or handed back with
    /// [`give_back`](Self::give_back); until then the bus counts it as pending.
    pub fn record_delivery(&self, delivered: u64, handler_errors: u64, unmatched: u64) {
        self.counters
            .in_flight
            .fetch_sub(delivered + unmatched, Ordering::Relaxed);
        self.counters
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
        self.counters
            .handler_errors
            .fetch_add(handler_errors, Ordering::Relaxed);
        self.counters
            .unmatched
            .fetch_add(unmatched, Ordering::Relaxed);
    }

    /// Stops accepting: publishers (waiting ones too) get `Closed`. What was accepted still
    /// flows to the dispatch side, after which `next_batch` reports `Closed`.
    pub fn close_intake(&self) {
        self.ffi.close();
        self.publisher.close();
        if self.is_stale() {
            // No forwarder runs in this process to finish the job.
            self.in_process.close();
        }
        // Idle dispatchers re-check, so they see the end once the rest is taken.
        self.dispatch.doorbell.notify_waiters();
    }

    /// True once `close_intake` was called.
    pub fn is_closed(&self) -> bool {
        self.ffi.is_closed()
    }

    /// True when closed and every accepted event has been delivered (or found no subscriber):
    /// nothing queued, nothing held by a dispatcher.
    pub fn is_drained(&self) -> bool {
        self.is_closed()
            && !self.forwarder_running.load(Ordering::Acquire)
            && self.dispatch_side_finished()
            && self.counters.in_flight.load(Ordering::Acquire) == 0
    }

    /// The bus's event counters.
    pub fn stats(&self) -> EventStats {
        let c = &self.counters;
        EventStats {
            published: c.published.load(Ordering::Relaxed),
            emitted: c.emitted.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            unmatched: c.unmatched.load(Ordering::Relaxed),
            handler_errors: c.handler_errors.load(Ordering::Relaxed),
            undelivered_dropped: c.undelivered_dropped.load(Ordering::Relaxed),
            pending: self.pending(),
        }
    }

    /// Accepted events not yet delivered: queued anywhere on the bus or held by a dispatcher.
    pub fn pending(&self) -> u64 {
        let queued = self.ffi.len()
            + self.publisher.len()
            + self.in_process.len()
            + self.dispatch.returned_len.load(Ordering::Acquire);
        queued as u64 + self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// Prometheus text for every channel, then the bus counters.
    pub fn prometheus_text(&self) -> String {
        let mut out = PrometheusText::new();
        self.registry.write_prometheus(&mut out);
        let stats = self.stats();
        let mut counter = |name: &str, help: &str, label: &str, samples: &[(&str, u64)]| {
            out.family(name, MetricKind::Counter, help);
            for (label_value, value) in samples {
                out.sample_u64(name, &[(label, label_value)], *value);
            }
        };
        counter(
            "tasker_events_accepted_total",
            "Events accepted onto the bus, by source.",
            "source",
            &[("ruby", stats.published), ("rust", stats.emitted)],
        );
        counter(
            "tasker_events_dispatched_total",
            "Events that reached the dispatch side, by outcome.",
            "outcome",
            &[
                ("delivered", stats.delivered),
                ("unmatched", stats.unmatched),
            ],
        );
        counter(
            "tasker_event_handler_errors_total",
            "Subscriber calls that raised.",
            "kind",
            &[("handler", stats.handler_errors)],
        );
        counter(
            "tasker_events_undelivered_total",
            "Accepted events that will never be delivered, by reason.",
            "reason",
            &[("dropped", stats.undelivered_dropped)],
        );
        out.family(
            "tasker_events_pending",
            MetricKind::Gauge,
            "Accepted events not yet delivered.",
        );
        out.sample_u64("tasker_events_pending", &[], stats.pending);
        out.into_string()
    }
}

/// Where a bus's event ids start: 0 in the process that loaded the crate; in a forked child
/// the child's pid in the upper half, so ids stay unique across parent and children.
fn first_id_base() -> u64 {
    if fork::generation() == 0 {
        0
    } else {
        // SAFETY: getpid has no preconditions.
        u64::from(unsafe { libc::getpid() }.unsigned_abs()) << 32
    }
}

/// See [`EventBus::dispatch_sender`].
#[derive(Clone)]
pub struct DispatchSender {
    to: MonitoredChannel<Message>,
    dispatch: Arc<DispatchSide>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for DispatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchSender")
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl DispatchSender {
    /// Puts an event on the dispatch side, waiting for room; `Err` only once the dispatch
    /// side is closed (the event comes back inside).
    pub async fn send(&self, message: Message) -> Result<(), SendError<Message>> {
        // A send that waits for room always enters: nothing is discarded on this path.
        let _entered = self.to.send_async_forever(message).await?;
        self.counters.emitted.fetch_add(1, Ordering::Relaxed);
        self.dispatch.doorbell.notify_one();
        Ok(())
    }

    /// True once the dispatch side is closed.
    pub fn is_closed(&self) -> bool {
        self.to.is_closed()
    }
}

/// A poisoned lock only means a panic elsewhere; the queue inside is still consistent,
/// since nothing panics between its operations.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many times a forwarder that emptied its source yields before it parks.
const LINGER_YIELDS: usize = 32;

/// Emitters in a burst arrive a microsecond apart, while waking a parked forwarder costs a
/// syscall on the emitter's thread. Staying awake for a few scheduler turns after emptying
/// the source lets a burst flow without a wake-up per event; an idle bus still parks.
async fn linger(from: &MonitoredChannel<Message>) {
    for _ in 0..LINGER_YIELDS {
        if !from.is_empty() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Moves Rust events from `shared.event_publisher` to `worker.in_process_events` under the
/// latter's policy, ringing the dispatchers' doorbell for each, and closes the dispatch side
/// once the publisher is closed and empty, so dispatchers see the end only after everything
/// accepted has reached them.
async fn forward_rust_events(
    from: MonitoredChannel<Message>,
    to: MonitoredChannel<Message>,
    dispatch: Arc<DispatchSide>,
    counters: Arc<Counters>,
    running: Arc<AtomicBool>,
) {
    while let Ok(batch) = from.recv_batch_async(FORWARD_BATCH).await {
        for message in batch {
            // Refusals are counted by the channel (dropped/rejected) and reported by the
            // monitor, and by the bus as undelivered; `Closed` cannot happen before this
            // forwarder has finished.
            match to.send_async(message).await {
                Ok(SendOutcome::Sent) => dispatch.doorbell.notify_one(),
                Ok(SendOutcome::Dropped) | Err(_) => {
                    counters.undelivered_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        linger(&from).await;
    }
    to.close();
    running.store(false, Ordering::Release);
    dispatch.doorbell.notify_waiters();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::channel::SendErrorKind;
    use crate::config::testing::TempDir;
    use crate::config::LoadOptions;

    fn config_with(overrides: &str) -> (Config, TempDir) {
        let dir = TempDir::new();
        dir.write("environments/test/mpsc_channels.toml", overrides);
        let options = LoadOptions {
            environment: Some("test".into()),
            config_dir: Some(dir.path().to_path_buf()),
            shipped_dir_label: None,
        };
        (Config::load_with_env(&options, |_| None).unwrap(), dir)
    }

    const SMALL: &str = r#"
[mpsc_channels.shared.ffi]
ruby_event_buffer_size = 4
[mpsc_channels.worker.in_process_events]
broadcast_buffer_size = 4
[mpsc_channels.shared.event_publisher]
event_queue_buffer_size = 2
"#;

    fn publish(bus: &EventBus, seq: i64) -> Result<u64, SendError<Message>> {
        let event = bus
            .prepare("load.event", Payload::Int(seq), EventSource::Ruby)
            .unwrap();
        bus.publish_prepared(event, SendWait::policy())
    }

    fn events(batch: Vec<Message>) -> Vec<Event> {
        batch
            .into_iter()
            .map(|message| match message {
                Message::Event(event) => *event,
                other => panic!("the dispatch side carries whole events here, got {other:?}"),
            })
            .collect()
    }

    /// Takes events until `expected` Ruby events have arrived (the monitor's Rust events
    /// may be interleaved and are dropped here).
    fn take_all(bus: &EventBus, expected: usize) -> Vec<Event> {
        let mut taken = Vec::new();
        while taken.len() < expected {
            let deadline = Instant::now() + Duration::from_secs(10);
            match bus.next_batch(16, RecvWait::until(deadline)) {
                Ok(batch) => taken.extend(
                    events(batch)
                        .into_iter()
                        .filter(|e| e.source == EventSource::Ruby),
                ),
                Err(error) => panic!("expected {expected} events, got {}: {error:?}", taken.len()),
            }
        }
        taken
    }

    #[test]
    fn a_published_event_reaches_the_dispatch_side_intact() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        let id = publish(&bus, 7).unwrap();
        let events = take_all(&bus, 1);
        assert_eq!(events[0].id, id);
        assert_eq!(events[0].name, "load.event");
        assert_eq!(events[0].payload, Payload::Int(7));
        assert_eq!(events[0].source, EventSource::Ruby);
        assert_eq!(bus.stats().published, 1);
    }

    #[test]
    fn backpressure_is_bounded_and_loses_nothing() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        let mut accepted = Vec::new();
        let error = loop {
            match publish(&bus, accepted.len() as i64) {
                Ok(_) => accepted.push(accepted.len() as i64),
                Err(error) => break error,
            }
            assert!(accepted.len() < 1000, "publish never pushed back");
        };
        assert_eq!(error.kind(), SendErrorKind::Full);
        assert_eq!(error.channel().name, FFI_CHANNEL);
        // One hop: exactly the FFI buffer's capacity, with no dispatcher taking any.
        assert_eq!(accepted.len(), 4);

        let delivered: Vec<i64> = take_all(&bus, accepted.len())
            .into_iter()
            .map(|event| match event.payload {
                Payload::Int(seq) => seq,
                other => panic!("unexpected payload {other:?}"),
            })
            .collect();
        assert_eq!(delivered, accepted);
    }

    #[test]
    fn close_delivers_what_was_accepted_then_reports_closed() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        publish(&bus, 1).unwrap();
        publish(&bus, 2).unwrap();
        bus.close_intake();
        assert_eq!(publish(&bus, 3).unwrap_err().kind(), SendErrorKind::Closed);
        let events = take_all(&bus, 2);
        assert_eq!(events.len(), 2);
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        assert_eq!(
            bus.next_batch(16, RecvWait::deadline(deadline)),
            Err(RecvError::Closed)
        );
        // Taken is not delivered: drained only once the dispatcher says so.
        assert!(!bus.is_drained());
        bus.record_delivery(2, 0, 0);
        assert!(bus.is_drained());
    }

    #[test]
    fn emit_reports_a_drop_when_the_publisher_is_full() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        // Fill the dispatch side so the publisher's forwarder cannot drain.
        let mut outcomes = Vec::new();
        for n in 0..32 {
            outcomes.push(bus.emit("rust.test", Payload::Int(n)));
        }
        assert!(outcomes.iter().any(|outcome| outcome.is_ok()));
        let dropped = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Err(PublishError::Dropped { .. })))
            .count();
        assert!(dropped > 0, "a full drop-policy publisher must say so");
        let publisher = bus.registry().get(PUBLISHER_CHANNEL).unwrap().stats();
        // The monitor's own notices about the full publisher are dropped (and counted) too.
        assert!(publisher.dropped as usize >= dropped);
        assert!(matches!(
            bus.emit("bad name", Payload::Nil),
            Err(PublishError::InvalidName(_))
        ));
    }

    #[test]
    fn monitor_notices_become_rust_events_once_per_overflow_episode() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        // Overflow shared.ffi many times; only one channel.overflow for it until it recovers.
        for n in 0..200 {
            let _ = publish(&bus, n);
        }
        let mut notices = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(batch) = bus.next_batch(16, RecvWait::until(deadline)) {
            if batch.is_empty() {
                break;
            }
            notices.extend(
                events(batch)
                    .into_iter()
                    .filter(|e| e.source == EventSource::Rust),
            );
        }
        let ffi_overflows = notices
            .iter()
            .filter(|e| {
                e.name == "channel.overflow"
                    && e.payload.get("channel") == Some(&Payload::from(FFI_CHANNEL))
            })
            .count();
        assert!(
            ffi_overflows <= 2,
            "overflow events must not flood: {ffi_overflows}"
        );
        let saturated = notices
            .iter()
            .find(|e| e.name == "channel.saturated")
            .expect("a saturation notice");
        assert_eq!(saturated.payload.get("capacity"), Some(&Payload::Int(4)));
        assert!(bus.stats().emitted >= 1);
    }

    #[test]
    fn a_burst_up_to_capacity_is_accepted_before_any_dispatcher_runs() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        for seq in 0..4 {
            publish(&bus, seq).expect("a burst of up to capacity is always accepted");
        }
        assert_eq!(take_all(&bus, 4).len(), 4);
    }

    #[test]
    fn events_by_reference_travel_through_shared_ffi_only() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        let held = EventRef {
            id: bus.next_id(),
            slot: 3,
            published_at: SystemTime::now(),
        };
        assert_eq!(bus.publish_ref(held, SendWait::policy()).unwrap(), held.id);
        assert_eq!(bus.ffi().len(), 1);
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let batch = bus.next_batch(16, RecvWait::deadline(deadline)).unwrap();
        assert_eq!(batch, vec![Message::Ref(held)]);
        assert_eq!(bus.stats().published, 1);
    }

    #[test]
    fn a_waiting_dispatcher_wakes_for_either_channel() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        let waiter = {
            let bus = Arc::clone(&bus);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < 2 {
                    let deadline = Some(Instant::now() + Duration::from_secs(10));
                    seen.extend(bus.next_batch(16, RecvWait::deadline(deadline)).unwrap());
                }
                seen
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        bus.emit("rust.side", Payload::Int(1)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        publish(&bus, 2).unwrap();
        let seen = waiter.join().unwrap();
        assert!(seen
            .iter()
            .any(|m| matches!(m, Message::Event(e) if e.source == EventSource::Rust)));
        assert!(seen
            .iter()
            .any(|m| matches!(m, Message::Event(e) if e.source == EventSource::Ruby)));
    }

    #[test]
    fn given_back_events_come_first_and_in_order() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        for seq in 0..4 {
            publish(&bus, seq).unwrap();
        }
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let mut batch = bus.next_batch(3, RecvWait::deadline(deadline)).unwrap();
        assert_eq!(batch.len(), 3);
        // The first was delivered; the other two go back ahead of the fourth.
        batch.remove(0);
        bus.give_back(batch.into_iter());
        let seqs: Vec<i64> = take_all(&bus, 3)
            .into_iter()
            .map(|event| match event.payload {
                Payload::Int(seq) => seq,
                other => panic!("unexpected payload {other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn closing_wakes_idle_dispatchers_with_closed() {
        let (config, _dir) = config_with(SMALL);
        let bus = EventBus::start(&config);
        let waiter = {
            let bus = Arc::clone(&bus);
            std::thread::spawn(move || bus.next_batch(16, RecvWait::forever()))
        };
        std::thread::sleep(Duration::from_millis(20));
        bus.close_intake();
        assert_eq!(waiter.join().unwrap(), Err(RecvError::Closed));
        assert!(bus.is_drained());
    }
}
