//! Checks one layer file against the schema and collects every problem in it, each with its
//! dotted key and line:column: encoding, TOML syntax, tables outside `[mpsc_channels]`,
//! unknown keys (with a "did you mean"), wrong types and out-of-range values.
//!
//! It must never stop at the first problem, merge layers, or fill in a missing value. The
//! values it accepts are used only when no file has a problem, so a broken file never
//! half-applies.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Key, TableLike, Value};

use crate::config::layers::LayerFile;
use crate::config::problems::{line_and_column, ConfigProblem};
use crate::config::schema::{self, LeafKind, SchemaNode, ROOT_TABLE};
use crate::policy::OverflowPolicy;

/// Below this Jaro-Winkler similarity a key is a different word, not a typo.
const SUGGESTION_CUTOFF: f64 = 0.85;

/// Tables outside `[mpsc_channels]` are only walked this deep to find their headers; deeper
/// nesting is reported once rather than recursed into.
const MAX_MISPLACED_DEPTH: usize = 16;

/// The outcome of checking one file.
#[derive(Debug, Default)]
pub(crate) struct CheckedLayer {
    /// The values this file validly sets, nested, without the `mpsc_channels` level.
    pub values: toml::Table,
    pub problems: Vec<ConfigProblem>,
}

/// Checks `bytes`, the contents of the layer named `file`.
pub(crate) fn check_layer(file: &str, bytes: &[u8]) -> CheckedLayer {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]);
            let (line, column) = line_and_column(&valid, valid.len());
            let problem = ConfigProblem {
                line: Some(line),
                column: Some(column),
                ..ConfigProblem::in_file(
                    file,
                    "file is not valid UTF-8; TOML files must be saved as UTF-8 \
                     (nothing in this file was applied)",
                )
            };
            return CheckedLayer {
                values: toml::Table::new(),
                problems: vec![problem],
            };
        }
    };

    let document = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let detail = error
                .message()
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let problem = ConfigProblem::in_file(
                file,
                format!("TOML syntax error: {detail} (fix it; nothing in this file was applied)"),
            )
            .at_offset(text, error.span().map(|span| span.start));
            return CheckedLayer {
                values: toml::Table::new(),
                problems: vec![problem],
            };
        }
    };

    let mut checker = Checker {
        file,
        text,
        checked: CheckedLayer::default(),
    };
    let root = document.as_table();
    for (name, item) in root.iter() {
        let Some((key, _)) = root.get_key_value(name) else {
            continue;
        };
        if name == ROOT_TABLE {
            checker.check_node(&mut Vec::new(), key, item);
        } else {
            checker.check_outside_root(name, key, item);
        }
    }
    checker.checked
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    checked: CheckedLayer,
}

