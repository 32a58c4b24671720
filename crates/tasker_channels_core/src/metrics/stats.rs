//! One channel's row of `stats` and the Prometheus families those rows render to.
//!
//! Owns the [`ChannelStats`] shape of the design (docs/design.md §6), the family names and
//! their help texts. It must never read a channel itself: it is handed snapshots.

use serde::{Serialize, Serializer};

use super::counters::MetricsSnapshot;
use super::histogram::{HistogramSnapshot, SEND_WAIT_BUCKET_BOUNDS_US};
use super::prometheus::{MetricKind, PrometheusText};
use crate::policy::OverflowPolicy;

/// One channel's row of `stats` (docs/design.md §6), plus `full_events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStats {
    /// The channel's full name (`shared.ffi`).
    pub channel: String,
    /// The component it belongs to (`shared`).
    pub component: String,
    /// The most messages it holds.
    pub capacity: usize,
    /// Messages queued now.
    pub length: usize,
    /// `length` as a percentage of `capacity`.
    pub usage_percent: f64,
    /// The most messages ever queued at once.
    pub high_water_mark: usize,
    /// What a send does when the channel is full (reported as `policy`, the name Ruby's
    /// `stats` and the JSON output have always used).
    #[serde(rename = "policy", serialize_with = "serialize_policy")]
    pub overflow: OverflowPolicy,
    /// Messages that entered the channel.
    pub sent: u64,
    /// Messages taken out by receivers.
    pub received: u64,
    /// Messages discarded by the overflow policy.
    pub dropped: u64,
    /// Sends that gave up and handed their message back.
    pub rejected: u64,
    /// Sends that waited for room.
    pub blocked: u64,
    /// Median send wait in microseconds (0 when most sends did not wait).
    pub send_wait_p50_us: u64,
    /// 99th-percentile send wait in microseconds.
    pub send_wait_p99_us: u64,
    /// Times a sender found the channel full.
    pub full_events: u64,
    /// Saturated/recovered notices held back by `notice_interval_ms`.
    pub notices_suppressed: u64,
}

fn serialize_policy<S: Serializer>(policy: &OverflowPolicy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(policy.as_str())
}

/// Percentage of `capacity` that `length` fills.
pub fn usage_percent(length: usize, capacity: usize) -> f64 {
    if capacity == 0 {
        return 0.0;
    }
    length as f64 * 100.0 / capacity as f64
}

/// Everything the Prometheus renderer needs about one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSample {
    /// The row `stats` reports.
    pub stats: ChannelStats,
    /// The full send-wait histogram behind the row's quantiles.
    pub send_wait: HistogramSnapshot,
}

impl ChannelSample {
    /// One channel's sample from its configuration and a snapshot of its counters.
    pub fn new(
        channel: &str,
        component: &str,
        capacity: usize,
        overflow: OverflowPolicy,
        metrics: MetricsSnapshot,
    ) -> Self {
        let length = metrics.length;
        let stats = ChannelStats {
            channel: channel.to_owned(),
            component: component.to_owned(),
            capacity,
            length,
            usage_percent: usage_percent(length, capacity),
            high_water_mark: metrics.high_water_mark,
            overflow,
            sent: metrics.sent,
            received: metrics.received,
            dropped: metrics.dropped,
            rejected: metrics.rejected,
            blocked: metrics.blocked,
            send_wait_p50_us: metrics.send_wait.quantile_us(0.50),
            send_wait_p99_us: metrics.send_wait.quantile_us(0.99),
            full_events: metrics.full_events,
            notices_suppressed: metrics.notices_suppressed,
        };
        Self {
            stats,
            send_wait: metrics.send_wait,
        }
    }
}

