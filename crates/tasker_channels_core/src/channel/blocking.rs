//! Sends and receives that wait on the calling thread, for plain threads and for the Ruby
//! binding (which runs them without the GVL, in slices, with an [`Interrupt`] its unblock
//! function triggers).
//!
//! Every wait here is stoppable by its deadline or its interrupt; none may sleep without
//! having listened and re-checked the queue first.

use std::time::Instant;

use crate::block_queue::PushError;
use crate::wait::{block_on, Interrupt, WaitStopped};

use super::overflow::displaces_oldest;
use super::wait::{Budget, SendProgress};
use super::{MonitoredChannel, RecvError, RecvWait, SendError, SendOutcome, SendWait};

impl<T> MonitoredChannel<T> {
    /// Sends under the channel's policy:
    /// - `block`: waits for room up to `send_timeout` (forever when unset), then
    ///   [`SendErrorKind::TimedOut`](super::SendErrorKind::TimedOut);
    /// - `drop`: when full, discards `msg` and returns [`SendOutcome::Dropped`];
    /// - `drop_oldest`: when full, discards the oldest queued message and sends `msg`;
    /// - `error`: when full, [`SendErrorKind::Full`](super::SendErrorKind::Full) at once.
    ///
    /// A `block` wait here cannot be interrupted; use [`send_with`](Self::send_with) for that.
    pub fn send(&self, msg: T) -> Result<SendOutcome, SendError<T>> {
        if displaces_oldest(Budget::Policy, self.shared.overflow) {
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

        if displaces_oldest(budget, self.shared.overflow) {
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

    pub(super) fn wait_for_room(
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
            let (_waiting, listener, returned) = match self.enter_or_listen(msg, started, sliced) {
                Ok(listening) => listening,
                Err(done) => return done,
            };
            msg = returned;
            match block_on(listener, deadline, interrupt) {
                Ok(()) => {}
                Err(WaitStopped::TimedOut) => return self.last_try(msg, started, sliced),
                Err(WaitStopped::Interrupted) => return Err(self.interrupted(msg, sliced)),
            }
        }
    }

    /// Waits for a message as long as `wait` allows. After [`close`](Self::close) it still
    /// returns what is queued, then `Closed`.
    pub fn recv(&self, wait: RecvWait<'_>) -> Result<T, RecvError> {
        match self.try_recv() {
            Err(RecvError::Empty) => self.wait_to_take(wait, || self.try_recv()),
            done => done,
        }
    }

    /// Waits for at least one message like [`recv`](Self::recv), then takes up to `max` in
    /// all without waiting again, so one wake-up delivers many. `max == 0` returns an empty
    /// batch at once.
    pub fn recv_batch(&self, max: usize, wait: RecvWait<'_>) -> Result<Vec<T>, RecvError> {
        let mut batch = Vec::new();
        self.recv_batch_into(&mut batch, max, wait)?;
        Ok(batch)
    }

    /// [`recv_batch`](Self::recv_batch) appending to a caller's buffer (which grows by at
    /// most `max`); returns how many were appended.
    pub fn recv_batch_into(
        &self,
        batch: &mut Vec<T>,
        max: usize,
        wait: RecvWait<'_>,
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.wait_to_take(wait, || self.take_up_to(batch, max))
    }

    #[inline(never)]
    fn wait_to_take<R>(
        &self,
        wait: RecvWait<'_>,
        mut take: impl FnMut() -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        loop {
            let (_waiting, listener) = match self.take_or_listen(&mut take) {
                Ok(listening) => listening,
                Err(done) => return done,
            };
            match wait.block_on(listener) {
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
}
