//! The hop from `orchestration.event_listeners` to `worker.in_process_events`.
//!
//! Owns one task per event bus, started when the bus's first listener starts, that moves
//! listener events to the dispatch side and always waits for room there (whatever that
//! channel's policy), so a full dispatch side stops the relay, a full
//! `orchestration.event_listeners` stops the listener, and the listener stops reading its
//! socket. It also owns draining that hop at shutdown. It must never drop an event it took
//! (only a closed dispatch side can make it give one up, and that is counted), and never
//! keep a bus alive: it holds channels, not the bus.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::channel::{MonitoredChannel, RecvError};
use crate::event::Message;
use crate::event_bus::{DispatchSender, EventBus};
use crate::fork;

/// Where every listener of a bus puts its events.
pub const LISTENER_CHANNEL: &str = "orchestration.event_listeners";

/// How many events the relay takes per wake-up.
const RELAY_BATCH: usize = 64;

/// How often an idle relay checks that its bus still runs, so a bus dropped without
/// shutdown does not leave the task parked forever.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The state of one bus's relay.
#[derive(Debug, Default)]
pub struct RelayState {
    /// Events taken from `orchestration.event_listeners` and not yet on the dispatch side.
    holding: AtomicUsize,
    moved: AtomicU64,
    /// Events given up because the dispatch side closed under them.
    undelivered: AtomicU64,
    finished: AtomicBool,
    done: Notify,
}

impl RelayState {
    /// Messages moved to the dispatch side so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Messages it could not deliver (the dispatch side closed).
    pub fn undelivered(&self) -> u64 {
        self.undelivered.load(Ordering::Relaxed)
    }

    /// Messages taken but not yet delivered.
    pub fn holding(&self) -> usize {
        self.holding.load(Ordering::Acquire)
    }

    /// Whether the relay task has ended.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Waits until the relay has ended (its source closed and drained, or its bus gone).
    pub async fn finished(&self) {
        loop {
            let notified = self.done.notified();
            if self.is_finished() {
                return;
            }
            notified.await;
        }
    }
}

struct Entry {
    bus: Weak<EventBus>,
    state: Arc<RelayState>,
}

/// The relays of this process. A fork gets a fresh table (a lock a vanished thread held
/// would stay locked in the child), like the tokio runtime in [`crate::fork`].
struct Relays {
    generation: u64,
    entries: Mutex<Vec<Entry>>,
}

static RELAYS: AtomicPtr<Relays> = AtomicPtr::new(ptr::null_mut());

fn relays() -> &'static Relays {
    let current = fork::generation();
    loop {
        let existing = RELAYS.load(Ordering::Acquire);
        // SAFETY: a published table is leaked, so the pointer stays valid forever.
        if let Some(table) = unsafe { existing.as_ref() } {
            if table.generation == current {
                return table;
            }
        }
        let fresh = Box::into_raw(Box::new(Relays {
            generation: current,
            entries: Mutex::new(Vec::new()),
        }));
        match RELAYS.compare_exchange(existing, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just published; never freed.
            Ok(_) => return unsafe { &*fresh },
            // SAFETY: ours was never published.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

/// The relay of `bus`, started if it is not running yet.
pub fn ensure_started(bus: &Arc<EventBus>) -> Arc<RelayState> {
    let table = relays();
    let mut entries = table.entries.lock().unwrap_or_else(PoisonError::into_inner);
    // Forget buses that are gone; the list holds only live ones (one per runtime).
    entries.retain(|entry| entry.bus.strong_count() > 0);
    if let Some(entry) = entries
        .iter()
        .find(|entry| ptr::eq(entry.bus.as_ptr(), Arc::as_ptr(bus)))
    {
        return Arc::clone(&entry.state);
    }
    let state = Arc::new(RelayState::default());
    let from = channel(bus, LISTENER_CHANNEL);
    let to = bus.dispatch_sender();
    fork::runtime_handle().spawn(relay(from, to, Arc::clone(&state)));
    entries.push(Entry {
        bus: Arc::downgrade(bus),
        state: Arc::clone(&state),
    });
    state
}

/// The relay of `bus`, if one was started.
pub fn state_of(bus: &Arc<EventBus>) -> Option<Arc<RelayState>> {
    let entries = relays()
        .entries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    entries
        .iter()
        .find(|entry| ptr::eq(entry.bus.as_ptr(), Arc::as_ptr(bus)))
        .map(|entry| Arc::clone(&entry.state))
}

/// Closes `orchestration.event_listeners` so the relay moves what is left and ends. Call it
/// after stopping the bus's listeners and before closing the bus; then await
/// [`RelayState::finished`]. Returns the relay's state, or `None` if none ran.
pub fn close(bus: &Arc<EventBus>) -> Option<Arc<RelayState>> {
    let state = state_of(bus)?;
    channel(bus, LISTENER_CHANNEL).close();
    Some(state)
}

fn channel(bus: &EventBus, name: &str) -> MonitoredChannel<Message> {
    bus.registry()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("the config schema always defines {name}"))
}

async fn relay(from: MonitoredChannel<Message>, to: DispatchSender, state: Arc<RelayState>) {
    loop {
        let batch = match tokio::time::timeout(IDLE_CHECK, from.recv_batch_async(RELAY_BATCH)).await
        {
            Err(_) if to.is_closed() => break,
            Err(_) => continue,
            Ok(Err(RecvError::Closed)) => break,
            Ok(Err(_)) => continue,
            Ok(Ok(batch)) => batch,
        };
        state.holding.store(batch.len(), Ordering::Release);
        for message in batch {
            match to.send(message).await {
                Ok(_) => {
                    state.moved.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    state.undelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            state.holding.fetch_sub(1, Ordering::AcqRel);
        }
    }
    // Whatever is still queued can no longer reach anyone.
    let mut left = 0;
    while from.try_recv().is_ok() {
        left += 1;
    }
    state.undelivered.fetch_add(left, Ordering::Relaxed);
    state.finished.store(true, Ordering::Release);
    state.done.notify_waiters();
}
