//! Watching PostgreSQL's notification queue from a second connection.
//!
//! A stalled listener keeps its place in the server's notification queue, so the queue
//! grows; at 8 GB every transaction that NOTIFYs fails at commit. This module owns sampling
//! `pg_notification_queue_usage()` on a connection of its own (the listening one may be
//! backpressured, and is never queried then), publishing the figure into the listener's
//! stats, and turning threshold crossings into damped `listener.queue_saturated` /
//! `listener.queue_recovered` events. It must never touch the listening connection, and a
//! failure here must never affect listening.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::SimpleQueryMessage;

use crate::event_bus::EventBus;
use crate::payload::Payload;

use super::backoff::Backoff;
use super::stats::ListenerCounters;
use super::target::{describe_error, Target};

/// What a sample crossing the threshold calls for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueNotice {
    /// The event name, `listener.queue_saturated` or `listener.queue_recovered`.
    pub name: &'static str,
    /// The sampled usage, a fraction.
    pub usage: f64,
    /// The warning threshold, a fraction.
    pub threshold: f64,
    /// Notices held back by damping since the last one emitted.
    pub suppressed: u64,
}

/// The threshold state machine: saturated at `threshold`, recovered below 90% of it. At
/// most one notice per `interval`: a crossing inside the interval is counted as suppressed,
/// and the first sample after the interval reports the state as it then is (so a recovery
/// that happened too soon is still announced, late, rather than never).
#[derive(Debug, Clone)]
pub(crate) struct QueueWatch {
    threshold: f64,
    rearm_below: f64,
    interval: Duration,
    saturated: bool,
    /// The state the last notice announced.
    reported: bool,
    last_notice: Option<Instant>,
    suppressed: u64,
}

impl QueueWatch {
    /// A watch that warns at `threshold`, at most once per `interval`.
    pub(crate) fn new(threshold: f64, interval: Duration) -> Self {
        Self {
            threshold,
            rearm_below: threshold * 0.9,
            interval,
            saturated: false,
            reported: false,
            last_notice: None,
            suppressed: 0,
        }
    }

    /// Feeds one sample; returns the notice to emit, if any.
    pub(crate) fn observe(&mut self, usage: f64, now: Instant) -> Option<QueueNotice> {
        let crossed = if !self.saturated && usage >= self.threshold {
            self.saturated = true;
            true
        } else if self.saturated && usage < self.rearm_below {
            self.saturated = false;
            true
        } else {
            false
        };
        let due = self
            .last_notice
            .map_or(true, |last| now.duration_since(last) >= self.interval);
        if self.saturated == self.reported || !due {
            if crossed {
                self.suppressed += 1;
            }
            return None;
        }
        self.reported = self.saturated;
        self.last_notice = Some(now);
        Some(QueueNotice {
            name: if self.saturated {
                "listener.queue_saturated"
            } else {
                "listener.queue_recovered"
            },
            usage,
            threshold: self.threshold,
            suppressed: std::mem::take(&mut self.suppressed),
        })
    }

