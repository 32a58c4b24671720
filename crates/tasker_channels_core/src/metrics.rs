//! Per-channel counters, their snapshots, and the Prometheus text they render to.
//!
//! Owns the lock-free counters a channel bumps on its hot path, the send-wait histogram,
//! the [`ChannelStats`] shape of the design (docs/design.md §6), and the text exposition format (0.0.4). It must
//! never take a lock, allocate, or grow on the hot path: every counter is a fixed atomic,
//! and memory never depends on how many messages flow.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU64, AtomicUsize};
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::policy::OverflowPolicy;

/// Upper bounds of the send-wait histogram buckets, in microseconds: a 1-2-5 series from
/// 10 µs to 50 s. Fixed so every channel's histogram is comparable and costs the same.
pub const SEND_WAIT_BUCKET_BOUNDS_US: [u64; 21] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
];

const BUCKETS: usize = SEND_WAIT_BUCKET_BOUNDS_US.len();

/// Keeps counters written by different threads on different cache lines, so senders and
/// receivers do not slow each other down by sharing one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub(crate) T);

/// Live counters of one channel.
///
/// Built so monitoring stays within a few percent of the bare queue:
/// - a send that enters without waiting costs one increment, on a cache line only senders
///   write; waits are recorded only for sends that actually waited, and the zero-wait
///   observations of the histogram are that first counter, so `sent` is never counted twice;
/// - receivers write nothing: `received` is derived when a snapshot is taken, as
///   `sent - length - evicted`, which is exact whenever the channel is quiet and never runs
///   ahead of the truth (nor backwards) while it is busy;
/// - senders do not read the queue length on every send: the channel schedules the next
///   length check for the send that could first reach a new high-water mark or the
///   warning (see [`next_length_check`](Self::next_length_check)).
#[derive(Debug, Default)]
pub struct ChannelMetrics {
    senders: CacheLine<SenderCounters>,
    high_water_mark: CacheLine<AtomicUsize>,
    overflow: CacheLine<OverflowCounters>,
    send_wait: WaitHistogram,
}

#[derive(Debug, Default)]
struct SenderCounters {
    sent_without_wait: AtomicU64,
    /// The `sent_without_wait` count at which the next send must look at the length.
    next_length_check: AtomicU64,
}

#[derive(Debug, Default)]
struct OverflowCounters {
    dropped_new: AtomicU64,
    evicted: AtomicU64,
    rejected: AtomicU64,
    blocked: AtomicU64,
    full_events: AtomicU64,
    /// The largest `received` reported so far, so reports never go backwards.
    received_reported: AtomicU64,
}

/// Waits of the sends that entered the channel after waiting; non-cumulative per bucket,
/// the last slot counting waits beyond the largest bound.
#[derive(Debug, Default)]
struct WaitHistogram {
    buckets: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl ChannelMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message entered the channel without waiting. Returns how many have so far, the
    /// clock [`next_length_check`](Self::next_length_check) is scheduled on.
    #[inline]
    pub fn record_sent(&self) -> u64 {
        // AcqRel chains the senders' increments, so a sender that reads the length after its
        // own increment sees every message whose increment came before.
        self.senders.0.sent_without_wait.fetch_add(1, AcqRel) + 1
    }

    /// A message entered the channel after its sender waited `waited` for room.
    pub fn record_sent_after_wait(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let bucket = SEND_WAIT_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        let histogram = &self.send_wait;
        histogram.buckets[bucket].fetch_add(1, Release);
        histogram.sum_us.fetch_add(us, Relaxed);
        if us > histogram.max_us.load(Relaxed) {
            histogram.max_us.fetch_max(us, Relaxed);
        }
    }

    /// The count returned by [`record_sent`](Self::record_sent) at which the length must be
    /// looked at again; 0 means at the next send.
    #[inline]
    pub fn next_length_check(&self) -> u64 {
        self.senders.0.next_length_check.load(Relaxed)
    }

    /// Moves the next length check from `due` (what the caller read) to `next`, unless
    /// someone changed it meanwhile (a reset must win over a schedule computed before it).
    pub fn schedule_length_check(&self, due: u64, next: u64) {
        let _ = self
            .senders
            .0
            .next_length_check
            .compare_exchange(due, next, Relaxed, Relaxed);
    }

