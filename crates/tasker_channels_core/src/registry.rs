//! Every configured channel, created once and found by name (docs/design.md §4).
//!
//! Owns building one [`MonitoredChannel`] per [`ChannelSpec`], lookup by name, and the
//! whole-registry views (`stats`, Prometheus text, closing). It must never create a channel
//! that is not configured or skip one that is, and never decide capacities or policies.

use std::fmt;

use crate::channel::MonitoredChannel;
use crate::config::{ChannelSpec, Config};
use crate::metrics::{write_channel_families, ChannelSample, ChannelStats, PrometheusText};
use crate::monitor::Monitor;

/// A channel name that is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel \"{name}\" (known: {known})", known = .known.join(", "))]
pub struct UnknownChannel {
    /// The name asked for.
    pub name: String,
    /// The names that exist.
    pub known: Vec<String>,
}

/// The configured channels, all carrying the same message type.
pub struct ChannelRegistry<T> {
    channels: Vec<MonitoredChannel<T>>,
    monitor: Monitor,
}

impl<T> fmt::Debug for ChannelRegistry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelRegistry")
            .field("channels", &self.channels)
            .field("monitor", &self.monitor)
            .finish()
    }
}

impl<T> ChannelRegistry<T> {
    /// One channel per spec, warning at `log_warning_threshold` of capacity, every crossing
    /// notified (no damping). A monitor hook
    /// can be installed afterwards with [`Monitor::set_hook`] on [`monitor`](Self::monitor).
    ///
    /// # Panics
    /// If the threshold is outside (0, 1] or a capacity is zero (both rejected by config
    /// validation first).
    pub fn new(specs: &[ChannelSpec], log_warning_threshold: f64) -> Self {
        Self::with_monitor(
            specs,
            Monitor::new(log_warning_threshold, std::time::Duration::ZERO),
        )
    }

    /// Every channel of a loaded configuration, warning at its `log_warning_threshold` and
    /// damped by its `notice_interval_ms`.
    pub fn from_config(config: &Config) -> Self {
        Self::with_monitor(
            config.channels(),
            Monitor::new(config.log_warning_threshold(), config.notice_interval()),
        )
    }

    /// One channel per spec, all watched by `monitor`.
    pub fn with_monitor(specs: &[ChannelSpec], monitor: Monitor) -> Self {
        let channels = specs
            .iter()
            .map(|spec| MonitoredChannel::new(spec, &monitor))
            .collect();
        Self { channels, monitor }
    }

    /// The monitor every channel of the registry reports to.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The channel called `name` (e.g. `shared.ffi`).
    pub fn get(&self, name: &str) -> Option<&MonitoredChannel<T>> {
        self.channels.iter().find(|channel| channel.name() == name)
    }

    /// Like [`get`](Self::get), with an error naming the known channels.
    pub fn channel(&self, name: &str) -> Result<&MonitoredChannel<T>, UnknownChannel> {
        self.get(name).ok_or_else(|| UnknownChannel {
            name: name.to_owned(),
            known: self.names().map(str::to_owned).collect(),
        })
    }

    /// Every channel, in configuration order.
    pub fn channels(&self) -> &[MonitoredChannel<T>] {
        &self.channels
    }

