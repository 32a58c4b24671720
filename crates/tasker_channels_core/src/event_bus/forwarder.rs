//! Moving Rust events onto the dispatch side: the forwarder task from
//! `shared.event_publisher` to `worker.in_process_events`, and the [`DispatchSender`] that
//! Rust producers with their own task (the PostgreSQL relay) use instead.
//!
//! Owns ringing the dispatchers' doorbell for each event that arrives and closing the
//! dispatch side after the last one. It must never discard an event without counting it as
//! undelivered, and never close the dispatch side while the publisher still holds events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::stats::Counters;
use super::DispatchSide;
use crate::channel::{MonitoredChannel, SendError, SendOutcome};
use crate::event::Message;

/// How many messages a forwarder moves per wake-up.
const FORWARD_BATCH: usize = 64;

/// See [`EventBus::dispatch_sender`](super::EventBus::dispatch_sender).
#[derive(Debug, Clone)]
pub struct DispatchSender {
    pub(super) to: MonitoredChannel<Message>,
    pub(super) dispatch: Arc<DispatchSide>,
    pub(super) counters: Arc<Counters>,
}

impl DispatchSender {
    /// Puts an event on the dispatch side, waiting for room; `Err` only once the dispatch
    /// side is closed (the event comes back inside).
    pub async fn send(&self, message: Message) -> Result<(), SendError<Message>> {
        // Counted before it can be seen, so a snapshot never finds it settled and not
        // accepted. A send that waits for room always enters, so only a closed dispatch side
        // (or this future dropped unfinished) leaves it undelivered, which the guard counts.
        self.counters.relayed.fetch_add(1, Ordering::Release);
        let mut undelivered = UndeliveredUnlessEntered(Some(&self.counters));
        let _entered = self.to.send_async_forever(message).await?;
        undelivered.0 = None;
        self.dispatch.doorbell.ring();
        Ok(())
    }

    /// True once the dispatch side is closed.
    pub fn is_closed(&self) -> bool {
        self.to.is_closed()
    }
}

/// Counts a relayed event as undelivered when dropped still holding the counters: its send
/// failed or never finished.
struct UndeliveredUnlessEntered<'a>(Option<&'a Counters>);

impl Drop for UndeliveredUnlessEntered<'_> {
    fn drop(&mut self) {
        if let Some(counters) = self.0 {
            counters.undelivered_dropped.fetch_add(1, Ordering::Release);
        }
    }
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
pub(super) async fn forward_rust_events(
    from: MonitoredChannel<Message>,
    to: MonitoredChannel<Message>,
    dispatch: Arc<DispatchSide>,
    counters: Arc<Counters>,
    running: Arc<AtomicBool>,
) {
    // One buffer for the forwarder's life: a fresh one per batch cost an allocation of 64
    // messages each time, which glibc served by consolidating its free lists.
    let mut batch = Vec::with_capacity(FORWARD_BATCH);
    while from
        .recv_batch_into_async(&mut batch, FORWARD_BATCH)
        .await
        .is_ok()
    {
        for message in batch.drain(..) {
            // Refusals are counted by the channel (dropped/rejected) and reported by the
            // monitor, and by the bus as undelivered; `Closed` cannot happen before this
            // forwarder has finished.
            match to.send_async(message).await {
                Ok(SendOutcome::Sent) => dispatch.doorbell.ring(),
                Ok(SendOutcome::Dropped) | Err(_) => {
                    counters.undelivered_dropped.fetch_add(1, Ordering::Release);
                }
            }
        }
        linger(&from).await;
    }
    // Stopped before the close: a dispatcher that sees the dispatch side end may ask at once
    // whether the bus is drained, and must not find this forwarder still running.
    running.store(false, Ordering::Release);
    to.close();
    dispatch.doorbell.ring_all();
}
