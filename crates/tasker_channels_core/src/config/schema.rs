//! The shape of the `[mpsc_channels]` configuration: which tables and keys exist, what each
//! leaf holds and its allowed range, and the typed view read from a merged table.
//!
//! This is the one place that lists the channels; everything else iterates [`CHANNELS`].
//! It must never hold a default value: every default comes from the shipped base file.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::config::ChannelSpec;
use crate::policy::OverflowPolicy;

/// The only top-level table a configuration file may contain.
pub const ROOT_TABLE: &str = "mpsc_channels";

/// The table holding the settings shared by all channels.
pub const POLICY_TABLE: &str = "overflow_policy";
/// Key of the fraction of capacity at which a channel warns.
pub const WARNING_THRESHOLD_KEY: &str = "log_warning_threshold";
/// Key of the policy used by channels without an `overflow` key.
pub const DROP_POLICY_KEY: &str = "drop_policy";
/// Key of the least time between two saturation notices of one channel.
pub const NOTICE_INTERVAL_KEY: &str = "notice_interval_ms";

/// Optional keys every channel table may carry next to its capacity key.
pub const OVERFLOW_KEY: &str = "overflow";
/// Key of a `block` channel's longest wait for room.
pub const SEND_TIMEOUT_KEY: &str = "send_timeout_ms";

/// Allowed capacities. The upper bound keeps a typo from reserving gigabytes.
pub const CAPACITY_RANGE: RangeInclusive<i64> = 1..=16_777_216;
/// Allowed `send_timeout_ms`: up to one hour; 0 means a blocked sender gives up at once.
pub const SEND_TIMEOUT_MS_RANGE: RangeInclusive<i64> = 0..=3_600_000;
/// Allowed `notice_interval_ms`: up to one hour; 0 means every crossing notifies.
pub const NOTICE_INTERVAL_MS_RANGE: RangeInclusive<i64> = 0..=3_600_000;

/// One configured channel: its table under `[mpsc_channels]` and the key holding its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSchema {
    /// Table path without `mpsc_channels.`, e.g. `shared.ffi`.
    pub name: &'static str,
    /// The key holding the channel's capacity, e.g. `ruby_event_buffer_size`.
    pub capacity_key: &'static str,
}

impl ChannelSchema {
    /// The first segment of the name, e.g. `shared`.
    pub fn component(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }

    /// The dotted path of a key in this channel's table, e.g. `shared.ffi.overflow`.
    pub fn key_path(&self, key: &str) -> String {
        format!("{}.{}", self.name, key)
    }
}

/// Every channel, in the documented order used by [`crate::config::Config::channels`].
pub const CHANNELS: &[ChannelSchema] = &[
    ChannelSchema {
        name: "orchestration.command_processor",
        capacity_key: "command_buffer_size",
    },
    ChannelSchema {
        name: "orchestration.event_listeners",
        capacity_key: "pgmq_event_buffer_size",
    },
    ChannelSchema {
        name: "task_readiness.event_channel",
        capacity_key: "buffer_size",
    },
    ChannelSchema {
        name: "worker.command_processor",
        capacity_key: "command_buffer_size",
    },
    ChannelSchema {
        name: "worker.in_process_events",
        capacity_key: "broadcast_buffer_size",
    },
    ChannelSchema {
        name: "shared.event_publisher",
        capacity_key: "event_queue_buffer_size",
    },
    ChannelSchema {
        name: "shared.ffi",
        capacity_key: "ruby_event_buffer_size",
    },
];

/// What a leaf key holds; decides how validation checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A channel's capacity: an integer in [`CAPACITY_RANGE`].
    Capacity,
    /// A channel's `overflow` policy name.
    Overflow,
    /// A channel's `send_timeout_ms`: an integer in [`SEND_TIMEOUT_MS_RANGE`].
    SendTimeoutMs,
    /// The saturation warning threshold: a fraction in (0, 1].
    WarningThreshold,
    /// The global drop policy name.
    DropPolicy,
    /// The notice damping interval: an integer in [`NOTICE_INTERVAL_MS_RANGE`].
    NoticeIntervalMs,
}