    /// Makes the next send look at the length (after a message entered some other way, or
    /// the warning re-armed).
    pub fn check_length_at_next_send(&self) {
        self.senders.0.next_length_check.store(0, Relaxed);
    }

    /// `drop`: the new message was discarded.
    pub fn record_dropped_new(&self) {
        self.overflow.0.dropped_new.fetch_add(1, Relaxed);
    }

    /// `drop_oldest`: a queued message was discarded to make room.
    pub fn record_evicted(&self) {
        self.overflow.0.evicted.fetch_add(1, Release);
    }

    /// A send gave up and handed its message back to the caller.
    pub fn record_rejected(&self) {
        self.overflow.0.rejected.fetch_add(1, Relaxed);
    }

    /// A send started waiting for room.
    pub fn record_blocked(&self) {
        self.overflow.0.blocked.fetch_add(1, Relaxed);
    }

    /// A sender found the channel full.
    pub fn record_full(&self) {
        self.overflow.0.full_events.fetch_add(1, Relaxed);
    }

    /// Raises the high-water mark to `length` if it is higher. Loads first so the common
    /// case (no new peak) never writes the shared cache line.
    #[inline]
    pub fn observe_length(&self, length: usize) {
        if length > self.high_water_mark.0.load(Relaxed) {
            self.high_water_mark.0.fetch_max(length, Relaxed);
        }
    }

    /// The longest the queue has been.
    pub fn high_water_mark(&self) -> usize {
        self.high_water_mark.0.load(Relaxed)
    }

    /// Every counter now, with `length` read from the queue. Each value (and every
    /// cumulative bucket) in a later snapshot is at least the earlier one.
    pub fn snapshot(&self, length: impl FnOnce() -> usize) -> MetricsSnapshot {
        // Order matters for the derived `received`: sent first, then length, then evicted,
        // so the difference can only fall short of the messages actually taken.
        let histogram = &self.send_wait;
        let buckets = std::array::from_fn(|i| histogram.buckets[i].load(Acquire));
        let send_wait = HistogramSnapshot {
            zero_wait: self.senders.0.sent_without_wait.load(Acquire),
            buckets,
            sum_us: histogram.sum_us.load(Relaxed),
            max_us: histogram.max_us.load(Relaxed),
        };
        let sent = send_wait.count();
        fence(SeqCst);
        let length = length();
        fence(SeqCst);
        let overflow = &self.overflow.0;
        let evicted = overflow.evicted.load(Acquire);
        let taken = sent.saturating_sub(length as u64).saturating_sub(evicted);
        let received = overflow
            .received_reported
            .fetch_max(taken, Relaxed)
            .max(taken);
        MetricsSnapshot {
            sent,
            received,
            dropped: overflow.dropped_new.load(Relaxed) + evicted,
            rejected: overflow.rejected.load(Relaxed),
            blocked: overflow.blocked.load(Relaxed),
            full_events: overflow.full_events.load(Relaxed),
            notices_suppressed: 0,
            high_water_mark: self.high_water_mark().max(length),
            length,
            send_wait,
        }
    }
}

/// Counter values read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Messages that entered the channel.
    pub sent: u64,
    /// Messages taken out by receivers.
    pub received: u64,
    /// Messages discarded by the overflow policy (new ones under `drop`, queued ones under
    /// `drop_oldest`).
    pub dropped: u64,
    /// Sends that failed (full, timed out, interrupted or closed).
    pub rejected: u64,
    /// Sends that waited for room.
    pub blocked: u64,
    /// Sends that found the channel full.
    pub full_events: u64,
    /// Saturated/recovered notices held back by damping; filled in by the channel, whose
    /// saturation watch counts them.
    pub notices_suppressed: u64,
    /// The longest the queue has been.
    pub high_water_mark: usize,
    /// Messages queued when the snapshot was taken.
    pub length: usize,
    /// How long sends waited for room.
    pub send_wait: HistogramSnapshot,
}