/// Gauge: configured capacity.
pub const CAPACITY: &str = "mpsc_channel_capacity";
/// Gauge: messages queued as a percentage of capacity.
pub const USAGE_PERCENT: &str = "mpsc_channel_usage_percent";
/// Counter: messages that entered.
pub const MESSAGES_SENT: &str = "mpsc_channel_messages_sent_total";
/// Counter: messages taken out.
pub const MESSAGES_RECEIVED: &str = "mpsc_channel_messages_received_total";
/// Counter: messages the overflow policy discarded.
pub const MESSAGES_DROPPED: &str = "mpsc_channel_messages_dropped_total";
/// Counter: times a sender found the channel full.
pub const FULL_EVENTS: &str = "mpsc_channel_full_events_total";
/// Counter: sends that handed their message back.
pub const MESSAGES_REJECTED: &str = "mpsc_channel_messages_rejected_total";
/// Counter: sends that waited for room.
pub const BLOCKED: &str = "mpsc_channel_blocked_total";
/// Counter: saturated/recovered notices held back by damping.
pub const NOTICES_SUPPRESSED: &str = "mpsc_channel_notices_suppressed_total";
/// Gauge: messages queued now.
pub const LENGTH: &str = "mpsc_channel_length";
/// Gauge: the most messages ever queued at once.
pub const HIGH_WATER_MARK: &str = "mpsc_channel_high_water_mark";
/// Histogram: how long senders waited for room.
pub const SEND_WAIT_SECONDS: &str = "mpsc_channel_send_wait_seconds";

