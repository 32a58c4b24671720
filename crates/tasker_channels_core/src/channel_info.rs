//! The fixed identity and settings of one channel, as errors, monitor notices and stats
//! name it.
//!
//! Owns nothing but the description: it sits below both [`crate::channel`] and
//! [`crate::monitor`], so neither has to import the other to talk about a channel. It must
//! never hold state that changes while the channel runs.

use std::time::Duration;

use crate::config::ChannelSpec;
use crate::policy::OverflowPolicy;

/// The fixed identity and settings of a channel, shared with errors and monitor notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Where the channel's table sits under `[mpsc_channels]`, e.g. `worker.command_processor`.
    pub name: String,
    /// The first segment of the name, e.g. `worker`.
    pub component: String,
    /// How many messages the channel holds at most.
    pub capacity: usize,
    /// What a send does when the channel is full (the table's `overflow` key).
    pub overflow: OverflowPolicy,
    /// How long a `block` send waits for room; `None`: forever.
    pub send_timeout: Option<Duration>,
}

impl ChannelInfo {
    /// A channel's settings for tests, benches and ad-hoc channels: named
    /// `worker.command_processor` in component `worker`.
    #[doc(hidden)]
    pub fn for_tests(
        overflow: OverflowPolicy,
        capacity: usize,
        send_timeout: Option<Duration>,
    ) -> Self {
        Self {
            name: "worker.command_processor".into(),
            component: "worker".into(),
            capacity,
            overflow,
            send_timeout,
        }
    }
}

impl From<&ChannelSpec> for ChannelInfo {
    fn from(spec: &ChannelSpec) -> Self {
        Self {
            name: spec.name.clone(),
            component: spec.component.clone(),
            capacity: spec.capacity,
            overflow: spec.overflow,
            send_timeout: spec.send_timeout,
        }
    }
}
