//! tasker_channels_core: every bounded channel a Tasker worker runs on, sized and governed by
//! layered TOML configuration, monitored, and bridged into an in-process event bus.
//!
//! This crate knows nothing of Ruby; the `tasker_channels` extension is a thin binding over it.

pub mod channel;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod payload;
pub mod policy;
pub mod registry;
pub mod wait;
