//! The Hashes the `stats` methods return: the bus's event counts, each channel's row, and a
//! PostgreSQL listener's and forwarder's counters.
//!
//! Owns the Ruby names of every counter (Symbol keys, as the RBS signatures spell them). It
//! must never compute a number itself: each value is read from a core snapshot as it is.

use magnus::{Error, IntoValue, RHash, Ruby, Value};
use tasker_channels_core::pg::stats::{ForwarderStats, ListenerStats};
use tasker_channels_core::{ChannelStats, EventStats};

/// `Runtime#_event_stats`: the bus's counts, and how many subscriptions the runtime holds.
pub fn event_stats_to_ruby(
    ruby: &Ruby,
    stats: &EventStats,
    subscriptions: usize,
) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("published"), stats.published)?;
    hash.aset(ruby.to_symbol("emitted"), stats.emitted)?;
    hash.aset(ruby.to_symbol("delivered"), stats.delivered)?;
    hash.aset(ruby.to_symbol("unmatched"), stats.unmatched)?;
    hash.aset(ruby.to_symbol("handler_errors"), stats.handler_errors)?;
    hash.aset(ruby.to_symbol("undelivered"), stats.undelivered_dropped)?;
    let reasons = ruby.hash_new();
    reasons.aset(ruby.to_symbol("dropped"), stats.undelivered_dropped)?;
    hash.aset(ruby.to_symbol("undelivered_by_reason"), reasons)?;
    hash.aset(ruby.to_symbol("pending"), stats.pending)?;
    hash.aset(ruby.to_symbol("subscriptions"), subscriptions)?;
    Ok(hash)
}

/// One row of `Runtime#stats`.
pub fn channel_stats_to_ruby(ruby: &Ruby, row: &ChannelStats) -> Result<RHash, Error> {
    symbol_hash(
        ruby,
        [
            ("channel", row.channel.as_str().into_value_with(ruby)),
            ("component", row.component.as_str().into_value_with(ruby)),
            ("capacity", row.capacity.into_value_with(ruby)),
            ("length", row.length.into_value_with(ruby)),
            ("usage_percent", row.usage_percent.into_value_with(ruby)),
            ("high_water_mark", row.high_water_mark.into_value_with(ruby)),
            ("policy", row.overflow.as_str().into_value_with(ruby)),
        ],
        [
            ("sent", row.sent),
            ("received", row.received),
            ("dropped", row.dropped),
            ("rejected", row.rejected),
            ("blocked", row.blocked),
            ("full_events", row.full_events),
            ("notices_suppressed", row.notices_suppressed),
            ("send_wait_p50_us", row.send_wait_p50_us),
            ("send_wait_p99_us", row.send_wait_p99_us),
        ],
    )
}

/// `Listener#stats`.
pub fn listener_stats_to_ruby(ruby: &Ruby, stats: &ListenerStats) -> Result<RHash, Error> {
    symbol_hash(
        ruby,
        [
            ("id", stats.id.into_value_with(ruby)),
            ("target", stats.target.as_str().into_value_with(ruby)),
            ("channels", stats.channels.clone().into_value_with(ruby)),
            ("connected", stats.connected.into_value_with(ruby)),
            ("stopped", stats.stopped.into_value_with(ruby)),
            ("backend_pid", stats.backend_pid.into_value_with(ruby)),
            ("coalesce_limit", stats.coalesce_limit.into_value_with(ruby)),
            (
                "coalesce_pending",
                stats.coalesce_pending_entries.into_value_with(ruby),
            ),
            ("backpressured", stats.backpressured.into_value_with(ruby)),
            ("queue_usage", stats.queue_usage.into_value_with(ruby)),
            ("last_error", stats.last_error.clone().into_value_with(ruby)),
        ],
        [
            ("received", stats.received),
            ("events", stats.events),
            ("coalesced", stats.coalesced),
            ("coalesce_full", stats.coalesce_full),
            (
                "coalesce_pending_notifications",
                stats.coalesce_pending_notifications,
            ),
            ("remote_events", stats.remote_events),
            ("remote_errors", stats.remote_errors),
            ("undecodable", stats.undecodable),
            ("backpressure_waits", stats.backpressure_waits),
            ("disconnects", stats.disconnects),
            ("reconnects", stats.reconnects),
            ("queue_samples", stats.queue_samples),
            ("queue_sample_errors", stats.queue_sample_errors),
            ("queue_notices", stats.queue_notices),
            ("queue_notices_suppressed", stats.queue_notices_suppressed),
        ],
    )
}

/// `Forwarder#stats`.
pub fn forwarder_stats_to_ruby(ruby: &Ruby, stats: &ForwarderStats) -> Result<RHash, Error> {
    symbol_hash(
        ruby,
        [
            ("id", stats.id.into_value_with(ruby)),
            ("to", stats.channel.as_str().into_value_with(ruby)),
            ("target", stats.target.as_str().into_value_with(ruby)),
            ("connected", stats.connected.into_value_with(ruby)),
            ("stopped", stats.stopped.into_value_with(ruby)),
            ("last_error", stats.last_error.clone().into_value_with(ruby)),
        ],
        [
            ("sent", stats.sent),
            ("lost", stats.lost),
            ("too_large", stats.too_large),
            ("failed_batches", stats.failed_batches),
            ("reconnects", stats.reconnects),
            ("in_flight", stats.in_flight as u64),
            ("queued", stats.queued as u64),
            ("queue_capacity", stats.queue_capacity as u64),
            ("queue_dropped", stats.queue_dropped),
            ("queue_rejected", stats.queue_rejected),
        ],
    )
}

/// A Hash with Symbol keys: `fields` first, then `counters`, in the order given.
fn symbol_hash<const FIELDS: usize, const COUNTERS: usize>(
    ruby: &Ruby,
    fields: [(&str, Value); FIELDS],
    counters: [(&str, u64); COUNTERS],
) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    for (key, value) in fields {
        hash.aset(ruby.to_symbol(key), value)?;
    }
    for (key, value) in counters {
        hash.aset(ruby.to_symbol(key), value)?;
    }
    Ok(hash)
}