/// The send-wait histogram read at one moment: one observation per message that entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Sends that entered without waiting.
    pub zero_wait: u64,
    /// Sends that waited, per bucket of [`SEND_WAIT_BUCKET_BOUNDS_US`] (not cumulative);
    /// the last slot holds waits beyond the largest bound.
    pub buckets: [u64; BUCKETS + 1],
    /// All waits added up, in microseconds.
    pub sum_us: u64,
    /// The longest wait, in microseconds.
    pub max_us: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.zero_wait + self.buckets.iter().sum::<u64>()
    }

    /// Cumulative counts for each finite bound, zero waits included in every one; the
    /// `+Inf` bucket is [`count`](Self::count).
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut running = self.zero_wait;
        std::array::from_fn(|i| {
            running += self.buckets[i];
            running
        })
    }

    /// All waits added up, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// Approximate `q`-quantile (0..=1) of the waits in microseconds, interpolated within
    /// its bucket; 0 when at least that share of sends did not wait at all.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = (q.clamp(0.0, 1.0) * count as f64).ceil().max(1.0) as u64;
        if rank <= self.zero_wait {
            return 0;
        }
        let mut below = self.zero_wait;
        let mut lower_bound = 0u64;
        for (i, &in_bucket) in self.buckets.iter().enumerate() {
            if in_bucket > 0 && rank <= below + in_bucket {
                let upper_bound = SEND_WAIT_BUCKET_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(self.max_us)
                    .min(self.max_us.max(lower_bound));
                let share = (rank - below) as f64 / in_bucket as f64;
                let estimate =
                    lower_bound as f64 + share * upper_bound.saturating_sub(lower_bound) as f64;
                return estimate.round() as u64;
            }
            below += in_bucket;
            lower_bound = SEND_WAIT_BUCKET_BOUNDS_US
                .get(i)
                .copied()
                .unwrap_or(lower_bound);
        }
        self.max_us
    }
}

/// One channel's row of `stats` (docs/design.md §6), plus `full_events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStats {
    /// The channel's name.
    pub channel: String,
    /// Its component.
    pub component: String,
    /// Its capacity.
    pub capacity: usize,
    /// Messages queued now.
    pub length: usize,
    /// `length` as a percentage of capacity.
    pub usage_percent: f64,
    /// The longest the queue has been.
    pub high_water_mark: usize,
    /// Its overflow policy.
    #[serde(serialize_with = "serialize_policy")]
    pub policy: OverflowPolicy,
    /// Messages that entered.
    pub sent: u64,
    /// Messages taken out.
    pub received: u64,
    /// Messages discarded by the policy.
    pub dropped: u64,
    /// Sends that failed.
    pub rejected: u64,
    /// Sends that waited for room.
    pub blocked: u64,
    /// Median send wait, in microseconds.
    pub send_wait_p50_us: u64,
    /// 99th percentile send wait, in microseconds.
    pub send_wait_p99_us: u64,
    /// Sends that found the channel full.
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
    /// The channel's `stats` row.
    pub stats: ChannelStats,
    /// Its send-wait histogram.
    pub send_wait: HistogramSnapshot,
}

