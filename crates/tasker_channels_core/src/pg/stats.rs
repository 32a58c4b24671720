//! What a listener and a forwarder count, and how those counts read as Prometheus text.
//!
//! Owns the live counters (atomics written by the tasks, read by anyone) and the snapshots
//! and metric families built from them. It must never decide anything: the tasks count,
//! this module only keeps and shows.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::metrics::{MetricKind, PrometheusText};

use super::names::PgChannel;

/// The live counters of one listener.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub received: AtomicU64,
    pub events: AtomicU64,
    pub coalesced: AtomicU64,
    pub coalesce_full: AtomicU64,
    pub coalesce_pending_entries: AtomicUsize,
    pub coalesce_pending_notifications: AtomicU64,
    pub remote_events: AtomicU64,
    pub remote_errors: AtomicU64,
    pub undecodable: AtomicU64,
    pub backpressure_waits: AtomicU64,
    pub backpressured: AtomicBool,
    pub connected: AtomicBool,
    pub stopped: AtomicBool,
    pub disconnects: AtomicU64,
    pub reconnects: AtomicU64,
    pub backend_pid: AtomicI64,
    /// `f64::to_bits` of the last sampled `pg_notification_queue_usage()`; NaN until sampled.
    pub queue_usage_bits: AtomicU64,
    pub queue_samples: AtomicU64,
    pub queue_sample_errors: AtomicU64,
    pub queue_notices: AtomicU64,
    pub queue_notices_suppressed: AtomicU64,
    pub channels: Mutex<Vec<PgChannel>>,
    pub last_error: Mutex<Option<String>>,
}

impl ListenerCounters {
    pub(crate) fn new(channels: Vec<PgChannel>) -> Self {
        Self {
            queue_usage_bits: AtomicU64::new(f64::NAN.to_bits()),
            channels: Mutex::new(channels),
            ..Self::default()
        }
    }

    pub(crate) fn channels(&self) -> Vec<PgChannel> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_channels(&self, channels: Vec<PgChannel>) {
        *self.channels.lock().unwrap_or_else(PoisonError::into_inner) = channels;
    }

