//! tasker_channels_core: every bounded channel a Tasker worker runs on, sized and governed by
//! layered TOML configuration, monitored, and bridged into an in-process event bus.
//!
//! This crate knows nothing of Ruby; the `tasker_channels` extension is a thin binding over it.
//!
//! ```
//! use tasker_channels_core::config::{Config, LoadOptions};
//! use tasker_channels_core::event::Message;
//! use tasker_channels_core::event_bus::EventBus;
//! use tasker_channels_core::payload::Payload;
//!
//! let options = LoadOptions { environment: Some("test".into()), ..LoadOptions::default() };
//! let config = Config::load(&options).expect("the shipped config is valid");
//! let bus = EventBus::start(&config);
//! let id = bus
//!     .emit("orchestration.tick", Payload::symbol_hash([("n", Payload::Int(1))]))
//!     .expect("an empty buffer has room");
//! let batch = bus
//!     .next_batch(16, Some(std::time::Instant::now() + std::time::Duration::from_secs(5)), None)
//!     .unwrap();
//! let Message::Event(event) = &batch[0] else { panic!("Rust events travel whole") };
//! assert_eq!(event.id, id);
//! assert_eq!(event.payload.get("n"), Some(&Payload::Int(1)));
//! ```

pub mod block_queue;
pub mod channel;
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
