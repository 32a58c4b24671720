//! What a send or a receive reports back: the outcome of an accepted send, and the errors.
//!
//! A send error always hands the message back with the channel it was meant for, and its
//! text only states what happened, with the channel's name, capacity and policy; advice on
//! what to do next belongs to whoever shows it to a user.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::channel_info::ChannelInfo;

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

/// Which way a send failed; see [`SendError::kind`] and
/// [`MonitoredChannel::record_rejected`](super::MonitoredChannel::record_rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendErrorKind {
    /// The channel was full and the send could not wait: policy `error`, or
    /// [`SendWait::no_wait`](super::SendWait::no_wait).
    Full,
    /// The channel stayed full until the send's deadline.
    TimedOut,
    /// [`Interrupt::trigger`](crate::wait::Interrupt::trigger) stopped the wait for room.
    Interrupted,
    /// The channel is closed.
    Closed,
}

/// A failed send: which way it failed, the message handed back ([`SendError::into_inner`])
/// and the channel it was meant for.
pub struct SendError<T> {
    kind: SendErrorKind,
    msg: T,
    channel: Arc<ChannelInfo>,
    /// How long the send waited for room before it gave up (zero when it did not wait).
    waited: Duration,
}

impl<T> SendError<T> {
    pub(crate) fn new(kind: SendErrorKind, msg: T, channel: &Arc<ChannelInfo>) -> Self {
        Self {
            kind,
            msg,
            channel: Arc::clone(channel),
            waited: Duration::ZERO,
        }
    }

    pub(super) fn timed_out(msg: T, channel: &Arc<ChannelInfo>, waited: Duration) -> Self {
        Self {
            waited,
            ..Self::new(SendErrorKind::TimedOut, msg, channel)
        }
    }

    /// The message the send could not deliver.
    pub fn into_inner(self) -> T {
        self.msg
    }

    /// The message the send could not deliver, by reference.
    pub fn message(&self) -> &T {
        &self.msg
    }

    /// The channel the message was meant for.
    pub fn channel(&self) -> &ChannelInfo {
        &self.channel
    }

    /// Which way the send failed.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// How long the send waited for room before it gave up (zero when it did not wait).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// True when the channel was full: what Ruby reports as `Tasker::Backpressure`.
    pub fn is_backpressure(&self) -> bool {
        matches!(self.kind, SendErrorKind::Full | SendErrorKind::TimedOut)
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ChannelInfo {
            name,
            capacity,
            overflow,
            ..
        } = &*self.channel;
        match self.kind {
            SendErrorKind::Full => write!(
                f,
                "channel {name} is full (capacity {capacity}, policy {overflow})"
            ),
            SendErrorKind::TimedOut => write!(
                f,
                "channel {name} stayed full for {:?} (capacity {capacity}, policy {overflow})",
                self.waited
            ),
            SendErrorKind::Interrupted => write!(f, "send to channel {name} was interrupted"),
            SendErrorKind::Closed => write!(f, "channel {name} is closed"),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message is left out so errors stay printable for any `T`.
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .field("channel", &self.channel.name)
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
    /// [`Interrupt::trigger`](crate::wait::Interrupt::trigger) stopped the wait.
    #[error("receive was interrupted")]
    Interrupted,
    /// The channel is closed and everything queued has been received.
    #[error("channel is closed and drained")]
    Closed,
}