impl LeafKind {
    /// Whether the merged configuration must contain this leaf. Optional leaves have a
    /// meaning when absent (the global drop policy, no send timeout).
    pub fn is_required(self) -> bool {
        !matches!(self, LeafKind::Overflow | LeafKind::SendTimeoutMs)
    }
}

/// What the schema allows at one table path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaNode {
    /// A table whose only allowed keys are these, in schema order.
    Table(Vec<&'static str>),
    /// A value of this kind.
    Leaf(LeafKind),
}

/// What lives at `path` (segments under `mpsc_channels`), or `None` when the schema has no
/// such key.
pub fn node_at(path: &[&str]) -> Option<SchemaNode> {
    if let [table, key] = path {
        if *table == POLICY_TABLE {
            return match *key {
                WARNING_THRESHOLD_KEY => Some(SchemaNode::Leaf(LeafKind::WarningThreshold)),
                DROP_POLICY_KEY => Some(SchemaNode::Leaf(LeafKind::DropPolicy)),
                NOTICE_INTERVAL_KEY => Some(SchemaNode::Leaf(LeafKind::NoticeIntervalMs)),
                _ => None,
            };
        }
    }
    if path == [POLICY_TABLE] {
        return Some(SchemaNode::Table(vec![
            WARNING_THRESHOLD_KEY,
            DROP_POLICY_KEY,
            NOTICE_INTERVAL_KEY,
        ]));
    }
    if let Some((key, table)) = path.split_last() {
        if let Some(channel) = channel_at(table) {
            return match *key {
                k if k == channel.capacity_key => Some(SchemaNode::Leaf(LeafKind::Capacity)),
                OVERFLOW_KEY => Some(SchemaNode::Leaf(LeafKind::Overflow)),
                SEND_TIMEOUT_KEY => Some(SchemaNode::Leaf(LeafKind::SendTimeoutMs)),
                _ => None,
            };
        }
    }
    if let Some(channel) = channel_at(path) {
        return Some(SchemaNode::Table(vec![
            channel.capacity_key,
            OVERFLOW_KEY,
            SEND_TIMEOUT_KEY,
        ]));
    }
    let mut children: Vec<&'static str> = Vec::new();
    for channel in CHANNELS {
        let segments: Vec<&'static str> = channel.name.split('.').collect();
        if segments.len() > path.len() && segments[..path.len()] == *path {
            let next = segments[path.len()];
            if !children.contains(&next) {
                children.push(next);
            }
        }
    }
    if path.is_empty() {
        children.push(POLICY_TABLE);
    }
    (!children.is_empty()).then_some(SchemaNode::Table(children))
}

fn channel_at(path: &[&str]) -> Option<&'static ChannelSchema> {
    CHANNELS
        .iter()
        .find(|channel| channel.name.split('.').eq(path.iter().copied()))
}

/// Every leaf the schema knows, as dotted paths with their kind, in schema order.
pub fn leaves() -> Vec<(String, LeafKind)> {
    let mut all = Vec::new();
    for channel in CHANNELS {
        all.push((channel.key_path(channel.capacity_key), LeafKind::Capacity));
        all.push((channel.key_path(OVERFLOW_KEY), LeafKind::Overflow));
        all.push((channel.key_path(SEND_TIMEOUT_KEY), LeafKind::SendTimeoutMs));
    }
    all.push((
        format!("{POLICY_TABLE}.{WARNING_THRESHOLD_KEY}"),
        LeafKind::WarningThreshold,
    ));
    all.push((
        format!("{POLICY_TABLE}.{DROP_POLICY_KEY}"),
        LeafKind::DropPolicy,
    ));
    all.push((
        format!("{POLICY_TABLE}.{NOTICE_INTERVAL_KEY}"),
        LeafKind::NoticeIntervalMs,
    ));
    all
}

