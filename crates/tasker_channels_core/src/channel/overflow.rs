//! What a send does when it finds the channel full: the whole overflow decision, for every
//! [`OverflowPolicy`] and every kind of [`SendWait`](super::SendWait), in one place, and
//! how each answer is counted and reported to the monitor.
//!
//! | policy        | `SendWait::policy()`                         | `until` / `forever` | `no_wait` |
//! |---------------|----------------------------------------------|---------------------|-----------|
//! | `block`       | wait up to `send_timeout` (unset: forever)   | wait to the deadline | `Full`   |
//! | `drop`        | discard the new message, `Dropped`           | wait to the deadline | `Full`   |
//! | `drop_oldest` | displace the oldest message, `Sent`          | wait to the deadline | `Full`   |
//! | `error`       | `Full` at once                               | wait to the deadline | `Full`   |
//!
//! It must never let a message go without counting it, and never wait itself: waiting is
//! left to the blocking and async operations.

use std::time::{Duration, Instant};

use crate::block_queue::PushError;
use crate::monitor::OverflowAction;
use crate::policy::OverflowPolicy;

use super::wait::{Budget, SendProgress};
use super::{MonitoredChannel, SendError, SendErrorKind, SendOutcome};

/// What a send that found the channel full goes on to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WhenFull {
    /// Wait for room until the deadline (`None`: forever), then fail with `TimedOut`.
    Wait(Option<Instant>),
    /// Discard the new message and report [`SendOutcome::Dropped`].
    DropNew,
    /// Fail at once with `Full`.
    Reject,
}

/// Whether the send makes room by displacing the oldest message, so it never finds the
/// channel full at all.
pub(super) fn displaces_oldest(budget: Budget, overflow: OverflowPolicy) -> bool {
    matches!(budget, Budget::Policy) && overflow == OverflowPolicy::DropOldest
}

/// The table in the module docs. A `block` send's `send_timeout` runs from when the send
/// started waiting (`waiting_since`, carried across slices), or from now.
pub(super) fn when_full(
    budget: Budget,
    overflow: OverflowPolicy,
    send_timeout: Option<Duration>,
    waiting_since: Option<Instant>,
) -> WhenFull {
    match (budget, overflow) {
        (Budget::Until(deadline), _) => WhenFull::Wait(deadline),
        (Budget::NoWait, _) => WhenFull::Reject,
        (Budget::Policy, OverflowPolicy::Block) => WhenFull::Wait(
            send_timeout.map(|timeout| waiting_since.unwrap_or_else(Instant::now) + timeout),
        ),
        (Budget::Policy, OverflowPolicy::Drop) => WhenFull::DropNew,
        // `drop_oldest` displaces instead of finding the channel full ([`displaces_oldest`]);
        // a send that still gets here is refused like an `error` one.
        (Budget::Policy, OverflowPolicy::Error | OverflowPolicy::DropOldest) => WhenFull::Reject,
    }
}

impl<T> MonitoredChannel<T> {
    /// The policy's answer to a full channel: drop, reject, or wait for room.
    #[inline(never)]
    pub(super) fn send_when_full(
        &self,
        msg: T,
        budget: Budget,
        interrupt: Option<&crate::wait::Interrupt>,
        progress: &mut SendProgress,
        sliced: bool,
    ) -> Result<SendOutcome, SendError<T>> {
        let s = &*self.shared;
        if !progress.found_full {
            self.found_full();
            progress.found_full = true;
        }
        let info = &s.info;
        match when_full(
            budget,
            s.overflow,
            info.send_timeout,
            progress.waiting_since,
        ) {
            WhenFull::Wait(deadline) => {
                self.wait_for_room(msg, deadline, interrupt, progress, sliced)
            }
            WhenFull::DropNew => {
                s.metrics.record_dropped_new();
                s.watch
                    .overflow(info, info.capacity, OverflowAction::DroppedNew);
                drop(msg);
                Ok(SendOutcome::Dropped)
            }
            WhenFull::Reject => {
                Err(self.rejected_full(SendError::new(SendErrorKind::Full, msg, info), sliced))
            }
        }
    }

    /// `drop_oldest`: pushes, displacing the oldest message while the channel is full.
    pub(super) fn send_displacing(
        &self,
        msg: T,
        sliced: bool,
    ) -> Result<SendOutcome, SendError<T>> {
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

    /// Counts the final failure of a sliced send (see [`SendWait::slice`](super::SendWait::slice)):
    /// `rejected`, and for `Full`/`TimedOut` an overflow notice to the monitor hook.
    pub fn record_rejected(&self, kind: SendErrorKind) {
        let s = &*self.shared;
        s.metrics.record_rejected();
        if matches!(kind, SendErrorKind::Full | SendErrorKind::TimedOut) {
            s.watch
                .overflow(&s.info, self.len(), OverflowAction::Rejected);
        }
    }

    /// A sender found the channel full: counted, and a full channel always reaches the
    /// saturation watch even though its length did not change.
    pub(super) fn found_full(&self) {
        let s = &*self.shared;
        s.metrics.record_full();
        self.observe_length(s.info.capacity);
    }

    /// The deadline passed: room that appeared at the last moment still counts.
    pub(super) fn last_try(
        &self,
        msg: T,
        started: Instant,
        sliced: bool,
    ) -> Result<SendOutcome, SendError<T>> {
        match self.try_enter(msg, Some(started)) {
            Ok(()) => Ok(SendOutcome::Sent),
            Err(PushError::Closed(msg)) => Err(self.closed(msg, sliced)),
            Err(PushError::Full(msg)) => Err(self.rejected_full(
                SendError::timed_out(msg, &self.shared.info, started.elapsed()),
                sliced,
            )),
        }
    }

    pub(super) fn rejected_full(&self, error: SendError<T>, sliced: bool) -> SendError<T> {
        if !sliced {
            self.record_rejected(error.kind());
        }
        error
    }

    pub(super) fn interrupted(&self, msg: T, sliced: bool) -> SendError<T> {
        if !sliced {
            self.shared.metrics.record_rejected();
        }
        SendError::new(SendErrorKind::Interrupted, msg, &self.shared.info)
    }

    pub(super) fn closed(&self, msg: T, sliced: bool) -> SendError<T> {
        if !sliced {
            self.shared.metrics.record_rejected();
        }
        SendError::new(SendErrorKind::Closed, msg, &self.shared.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_and_budget_has_one_answer() {
        use OverflowPolicy::{Block, Drop, DropOldest, Error};
        let soon = Instant::now() + Duration::from_secs(1);
        for policy in [Block, Drop, DropOldest, Error] {
            assert_eq!(
                when_full(Budget::Until(Some(soon)), policy, None, None),
                WhenFull::Wait(Some(soon))
            );
            assert_eq!(
                when_full(Budget::NoWait, policy, None, None),
                WhenFull::Reject
            );
            assert_eq!(
                displaces_oldest(Budget::Policy, policy),
                policy == DropOldest
            );
        }
        assert_eq!(
            when_full(Budget::Policy, Block, None, None),
            WhenFull::Wait(None)
        );
        let since = Instant::now();
        assert_eq!(
            when_full(
                Budget::Policy,
                Block,
                Some(Duration::from_secs(2)),
                Some(since)
            ),
            WhenFull::Wait(Some(since + Duration::from_secs(2)))
        );
        assert_eq!(
            when_full(Budget::Policy, Drop, None, None),
            WhenFull::DropNew
        );
        assert_eq!(
            when_full(Budget::Policy, Error, None, None),
            WhenFull::Reject
        );
        assert!(!displaces_oldest(Budget::NoWait, DropOldest));
    }
}
