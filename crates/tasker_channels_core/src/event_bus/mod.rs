//! The in-process event bus (docs/design.md §5): from publishers to the dispatch side.
//!
//! Ruby publishes into `shared.ffi`, which dispatchers read directly (one hop); Rust emits
//! into `shared.event_publisher`, from which a forwarder task (`forwarder`) moves events into
//! `worker.in_process_events`, the Rust → Ruby buffer; dispatchers wait on both at once, woken
//! by one doorbell every writer rings (`doorbell`). The channel monitor's notices become
//! `channel.*` events (`notices`), the bus counts what it accepted and delivered (`stats`),
//! and [`BusHandle`] keeps a bus usable across `fork`
//! (`handle`). This module owns the [`EventBus`] itself: event ids, publishing, the dispatch
//! side's batches, giving back what an unwinding dispatcher could not deliver, and an orderly
//! close. It must never call a subscriber itself (subscribers live on the other side of
//! `next_batch`), never drop an accepted Ruby event, and never wait inside a monitor hook.

mod doorbell;
mod forwarder;
mod handle;
mod notices;
mod stats;
#[cfg(test)]
mod testing;

pub use forwarder::DispatchSender;
pub use handle::BusHandle;
pub use stats::EventStats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use doorbell::Doorbell;

use self::forwarder::forward_rust_events;
use self::notices::NoticeState;
use self::stats::Counters;
use crate::channel::{
    MonitoredChannel, RecvError, RecvWait, SendError, SendErrorKind, SendOutcome, SendWait,
};
use crate::config::Config;
use crate::event::{validate_name, Event, EventRef, EventSource, InvalidEventName, Message};
use crate::fork::{self, CurrentProcess, ProcessIdentity};
use crate::monitor::Monitor;
use crate::payload::Payload;
use crate::registry::ChannelRegistry;
use crate::wait::WaitStopped;