/// Appends the channel families the design lists (docs/design.md §6), one header per family, one series per channel.
pub fn write_channel_families(out: &mut PrometheusText, samples: &[ChannelSample]) {
    fn labels(s: &ChannelSample) -> [(&'static str, &str); 2] {
        [
            ("component", s.stats.component.as_str()),
            ("channel", s.stats.channel.as_str()),
        ]
    }
    let mut gauge = |name: &str, help: &str, value: fn(&ChannelStats) -> f64| {
        out.family(name, MetricKind::Gauge, help);
        for sample in samples {
            out.sample_f64(name, &labels(sample), value(&sample.stats));
        }
    };
    gauge(CAPACITY, "Configured capacity of the channel.", |s| {
        s.capacity as f64
    });
    gauge(
        USAGE_PERCENT,
        "Messages queued as a percentage of capacity.",
        |s| s.usage_percent,
    );
    gauge(LENGTH, "Messages queued now.", |s| s.length as f64);
    gauge(
        HIGH_WATER_MARK,
        "The most messages ever queued at once.",
        |s| s.high_water_mark as f64,
    );

    let mut counter = |name: &str, help: &str, value: fn(&ChannelStats) -> u64| {
        out.family(name, MetricKind::Counter, help);
        for sample in samples {
            out.sample_u64(name, &labels(sample), value(&sample.stats));
        }
    };
    counter(MESSAGES_SENT, "Messages that entered the channel.", |s| {
        s.sent
    });
    counter(
        MESSAGES_RECEIVED,
        "Messages taken out of the channel.",
        |s| s.received,
    );
    counter(
        MESSAGES_DROPPED,
        "Messages discarded by the overflow policy.",
        |s| s.dropped,
    );
    counter(FULL_EVENTS, "Times a sender found the channel full.", |s| {
        s.full_events
    });
    counter(
        MESSAGES_REJECTED,
        "Sends that gave up and handed their message back (full, timed out, closed or interrupted).",
        |s| s.rejected,
    );
    counter(BLOCKED, "Sends that waited for room in the channel.", |s| {
        s.blocked
    });
    counter(
        NOTICES_SUPPRESSED,
        "Saturated/recovered notices held back by overflow_policy.notice_interval_ms.",
        |s| s.notices_suppressed,
    );

    out.family(
        SEND_WAIT_SECONDS,
        MetricKind::Histogram,
        "Time a sender waited for room before its message entered the channel.",
    );
    let bounds = SEND_WAIT_BUCKET_BOUNDS_US.map(|us| us as f64 / 1e6);
    for sample in samples {
        let wait = &sample.send_wait;
        out.histogram(
            SEND_WAIT_SECONDS,
            &labels(sample),
            &bounds,
            &wait.cumulative(),
            wait.sum_seconds(),
            wait.count(),
        );
    }
}

/// Prometheus text for the given channels alone.
pub fn render_channels(samples: &[ChannelSample]) -> String {
    let mut out = PrometheusText::new();
    write_channel_families(&mut out, samples);
    out.into_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::prometheus::tests::parse_exposition;
    use crate::metrics::ChannelMetrics;

    fn sample(channel: &str, metrics: &ChannelMetrics, length: usize) -> ChannelSample {
        ChannelSample::new(
            channel,
            "shared",
            10,
            OverflowPolicy::Block,
            metrics.snapshot(|| length),
        )
    }

    #[test]
    fn stats_carry_every_counter() {
        let metrics = ChannelMetrics::new();
        for _ in 0..7 {
            let _ = metrics.record_sent();
        }
        metrics.record_evicted();
        metrics.record_dropped_new();
        metrics.record_rejected();
        metrics.record_blocked();
        metrics.record_full();
        let stats = sample("shared.ffi", &metrics, 4).stats;
        assert_eq!(
            (stats.sent, stats.received, stats.dropped, stats.rejected),
            (7, 2, 2, 1)
        );
        assert_eq!((stats.blocked, stats.full_events), (1, 1));
        assert_eq!(stats.usage_percent, 40.0);
        assert_eq!(stats.high_water_mark, 4);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["policy"], "block");
        assert_eq!(json["channel"], "shared.ffi");
    }

    #[test]
    fn exposition_parses_and_histograms_are_cumulative() {
        let a = ChannelMetrics::new();
        let b = ChannelMetrics::new();
        for _ in 0..7 {
            let _ = a.record_sent();
        }
        a.record_sent_after_wait(Duration::from_micros(40));
        a.record_sent_after_wait(Duration::from_millis(250));
        a.observe_length(6);
        for _ in 0..3 {
            a.record_rejected();
        }
        a.record_blocked();
        a.record_blocked();
        b.record_sent_after_wait(Duration::from_secs(99));
        let text = render_channels(&[sample("shared.ffi", &a, 2), sample("odd\"na\\me\n", &b, 0)]);
        let values = parse_exposition(&text);

        for family in [
            CAPACITY,
            USAGE_PERCENT,
            MESSAGES_SENT,
            MESSAGES_RECEIVED,
            MESSAGES_DROPPED,
            FULL_EVENTS,
            MESSAGES_REJECTED,
            BLOCKED,
            LENGTH,
            HIGH_WATER_MARK,
            SEND_WAIT_SECONDS,
        ] {
            assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1);
        }
        for (family, kind) in [
            (MESSAGES_REJECTED, "counter"),
            (BLOCKED, "counter"),
            (LENGTH, "gauge"),
            (HIGH_WATER_MARK, "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}"
            );
        }
        let series = r#"component="shared",channel="shared.ffi""#;
        assert_eq!(values[&format!("{MESSAGES_SENT}{{{series}}}")], 9.0);
        assert_eq!(values[&format!("{USAGE_PERCENT}{{{series}}}")], 20.0);
        assert_eq!(values[&format!("{MESSAGES_REJECTED}{{{series}}}")], 3.0);
        assert_eq!(values[&format!("{BLOCKED}{{{series}}}")], 2.0);
        assert_eq!(values[&format!("{LENGTH}{{{series}}}")], 2.0);
        assert_eq!(values[&format!("{HIGH_WATER_MARK}{{{series}}}")], 6.0);

        let escaped = r#"component="shared",channel="odd\"na\\me\n""#;
        for labels in [series, escaped] {
            let mut previous = 0.0;
            let mut last = 0.0;
            for line in text
                .lines()
                .filter(|l| l.starts_with(&format!("{SEND_WAIT_SECONDS}_bucket{{{labels},")))
            {
                let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
                assert!(value >= previous, "not cumulative: {line}");
                previous = value;
                last = value;
                if line.contains("le=\"+Inf\"") {
                    break;
                }
            }
            let inf = values[&format!("{SEND_WAIT_SECONDS}_bucket{{{labels},le=\"+Inf\"}}")];
            let count = values[&format!("{SEND_WAIT_SECONDS}_count{{{labels}}}")];
            assert_eq!(last, inf);
            assert_eq!(inf, count);
        }
        assert_eq!(
            values[&format!("{SEND_WAIT_SECONDS}_bucket{{{series},le=\"0.00005\"}}")],
            8.0
        );
        assert_eq!(
            values[&format!("{SEND_WAIT_SECONDS}_sum{{{escaped}}}")],
            99.0
        );
    }

    #[test]
    fn other_families_can_be_appended() {
        let mut out = PrometheusText::new();
        write_channel_families(&mut out, &[]);
        out.family(
            "tasker_events_published_total",
            MetricKind::Counter,
            "Events published.\nAll of them.",
        );
        out.sample_u64("tasker_events_published_total", &[], 3);
        let values = parse_exposition(out.as_str());
        assert_eq!(values["tasker_events_published_total"], 3.0);
        assert!(out.as_str().contains("Events published.\\nAll of them."));
    }
}
