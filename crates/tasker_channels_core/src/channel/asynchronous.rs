//! Sends and receives for tokio tasks: the same queue and counting as the blocking
//! operations, awaiting the wake-ups instead of parking a thread.
//!
//! Dropping one of these futures abandons the operation cleanly (its waiter count is
//! released); they must never block the executor's thread.

use std::time::Instant;

use crate::block_queue::PushError;
use crate::policy::OverflowPolicy;

use super::{MonitoredChannel, RecvError, SendError, SendOutcome};

impl<T> MonitoredChannel<T> {
    /// Sends under the channel's policy from async code: a `block` send awaits room, up to
    /// `send_timeout` (measured with tokio's timer, so a channel with a timeout must be used
    /// inside a tokio runtime with time enabled). Other policies never wait. Dropping the
    /// future abandons the send (the message is dropped with it, and nothing is counted).
    pub async fn send_async(&self, msg: T) -> Result<SendOutcome, SendError<T>> {
        let info = &self.shared.info;
        if self.shared.overflow != OverflowPolicy::Block {
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
            let (_waiting, listener, returned) = match self.enter_or_listen(msg, started, false) {
                Ok(listening) => listening,
                Err(done) => return done,
            };
            msg = returned;
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

    /// Awaits a message; `Closed` once the channel is closed and drained.
    pub async fn recv_async(&self) -> Result<T, RecvError> {
        self.await_to_take(|| self.try_recv()).await
    }

    /// Awaits at least one message, then takes up to `max` in all without waiting again.
    pub async fn recv_batch_async(&self, max: usize) -> Result<Vec<T>, RecvError> {
        let mut batch = Vec::new();
        self.recv_batch_into_async(&mut batch, max).await?;
        Ok(batch)
    }

    /// [`recv_batch_async`](Self::recv_batch_async) appending to a caller's buffer (which
    /// grows by at most `max`), so a loop can reuse one buffer; returns how many were
    /// appended.
    pub async fn recv_batch_into_async(
        &self,
        batch: &mut Vec<T>,
        max: usize,
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.await_to_take(|| self.take_up_to(batch, max)).await
    }

    async fn await_to_take<R>(
        &self,
        mut take: impl FnMut() -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        loop {
            let (_waiting, listener) = match self.take_or_listen(&mut take) {
                Ok(listening) => listening,
                Err(done) => return done,
            };
            listener.await;
        }
    }
}