    /// Crossings held back since the last notice.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// How the sampler runs; copied from the listener's options.
#[derive(Debug, Clone)]
pub(crate) struct SamplerSettings {
    /// How often to sample.
    pub interval: Duration,
    /// The usage fraction that warns.
    pub threshold: f64,
    /// The least time between two notices.
    pub notice_interval: Duration,
    /// The first reconnect delay.
    pub reconnect_first_delay: Duration,
    /// The longest reconnect delay.
    pub reconnect_max_delay: Duration,
}

/// Samples until `stop` turns true (or its sender goes away).
pub(crate) async fn run(
    listener_id: u64,
    target: Target,
    settings: SamplerSettings,
    bus: Arc<EventBus>,
    counters: Arc<ListenerCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = QueueWatch::new(settings.threshold, settings.notice_interval);
    let mut backoff = Backoff::new(settings.reconnect_first_delay, settings.reconnect_max_delay);
    loop {
        let connected = tokio::select! {
            biased;
            _ = super::stop_requested(&mut stop) => return,
            connected = target.connect() => connected,
        };
        let (client, connection) = match connected {
            Ok(pair) => pair,
            Err(error) => {
                counters.queue_sample_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = listener_id, %error, "queue sampler could not connect");
                let delay = backoff.next_delay();
                tokio::select! {
                    biased;
                    _ = super::stop_requested(&mut stop) => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        // This connection runs only the sampling query; let tokio-postgres drive it.
        let driver = tokio::spawn(connection);
        let mut ticks = tokio::time::interval(settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ticked: Option<()> = tokio::select! {
                biased;
                _ = super::stop_requested(&mut stop) => {
                    drop(client);
                    let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
                    return;
                }
                _ = ticks.tick() => None,
            };
            debug_assert!(ticked.is_none());
            let sampled = tokio::select! {
                biased;
                _ = super::stop_requested(&mut stop) => continue,
                rows = client.simple_query("SELECT pg_notification_queue_usage()") => rows,
            };
            let usage = match sampled.map(|rows| first_float(&rows)) {
                Ok(Some(usage)) => usage,
                Ok(None) => {
                    counters.queue_sample_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(error) => {
                    counters.queue_sample_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        listener = listener_id,
                        error = %describe_error(&error),
                        "queue sampler lost its connection"
                    );
                    break;
                }
            };
            counters
                .queue_usage_bits
                .store(usage.to_bits(), Ordering::Relaxed);
            counters.queue_samples.fetch_add(1, Ordering::Relaxed);
            let notice = watch.observe(usage, Instant::now());
            counters
                .queue_notices_suppressed
                .store(watch.suppressed(), Ordering::Relaxed);
            if let Some(notice) = notice {
                emit(&bus, listener_id, &target, &counters, notice).await;
            }
        }
        driver.abort();
    }
}

async fn emit(
    bus: &EventBus,
    listener_id: u64,
    target: &Target,
    counters: &ListenerCounters,
    notice: QueueNotice,
) {
    if notice.name == "listener.queue_saturated" {
        tracing::warn!(
            listener = listener_id,
            target = target.describe(),
            usage = notice.usage,
            threshold = notice.threshold,
            "PostgreSQL's notification queue is filling up: a listener is not keeping up \
             (at 100% every NOTIFY fails)"
        );
    } else {
        tracing::info!(
            listener = listener_id,
            usage = notice.usage,
            "PostgreSQL's notification queue recovered"
        );
    }
    let payload = Payload::symbol_hash([
        ("listener", Payload::from(listener_id)),
        ("target", Payload::from(target.describe())),
        ("usage", Payload::from(notice.usage)),
        ("threshold", Payload::from(notice.threshold)),
        ("suppressed", Payload::from(notice.suppressed)),
    ]);
    if bus.emit_async(notice.name, payload).await.is_ok() {
        counters.queue_notices.fetch_add(1, Ordering::Relaxed);
    }
}

fn first_float(rows: &[SimpleQueryMessage]) -> Option<f64> {
    rows.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|text| text.parse().ok()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossings_are_damped_and_carry_what_was_held_back() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut watch = QueueWatch::new(0.5, Duration::from_millis(1000));
        assert_eq!(watch.observe(0.1, at(0)), None);
        let first = watch.observe(0.6, at(10)).unwrap();
        assert_eq!(first.name, "listener.queue_saturated");
        assert_eq!(first.suppressed, 0);
        // Still above: no repeat. Below the threshold but above 90% of it: no recovery.
        assert_eq!(watch.observe(0.7, at(20)), None);
        assert_eq!(watch.observe(0.46, at(30)), None);
        // Flapping inside the interval is held back and counted.
        assert_eq!(watch.observe(0.1, at(40)), None);
        assert_eq!(watch.observe(0.9, at(50)), None);
        assert_eq!(watch.observe(0.1, at(60)), None);
        assert_eq!(watch.suppressed(), 3);
        // After the interval the current state (recovered) is announced, late.
        let late = watch.observe(0.1, at(1100)).unwrap();
        assert_eq!(late.name, "listener.queue_recovered");
        assert_eq!(late.suppressed, 3);
        assert_eq!(watch.suppressed(), 0);
        assert_eq!(watch.observe(0.0, at(1200)), None);
        let again = watch.observe(0.8, at(2200)).unwrap();
        assert_eq!(again.name, "listener.queue_saturated");
        assert_eq!(again.suppressed, 0);
    }
}