    pub(crate) fn set_last_error(&self, error: impl Into<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.into());
    }

    pub(crate) fn snapshot(
        &self,
        id: u64,
        target: &str,
        coalesce_limit: Option<usize>,
    ) -> ListenerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let usage = f64::from_bits(self.queue_usage_bits.load(Ordering::Relaxed));
        let backend_pid = self.backend_pid.load(Ordering::Relaxed);
        ListenerStats {
            id,
            target: target.to_owned(),
            channels: self
                .channels()
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            connected: self.connected.load(Ordering::Relaxed),
            stopped: self.stopped.load(Ordering::Relaxed),
            backend_pid: (backend_pid != 0).then_some(backend_pid as i32),
            received: load(&self.received),
            events: load(&self.events),
            coalesce_limit,
            coalesced: load(&self.coalesced),
            coalesce_full: load(&self.coalesce_full),
            coalesce_pending_entries: self.coalesce_pending_entries.load(Ordering::Relaxed),
            coalesce_pending_notifications: load(&self.coalesce_pending_notifications),
            remote_events: load(&self.remote_events),
            remote_errors: load(&self.remote_errors),
            undecodable: load(&self.undecodable),
            backpressured: self.backpressured.load(Ordering::Relaxed),
            backpressure_waits: load(&self.backpressure_waits),
            disconnects: load(&self.disconnects),
            reconnects: load(&self.reconnects),
            queue_usage: (!usage.is_nan()).then_some(usage),
            queue_samples: load(&self.queue_samples),
            queue_sample_errors: load(&self.queue_sample_errors),
            queue_notices: load(&self.queue_notices),
            queue_notices_suppressed: load(&self.queue_notices_suppressed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A listener's counts at one moment.
///
/// Every notification read is in exactly one place: `received` = notifications in events
/// handed on + `coalesce_pending_notifications` + the one being handed on, if any. With
/// coalescing, `received - coalesced` is the number of events made.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerStats {
    /// The listener's id.
    pub id: u64,
    /// Where it listens, without the password.
    pub target: String,
    /// The PostgreSQL channels it listens on.
    pub channels: Vec<String>,
    /// Whether its connection is up.
    pub connected: bool,
    /// Whether it has been stopped.
    pub stopped: bool,
    /// The server process of the listening connection (for `pg_terminate_backend`).
    pub backend_pid: Option<i32>,
    /// Notifications read from the server.
    pub received: u64,
    /// Events handed to `orchestration.event_listeners` (notifications, forwarded events,
    /// and `listener.disconnected` / `listener.reconnected`).
    pub events: u64,
    /// The table bound, when coalescing.
    pub coalesce_limit: Option<usize>,
    /// Notifications merged into an earlier pending one (so not an event of their own).
    pub coalesced: u64,
    /// Times the coalescing table held its limit of distinct keys and reading stopped.
    pub coalesce_full: u64,
    /// Distinct entries waiting in the coalescing table.
    pub coalesce_pending_entries: usize,
    /// Notifications merged into those entries.
    pub coalesce_pending_notifications: u64,
    /// Forwarded events read back into ordinary events.
    pub remote_events: u64,
    /// Notifications that looked like forwarded events but could not be read (delivered as
    /// plain notifications instead).
    pub remote_errors: u64,
    /// Notifications whose payload was not valid UTF-8 (they end the connection; see docs).
    pub undecodable: u64,
    /// True while the listener waits for room and does not read the socket.
    pub backpressured: bool,
    /// Times a hand-over found `orchestration.event_listeners` full and waited.
    pub backpressure_waits: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Connections re-established.
    pub reconnects: u64,
    /// The server's `pg_notification_queue_usage()` (0.0–1.0) when last sampled.
    pub queue_usage: Option<f64>,
    /// Queue usage samples taken.
    pub queue_samples: u64,
    /// Queue usage samples that failed.
    pub queue_sample_errors: u64,
    /// `listener.queue_saturated` / `listener.queue_recovered` notices emitted.
    pub queue_notices: u64,
    /// Notices held back by damping.
    pub queue_notices_suppressed: u64,
    /// The last connection or query error, password removed.
    pub last_error: Option<String>,
}

/// The live counters of one forwarder.
#[derive(Debug, Default)]
pub(crate) struct ForwarderCounters {
    pub sent: AtomicU64,
    pub lost: AtomicU64,
    pub too_large: AtomicU64,
    pub failed_batches: AtomicU64,
    pub reconnects: AtomicU64,
    pub connected: AtomicBool,
    pub stopped: AtomicBool,
    pub in_flight: AtomicUsize,
    pub last_error: Mutex<Option<String>>,
}

impl ForwarderCounters {
    pub(crate) fn set_last_error(&self, error: impl Into<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.into());
    }
}

/// A forwarder's counts at one moment. Every event offered is in exactly one place:
/// queued (see the queue's own stats: sent, dropped, rejected), in flight, `sent`, or `lost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderStats {
    /// The forwarder's id.
    pub id: u64,
    /// The server, without the password.
    pub target: String,
    /// The PostgreSQL channel it NOTIFYs.
    pub channel: String,
    /// Whether its connection is up.
    pub connected: bool,
    /// Whether it has been stopped.
    pub stopped: bool,
    /// Events the server accepted (their NOTIFY committed).
    pub sent: u64,
    /// Events taken from the queue whose NOTIFY failed (the connection broke): at most once.
    pub lost: u64,
    /// Events refused for size before they were queued.
    pub too_large: u64,
    /// Batches NOTIFY failed on.
    pub failed_batches: u64,
    /// Connections re-established.
    pub reconnects: u64,
    /// Events taken from the queue and not yet committed.
    pub in_flight: usize,
    /// Events waiting in the queue.
    pub queued: usize,
    /// Capacity of its queue.
    pub queue_capacity: usize,
    /// Events its queue's `drop` policy discarded.
    pub queue_dropped: u64,
    /// Events its queue refused.
    pub queue_rejected: u64,
    /// The last connection or query error, password removed.
    pub last_error: Option<String>,
}

/// A family: name, kind, help, and how to read its value from one row of stats.
type Family<S> = (&'static str, MetricKind, &'static str, fn(&S) -> f64);

