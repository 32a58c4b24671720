//! Per-channel counters, their snapshots, and the Prometheus text they render to.
//!
//! A channel bumps [`ChannelMetrics`] on its hot path (`counters`), waits land in the
//! send-wait histogram (`histogram`), a snapshot becomes one [`ChannelStats`] row of the
//! design (docs/design.md §6, `stats`), and rows render to the text exposition format 0.0.4
//! (`prometheus`). Nothing here may take a lock, allocate, or grow on the hot path: every
//! counter is a fixed atomic, and memory never depends on how many messages flow.

mod counters;
mod histogram;
mod prometheus;
mod stats;

pub(crate) use counters::CacheLine;
pub use counters::{ChannelMetrics, MetricsSnapshot};
pub use histogram::{HistogramSnapshot, SEND_WAIT_BUCKET_BOUNDS_US};
pub use prometheus::{MetricKind, PrometheusText};
pub use stats::{
    render_channels, usage_percent, write_channel_families, ChannelSample, ChannelStats, BLOCKED,
    CAPACITY, FULL_EVENTS, HIGH_WATER_MARK, LENGTH, MESSAGES_DROPPED, MESSAGES_RECEIVED,
    MESSAGES_REJECTED, MESSAGES_SENT, NOTICES_SUPPRESSED, SEND_WAIT_SECONDS, USAGE_PERCENT,
};

#[cfg(test)]
pub(crate) mod tests {
    pub(crate) use super::prometheus::tests::parse_exposition;
}