impl Checker<'_> {
    fn report(&mut self, key: String, span: Option<Range<usize>>, message: String) {
        let problem = ConfigProblem::in_file(self.file, message)
            .with_key(key)
            .at_offset(self.text, span.map(|span| span.start));
        self.checked.problems.push(problem);
    }

    /// Checks `item`, found at `path` under `[mpsc_channels]`, which the schema allows.
    fn check_node(&mut self, path: &mut Vec<String>, key: &Key, item: &Item) {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match schema::node_at(&segments) {
            Some(SchemaNode::Table(children)) => match item.as_table_like() {
                Some(table) => self.check_table(path, table, &children),
                None => self.report(
                    dotted(path),
                    item.span().or_else(|| key.span()),
                    format!(
                        "must be a table (write it as {}), got {}",
                        header(path),
                        describe(item)
                    ),
                ),
            },
            Some(SchemaNode::Leaf(kind)) => match check_leaf(kind, item) {
                Ok(value) => insert(&mut self.checked.values, path, value),
                Err(message) => {
                    self.report(dotted(path), item.span().or_else(|| key.span()), message)
                }
            },
            None => self.report(
                dotted(path),
                key.span(),
                "is not a configuration key".to_owned(),
            ),
        }
    }

    fn check_table(
        &mut self,
        path: &mut Vec<String>,
        table: &dyn TableLike,
        children: &[&'static str],
    ) {
        for (name, item) in table.iter() {
            let Some((key, _)) = table.get_key_value(name) else {
                continue;
            };
            path.push(name.to_owned());
            if children.contains(&name) {
                self.check_node(path, key, item);
            } else {
                let message = unknown_key_message(&path[..path.len() - 1], name, item, children);
                self.report(dotted(path), key.span(), message);
            }
            path.pop();
        }
    }

    /// A top-level key other than `mpsc_channels`: either a schema table that lost its
    /// `mpsc_channels.` prefix (the classic mistake, which would silently configure nothing),
    /// or something unknown.
    fn check_outside_root(&mut self, name: &str, key: &Key, item: &Item) {
        if schema::node_at(&[name]).is_none() {
            let mut message =
                format!("unknown top-level key `{name}`; every setting lives under [{ROOT_TABLE}]");
            if let Some(suggestion) = did_you_mean(name, &[ROOT_TABLE]) {
                message.push_str(&format!("; did you mean `{suggestion}`?"));
            }
            self.report(name.to_owned(), key.span(), message);
            return;
        }
        let before = self.checked.problems.len();
        self.report_misplaced(&mut vec![name.to_owned()], key, item, false);
        if self.checked.problems.len() == before {
            self.report(
                name.to_owned(),
                key.span(),
                format!("`{name}` is outside [{ROOT_TABLE}]; move it to [{ROOT_TABLE}.{name}]"),
            );
        }
    }

    /// Reports each table header (and each bare key not under a header) of a misplaced
    /// subtree with the header the user should have written.
    fn report_misplaced(&mut self, path: &mut Vec<String>, key: &Key, item: &Item, covered: bool) {
        let location = path.join(".");
        if path.len() > MAX_MISPLACED_DEPTH {
            if !covered {
                self.report(
                    location,
                    key.span(),
                    format!("is outside [{ROOT_TABLE}] and nested too deeply to be a setting"),
                );
            }
            return;
        }
        match item {
            Item::Table(table) => {
                let is_header = !table.is_implicit() && !table.is_dotted();
                if is_header {
                    self.report(
                        location.clone(),
                        table.span().or_else(|| key.span()),
                        format!(
                            "table [{location}] is outside [{ROOT_TABLE}], so it would configure \
                             nothing; write it as [{ROOT_TABLE}.{location}]"
                        ),
                    );
                }
                for (name, child) in table.iter() {
                    let Some((child_key, _)) = table.get_key_value(name) else {
                        continue;
                    };
                    path.push(name.to_owned());
                    self.report_misplaced(path, child_key, child, covered || is_header);
                    path.pop();
                }
            }
            _ if covered => {}
            _ => self.report(
                location.clone(),
                key.span(),
                format!(
                    "`{location}` is outside [{ROOT_TABLE}], so it would configure nothing; \
                     write it as `{ROOT_TABLE}.{location}` or move it into a \
                     [{ROOT_TABLE}.…] table"
                ),
            ),
        }
    }
}