    /// Every channel's name, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(MonitoredChannel::name)
    }

    /// Every channel's `stats` row.
    pub fn stats(&self) -> Vec<ChannelStats> {
        self.channels.iter().map(MonitoredChannel::stats).collect()
    }

    /// Every channel's stats and send-wait histogram.
    pub fn samples(&self) -> Vec<ChannelSample> {
        self.channels.iter().map(MonitoredChannel::sample).collect()
    }

    /// Appends the channel families to `out`, so other families can share the text, then the
    /// process's log pipeline (one more bounded queue, shared by every registry).
    pub fn write_prometheus(&self, out: &mut PrometheusText) {
        write_channel_families(out, &self.samples());
        crate::logging::write_prometheus(out);
    }

    /// Every channel's metrics as Prometheus text.
    pub fn prometheus_text(&self) -> String {
        let mut out = PrometheusText::new();
        self.write_prometheus(&mut out);
        out.into_string()
    }

    /// Closes every channel: waiters wake, receivers drain what is queued.
    pub fn close_all(&self) {
        for channel in &self.channels {
            channel.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::SendOutcome;
    use crate::metrics::tests::parse_exposition;
    use crate::policy::OverflowPolicy;
    use std::time::Duration;

    fn spec(name: &str, capacity: usize, overflow: OverflowPolicy) -> ChannelSpec {
        ChannelSpec {
            name: name.to_owned(),
            component: name.split('.').next().unwrap().to_owned(),
            capacity_key: "buffer_size".to_owned(),
            capacity,
            overflow,
            send_timeout: None,
        }
    }

    fn specs() -> Vec<ChannelSpec> {
        vec![
            spec(
                "orchestration.command_processor",
                100,
                OverflowPolicy::Block,
            ),
            spec("shared.event_publisher", 4, OverflowPolicy::Drop),
            ChannelSpec {
                send_timeout: Some(Duration::from_millis(1000)),
                ..spec("task_readiness.event_channel", 8, OverflowPolicy::Block)
            },
            spec("shared.ffi", 2, OverflowPolicy::Error),
        ]
    }

    #[test]
    fn every_configured_channel_exists_as_configured() {
        let specs = specs();
        let registry: ChannelRegistry<u8> = ChannelRegistry::new(&specs, 0.8);
        assert_eq!(registry.channels().len(), specs.len());
        for spec in &specs {
            let channel = registry.get(&spec.name).unwrap();
            assert_eq!(channel.capacity(), spec.capacity);
            assert_eq!(channel.overflow(), spec.overflow);
            assert_eq!(channel.component(), spec.component);
            assert_eq!(channel.send_timeout(), spec.send_timeout);
        }
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        );
        assert_eq!(registry.monitor().threshold(), 0.8);
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let registry: ChannelRegistry<u8> = ChannelRegistry::new(&specs(), 0.8);
        assert!(registry.get("shared.ffy").is_none());
        let err = registry.channel("shared.ffy").unwrap_err();
        assert_eq!(err.name, "shared.ffy");
        assert_eq!(
            err.to_string(),
            "unknown channel \"shared.ffy\" (known: orchestration.command_processor, \
             shared.event_publisher, task_readiness.event_channel, shared.ffi)"
        );
        assert!(registry.channel("shared.ffi").is_ok());
    }

    #[test]
    fn stats_and_metrics_cover_every_channel() {
        let registry: ChannelRegistry<u8> = ChannelRegistry::new(&specs(), 0.8);
        let publisher = registry.get("shared.event_publisher").unwrap();
        for n in 0..6 {
            let _ = publisher.send(n);
        }
        let stats = registry.stats();
        assert_eq!(stats.len(), 4);
        let row = stats
            .iter()
            .find(|s| s.channel == "shared.event_publisher")
            .unwrap();
        assert_eq!((row.sent, row.dropped, row.length), (4, 2, 4));
        assert_eq!(row.usage_percent, 100.0);

        let text = registry.prometheus_text();
        let values = parse_exposition(&text);
        let labels = r#"{component="shared",channel="shared.event_publisher"}"#;
        assert_eq!(
            values[&format!("mpsc_channel_messages_dropped_total{labels}")],
            2.0
        );
        assert_eq!(values[&format!("mpsc_channel_capacity{labels}")], 4.0);
        for spec in specs() {
            assert!(text.contains(&format!("channel=\"{}\"", spec.name)));
        }
        // The log pipeline's drops are visible wherever the channels are.
        assert!(values.contains_key(crate::logging::LOG_RECORDS_DROPPED));
    }

    #[test]
    fn a_loaded_configuration_gets_every_channel() {
        let options = crate::config::LoadOptions {
            environment: Some("production".to_owned()),
            ..Default::default()
        };
        let config = Config::load_with_env(&options, |_| None).unwrap();
        let registry: ChannelRegistry<u8> = ChannelRegistry::from_config(&config);
        assert_eq!(registry.channels().len(), config.channels().len());
        assert_eq!(
            registry.monitor().threshold(),
            config.log_warning_threshold()
        );
        for spec in config.channels() {
            let channel = registry.channel(&spec.name).unwrap();
            assert_eq!(channel.capacity(), spec.capacity);
            assert_eq!(channel.overflow(), spec.overflow);
        }
    }

    #[test]
    fn close_all_closes_every_channel() {
        let registry: ChannelRegistry<u8> = ChannelRegistry::new(&specs(), 0.8);
        let ffi = registry.get("shared.ffi").unwrap();
        assert_eq!(ffi.send(1).unwrap(), SendOutcome::Sent);
        registry.close_all();
        assert!(registry.channels().iter().all(|c| c.is_closed()));
        assert_eq!(ffi.try_recv(), Ok(1));
    }
}
