//! How long a send or a receive may wait, and what can stop it: one vocabulary for both.
//!
//! [`SendWait`] and [`RecvWait`] are built the same way (`forever`, `until`,
//! `interruptible`); a send adds what only a send has, the channel's own policy
//! ([`SendWait::policy`]) and the slices of a longer wait ([`SendWait::slice`]). These
//! types only describe a wait; the waiting itself is done by the channel's operations.

use std::future::Future;
use std::time::Instant;

use crate::wait::{block_on, Interrupt, WaitStopped};

/// What one logical send has been through, carried across the calls of a sliced wait, so
/// the send is counted as found-full and blocked once and its wait is measured from the
/// first slice.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendProgress {
    pub(super) waiting_since: Option<Instant>,
    /// Set once the send has been counted as finding the channel full, so a first
    /// non-waiting try followed by waiting slices counts one full event, not two.
    pub(super) found_full: bool,
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

/// How long a send may wait for room, in the channel's terms or the caller's.
#[derive(Debug, Clone, Copy)]
pub(super) enum Budget {
    /// The channel's own policy and `send_timeout`.
    Policy,
    /// Wait for room until the deadline (`None`: forever) whatever the policy, then fail.
    Until(Option<Instant>),
    /// Try once whatever the policy; fail with `Full`.
    NoWait,
}

/// How long a [`MonitoredChannel::send_with`](super::MonitoredChannel::send_with) may wait
/// for room, what can stop it, and whether its failure is final.
///
/// ```
/// # use tasker_channels_core::{Interrupt, SendProgress, SendWait};
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
    pub(super) budget: Budget,
    pub(super) interrupt: Option<&'a Interrupt>,
    pub(super) progress: Option<&'a mut SendProgress>,
}

impl<'a> SendWait<'a> {
    /// Apply the channel's policy, as [`MonitoredChannel::send`](super::MonitoredChannel::send)
    /// does.
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

    /// Let `interrupt` stop the wait with [`SendErrorKind::Interrupted`](super::SendErrorKind).
    pub fn interruptible(mut self, interrupt: &'a Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// Mark this call as one slice of a longer send. A failed slice is not counted as a
    /// rejection and notifies no one, because the caller will retry with the message it got
    /// back; when the caller finally gives up it must call
    /// [`MonitoredChannel::record_rejected`](super::MonitoredChannel::record_rejected).
    /// Under [`SendWait::policy`], a `block` channel's `send_timeout` runs from the first
    /// slice that waited.
    pub fn slice(mut self, progress: &'a mut SendProgress) -> Self {
        self.progress = Some(progress);
        self
    }
}

/// How long a receive may wait for a message, and what can stop it.
///
/// ```
/// # use tasker_channels_core::{Interrupt, RecvWait};
/// # use std::time::{Duration, Instant};
/// let interrupt = Interrupt::new();
/// let wait = RecvWait::until(Instant::now() + Duration::from_millis(100)).interruptible(&interrupt);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RecvWait<'a> {
    deadline: Option<Instant>,
    interrupt: Option<&'a Interrupt>,
}

impl<'a> RecvWait<'a> {
    /// Wait for as long as it takes.
    pub fn forever() -> Self {
        Self::deadline(None)
    }

    /// Wait until `deadline`, then fail with `TimedOut`.
    pub fn until(deadline: Instant) -> Self {
        Self::deadline(Some(deadline))
    }

    /// Wait until `deadline`, or for as long as it takes when it is `None`.
    pub fn deadline(deadline: Option<Instant>) -> Self {
        Self {
            deadline,
            interrupt: None,
        }
    }

    /// Let `interrupt` stop the wait with `Interrupted`.
    pub fn interruptible(mut self, interrupt: &'a Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// Drives `future` on this thread within this wait.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output, WaitStopped> {
        block_on(future, self.deadline, self.interrupt)
    }
}