/// The tables (dotted, under `mpsc_channels`) where `key` is a valid leaf; used to tell a
/// user who put a real key in the wrong table where it belongs.
pub fn tables_with_leaf(key: &str) -> Vec<String> {
    leaves()
        .into_iter()
        .filter_map(|(path, _)| {
            let (table, leaf) = path.rsplit_once('.')?;
            (leaf == key).then(|| table.to_owned())
        })
        .collect()
}

/// The typed settings read from a merged, validated `[mpsc_channels]` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub channels: Vec<ChannelSpec>,
    pub log_warning_threshold: f64,
    pub drop_policy: OverflowPolicy,
    pub notice_interval: Duration,
}

/// Reads the typed view from `effective` (nested tables without the `mpsc_channels` level).
///
/// Returns the dotted paths of required leaves that are missing or unreadable; after
/// validation that can only happen when the base file lacks a key.
pub(crate) fn read_settings(effective: &toml::Table) -> Result<Settings, Vec<String>> {
    let mut missing = Vec::new();
    let mut require = |path: String, present: bool| {
        if !present {
            missing.push(path);
        }
    };

    let threshold_path = format!("{POLICY_TABLE}.{WARNING_THRESHOLD_KEY}");
    let log_warning_threshold = lookup(effective, &threshold_path).and_then(|v| match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    });
    require(threshold_path, log_warning_threshold.is_some());

    let drop_policy_path = format!("{POLICY_TABLE}.{DROP_POLICY_KEY}");
    let drop_policy = read_policy(effective, &drop_policy_path);
    require(drop_policy_path, drop_policy.is_some());

    let notice_interval_path = format!("{POLICY_TABLE}.{NOTICE_INTERVAL_KEY}");
    let notice_interval = lookup(effective, &notice_interval_path)
        .and_then(toml::Value::as_integer)
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis);
    require(notice_interval_path, notice_interval.is_some());

    let mut channels = Vec::with_capacity(CHANNELS.len());
    for channel in CHANNELS {
        let capacity_path = channel.key_path(channel.capacity_key);
        let capacity = lookup(effective, &capacity_path)
            .and_then(toml::Value::as_integer)
            .and_then(|n| usize::try_from(n).ok());
        require(capacity_path, capacity.is_some());
        let overflow = read_policy(effective, &channel.key_path(OVERFLOW_KEY));
        let send_timeout = lookup(effective, &channel.key_path(SEND_TIMEOUT_KEY))
            .and_then(toml::Value::as_integer)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis);
        if let (Some(capacity), Some(drop_policy)) = (capacity, drop_policy) {
            channels.push(ChannelSpec {
                name: channel.name.to_owned(),
                component: channel.component().to_owned(),
                capacity_key: channel.capacity_key.to_owned(),
                capacity,
                overflow: overflow.unwrap_or(drop_policy),
                send_timeout,
            });
        }
    }

    match (log_warning_threshold, drop_policy, notice_interval) {
        (Some(log_warning_threshold), Some(drop_policy), Some(notice_interval))
            if missing.is_empty() =>
        {
            Ok(Settings {
                channels,
                log_warning_threshold,
                drop_policy,
                notice_interval,
            })
        }
        _ => Err(missing),
    }
}

fn read_policy(effective: &toml::Table, path: &str) -> Option<OverflowPolicy> {
    lookup(effective, path)
        .and_then(toml::Value::as_str)
        .and_then(|name| name.parse().ok())
}

