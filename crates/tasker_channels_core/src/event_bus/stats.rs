//! The bus's own counters (accepted, delivered, unmatched, undelivered, pending) and the
//! Prometheus families they render to.
//!
//! Owns what the bus counts as a whole; per-channel numbers live in the channels' stats.
//! It must never count an event twice: every accepted event ends delivered, unmatched,
//! undelivered or pending.

use std::sync::atomic::{AtomicU64, Ordering};

use super::EventBus;
use crate::metrics::{MetricKind, PrometheusText};

/// Counters of the bus as a whole; per-channel numbers live in the channels' stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStats {
    /// Ruby events accepted into `shared.ffi`.
    pub published: u64,
    /// Rust events accepted into `shared.event_publisher`.
    pub emitted: u64,
    /// Events handed to at least one subscriber.
    pub delivered: u64,
    /// Events that reached the dispatch side but matched no subscription.
    pub unmatched: u64,
    /// Subscriber calls that raised.
    pub handler_errors: u64,
    /// Accepted Rust events discarded on the way to the dispatchers, so never delivered:
    /// by `worker.in_process_events`' own policy, or evicted from `shared.event_publisher`
    /// by its `drop_oldest`. (Ruby events are never discarded.)
    pub undelivered_dropped: u64,
    /// Accepted and not yet settled (delivered, unmatched or undelivered): queued on the
    /// bus, or taken by a dispatcher that has not finished with it. Every snapshot keeps
    /// `published + emitted == delivered + unmatched + undelivered_dropped + pending`.
    pub pending: u64,
}
/// The counters behind [`EventStats`] that no channel keeps, shared by the bus, its
/// forwarder and the relay. Acceptances are counted by the channels events enter
/// (`shared.ffi`, `shared.event_publisher`), at the moment an event takes its place.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Events the PostgreSQL relay put on the dispatch side directly, counted before the
    /// send that makes them visible.
    pub(super) relayed: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) unmatched: AtomicU64,
    pub(super) handler_errors: AtomicU64,
    pub(super) undelivered_dropped: AtomicU64,
    /// Taken by dispatchers and not yet recorded as delivered, unmatched or given back.
    pub(super) in_flight: AtomicU64,
}

impl EventBus {
    /// The bus's event counters, read as one snapshot in which the accounting identity
    /// holds exactly, however busy the bus is.
    ///
    /// Settled counts are read first and accepted counts after them. An event is counted as
    /// accepted when it takes its place in `shared.ffi` or `shared.event_publisher` (or just
    /// before the relay sends it), which is before anything can take it, let alone settle
    /// it; so the accepted counts read later include every settled event, and `pending`, their
    /// difference, is what was accepted and not yet settled (at most a few events high, for
    /// places claimed while the snapshot was read).
    pub fn stats(&self) -> EventStats {
        let c = &self.counters;
        let delivered = c.delivered.load(Ordering::Acquire);
        let unmatched = c.unmatched.load(Ordering::Acquire);
        let undelivered_dropped =
            c.undelivered_dropped.load(Ordering::Acquire) + self.publisher.evicted();
        let published = self.ffi.entered();
        let emitted = self.publisher.entered() + c.relayed.load(Ordering::Acquire);
        let accepted = published + emitted;
        let settled = delivered + unmatched + undelivered_dropped;
        debug_assert!(
            accepted >= settled,
            "{settled} settled of {accepted} accepted"
        );
        EventStats {
            published,
            emitted,
            delivered,
            unmatched,
            handler_errors: c.handler_errors.load(Ordering::Relaxed),
            undelivered_dropped,
            pending: accepted.saturating_sub(settled),
        }
    }

    /// Prometheus text for every channel, then the bus counters.
    pub fn prometheus_text(&self) -> String {
        let mut out = PrometheusText::new();
        self.registry.write_prometheus(&mut out);
        let stats = self.stats();
        let mut counter = |name: &str, help: &str, label: &str, samples: &[(&str, u64)]| {
            out.family(name, MetricKind::Counter, help);
            for (label_value, value) in samples {
                out.sample_u64(name, &[(label, label_value)], *value);
            }
        };
        counter(
            "tasker_events_accepted_total",
            "Events accepted onto the bus, by source.",
            "source",
            &[("ruby", stats.published), ("rust", stats.emitted)],
        );
        counter(
            "tasker_events_dispatched_total",
            "Events that reached the dispatch side, by outcome.",
            "outcome",
            &[
                ("delivered", stats.delivered),
                ("unmatched", stats.unmatched),
            ],
        );
        counter(
            "tasker_event_handler_errors_total",
            "Subscriber calls that raised.",
            "kind",
            &[("handler", stats.handler_errors)],
        );
        counter(
            "tasker_events_undelivered_total",
            "Accepted events that will never be delivered, by reason.",
            "reason",
            &[("dropped", stats.undelivered_dropped)],
        );
        out.family(
            "tasker_events_pending",
            MetricKind::Gauge,
            "Accepted events not yet delivered.",
        );
        out.sample_u64("tasker_events_pending", &[], stats.pending);
        out.into_string()
    }
}
