//! Layered, validated channel configuration (SPEC §3).
//!
//! Owns reading the shipped base TOML (the only source of defaults), merging layers with
//! provenance, validating every key, and the per-channel view. It must never create
//! channels or hold runtime state.

use std::time::Duration;

use crate::policy::OverflowPolicy;

/// The effective settings of one configured channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Table path without `mpsc_channels.`, e.g. `shared.ffi`.
    pub name: String,
    /// First segment of the name, e.g. `shared`.
    pub component: String,
    /// The capacity key of the table, e.g. `ruby_event_buffer_size`.
    pub capacity_key: String,
    pub capacity: usize,
    pub overflow: OverflowPolicy,
    pub send_timeout: Option<Duration>,
}