/// The value at a dotted path in a nested table; `None` for an empty or absent path.
pub(crate) fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let (first, rest) = match dotted.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (dotted, None),
    };
    let value = table.get(first)?;
    match rest {
        None => Some(value),
        Some(rest) => lookup(value.as_table()?, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_unique_and_nested_one_level() {
        for (i, channel) in CHANNELS.iter().enumerate() {
            assert_eq!(channel.name.split('.').count(), 2, "{}", channel.name);
            assert!(
                CHANNELS[..i].iter().all(|other| other.name != channel.name),
                "duplicate channel {}",
                channel.name
            );
            assert_ne!(channel.component(), POLICY_TABLE);
        }
    }

    #[test]
    fn root_lists_components_then_policy_table() {
        assert_eq!(
            node_at(&[]),
            Some(SchemaNode::Table(vec![
                "orchestration",
                "task_readiness",
                "worker",
                "shared",
                "overflow_policy"
            ]))
        );
        assert_eq!(
            node_at(&["shared"]),
            Some(SchemaNode::Table(vec!["event_publisher", "ffi"]))
        );
    }

    #[test]
    fn every_schema_leaf_resolves_to_its_kind() {
        for (path, kind) in leaves() {
            let segments: Vec<&str> = path.split('.').collect();
            assert_eq!(node_at(&segments), Some(SchemaNode::Leaf(kind)), "{path}");
        }
    }

    #[test]
    fn channel_tables_allow_only_their_own_capacity_key() {
        assert_eq!(
            node_at(&["shared", "ffi"]),
            Some(SchemaNode::Table(vec![
                "ruby_event_buffer_size",
                "overflow",
                "send_timeout_ms"
            ]))
        );
        assert_eq!(node_at(&["shared", "ffi", "buffer_size"]), None);
        assert_eq!(node_at(&["shared", "ffi", "capacity"]), None);
        assert_eq!(node_at(&["shared", "nope"]), None);
        assert_eq!(node_at(&["overflow_policy", "overflow"]), None);
        assert_eq!(node_at(&["nope"]), None);
    }

    #[test]
    fn tables_with_leaf_names_every_home_of_a_key() {
        assert_eq!(
            tables_with_leaf("command_buffer_size"),
            vec![
                "orchestration.command_processor",
                "worker.command_processor"
            ]
        );
        assert_eq!(tables_with_leaf("drop_policy"), vec!["overflow_policy"]);
        assert!(tables_with_leaf("capacity").is_empty());
    }

    #[test]
    fn only_overflow_and_timeout_are_optional() {
        let optional: Vec<String> = leaves()
            .into_iter()
            .filter(|(_, kind)| !kind.is_required())
            .map(|(path, _)| path.rsplit_once('.').unwrap().1.to_owned())
            .collect();
        assert!(optional
            .iter()
            .all(|k| k == OVERFLOW_KEY || k == SEND_TIMEOUT_KEY));
        assert_eq!(optional.len(), CHANNELS.len() * 2);
    }

    #[test]
    fn lookup_walks_nested_tables() {
        let table: toml::Table = toml::from_str("[a.b]\nc = 1").unwrap();
        assert_eq!(lookup(&table, "a.b.c"), Some(&toml::Value::Integer(1)));
        assert!(lookup(&table, "a.b").unwrap().is_table());
        assert_eq!(lookup(&table, "a.b.c.d"), None);
        assert_eq!(lookup(&table, ""), None);
        assert_eq!(lookup(&table, "a..b"), None);
    }

    #[test]
    fn missing_required_leaves_are_reported_not_defaulted() {
        let table: toml::Table =
            toml::from_str("[shared.ffi]\nruby_event_buffer_size = 3\noverflow = \"drop\"")
                .unwrap();
        let missing = read_settings(&table).unwrap_err();
        assert!(missing.contains(&"overflow_policy.log_warning_threshold".to_owned()));
        assert!(missing.contains(&"overflow_policy.drop_policy".to_owned()));
        assert!(missing.contains(&"overflow_policy.notice_interval_ms".to_owned()));
        assert!(missing.contains(&"worker.command_processor.command_buffer_size".to_owned()));
        assert!(!missing.contains(&"shared.ffi.ruby_event_buffer_size".to_owned()));
    }
}