/// Where Ruby publishes: full means `Tasker::Backpressure`.
pub const FFI_CHANNEL: &str = "shared.ffi";
/// Where Rust code (and the channel monitor) emits events.
pub const PUBLISHER_CHANNEL: &str = "shared.event_publisher";
/// The Rust → Ruby buffer: Rust events on their way to the dispatchers.
pub const IN_PROCESS_CHANNEL: &str = "worker.in_process_events";

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The name is not a valid event name; the error says why.
    #[error(transparent)]
    InvalidName(#[from] InvalidEventName),
    /// The channel refused the event; the error carries it back with the channel's context.
    #[error(transparent)]
    Refused(#[from] SendError<Message>),
    /// The channel's `drop` policy discarded the event (counted as dropped).
    #[error("event dropped: {channel} is full ({capacity} events) and its policy is drop")]
    Dropped {
        /// The full channel (`shared.event_publisher`).
        channel: String,
        /// How many events it holds.
        capacity: usize,
    },
}

/// The channels of one configuration and the event routing over them.
#[derive(Debug)]
pub struct EventBus {
    registry: ChannelRegistry<Message>,
    ffi: MonitoredChannel<Message>,
    publisher: MonitoredChannel<Message>,
    in_process: MonitoredChannel<Message>,
    dispatch: Arc<DispatchSide>,
    ids: Arc<AtomicU64>,
    counters: Arc<Counters>,
    forwarder_running: Arc<AtomicBool>,
    /// The fork generation of the process that built this bus (see [`fork::generation`]).
    fork_generation: u64,
}

/// What dispatchers wait on besides the two channels: one doorbell that every writer to the
/// dispatch side rings, and the events a dispatcher gave back when it unwound mid-batch.
#[derive(Debug)]
struct DispatchSide {
    doorbell: Doorbell,
    /// Given back by [`EventBus::give_back`], delivered before anything else. Bounded by what
    /// dispatchers can hold at once: only batches already taken are ever given back.
    returned: Mutex<VecDeque<Message>>,
    returned_len: AtomicUsize,
    /// Which of the two channels a batch takes from first, alternating so neither starves.
    turn: AtomicUsize,
}

impl EventBus {
    /// Creates every configured channel and starts the forwarder of Rust events on the
    /// process's tokio runtime.
    pub fn start(config: &Config) -> Arc<Self> {
        Self::start_in(config, &CurrentProcess)
    }

    /// [`start`](Self::start) as a bus of `process`: stamped with its fork generation, and
    /// numbering events from its id base (see [`first_id_base`]).
    fn start_in(config: &Config, process: &impl ProcessIdentity) -> Arc<Self> {
        let generation = process.generation();
        let ids = Arc::new(AtomicU64::new(first_id_base(generation, process.pid())));
        let counters = Arc::new(Counters::default());
        let notices = Arc::new(NoticeState::new(config, Arc::clone(&ids)));
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
                doorbell: Doorbell::default(),
                returned: Mutex::new(VecDeque::new()),
                returned_len: AtomicUsize::new(0),
                turn: AtomicUsize::new(0),
            }),
            ids,
            counters,
            forwarder_running: Arc::new(AtomicBool::new(true)),
            fork_generation: generation,
        });
        notices.publish_to(bus.publisher.downgrade());
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
        self.is_stale_in(&CurrentProcess)
    }

    /// [`is_stale`](Self::is_stale) as seen from `process`.
    #[inline]
    fn is_stale_in(&self, process: &impl ProcessIdentity) -> bool {
        self.fork_generation != process.generation()
    }

    /// The next event id: unique within this bus, increasing.
    #[inline]
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Builds an event with a fresh id, validating its name.
    pub fn prepare(
        &self,
        name: impl Into<Arc<str>>,
        payload: impl Into<Arc<Payload>>,
        source: EventSource,
    ) -> Result<Event, InvalidEventName> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Event {
            id: self.next_id(),
            name,
            payload: payload.into(),
            source,
            published_at: SystemTime::now(),
        })
    }

    /// Offers a prepared event to `shared.ffi` with the caller's wait (see [`SendWait`]);
    /// the event comes back inside the error when refused, so a sliced wait can retry it.
    /// Should `shared.ffi` be configured `drop`, a discarded event is
    /// [`PublishError::Dropped`].
    pub fn publish_prepared(&self, event: Event, wait: SendWait<'_>) -> Result<u64, PublishError> {
        let id = event.id;
        match self.offer_to_ffi(Message::Event(Box::new(event)), wait)? {
            SendOutcome::Sent => Ok(id),
            SendOutcome::Dropped => Err(PublishError::Dropped {
                channel: self.ffi.name().to_owned(),
                capacity: self.ffi.capacity(),
            }),
        }
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
        match self.offer_to_ffi(Message::Ref(event), wait)? {
            SendOutcome::Sent => Ok(event.id),
            // shared.ffi is configured "error" by default; should someone configure it
            // "drop", the publisher is still told, and gets its reference back.
            SendOutcome::Dropped => Err(SendError::new(
                SendErrorKind::Full,
                Message::Ref(event),
                self.ffi.info(),
            )),
        }
    }

    #[inline]
    fn offer_to_ffi(
        &self,
        message: Message,
        wait: SendWait<'_>,
    ) -> Result<SendOutcome, SendError<Message>> {
        let outcome = self.ffi.send_with(message, wait)?;
        // Counted by shared.ffi itself, as the event took its place (see `stats`).
        if let SendOutcome::Sent = outcome {
            self.dispatch.doorbell.ring();
        }
        Ok(outcome)
    }

    /// The FFI buffer, for counting a sliced publish's final failure.
    pub fn ffi(&self) -> &MonitoredChannel<Message> {
        &self.ffi
    }

    /// Emits a Rust event through `shared.event_publisher` under its policy: with `drop`
    /// (the shipped default) a full buffer discards the event and says so; with `error` it
    /// fails; with `block` this waits for room (use [`emit_async`](Self::emit_async) from
    /// async code).
    pub fn emit(
        &self,
        name: impl Into<Arc<str>>,
        payload: impl Into<Arc<Payload>>,
    ) -> Result<u64, PublishError> {
        let event = self.prepare(name, payload, EventSource::Rust)?;
        let id = event.id;
        let outcome = self.publisher.send(Message::Event(Box::new(event)))?;
        self.count_emitted(id, outcome)
    }

    /// [`emit`](Self::emit) for async code: a `block` policy awaits room.
    pub async fn emit_async(
        &self,
        name: impl Into<Arc<str>>,
        payload: impl Into<Arc<Payload>>,
    ) -> Result<u64, PublishError> {
        self.emit_awaiting(name, payload, false).await
    }

    /// Emits like [`emit_async`](Self::emit_async) but awaits room in
    /// `shared.event_publisher` whatever its policy: for producers that must not lose an
    /// event (and accept being slowed down instead).
    pub async fn emit_waiting(
        &self,
        name: impl Into<Arc<str>>,
        payload: impl Into<Arc<Payload>>,
    ) -> Result<u64, PublishError> {
        self.emit_awaiting(name, payload, true).await
    }

    async fn emit_awaiting(
        &self,
        name: impl Into<Arc<str>>,
        payload: impl Into<Arc<Payload>>,
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
        // Counted by shared.event_publisher itself, as the event took its place (see `stats`).
        match outcome {
            SendOutcome::Sent => Ok(id),
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
                    self.dispatch.doorbell.ring();
                }
                return Ok(taken);
            }
            if self.dispatch_side_finished() {
                return Err(RecvError::Closed);
            }
            // Counted asleep, then one last look: a write that came before the count is
            // found here, one after it rings.
            self.dispatch.doorbell.going_to_sleep();
            let taken = self.take_ready(batch, max);
            if taken > 0 {
                self.dispatch.doorbell.woke_unrung();
                return Ok(taken);
            }
            let woken = wait.block_on(notified);
            if woken.is_err() {
                self.dispatch.doorbell.woke_unrung();
            }
            match woken {
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
        if self.dispatch.returned_len.load(Ordering::SeqCst) > 0 {
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
                .store(returned.len(), Ordering::SeqCst);
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
        self.dispatch.returned_len.load(Ordering::SeqCst) > 0
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
            // SeqCst like the queues' claims: the doorbell's sleeper count and this are the
            // two sides of its "the writer or the sleeper sees the other".
            .store(returned.len(), Ordering::SeqCst);
        drop(returned);
        self.dispatch.doorbell.ring();
    }

    /// Records what the dispatch side did with (part of) a batch it took. A dispatcher must
    /// account for every event it takes: recorded here, or handed back with
    /// [`give_back`](Self::give_back); until then the bus counts it as pending.
    pub fn record_delivery(&self, delivered: u64, handler_errors: u64, unmatched: u64) {
        // Settled first, then no longer in flight: whoever sees the bus drained sees these
        // counts. Release: a snapshot that sees them sees the acceptances before them.
        self.counters
            .delivered
            .fetch_add(delivered, Ordering::Release);
        self.counters
            .handler_errors
            .fetch_add(handler_errors, Ordering::Relaxed);
        self.counters
            .unmatched
            .fetch_add(unmatched, Ordering::Release);
        self.counters
            .in_flight
            .fetch_sub(delivered + unmatched, Ordering::Release);
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
        self.dispatch.doorbell.ring_all();
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
}

/// Where a bus's event ids start: 0 in the process that loaded the crate; in a forked child
/// the child's pid in the upper half, so ids stay unique across parent and children.
fn first_id_base(generation: u64, pid: u32) -> u64 {
    if generation == 0 {
        0
    } else {
        u64::from(pid) << 32
    }
}

/// A poisoned lock only means a panic elsewhere; the queue inside is still consistent,
/// since nothing panics between its operations.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::testing::{publish, queued_or_held, small_bus, take_all, test_config};
    use super::*;
    use crate::channel::SendErrorKind;

    #[test]
    fn a_published_event_reaches_the_dispatch_side_intact() {
        let bus = small_bus();
        let id = publish(&bus, 7).unwrap();
        let events = take_all(&bus, 1);
        assert_eq!(events[0].id, id);
        assert_eq!(&*events[0].name, "load.event");
        assert_eq!(*events[0].payload, Payload::Int(7));
        assert_eq!(events[0].source, EventSource::Ruby);
        assert_eq!(bus.stats().published, 1);
    }

    #[test]
    fn backpressure_is_bounded_and_loses_nothing() {
        let bus = small_bus();
        let mut accepted = Vec::new();
        let error = loop {
            match publish(&bus, accepted.len() as i64) {
                Ok(_) => accepted.push(accepted.len() as i64),
                Err(PublishError::Refused(error)) => break error,
                Err(other) => panic!("expected a refusal, got {other}"),
            }
            assert!(accepted.len() < 1000, "publish never pushed back");
        };
        assert_eq!(error.kind(), SendErrorKind::Full);
        assert_eq!(error.channel().name, FFI_CHANNEL);
        // One hop: exactly the FFI buffer's capacity, with no dispatcher taking any.
        assert_eq!(accepted.len(), 4);

        let delivered: Vec<i64> = take_all(&bus, accepted.len())
            .into_iter()
            .map(|event| match *event.payload {
                Payload::Int(seq) => seq,
                ref other => panic!("unexpected payload {other:?}"),
            })
            .collect();
        assert_eq!(delivered, accepted);
    }

    #[test]
    fn close_delivers_what_was_accepted_then_reports_closed() {
        let bus = small_bus();
        publish(&bus, 1).unwrap();
        publish(&bus, 2).unwrap();
        bus.close_intake();
        assert!(matches!(
            publish(&bus, 3),
            Err(PublishError::Refused(refused)) if refused.kind() == SendErrorKind::Closed
        ));
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
        let bus = small_bus();
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
    fn a_burst_up_to_capacity_is_accepted_before_any_dispatcher_runs() {
        let bus = small_bus();
        for seq in 0..4 {
            publish(&bus, seq).expect("a burst of up to capacity is always accepted");
        }
        assert_eq!(take_all(&bus, 4).len(), 4);
    }

    #[test]
    fn events_by_reference_travel_through_shared_ffi_only() {
        let bus = small_bus();
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
    fn every_snapshot_keeps_the_identity_while_events_move() {
        use std::sync::atomic::AtomicBool;
        const PER_PRODUCER: i64 = 4_000;
        let bus = small_bus();
        let stop = Arc::new(AtomicBool::new(false));
        let dispatcher = {
            let (bus, stop) = (Arc::clone(&bus), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let wait = RecvWait::until(Instant::now() + Duration::from_millis(5));
                    if let Ok(batch) = bus.next_batch(16, wait) {
                        bus.record_delivery(batch.len() as u64, 0, 0);
                    }
                }
            })
        };
        let producers: Vec<_> = (0..3)
            .map(|producer| {
                let bus = Arc::clone(&bus);
                std::thread::spawn(move || {
                    for seq in 0..PER_PRODUCER {
                        loop {
                            let sent = if producer == 0 {
                                bus.emit("load.rust", Payload::Int(seq)).is_ok()
                            } else {
                                publish(&bus, seq).is_ok()
                            };
                            if sent {
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut previous = bus.stats();
        let mut snapshots = 0;
        while producers.iter().any(|producer| !producer.is_finished()) || snapshots < 1_000 {
            let stats = bus.stats();
            let settled = stats.delivered + stats.unmatched + stats.undelivered_dropped;
            assert_eq!(
                stats.published + stats.emitted,
                settled + stats.pending,
                "{stats:?}"
            );
            assert!(stats.published >= previous.published && stats.emitted >= previous.emitted);
            assert!(
                stats.delivered >= previous.delivered,
                "{previous:?} then {stats:?}"
            );
            previous = stats;
            snapshots += 1;
        }
        producers.into_iter().for_each(|p| p.join().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        // The queues alone can read empty while the forwarder holds an event between its two
        // channels; the snapshot counts that one too.
        while (bus.stats().pending > 0 || queued_or_held(&bus) > 0) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Release);
        dispatcher.join().unwrap();
        let stats = bus.stats();
        assert_eq!(stats.published, 2 * PER_PRODUCER as u64);
        assert!(stats.emitted >= PER_PRODUCER as u64, "{stats:?}");
        assert_eq!((stats.pending, queued_or_held(&bus)), (0, 0), "{stats:?}");
    }

    #[test]
    fn a_relayed_event_whose_send_never_finished_counts_as_undelivered() {
        let bus = small_bus();
        let relay = bus.dispatch_sender();
        let event = |seq| {
            let event = bus.prepare("relayed.event", Payload::Int(seq), EventSource::Rust);
            Message::Event(Box::new(event.unwrap()))
        };
        struct Unwoken;
        impl std::task::Wake for Unwoken {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(Unwoken));
        let mut context = std::task::Context::from_waker(&waker);
        for seq in 0..4 {
            let mut send = std::pin::pin!(relay.send(event(seq)));
            assert!(std::future::Future::poll(send.as_mut(), &mut context).is_ready());
        }
        // The dispatch side is full: this send waits, and is then given up.
        {
            let mut send = std::pin::pin!(relay.send(event(4)));
            assert!(std::future::Future::poll(send.as_mut(), &mut context).is_pending());
        }
        // The monitor's notice about the full dispatch side is emitted too; nothing is
        // delivered, so everything but the given-up event is pending.
        let stats = bus.stats();
        assert_eq!(stats.undelivered_dropped, 1, "{stats:?}");
        assert_eq!(stats.emitted, stats.pending + 1, "{stats:?}");
        assert!(stats.emitted >= 5, "{stats:?}");
    }

    #[test]
    fn a_drop_policy_on_shared_ffi_refuses_with_the_publishers_own_event() {
        let bus = EventBus::start(&test_config(
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 1\noverflow = \"drop\"\n",
        ));
        let event_ref = |slot| EventRef {
            id: bus.next_id(),
            slot,
            published_at: SystemTime::now(),
        };
        bus.publish_ref(event_ref(0), SendWait::policy()).unwrap();
        let second = event_ref(1);
        let refused = bus.publish_ref(second, SendWait::policy()).unwrap_err();
        assert_eq!(refused.kind(), SendErrorKind::Full);
        assert_eq!(refused.into_inner(), Message::Ref(second));

        let prepared = bus
            .prepare("dropped.event", Payload::Nil, EventSource::Ruby)
            .unwrap();
        assert!(matches!(
            bus.publish_prepared(prepared, SendWait::policy()),
            Err(PublishError::Dropped { capacity: 1, .. })
        ));
        assert_eq!(bus.stats().published, 1);
    }

    #[test]
    fn a_waiting_dispatcher_wakes_for_either_channel() {
        let bus = small_bus();
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

    /// Two dispatchers fall asleep before every event, and each event is published only
    /// once the one before was taken: a ring lost between a dispatcher's last look and its
    /// wait leaves that event unseen, which fails the test after two seconds.
    #[test]
    fn no_ring_is_lost_while_dispatchers_fall_asleep() {
        const EVENTS: u64 = 5_000;
        let bus = small_bus();
        let taken = Arc::new(AtomicU64::new(0));
        let dispatchers: Vec<_> = (0..2)
            .map(|_| {
                let (bus, taken) = (Arc::clone(&bus), Arc::clone(&taken));
                std::thread::spawn(move || loop {
                    let deadline = Some(Instant::now() + Duration::from_secs(30));
                    match bus.next_batch(4, RecvWait::deadline(deadline)) {
                        // The monitor's notices about the tiny buffers travel too.
                        Ok(batch) => taken.fetch_add(
                            batch
                                .iter()
                                .filter(
                                    |m| matches!(m, Message::Event(e) if &*e.name == "load.event"),
                                )
                                .count() as u64,
                            Ordering::SeqCst,
                        ),
                        Err(RecvError::Closed) => return,
                        Err(other) => panic!("unexpected {other:?}"),
                    };
                })
            })
            .collect();
        for seq in 0..EVENTS {
            publish(&bus, seq as i64).unwrap();
            let give_up = Instant::now() + Duration::from_secs(2);
            while taken.load(Ordering::SeqCst) <= seq {
                assert!(
                    Instant::now() < give_up,
                    "event {seq} unseen for 2 s: a ring was lost"
                );
                std::thread::yield_now();
            }
        }
        bus.close_intake();
        for dispatcher in dispatchers {
            dispatcher.join().unwrap();
        }
        assert_eq!(taken.load(Ordering::SeqCst), EVENTS);
    }

    #[test]
    fn given_back_events_come_first_and_in_order() {
        let bus = small_bus();
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
            .map(|event| match *event.payload {
                Payload::Int(seq) => seq,
                ref other => panic!("unexpected payload {other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn closing_wakes_idle_dispatchers_with_closed() {
        let bus = small_bus();
        let waiter = {
            let bus = Arc::clone(&bus);
            std::thread::spawn(move || bus.next_batch(16, RecvWait::forever()))
        };
        std::thread::sleep(Duration::from_millis(20));
        bus.close_intake();
        assert_eq!(waiter.join().unwrap(), Err(RecvError::Closed));
        assert!(bus.is_drained());
    }

    /// Checks, from inside the close of the dispatch side (a waker runs within it), that
    /// the bus already counts as drained.
    struct DrainedAtEnd {
        bus: Arc<EventBus>,
        seen: std::sync::mpsc::SyncSender<bool>,
    }

    impl std::task::Wake for DrainedAtEnd {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            if self.bus.in_process.is_closed() {
                let _ = self.seen.try_send(self.bus.is_drained());
            }
        }
    }

    #[test]
    fn the_bus_is_drained_the_moment_its_dispatch_side_ends() {
        // Shutdown asks whether the bus is drained as soon as its dispatchers saw the end:
        // the forwarder must not still count as running once it closed the dispatch side.
        let bus = small_bus();
        let (seen, drained_at_end) = std::sync::mpsc::sync_channel(1);
        let waker = std::task::Waker::from(Arc::new(DrainedAtEnd {
            bus: Arc::clone(&bus),
            seen,
        }));
        let mut receive = std::pin::pin!(bus.in_process.recv_async());
        let mut context = std::task::Context::from_waker(&waker);
        assert!(std::future::Future::poll(receive.as_mut(), &mut context).is_pending());
        bus.close_intake();
        assert_eq!(
            drained_at_end.recv_timeout(Duration::from_secs(10)),
            Ok(true)
        );
    }
}
