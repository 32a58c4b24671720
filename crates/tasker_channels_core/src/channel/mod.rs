//! Bounded, monitored channels that apply their overflow policy (docs/design.md §4).
//!
//! Owns the queue, its wake-ups, the policy decision on every send, and feeding the
//! channel's counters and saturation watch. It must never grow beyond the configured
//! capacity, never lose a message without counting it, and never wait in a way another
//! thread cannot interrupt.
//!
//! # Using a channel
//!
//! A [`MonitoredChannel`] is made from a [`ChannelSpec`](crate::config::ChannelSpec) (or a
//! bare [`ChannelInfo`]) and a [`Monitor`](crate::monitor::Monitor); every clone is the same
//! channel, and any clone can send, receive or close.
//!
//! - Sending: [`send`](MonitoredChannel::send) applies the channel's policy;
//!   [`send_with`](MonitoredChannel::send_with) takes a [`SendWait`] saying how long to wait
//!   and what may interrupt the wait; [`send_async`](MonitoredChannel::send_async) and its
//!   siblings await room in a tokio task. An accepted send says what became of the message
//!   ([`SendOutcome`]); a refused one hands it back in a [`SendError`].
//! - Receiving: [`try_recv`](MonitoredChannel::try_recv) never waits;
//!   [`recv`](MonitoredChannel::recv) and [`recv_batch`](MonitoredChannel::recv_batch) take a
//!   [`RecvWait`], built like a [`SendWait`]; [`recv_async`](MonitoredChannel::recv_async)
//!   awaits. After [`close`](MonitoredChannel::close) receivers still drain what is queued.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tasker_channels_core::{ChannelInfo, Monitor, MonitoredChannel, OverflowPolicy, RecvWait};
//!
//! let info = ChannelInfo {
//!     name: "worker.command_processor".into(),
//!     component: "worker".into(),
//!     capacity: 2,
//!     overflow: OverflowPolicy::Drop,
//!     send_timeout: None,
//! };
//! let channel = MonitoredChannel::from_info(info, &Monitor::new(0.8, Duration::ZERO));
//! assert!(channel.send(1).unwrap().is_sent());
//! let soon = Instant::now() + Duration::from_millis(10);
//! assert_eq!(channel.recv(RecvWait::until(soon)), Ok(1));
//! ```
//!
//! # Layout
//!
//! - `monitored`: the channel's state, handles, accessors and the bookkeeping every
//!   operation shares;
//! - `overflow`: what a send does on a full channel, for every policy, in one table;
//! - `blocking`, `asynchronous`: the operations that wait on a thread or in a task;
//! - `wait`: the wait builders; `wake`: the two wake-ups and their waiter counts;
//! - `error`: outcomes and errors.
//!
//! # Why a block queue + event-listener
//!
//! The usual channels each miss something this one must do:
//! - `drop_oldest` needs to displace the oldest message without the length ever passing
//!   capacity and hand it back to be counted (the block queue's `force_push`);
//!   async-channel, crossbeam and tokio mpsc cannot;
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
//! A lock-free bounded queue that allocates in blocks as it fills (`crate::block_queue`)
//! plus two events (room appeared, data appeared) gives all of it, with waits built on
//! [`crate::wait::block_on`] or `.await`. Every wait listens first and then re-checks the
//! queue before sleeping, so a wake-up between the check and the sleep is never lost.

mod asynchronous;
mod blocking;
mod error;
mod monitored;
mod overflow;
mod wait;
mod wake;

#[cfg(test)]
mod tests;

pub use crate::channel_info::ChannelInfo;
pub use error::{RecvError, SendError, SendErrorKind, SendOutcome};
pub use monitored::{MonitoredChannel, WeakChannel};
pub use wait::{RecvWait, SendProgress, SendWait};
