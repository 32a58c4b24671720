//! Conversions between Ruby values and the core's values, one file per kind of value.
//!
//! - [`payload`]: event payloads both ways, by the plain-data rules of the Ruby API.
//! - [`event`]: `Tasker::Channels::Event` objects, interned names and source symbols on the
//!   dispatch side, and the name and payload of an event Ruby hands to Rust.
//! - [`stats`]: the Hashes `stats` methods return (bus, channel, listener, forwarder).
//! - [`config`]: a loaded configuration's TOML values and channel specs.
//!
//! Everything here runs on a Ruby thread holding the GVL and builds or reads values only: it
//! must never decide anything about the bus, never keep a Ruby object past the call, and
//! never translate an error (that is `crate::errors`).

pub mod config;
pub mod event;
pub mod payload;
pub mod stats;
