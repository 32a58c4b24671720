//! Test support for the bus: a small configuration, publishing, and taking events back.
//!
//! It must never be compiled outside tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EventBus, PublishError};
use crate::channel::{RecvWait, SendWait};
use crate::config::testing::TempDir;
use crate::config::{Config, LoadOptions};
use crate::event::{Event, EventSource, Message};
use crate::payload::Payload;

const SMALL: &str = r#"
[mpsc_channels.shared.ffi]
ruby_event_buffer_size = 4
[mpsc_channels.worker.in_process_events]
broadcast_buffer_size = 4
[mpsc_channels.shared.event_publisher]
event_queue_buffer_size = 2
"#;

/// The test configuration with small buffers: 4 events in `shared.ffi` and on the dispatch
/// side, 2 in `shared.event_publisher`, so backpressure shows quickly.
pub(super) fn small_config() -> Config {
    test_config(SMALL)
}

/// The `test` environment with `overrides` as its `mpsc_channels.toml`.
pub(super) fn test_config(overrides: &str) -> Config {
    let dir = TempDir::new();
    dir.write("environments/test/mpsc_channels.toml", overrides);
    let options = LoadOptions {
        environment: Some("test".into()),
        config_dir: Some(dir.path().to_path_buf()),
        shipped_dir_label: None,
    };
    Config::load_with_env(&options, |_| None).unwrap()
}

/// A bus started on [`small_config`].
pub(super) fn small_bus() -> Arc<EventBus> {
    EventBus::start(&small_config())
}

pub(super) fn publish(bus: &EventBus, seq: i64) -> Result<u64, PublishError> {
    let event = bus
        .prepare("load.event", Payload::Int(seq), EventSource::Ruby)
        .unwrap();
    bus.publish_prepared(event, SendWait::policy())
}

pub(super) fn events(batch: Vec<Message>) -> Vec<Event> {
    batch
        .into_iter()
        .map(|message| match message {
            Message::Event(event) => *event,
            other => panic!("the dispatch side carries whole events here, got {other:?}"),
        })
        .collect()
}

/// Takes events until `expected` Ruby events have arrived (the monitor's Rust events
/// may be interleaved and are dropped here).
pub(super) fn take_all(bus: &EventBus, expected: usize) -> Vec<Event> {
    let mut taken = Vec::new();
    while taken.len() < expected {
        let deadline = Instant::now() + Duration::from_secs(10);
        match bus.next_batch(16, RecvWait::until(deadline)) {
            Ok(batch) => taken.extend(
                events(batch)
                    .into_iter()
                    .filter(|e| e.source == EventSource::Ruby),
            ),
            Err(error) => panic!("expected {expected} events, got {}: {error:?}", taken.len()),
        }
    }
    taken
}

/// Events counted where they are: queued anywhere on the bus or held by a dispatcher (not
/// one the forwarder holds between its channels), a cross-check on `stats().pending`.
pub(super) fn queued_or_held(bus: &EventBus) -> u64 {
    let queued = bus.ffi.len()
        + bus.publisher.len()
        + bus.in_process.len()
        + bus.dispatch.returned_len.load(Ordering::Acquire);
    queued as u64 + bus.counters.in_flight.load(Ordering::Relaxed)
}