impl ChannelSample {
    /// A sample from a channel's settings and counters.
    pub fn new(
        channel: &str,
        component: &str,
        capacity: usize,
        policy: OverflowPolicy,
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
            policy,
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

/// The kind of a Prometheus metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// `# TYPE counter`.
    Counter,
    /// `# TYPE gauge`.
    Gauge,
    /// `# TYPE histogram`.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Builds Prometheus text exposition (format 0.0.4).
///
/// Write each family's header once with [`family`](Self::family), then all of its samples.
/// The channel families come from [`write_channel_families`]; other families (the event
/// bus's counters) are appended to the same text the same way.
#[derive(Debug, Default)]
pub struct PrometheusText {
    out: String,
}

impl PrometheusText {
    /// An empty text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// Writes one sample with an integer value.
    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_start(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    /// Writes one sample with a floating-point value.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_start(name, labels);
        self.out.push(' ');
        push_float(&mut self.out, value);
        self.out.push('\n');
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples of one histogram series.
    /// `cumulative[i]` counts observations `<= bounds_seconds[i]`; `+Inf` gets `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds_seconds: &[f64],
        cumulative: &[u64],
        sum: f64,
        count: u64,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut le = String::new();
        for (&bound, &at_most) in bounds_seconds.iter().zip(cumulative) {
            le.clear();
            push_float(&mut le, bound);
            self.bucket_sample(&bucket_name, labels, &le, at_most);
        }
        self.bucket_sample(&bucket_name, labels, "+Inf", count);
        self.sample_f64(&format!("{name}_sum"), labels, sum);
        self.sample_u64(&format!("{name}_count"), labels, count);
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished text.
    pub fn into_string(self) -> String {
        self.out
    }

    fn bucket_sample(&mut self, name: &str, labels: &[(&str, &str)], le: &str, value: u64) {
        self.out.push_str(name);
        self.out.push('{');
        for (key, val) in labels {
            push_label(&mut self.out, key, val);
            self.out.push(',');
        }
        push_label(&mut self.out, "le", le);
        let _ = writeln!(self.out, "}} {value}");
    }

    fn sample_start(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_label(&mut self.out, key, val);
        }
        self.out.push('}');
    }
}

fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn push_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Gauge: capacity.
pub const CAPACITY: &str = "mpsc_channel_capacity";
/// Gauge: length as a percentage of capacity.
pub const USAGE_PERCENT: &str = "mpsc_channel_usage_percent";
/// Counter: messages that entered.
pub const MESSAGES_SENT: &str = "mpsc_channel_messages_sent_total";
/// Counter: messages taken out.
pub const MESSAGES_RECEIVED: &str = "mpsc_channel_messages_received_total";
/// Counter: messages discarded by the policy.
pub const MESSAGES_DROPPED: &str = "mpsc_channel_messages_dropped_total";
/// Counter: sends that found the channel full.
pub const FULL_EVENTS: &str = "mpsc_channel_full_events_total";
/// Counter: sends that failed.
pub const MESSAGES_REJECTED: &str = "mpsc_channel_messages_rejected_total";
/// Counter: sends that waited for room.
pub const BLOCKED: &str = "mpsc_channel_blocked_total";
/// Counter: saturation notices held back by damping.
pub const NOTICES_SUPPRESSED: &str = "mpsc_channel_notices_suppressed_total";
/// Gauge: messages queued.
pub const LENGTH: &str = "mpsc_channel_length";
/// Gauge: the longest the queue has been.
pub const HIGH_WATER_MARK: &str = "mpsc_channel_high_water_mark";
/// Histogram: how long sends waited for room, in seconds.
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
pub(crate) mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Checks the text line by line against the exposition format and returns the sample
    /// values by `name{labels}`.
    pub(crate) fn parse_exposition(text: &str) -> HashMap<String, f64> {
        let mut helped = HashSet::new();
        let mut typed = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_owned();
                let kind = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "bad type in {line}"
                );
                assert!(helped.contains(&name), "TYPE before HELP for {name}");
                assert!(
                    typed.insert(name.clone(), kind.to_owned()).is_none(),
                    "TYPE twice for {name}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = parse_sample_line(line);
            let family = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    family
                        .strip_suffix(suffix)
                        .filter(|b| typed.get(*b).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(family);
            assert!(typed.contains_key(base), "sample before TYPE: {line}");
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series {series}"
            );
        }
        samples
    }