/// Checks a leaf's value; on success returns it in the form the effective table holds.
fn check_leaf(kind: LeafKind, item: &Item) -> Result<toml::Value, String> {
    let value = item.as_value();
    match kind {
        LeafKind::Capacity => match value {
            Some(Value::Integer(n)) if schema::CAPACITY_RANGE.contains(n.value()) => {
                Ok(toml::Value::Integer(*n.value()))
            }
            _ => Err(format!(
                "capacity must be an integer in {}..={}, got {}",
                schema::CAPACITY_RANGE.start(),
                schema::CAPACITY_RANGE.end(),
                describe(item)
            )),
        },
        LeafKind::SendTimeoutMs => match value {
            Some(Value::Integer(n)) if schema::SEND_TIMEOUT_MS_RANGE.contains(n.value()) => {
                Ok(toml::Value::Integer(*n.value()))
            }
            _ => Err(format!(
                "send_timeout_ms must be an integer number of milliseconds in {}..={}, got {}",
                schema::SEND_TIMEOUT_MS_RANGE.start(),
                schema::SEND_TIMEOUT_MS_RANGE.end(),
                describe(item)
            )),
        },
        LeafKind::NoticeIntervalMs => match value {
            Some(Value::Integer(n)) if schema::NOTICE_INTERVAL_MS_RANGE.contains(n.value()) => {
                Ok(toml::Value::Integer(*n.value()))
            }
            _ => Err(format!(
                "notice_interval_ms must be an integer number of milliseconds in {}..={} \
                 (0 notifies on every crossing), got {}",
                schema::NOTICE_INTERVAL_MS_RANGE.start(),
                schema::NOTICE_INTERVAL_MS_RANGE.end(),
                describe(item)
            )),
        },
        LeafKind::WarningThreshold => {
            // An integer is accepted so `1` (warn only when full) reads as written; it is
            // stored as a float so readers see one type.
            let fraction = match value {
                Some(Value::Float(f)) => Some(*f.value()),
                Some(Value::Integer(i)) => Some(*i.value() as f64),
                _ => None,
            };
            match fraction {
                Some(f) if f > 0.0 && f <= 1.0 => Ok(toml::Value::Float(f)),
                _ => Err(format!(
                    "log_warning_threshold must be a fraction of capacity in (0, 1], \
                     e.g. 0.8, got {}",
                    describe(item)
                )),
            }
        }
        LeafKind::Overflow | LeafKind::DropPolicy => match value {
            Some(Value::String(name)) => match name.value().parse::<OverflowPolicy>() {
                Ok(policy) => Ok(toml::Value::String(policy.as_str().to_owned())),
                Err(unknown) => Err(match policy_suggestion(name.value()) {
                    Some(policy) => format!("{unknown}; did you mean \"{policy}\"?"),
                    None => format!("{unknown}; use one of the valid names"),
                }),
            },
            _ => Err(format!(
                "overflow policy must be a string, one of {}; got {}",
                OverflowPolicy::valid_names(),
                describe(item)
            )),
        },
    }
}

/// The policy a misspelt name most likely meant: the same words written with `-`, spaces or
/// capitals (`"Drop-Oldest"`), else a near miss (`"dropp"`).
fn policy_suggestion(name: &str) -> Option<&'static str> {
    let normalized: String = name
        .trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let names = OverflowPolicy::ALL.map(OverflowPolicy::as_str);
    names
        .iter()
        .copied()
        .find(|policy| *policy == normalized)
        .or_else(|| did_you_mean(&normalized, &names))
}