/// Writes each family's header, then one sample per row with that row's labels.
fn write_families<S>(
    out: &mut PrometheusText,
    families: &[Family<S>],
    rows: &[S],
    labels: impl Fn(&S) -> Vec<(&'static str, String)>,
) {
    for (name, kind, help, field) in families {
        out.family(name, *kind, help);
        for row in rows {
            let labels = labels(row);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            out.sample_f64(name, &labels, field(row));
        }
    }
}

/// Appends the listener and forwarder families (label `listener` or `forwarder`: the id).
pub fn write_prometheus(
    out: &mut PrometheusText,
    listeners: &[ListenerStats],
    forwarders: &[ForwarderStats],
) {
    let listener_families: [Family<ListenerStats>; 9] = [
        (
            "tasker_pg_notifications_received_total",
            MetricKind::Counter,
            "Notifications read from PostgreSQL.",
            |s| s.received as f64,
        ),
        (
            "tasker_pg_notifications_coalesced_total",
            MetricKind::Counter,
            "Notifications merged into an identical pending one.",
            |s| s.coalesced as f64,
        ),
        (
            "tasker_pg_notifications_undecodable_total",
            MetricKind::Counter,
            "Notifications whose payload was not valid UTF-8.",
            |s| s.undecodable as f64,
        ),
        (
            "tasker_pg_listener_events_total",
            MetricKind::Counter,
            "Events the listener handed to orchestration.event_listeners.",
            |s| s.events as f64,
        ),
        (
            "tasker_pg_listener_reconnects_total",
            MetricKind::Counter,
            "Times the listener reconnected after losing its connection.",
            |s| s.reconnects as f64,
        ),
        (
            "tasker_pg_listener_connected",
            MetricKind::Gauge,
            "1 while the listening connection is up.",
            |s| f64::from(u8::from(s.connected)),
        ),
        (
            "tasker_pg_listener_backpressured",
            MetricKind::Gauge,
            "1 while the listener waits for room and leaves the backlog to PostgreSQL.",
            |s| f64::from(u8::from(s.backpressured)),
        ),
        (
            "tasker_pg_listener_coalesce_pending",
            MetricKind::Gauge,
            "Distinct pending wake-ups in the coalescing table.",
            |s| s.coalesce_pending_entries as f64,
        ),
        (
            "tasker_pg_notification_queue_usage_ratio",
            MetricKind::Gauge,
            "PostgreSQL's pg_notification_queue_usage() when last sampled (NOTIFY fails at 1).",
            |s| s.queue_usage.unwrap_or(f64::NAN),
        ),
    ];
    if !listeners.is_empty() {
        write_families(out, &listener_families, listeners, |stats| {
            vec![("listener", stats.id.to_string())]
        });
    }
    if forwarders.is_empty() {
        return;
    }
    let forwarder_families: [Family<ForwarderStats>; 5] = [
        (
            "tasker_pg_forwarded_total",
            MetricKind::Counter,
            "Events NOTIFYed to PostgreSQL (committed).",
            |s| s.sent as f64,
        ),
        (
            "tasker_pg_forward_lost_total",
            MetricKind::Counter,
            "Events whose NOTIFY failed with the connection (at most once delivery).",
            |s| s.lost as f64,
        ),
        (
            "tasker_pg_forward_dropped_total",
            MetricKind::Counter,
            "Events the forward queue discarded by its policy, or refused.",
            |s| (s.queue_dropped + s.queue_rejected + s.too_large) as f64,
        ),
        (
            "tasker_pg_forward_queue_length",
            MetricKind::Gauge,
            "Events waiting in the forward queue.",
            |s| s.queued as f64,
        ),
        (
            "tasker_pg_forwarder_connected",
            MetricKind::Gauge,
            "1 while the forwarding connection is up.",
            |s| f64::from(u8::from(s.connected)),
        ),
    ];
    write_families(out, &forwarder_families, forwarders, |stats| {
        vec![
            ("forwarder", stats.id.to_string()),
            ("pg_channel", stats.channel.clone()),
        ]
    });
}

pub(crate) fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
