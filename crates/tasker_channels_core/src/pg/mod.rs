//! PostgreSQL notifications in, events across processes out.
//!
//! A [`Listener`] LISTENs on PostgreSQL channels and turns every notification into an event
//! named `pg.<channel>` (see [`names::event_name_for`]) with a payload of `channel`,
//! `payload` (String) and `backend_pid` (plus `count` when coalescing). A [`Forwarder`]
//! NOTIFYs local events, encoded by [`envelope`], so that listeners in other processes turn
//! them back into ordinary events with source [`EventSource::Remote`](crate::event::EventSource).
//!
//! This module owns everything that talks to PostgreSQL; it must never be reached from the
//! paths that do not use it (a runtime that never listens opens no connection), and it never
//! waits on a Ruby (or any caller's) thread: every wait is a future the caller drives.
//!
//! # The way a notification takes
//!
//! ```text
//! socket ─▶ listener task ─▶ orchestration.event_listeners ─▶ relay task ─▶ worker.in_process_events ─▶ dispatchers
//! ```
//!
//! Every arrow waits for room (`send_async_forever`), whatever the channels' configured
//! policies, because PostgreSQL cannot be asked to resend: when the handlers fall behind,
//! the dispatch side fills, the relay waits, `orchestration.event_listeners` fills, the
//! listener waits and stops reading its socket. The backlog then sits in the server's
//! notification queue, this process's memory stays flat, and nothing is lost once the
//! handlers catch up. The listening connection runs no query while it waits.
//!
//! # Modules
//!
//! - [`names`]: channel names, quoting, event names.
//! - [`target`]: URLs, connecting, errors that name the host and never the password.
//! - [`listener`]: the LISTEN connection, backpressure, coalescing, reconnects.
//! - `coalesce`: the bounded table of identical pending wake-ups.
//! - [`relay`]: the hop to the dispatch side, one per bus, and draining it at shutdown.
//! - `queue_usage`: `pg_notification_queue_usage()` from a second connection, and the
//!   damped `listener.queue_saturated` / `listener.queue_recovered` events.
//! - [`envelope`]: the JSON a forwarded event travels in, keeping key kinds.
//! - [`forward`]: the forwarding queue and its NOTIFY connection.
//! - `backoff`, [`stats`]: reconnect delays; counters and Prometheus families.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use tasker_channels_core::config::{Config, LoadOptions};
//! use tasker_channels_core::event_bus::EventBus;
//! use tasker_channels_core::pg::{Listener, ListenerOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(&LoadOptions::default())?;
//! let bus = EventBus::start(&config);
//! let options = ListenerOptions::new(
//!     "postgresql:///app?host=/var/run/postgresql",
//!     ["pgmq_message_ready", "pgmq.q_orders.INSERT"],
//! );
//! let (listener, startup) = Listener::start(&bus, options)?;
//! startup.await?; // connected and listening
//! // Events named pg.pgmq_message_ready and pg.pgmq.q_orders.INSERT now reach the
//! // dispatch side (bus.next_batch).
//! listener.stop();
//! listener.stopped().await;
//! # Ok(()) }
//! ```

pub(crate) mod backoff;
pub(crate) mod coalesce;
pub mod envelope;
pub mod forward;
pub mod listener;
pub mod names;
pub(crate) mod queue_usage;
pub mod relay;
pub mod stats;
pub mod target;
mod task;

pub use forward::{ForwardError, ForwardOptions, Forwarder};
pub use listener::{ListenError, Listener, ListenerOptions, ORIGIN_KEY};
pub use names::{event_name_for, PgChannel};
pub use stats::{ForwarderStats, ListenerStats};
pub use target::{FailureKind, PgError};
pub use task::FirstConnection;

/// Resolves once `stop` turns true or its sender is gone. The watch guard is released before
/// this returns, so the future stays `Send` across later awaits.
pub(crate) async fn stop_requested(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