fn unknown_key_message(
    table_path: &[String],
    name: &str,
    item: &Item,
    children: &[&'static str],
) -> String {
    let mut message = format!("unknown key `{name}` in {}", header(table_path));
    if let Some(suggestion) = did_you_mean(name, children) {
        message.push_str(&format!("; did you mean `{suggestion}`?"));
    } else {
        let homes = schema::tables_with_leaf(name);
        if !homes.is_empty() {
            let homes: Vec<String> = homes
                .iter()
                .map(|home| format!("[{ROOT_TABLE}.{home}]"))
                .collect();
            message.push_str(&format!("; `{name}` belongs in {}", homes.join(" or ")));
        } else if item.is_table_like() && holds_only_tables(table_path, children) {
            message.push_str("; configuration tunes the existing channels and cannot add new ones");
        }
    }
    message.push_str(&format!(" (valid keys here: {})", children.join(", ")));
    message
}

/// Whether the table at `table_path` groups channels (or components) rather than settings.
fn holds_only_tables(table_path: &[String], children: &[&'static str]) -> bool {
    children.iter().all(|child| {
        let mut path: Vec<&str> = table_path.iter().map(String::as_str).collect();
        path.push(child);
        matches!(schema::node_at(&path), Some(SchemaNode::Table(_)))
    })
}

/// The closest valid key to a near miss, if it is close enough to be a typo.
fn did_you_mean<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let name = name.to_lowercase();
    candidates
        .iter()
        .map(|candidate| (strsim::jaro_winkler(&name, candidate), *candidate))
        .filter(|(score, _)| *score >= SUGGESTION_CUTOFF)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

fn dotted(path: &[String]) -> String {
    if path.is_empty() {
        ROOT_TABLE.to_owned()
    } else {
        path.join(".")
    }
}

fn header(path: &[String]) -> String {
    if path.is_empty() {
        format!("[{ROOT_TABLE}]")
    } else {
        format!("[{ROOT_TABLE}.{}]", path.join("."))
    }
}

/// A value as a user would recognise it in a message.
fn describe(item: &Item) -> String {
    match item {
        Item::None => "nothing".to_owned(),
        Item::Table(_) => "a table".to_owned(),
        Item::ArrayOfTables(_) => "an array of tables".to_owned(),
        Item::Value(value) => match value {
            Value::Integer(n) => n.value().to_string(),
            Value::Float(f) => format!("{:?}", f.value()),
            Value::String(s) => format!("the string {:?}", s.value()),
            Value::Boolean(b) => format!("the boolean {}", b.value()),
            Value::Datetime(d) => format!("the datetime {}", d.value()),
            Value::Array(_) => "an array".to_owned(),
            Value::InlineTable(_) => "a table".to_owned(),
        },
    }
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((leaf, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for parent in parents {
        let entry = current
            .entry(parent.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(leaf.clone(), value);
}

/// The channels dispatchers take events from. Each holds events `publish` already accepted
/// (`shared.ffi`, and `worker.in_process_events` on their way on), so neither may evict one
/// to make room: `drop_oldest` there is refused, wherever the policy comes from.
const DISPATCH_SIDE_CHANNELS: [&str; 2] = ["shared.ffi", "worker.in_process_events"];

/// Rules on the merged result, where a value is wrong only in combination (the policy a
/// channel ends up with may come from `overflow_policy.drop_policy` in another file).
/// `files` are the merged layers, lowest first, as `Config::layers` names them, so each
/// problem is located at the value that caused it.
pub(super) fn check_effective(config: &super::Config, files: &[LayerFile]) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for channel in DISPATCH_SIDE_CHANNELS {
        let Some(spec) = config.channel(channel) else {
            continue;
        };
        if spec.overflow != OverflowPolicy::DropOldest {
            continue;
        }
        let own_key = format!("{channel}.{}", schema::OVERFLOW_KEY);
        let (key, message) = if config.source(&own_key).is_some() {
            let message = format!(
                "{channel} cannot use \"drop_oldest\": it would discard events publish already \
                 accepted; use {}",
                dispatch_side_alternatives(channel)
            );
            (own_key, message)
        } else {
            let message = format!(
                "{channel} has no overflow of its own, so it would take this \"drop_oldest\" \
                 and discard events publish already accepted; choose another drop_policy, or \
                 set overflow = \"block\" in [{ROOT_TABLE}.{channel}]"
            );
            let key = format!("{}.{}", schema::POLICY_TABLE, schema::DROP_POLICY_KEY);
            (key, message)
        };
        problems.push(located(config, files, key, message));
    }
    problems
}

fn dispatch_side_alternatives(channel: &str) -> &'static str {
    if channel == "shared.ffi" {
        "\"error\" (publish raises Tasker::Backpressure), \"block\" or \"drop\""
    } else {
        "\"block\", \"drop\" or \"error\" (they refuse a new Rust-emitted event when full, \
         never a queued one)"
    }
}

/// A problem with the merged value at `key`, located in the layer file that set it.
fn located(
    config: &super::Config,
    files: &[LayerFile],
    key: String,
    message: String,
) -> ConfigProblem {
    let layer = config.sources.get(&key).and_then(|&index| files.get(index));
    let file = layer.map(|layer| layer.name.clone()).unwrap_or_default();
    // Every layer was checked as UTF-8 before the merge; were one not, it goes unlocated.
    let text = layer.and_then(|layer| std::str::from_utf8(&layer.contents).ok());
    let offset = text.and_then(|text| value_offset(text, &key));
    ConfigProblem::in_file(file, message)
        .with_key(key)
        .at_offset(text.unwrap_or_default(), offset)
}

/// Where the value at `dotted` (a path under `[mpsc_channels]`) starts in `text`.
fn value_offset(text: &str, dotted: &str) -> Option<usize> {
    let document = ImDocument::parse(text).ok()?;
    let mut item = document.as_table().get(ROOT_TABLE)?;
    for segment in dotted.split('.') {
        item = item.as_table_like()?.get(segment)?;
    }
    item.span().map(|span| span.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> CheckedLayer {
        check_layer("override.toml", text.as_bytes())
    }

    fn only_problem(text: &str) -> ConfigProblem {
        let checked = check(text);
        assert_eq!(checked.problems.len(), 1, "{:#?}", checked.problems);
        checked.problems.into_iter().next().unwrap()
    }

    fn accepted(text: &str, dotted: &str) -> toml::Value {
        let checked = check(text);
        assert!(checked.problems.is_empty(), "{:#?}", checked.problems);
        schema::lookup(&checked.values, dotted)
            .unwrap_or_else(|| panic!("{dotted} not set"))
            .clone()
    }

    #[test]
    fn valid_file_yields_values_without_root_level() {
        let checked = check(
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 7\noverflow = \"drop\"\n\
             [mpsc_channels.overflow_policy]\nlog_warning_threshold = 0.5\n",
        );
        assert!(checked.problems.is_empty(), "{:#?}", checked.problems);
        let expected: toml::Table = toml::from_str(
            "[shared.ffi]\nruby_event_buffer_size = 7\noverflow = \"drop\"\n\
             [overflow_policy]\nlog_warning_threshold = 0.5\n",
        )
        .unwrap();
        assert_eq!(checked.values, expected);
    }

    #[test]
    fn empty_file_sets_nothing() {
        let checked = check("# nothing to override\n");
        assert!(checked.problems.is_empty());
        assert!(checked.values.is_empty());
    }

    #[test]
    fn inline_and_dotted_tables_are_accepted() {
        assert_eq!(
            accepted(
                "mpsc_channels = { shared = { ffi = { ruby_event_buffer_size = 3 } } }",
                "shared.ffi.ruby_event_buffer_size"
            ),
            toml::Value::Integer(3)
        );
        assert_eq!(
            accepted(
                "[mpsc_channels]\nworker.command_processor.command_buffer_size = 4",
                "worker.command_processor.command_buffer_size"
            ),
            toml::Value::Integer(4)
        );
    }

    #[test]
    fn syntax_error_has_line_and_column_and_applies_nothing() {
        let problem = only_problem(
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 3\noverflow = drop\n",
        );
        assert_eq!(problem.file, "override.toml");
        assert_eq!((problem.line, problem.column), (Some(3), Some(12)));
        assert!(
            problem.message.starts_with("TOML syntax error: "),
            "{}",
            problem.message
        );
        assert!(!problem.message.contains('\n'));
        assert!(check("[x\n").values.is_empty());
    }

    #[test]
    fn duplicate_key_is_a_syntax_error_with_position() {
        let problem =
            only_problem("[mpsc_channels.shared.ffi]\noverflow = \"drop\"\noverflow = \"error\"\n");
        assert_eq!(problem.line, Some(3));
        assert!(problem.column.is_some());
    }

    #[test]
    fn invalid_utf8_is_located() {
        let checked = check_layer("bad.toml", b"# ok\nkey = \"\xff\"\n");
        assert_eq!(checked.problems.len(), 1);
        let problem = &checked.problems[0];
        assert_eq!((problem.line, problem.column), (Some(2), Some(8)));
        assert!(problem.message.contains("UTF-8"));
    }

    #[test]
    fn unknown_key_suggests_near_miss() {
        let problem =
            only_problem("[mpsc_channels.task_readiness.event_channel]\nbuffer_sise = 5\n");
        assert_eq!(
            problem.key.as_deref(),
            Some("task_readiness.event_channel.buffer_sise")
        );
        assert_eq!((problem.line, problem.column), (Some(2), Some(1)));
        assert!(
            problem.message.contains("did you mean `buffer_size`?"),
            "{}",
            problem.message
        );
        assert!(problem
            .message
            .contains("valid keys here: buffer_size, overflow, send_timeout_ms"));
    }

    #[test]
    fn unknown_key_far_from_everything_lists_valid_keys_only() {
        let problem = only_problem("[mpsc_channels.shared.ffi]\ncapacity = 5\n");
        assert!(
            !problem.message.contains("did you mean"),
            "{}",
            problem.message
        );
        assert!(problem
            .message
            .contains("valid keys here: ruby_event_buffer_size, overflow, send_timeout_ms"));
    }

    #[test]
    fn key_from_another_table_says_where_it_belongs() {
        let problem = only_problem("[mpsc_channels.shared.ffi]\ndrop_policy = \"drop\"\n");
        assert!(
            problem
                .message
                .contains("`drop_policy` belongs in [mpsc_channels.overflow_policy]"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn new_channels_cannot_be_added() {
        let problem = only_problem("[mpsc_channels.shared.ffii]\nruby_event_buffer_size = 5\n");
        assert_eq!(problem.key.as_deref(), Some("shared.ffii"));
        assert!(
            problem.message.contains("did you mean `ffi`?"),
            "{}",
            problem.message
        );

        let problem = only_problem("[mpsc_channels.shared.billing]\nsize = 5\n");
        assert!(
            problem.message.contains("cannot add new ones"),
            "{}",
            problem.message
        );
        let problem = only_problem("[mpsc_channels.shared.ffi.extra]\nsize = 5\n");
        assert!(
            !problem.message.contains("cannot add new ones"),
            "{}",
            problem.message
        );

        let problem = only_problem("[mpsc_channels.billing.queue]\nsize = 5\n");
        assert_eq!(problem.key.as_deref(), Some("billing"));
        assert!(
            problem.message.contains("cannot add new ones"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn misspelled_root_table_suggests_mpsc_channels() {
        let problem = only_problem("[mpsc_channel.shared.ffi]\nruby_event_buffer_size = 5\n");
        assert_eq!(problem.key.as_deref(), Some("mpsc_channel"));
        assert!(
            problem.message.contains("did you mean `mpsc_channels`?"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn table_outside_root_names_the_fix() {
        let problem =
            only_problem("# comment\n[task_readiness.event_channel]\nbuffer_size = 100\n");
        assert_eq!(problem.key.as_deref(), Some("task_readiness.event_channel"));
        assert_eq!((problem.line, problem.column), (Some(2), Some(1)));
        assert!(
            problem
                .message
                .contains("write it as [mpsc_channels.task_readiness.event_channel]"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn every_misplaced_header_and_bare_key_is_reported() {
        let checked = check(
            "overflow_policy.drop_policy = \"drop\"\n\
             [shared.ffi]\nruby_event_buffer_size = 1\n\
             [shared.event_publisher]\nevent_queue_buffer_size = 1\n",
        );
        let keys: Vec<_> = checked
            .problems
            .iter()
            .map(|p| p.key.clone().unwrap())
            .collect();
        assert_eq!(
            keys,
            vec![
                "overflow_policy.drop_policy",
                "shared.ffi",
                "shared.event_publisher"
            ]
        );
        assert!(checked.problems[0]
            .message
            .contains("`mpsc_channels.overflow_policy.drop_policy`"));
        assert!(checked.values.is_empty());
    }

    #[test]
    fn wrong_types_are_reported() {
        let cases = [
            ("[mpsc_channels]\nshared = 3\n", "shared", "must be a table"),
            (
                "mpsc_channels = \"x\"\n",
                "mpsc_channels",
                "must be a table",
            ),
            (
                "[[mpsc_channels.shared.ffi]]\nruby_event_buffer_size = 1\n",
                "shared.ffi",
                "got an array of tables",
            ),
            (
                "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = \"1000\"\n",
                "shared.ffi.ruby_event_buffer_size",
                "got the string \"1000\"",
            ),
            (
                "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 1000.0\n",
                "shared.ffi.ruby_event_buffer_size",
                "got 1000.0",
            ),
            (
                "[mpsc_channels.shared.ffi]\noverflow = 3\n",
                "shared.ffi.overflow",
                "must be a string",
            ),
            (
                "[mpsc_channels.overflow_policy]\nlog_warning_threshold = \"80%\"\n",
                "overflow_policy.log_warning_threshold",
                "got the string \"80%\"",
            ),
            (
                "[mpsc_channels.shared.ffi]\nsend_timeout_ms = 1.5\n",
                "shared.ffi.send_timeout_ms",
                "got 1.5",
            ),
            (
                "[mpsc_channels.shared.ffi]\nsend_timeout_ms = [1]\n",
                "shared.ffi.send_timeout_ms",
                "got an array",
            ),
            (
                "[mpsc_channels.shared.ffi]\nsend_timeout_ms = 1979-05-27\n",
                "shared.ffi.send_timeout_ms",
                "got the datetime 1979-05-27",
            ),
            (
                "[mpsc_channels.overflow_policy]\ndrop_policy = true\n",
                "overflow_policy.drop_policy",
                "got the boolean true",
            ),
        ];
        for (text, key, fragment) in cases {
            let problem = only_problem(text);
            assert_eq!(problem.key.as_deref(), Some(key), "{text}");
            assert!(
                problem.message.contains(fragment),
                "{text}: {}",
                problem.message
            );
            assert!(problem.line.is_some(), "{text}");
        }
    }

    #[test]
    fn capacity_range_is_inclusive_1_to_16_mebi() {
        let text = |n: &str| {
            format!("[mpsc_channels.worker.command_processor]\ncommand_buffer_size = {n}\n")
        };
        for ok in ["1", "16777216"] {
            assert!(check(&text(ok)).problems.is_empty(), "{ok}");
        }
        for bad in ["0", "-1", "16777217"] {
            let problem = only_problem(&text(bad));
            assert_eq!(
                problem.message,
                format!("capacity must be an integer in 1..=16777216, got {bad}")
            );
            assert_eq!((problem.line, problem.column), (Some(2), Some(23)));
        }
    }

    #[test]
    fn warning_threshold_is_a_fraction_in_zero_exclusive_one_inclusive() {
        let text =
            |v: &str| format!("[mpsc_channels.overflow_policy]\nlog_warning_threshold = {v}\n");
        let path = "overflow_policy.log_warning_threshold";
        for (ok, expected) in [("0.01", 0.01), ("0.8", 0.8), ("1.0", 1.0), ("1", 1.0)] {
            assert_eq!(
                accepted(&text(ok), path),
                toml::Value::Float(expected),
                "{ok}"
            );
        }
        for bad in ["0", "0.0", "-0.1", "1.01", "2", "80", "nan", "inf"] {
            let problem = only_problem(&text(bad));
            assert!(
                problem.message.contains("in (0, 1]"),
                "{bad}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn policy_names_are_checked_and_valid_ones_listed() {
        for (table, key) in [
            ("shared.ffi", "overflow"),
            ("overflow_policy", "drop_policy"),
        ] {
            for policy in OverflowPolicy::ALL {
                let text = format!("[mpsc_channels.{table}]\n{key} = \"{policy}\"\n");
                assert_eq!(
                    accepted(&text, &format!("{table}.{key}")),
                    toml::Value::String(policy.as_str().to_owned())
                );
            }
            let problem = only_problem(&format!("[mpsc_channels.{table}]\n{key} = \"dropp\"\n"));
            assert!(
                problem.message.contains(
                    "unknown overflow policy \"dropp\" (valid: \"block\", \"drop\", \"drop_oldest\", \"error\")"
                ),
                "{}",
                problem.message
            );
        }
    }

    #[test]
    fn misspelt_policy_names_get_a_suggestion() {
        for (written, meant) in [
            ("drop-oldest", "drop_oldest"),
            ("Drop Oldest", "drop_oldest"),
            ("dropoldest", "drop_oldest"),
            ("BLOCK", "block"),
            ("dropp", "drop"),
            ("eror", "error"),
        ] {
            let problem = only_problem(&format!(
                "[mpsc_channels.shared.ffi]\noverflow = \"{written}\"\n"
            ));
            assert!(
                problem
                    .message
                    .ends_with(&format!("; did you mean \"{meant}\"?")),
                "{written}: {}",
                problem.message
            );
            assert!(problem
                .message
                .starts_with(&format!("unknown overflow policy \"{written}\" (valid: ")));
        }
        let problem = only_problem("[mpsc_channels.overflow_policy]\ndrop_policy = \"discard\"\n");
        assert!(
            problem.message.ends_with("; use one of the valid names"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn send_timeout_range_is_0_to_one_hour() {
        let text = |n: &str| {
            format!("[mpsc_channels.task_readiness.event_channel]\nsend_timeout_ms = {n}\n")
        };
        for ok in ["0", "3600000"] {
            assert!(check(&text(ok)).problems.is_empty(), "{ok}");
        }
        for bad in ["-1", "3600001"] {
            let problem = only_problem(&text(bad));
            assert!(
                problem.message.contains("in 0..=3600000, got"),
                "{}",
                problem.message
            );
        }
    }

    #[test]
    fn notice_interval_is_whole_milliseconds_from_0_to_one_hour() {
        let text = |v: &str| format!("[mpsc_channels.overflow_policy]\nnotice_interval_ms = {v}\n");
        let path = "overflow_policy.notice_interval_ms";
        for ok in ["0", "1000", "3600000"] {
            assert_eq!(
                accepted(&text(ok), path),
                toml::Value::Integer(ok.parse().unwrap()),
                "{ok}"
            );
        }
        for (bad, got) in [
            ("-1", "got -1"),
            ("3600001", "got 3600001"),
            ("1.5", "got 1.5"),
            ("\"1s\"", "got the string \"1s\""),
            ("true", "got the boolean true"),
        ] {
            let problem = only_problem(&text(bad));
            assert_eq!(problem.key.as_deref(), Some(path), "{bad}");
            assert_eq!((problem.line, problem.column), (Some(2), Some(22)), "{bad}");
            assert!(
                problem.message.starts_with(
                    "notice_interval_ms must be an integer number of milliseconds in 0..=3600000"
                ) && problem.message.ends_with(got),
                "{bad}: {}",
                problem.message
            );
        }
        let problem = only_problem("[mpsc_channels.overflow_policy]\nnotice_intervall_ms = 5\n");
        assert!(
            problem
                .message
                .contains("; did you mean `notice_interval_ms`?"),
            "{}",
            problem.message
        );
        let problem = only_problem("[mpsc_channels.shared.ffi]\nnotice_interval_ms = 5\n");
        assert!(
            problem.message.contains("[mpsc_channels.overflow_policy]"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn every_problem_in_a_file_is_collected_and_valid_keys_still_apply() {
        let checked = check(
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\noverflow = \"nope\"\n\
             send_timeout_ms = 5\nextra = 1\n\
             [mpsc_channels.overflow_policy]\nlog_warning_threshold = 7\n\
             [worker.command_processor]\ncommand_buffer_size = 1\n",
        );
        let keys: Vec<_> = checked
            .problems
            .iter()
            .map(|p| (p.key.clone().unwrap(), p.line.unwrap()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("shared.ffi.ruby_event_buffer_size".to_owned(), 2),
                ("shared.ffi.overflow".to_owned(), 3),
                ("shared.ffi.extra".to_owned(), 5),
                ("overflow_policy.log_warning_threshold".to_owned(), 7),
                ("worker.command_processor".to_owned(), 8),
            ]
        );
        assert_eq!(
            schema::lookup(&checked.values, "shared.ffi.send_timeout_ms"),
            Some(&toml::Value::Integer(5))
        );
    }

    #[test]
    fn deeply_nested_misplaced_tables_do_not_recurse_forever() {
        let header = (0..40)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(".");
        let checked = check(&format!("[shared.{header}]\nx = 1\n"));
        assert_eq!(checked.problems.len(), 1, "{:#?}", checked.problems);
    }

    #[test]
    fn suggestions_need_a_close_match() {
        assert_eq!(
            did_you_mean("overflw", &["overflow", "send_timeout_ms"]),
            Some("overflow")
        );
        assert_eq!(did_you_mean("Overflow", &["overflow"]), Some("overflow"));
        assert_eq!(
            did_you_mean("capacity", &["command_buffer_size", "overflow"]),
            None
        );
        assert_eq!(did_you_mean("x", &[]), None);
    }
}