    fn parse_sample_line(line: &str) -> (&str, f64) {
        let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line}");
            let mut labels = &series[name_end + 1..series.len() - 1];
            while !labels.is_empty() {
                let (key, rest) = labels.split_once("=\"").expect("label=\"value\"");
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                let mut escaped = false;
                let mut end = None;
                for (i, c) in rest.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, other) => panic!("bad escape \\{other} in {line}"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        (false, '\n') => panic!("raw newline in {line}"),
                        _ => {}
                    }
                }
                let end = end.expect("closing quote");
                labels = &rest[end + 1..];
                labels = labels.strip_prefix(',').unwrap_or(labels);
            }
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        (series, value)
    }

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
    fn sent_counts_waited_and_unwaited_sends_once() {
        let metrics = ChannelMetrics::new();
        let _ = metrics.record_sent();
        let _ = metrics.record_sent();
        metrics.record_sent_after_wait(Duration::from_micros(150));
        let snap = metrics.snapshot(|| 0);
        assert_eq!(snap.sent, 3);
        assert_eq!(snap.send_wait.count(), 3);
        assert_eq!(snap.send_wait.zero_wait, 2);
        assert_eq!(snap.send_wait.sum_us, 150);
    }

    #[test]
    fn waits_land_in_the_bucket_of_their_upper_bound() {
        let metrics = ChannelMetrics::new();
        metrics.record_sent_after_wait(Duration::from_micros(10));
        metrics.record_sent_after_wait(Duration::from_micros(11));
        metrics.record_sent_after_wait(Duration::from_secs(3600));
        let snap = metrics.snapshot(|| 0).send_wait;
        assert_eq!(snap.buckets[0], 1);
        assert_eq!(snap.buckets[1], 1);
        assert_eq!(snap.buckets[BUCKETS], 1);
        assert_eq!(snap.cumulative()[BUCKETS - 1], 2);
        assert_eq!(snap.max_us, 3_600_000_000);
    }

    #[test]
    fn quantiles_are_zero_when_most_sends_did_not_wait() {
        let metrics = ChannelMetrics::new();
        for _ in 0..99 {
            let _ = metrics.record_sent();
        }
        metrics.record_sent_after_wait(Duration::from_millis(3));
        let snap = metrics.snapshot(|| 0).send_wait;
        assert_eq!(snap.quantile_us(0.5), 0);
        assert_eq!(snap.quantile_us(0.99), 0);
        let p100 = snap.quantile_us(1.0);
        assert!((2_000..=5_000).contains(&p100), "{p100}");
    }

    #[test]
    fn quantiles_fall_within_their_bucket() {
        let metrics = ChannelMetrics::new();
        for _ in 0..50 {
            metrics.record_sent_after_wait(Duration::from_micros(300));
        }
        for _ in 0..50 {
            metrics.record_sent_after_wait(Duration::from_millis(30));
        }
        let snap = metrics.snapshot(|| 0).send_wait;
        let p50 = snap.quantile_us(0.5);
        let p99 = snap.quantile_us(0.99);
        assert!((200..=500).contains(&p50), "{p50}");
        assert!((20_000..=50_000).contains(&p99), "{p99}");
        assert_eq!(
            ChannelMetrics::new()
                .snapshot(|| 0)
                .send_wait
                .quantile_us(0.5),
            0
        );
    }

    #[test]
    fn waits_beyond_the_last_bound_report_the_largest_seen() {
        let metrics = ChannelMetrics::new();
        metrics.record_sent_after_wait(Duration::from_secs(70));
        assert_eq!(
            metrics.snapshot(|| 0).send_wait.quantile_us(0.99),
            70_000_000
        );
    }

    #[test]
    fn received_never_runs_backwards_while_messages_are_in_flight() {
        let metrics = ChannelMetrics::new();
        for _ in 0..5 {
            let _ = metrics.record_sent();
        }
        assert_eq!(metrics.snapshot(|| 1).received, 4);
        // A message pushed but not yet counted as sent makes the length look larger.
        assert_eq!(metrics.snapshot(|| 3).received, 4);
        assert_eq!(metrics.snapshot(|| 0).received, 5);
    }

    #[test]
    fn length_checks_are_scheduled_and_reset() {
        let metrics = ChannelMetrics::new();
        assert_eq!(metrics.next_length_check(), 0);
        metrics.schedule_length_check(0, 9);
        assert_eq!(metrics.next_length_check(), 9);
        metrics.schedule_length_check(0, 20); // stale: someone moved it since
        assert_eq!(metrics.next_length_check(), 9);
        metrics.check_length_at_next_send();
        assert_eq!(metrics.next_length_check(), 0);
    }

    #[test]
    fn high_water_mark_only_rises() {
        let metrics = ChannelMetrics::new();
        metrics.observe_length(5);
        metrics.observe_length(3);
        assert_eq!(metrics.snapshot(|| 0).high_water_mark, 5);
        metrics.observe_length(8);
        assert_eq!(metrics.snapshot(|| 0).high_water_mark, 8);
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
