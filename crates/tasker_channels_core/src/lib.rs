#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

//! tasker_channels_core: every bounded channel a Tasker worker runs on, sized and governed by
//! layered TOML configuration, monitored, and bridged into an in-process event bus.
//!
//! This crate knows nothing of Ruby; the `tasker_channels` extension is a thin binding over it.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tasker_channels_core::{Config, EventBus, LoadOptions, Message, Payload, RecvWait};
//!
//! let options = LoadOptions { environment: Some("test".into()), ..LoadOptions::default() };
//! let config = Config::load(&options).expect("the shipped config is valid");
//! let bus = EventBus::start(&config);
//! let id = bus
//!     .emit("orchestration.tick", Payload::symbol_hash([("n", Payload::Int(1))]))
//!     .expect("an empty buffer has room");
//! let batch = bus
//!     .next_batch(16, RecvWait::until(Instant::now() + Duration::from_secs(5)))
//!     .unwrap();
//! let Message::Event(event) = &batch[0] else { panic!("Rust events travel whole") };
//! assert_eq!(event.id, id);
//! assert_eq!(event.payload.get("n"), Some(&Payload::Int(1)));
//! ```
//!
//! The types most callers need are re-exported here; the modules stay public as the
//! namespaces for the rest (configuration keys, event bus channel names, PostgreSQL parts).

pub(crate) mod block_queue;
pub mod channel;
mod channel_info;
pub mod config;
pub mod event;
pub mod event_bus;
pub mod fork;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod pattern;
pub mod payload;
pub mod pg;
pub mod policy;
pub mod registry;
pub mod wait;

pub use channel::{
    ChannelInfo, MonitoredChannel, RecvError, RecvWait, SendError, SendErrorKind, SendOutcome,
    SendProgress, SendWait, WeakChannel,
};
pub use config::{ChannelSpec, Config, ConfigErrors, ConfigProblem, LoadOptions};
pub use event::{Event, EventRef, EventSource, InvalidEventName, Message};
pub use event_bus::{EventBus, EventStats, PublishError};
pub use metrics::{ChannelSample, ChannelStats, PrometheusText};
pub use monitor::{Monitor, MonitorEvent, MonitorHook, OverflowAction};
pub use pattern::{InvalidPattern, Pattern};
pub use payload::{Key, Payload, Timestamp, UtcOffset};
pub use pg::{
    ForwardError, ForwardOptions, Forwarder, ListenError, Listener, ListenerOptions, PgError,
};
pub use policy::{OverflowPolicy, UnknownPolicy};
pub use registry::{ChannelRegistry, UnknownChannel};
pub use wait::Interrupt;
