//! Layered, validated channel configuration (docs/design.md §3).
//!
//! Owns reading the shipped base TOML (the only source of defaults), merging layers with
//! provenance, validating every key, and the per-channel view. It must never create
//! channels or hold runtime state.
//!
//! Submodules, one concept each: [`schema`] (tables, keys, ranges, the channel list),
//! `layers` (which files, in which order, merged how), `validation` (every problem in a
//! file), `problems` (how problems are reported). This file is the public load API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::OverflowPolicy;

mod layers;
mod problems;
pub mod schema;
#[cfg(test)]
pub(crate) mod testing;
mod validation;

pub use layers::{CONFIG_DIR_VAR, ENVIRONMENT_VAR};
pub use problems::{ConfigErrors, ConfigProblem};

/// The effective settings of one configured channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Table path without `mpsc_channels.`, e.g. `shared.ffi`.
    pub name: String,
    /// First segment of the name, e.g. `shared`.
    pub component: String,
    /// The capacity key of the table, e.g. `ruby_event_buffer_size`.
    pub capacity_key: String,
    /// How many messages the channel holds at most.
    pub capacity: usize,
    /// What a send does when the channel is full (`overflow`, else the global `drop_policy`).
    pub overflow: OverflowPolicy,
    /// How long a `block` send waits for room; `None`: forever.
    pub send_timeout: Option<Duration>,
}

/// What to load. Every field is optional; see [`Config::load`] for how each is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The environment; else `TASKER_ENV`; else `development`.
    pub environment: Option<String>,
    /// A directory with `base/` and `environments/<env>/` override files; else
    /// `TASKER_CONFIG_DIR`; else none (the shipped environment file applies).
    pub config_dir: Option<PathBuf>,
    /// How the compiled-in shipped files are named in layers, provenance and problems;
    /// default `config/tasker`. The Ruby gem passes its absolute config dir.
    pub shipped_dir_label: Option<String>,
}

/// A loaded, fully validated channel configuration.
#[derive(Debug, Clone)]
pub struct Config {
    environment: String,
    config_dir: Option<PathBuf>,
    layers: Vec<String>,
    effective: toml::Table,
    /// Dotted leaf path to the index in `layers` of the file that set it.
    sources: BTreeMap<String, usize>,
    settings: schema::Settings,
}

impl Config {
    /// Loads the layered configuration, reading `TASKER_ENV` and `TASKER_CONFIG_DIR` from the
    /// process environment for whatever `options` leaves unset (an empty variable is unset).
    ///
    /// Fails with every problem found across all layer files at once.
    pub fn load(options: &LoadOptions) -> Result<Config, ConfigErrors> {
        // A value that is not Unicode is kept (lossily) rather than ignored, so validation
        // reports it instead of silently falling back to the default.
        Self::load_with_env(options, |var| {
            std::env::var_os(var).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// [`Config::load`] with the environment variable lookup supplied by the caller, so
    /// tests and embedders can resolve without touching the process environment.
    pub fn load_with_env(
        options: &LoadOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Self::load_from(options, env, &layers::SHIPPED)
    }

    fn load_from(
        options: &LoadOptions,
        env: impl Fn(&str) -> Option<String>,
        shipped: &layers::Shipped,
    ) -> Result<Config, ConfigErrors> {
        let resolved = layers::resolve(options, env);
        let label = options
            .shipped_dir_label
            .as_deref()
            .unwrap_or(layers::DEFAULT_SHIPPED_LABEL);
        let plan = layers::plan_layers(&resolved, shipped, label);

        let mut problems = plan.problems;
        let mut checked_values = Vec::with_capacity(plan.files.len());
        for file in &plan.files {
            let checked = validation::check_layer(&file.name, &file.contents);
            problems.extend(checked.problems);
            checked_values.push(checked.values);
        }
        if !problems.is_empty() {
            return Err(ConfigErrors { problems });
        }

        let merged = layers::merge(&checked_values);
        let layers: Vec<String> = plan.files.iter().map(|file| file.name.clone()).collect();
        let settings = schema::read_settings(&merged.effective).map_err(|missing| {
            // Override files cannot remove keys, so a missing required key is the base's.
            let base = layers.first().cloned().unwrap_or_default();
            ConfigErrors {
                problems: missing
                    .into_iter()
                    .map(|key| {
                        ConfigProblem::in_file(
                            base.clone(),
                            "required key is missing from the base file, the only source of \
                             defaults; add it there",
                        )
                        .with_key(key)
                    })
                    .collect(),
            }
        })?;

        let config = Config {
            environment: resolved.environment,
            config_dir: resolved.config_dir.map(|(dir, _)| dir),
            layers,
            effective: merged.effective,
            sources: merged.sources,
            settings,
        };
        let problems = validation::check_effective(&config, &plan.files);
        if !problems.is_empty() {
            return Err(ConfigErrors { problems });
        }
        Ok(config)
    }

    /// The environment the configuration was loaded for.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The config dir used, if any (from the argument or `TASKER_CONFIG_DIR`).
    pub fn config_dir(&self) -> Option<&Path> {
        self.config_dir.as_deref()
    }

    /// The files actually merged, lowest first: shipped files by their label-based name,
    /// config-dir files by path.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// The effective value (or table) at a dotted path without the `mpsc_channels.` prefix,
    /// e.g. `shared.ffi.ruby_event_buffer_size`. Unset optional keys are `None`.
    pub fn get(&self, dotted: &str) -> Option<&toml::Value> {
        schema::lookup(&self.effective, dotted)
    }

    /// The layer that set the effective value of a leaf; `None` for tables and unset keys.
    pub fn source(&self, dotted: &str) -> Option<&str> {
        self.sources
            .get(dotted)
            .and_then(|&index| self.layers.get(index))
            .map(String::as_str)
    }

    /// The layer that decided a channel's overflow policy: its own `overflow` key, or
    /// `overflow_policy.drop_policy` when it has none.
    pub fn overflow_source(&self, channel: &str) -> Option<&str> {
        self.channel(channel)?;
        self.source(&format!("{channel}.{}", schema::OVERFLOW_KEY))
            .or_else(|| {
                self.source(&format!(
                    "{}.{}",
                    schema::POLICY_TABLE,
                    schema::DROP_POLICY_KEY
                ))
            })
    }

    /// Every channel, in schema order ([`schema::CHANNELS`]).
    pub fn channels(&self) -> &[ChannelSpec] {
        &self.settings.channels
    }

    /// One channel by name, e.g. `shared.ffi`.
    pub fn channel(&self, name: &str) -> Option<&ChannelSpec> {
        self.settings
            .channels
            .iter()
            .find(|channel| channel.name == name)
    }

    /// Fraction of capacity in (0, 1] at which a channel warns and reports saturation.
    pub fn log_warning_threshold(&self) -> f64 {
        self.settings.log_warning_threshold
    }

    /// The policy of channels that set no `overflow` of their own.
    pub fn drop_policy(&self) -> OverflowPolicy {
        self.settings.drop_policy
    }

    /// The shortest time between two saturated/recovered notices of one channel; zero means
    /// every crossing notifies.
    pub fn notice_interval(&self) -> Duration {
        self.settings.notice_interval
    }

    /// The nested effective values, without the `mpsc_channels` level.
    pub fn effective(&self) -> &toml::Table {
        &self.effective
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::CHANNELS;
    use crate::config::testing::TempDir;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn options(environment: Option<&str>, config_dir: Option<&Path>) -> LoadOptions {
        LoadOptions {
            environment: environment.map(str::to_owned),
            config_dir: config_dir.map(Path::to_path_buf),
            shipped_dir_label: None,
        }
    }

    fn load(environment: Option<&str>, config_dir: Option<&Path>) -> Config {
        Config::load_with_env(&options(environment, config_dir), no_env)
            .unwrap_or_else(|errors| panic!("{errors}"))
    }

    fn load_err(environment: Option<&str>, config_dir: Option<&Path>) -> ConfigErrors {
        Config::load_with_env(&options(environment, config_dir), no_env)
            .expect_err("configuration should be rejected")
    }

    fn shipped(path: &str) -> String {
        Path::new("config/tasker").join(path).display().to_string()
    }

    fn capacity(config: &Config, channel: &str) -> usize {
        config.channel(channel).unwrap().capacity
    }

    /// Capacities in schema order, the order of the shipped values table.
    fn capacities(config: &Config) -> Vec<usize> {
        CHANNELS
            .iter()
            .map(|schema| capacity(config, schema.name))
            .collect()
    }

    fn assert_common_base_values(config: &Config) {
        assert_eq!(
            config
                .channel("task_readiness.event_channel")
                .unwrap()
                .send_timeout,
            Some(Duration::from_millis(1000))
        );
        assert_eq!(config.log_warning_threshold(), 0.8);
        assert_eq!(config.drop_policy(), OverflowPolicy::Block);
        assert_eq!(config.notice_interval(), Duration::from_millis(1000));
    }

    #[test]
    fn shipped_base_matches_the_spec_table() {
        // An empty config dir with a shipped environment name merges only the base.
        let dir = TempDir::new();
        let config = load(Some("production"), Some(dir.path()));
        assert_eq!(config.layers(), [shipped("base/mpsc_channels.toml")]);
        assert_eq!(
            capacities(&config),
            [1000, 10000, 1000, 1000, 1000, 5000, 1000]
        );
        assert_common_base_values(&config);
    }

    #[test]
    fn shipped_environments_match_the_spec_table() {
        let expected = [
            ("production", [5000, 50000, 1000, 1000, 1000, 10000, 1000]),
            ("development", [1000, 10000, 500, 1000, 500, 5000, 1000]),
            ("test", [100, 10000, 100, 1000, 1000, 5000, 1000]),
        ];
        for (environment, values) in expected {
            let config = load(Some(environment), None);
            assert_eq!(config.environment(), environment);
            assert_eq!(capacities(&config), values, "{environment}");
            assert_common_base_values(&config);
        }
    }

    #[test]
    fn shipped_base_sets_the_adr_strategies() {
        let config = load(None, None);
        let policy = |name: &str| config.channel(name).unwrap().overflow;
        assert_eq!(
            policy("orchestration.event_listeners"),
            OverflowPolicy::Block
        );
        assert_eq!(policy("shared.event_publisher"), OverflowPolicy::Drop);
        assert_eq!(policy("shared.ffi"), OverflowPolicy::Error);
        assert_eq!(policy("worker.command_processor"), OverflowPolicy::Block);
    }

    #[test]
    fn every_base_key_is_in_the_schema_and_every_channel_has_its_capacity() {
        let base: toml::Table = toml::from_str(layers::SHIPPED.base).unwrap();
        assert_eq!(base.keys().collect::<Vec<_>>(), [schema::ROOT_TABLE]);
        let base = base[schema::ROOT_TABLE].as_table().unwrap();

        fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value.as_table() {
                    Some(child) => leaves(&path, child, out),
                    None => out.push(path),
                }
            }
        }
        let mut base_leaves = Vec::new();
        leaves("", base, &mut base_leaves);
        let schema_leaves: Vec<String> = schema::leaves().into_iter().map(|(p, _)| p).collect();
        for leaf in &base_leaves {
            assert!(schema_leaves.contains(leaf), "inert key in base: {leaf}");
        }
        for channel in CHANNELS {
            let key = channel.key_path(channel.capacity_key);
            assert!(base_leaves.contains(&key), "base lacks {key}");
        }
        for (leaf, kind) in schema::leaves() {
            if kind.is_required() {
                assert!(base_leaves.contains(&leaf), "base lacks required {leaf}");
            }
        }
    }

    /// A different valid value for a leaf, to prove the key changes the typed view.
    fn other_value(current: &toml::Value) -> String {
        match current {
            toml::Value::Integer(n) => (n + 1).to_string(),
            toml::Value::Float(f) => (f / 2.0).to_string(),
            // Not drop_oldest: as the default policy it would reach the dispatch side.
            toml::Value::String(s) if s == "block" => "\"drop\"".to_owned(),
            toml::Value::String(_) => "\"block\"".to_owned(),
            other => panic!("unexpected base value {other}"),
        }
    }

    #[test]
    fn every_base_key_changes_the_loaded_settings() {
        let dir = TempDir::new();
        let baseline = load(Some("production"), Some(dir.path()));
        let leaves: Vec<String> = baseline.sources.keys().cloned().collect();
        assert!(!leaves.is_empty());
        for leaf in leaves {
            let (table, key) = leaf.rsplit_once('.').unwrap();
            let value = other_value(baseline.get(&leaf).unwrap());
            dir.write(
                "base/mpsc_channels.toml",
                format!("[mpsc_channels.{table}]\n{key} = {value}\n"),
            );
            let changed = load(Some("production"), Some(dir.path()));
            let differs = changed.channels() != baseline.channels()
                || changed.log_warning_threshold() != baseline.log_warning_threshold()
                || changed.drop_policy() != baseline.drop_policy()
                || changed.notice_interval() != baseline.notice_interval();
            assert!(differs, "{leaf} = {value} changed nothing: an inert key");
        }
    }

    #[test]
    fn default_load_is_development_with_shipped_override() {
        let config = load(None, None);
        assert_eq!(config.environment(), "development");
        assert_eq!(config.config_dir(), None);
        assert_eq!(
            config.layers(),
            [
                shipped("base/mpsc_channels.toml"),
                shipped("environments/development/mpsc_channels.toml")
            ]
        );
    }

    #[test]
    fn environment_variables_are_used_when_arguments_are_absent() {
        let dir = TempDir::new();
        dir.write(
            "environments/test/mpsc_channels.toml",
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 7\n",
        );
        let dir_text = dir.path().to_string_lossy().into_owned();
        let env = move |var: &str| match var {
            "TASKER_ENV" => Some("test".to_owned()),
            "TASKER_CONFIG_DIR" => Some(dir_text.clone()),
            _ => None,
        };
        let config = Config::load_with_env(&LoadOptions::default(), &env).unwrap();
        assert_eq!(config.environment(), "test");
        assert_eq!(config.config_dir(), Some(dir.path()));
        assert_eq!(capacity(&config, "shared.ffi"), 7);
        // The shipped test override does not apply once a config dir is in use.
        assert_eq!(capacity(&config, "orchestration.command_processor"), 1000);

        let config = Config::load_with_env(&options(Some("production"), None), &env).unwrap();
        assert_eq!(config.environment(), "production");
        assert_eq!(config.config_dir(), Some(dir.path()));
    }

    #[test]
    fn config_dir_environment_overrides_config_dir_base_which_overrides_shipped_base() {
        let dir = TempDir::new();
        let dir_base = dir.write(
            "base/mpsc_channels.toml",
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 11\n\
             [mpsc_channels.worker.command_processor]\ncommand_buffer_size = 12\n",
        );
        let dir_env = dir.write(
            "environments/staging/mpsc_channels.toml",
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 21\nsend_timeout_ms = 5\n",
        );
        let config = load(Some("staging"), Some(dir.path()));
        assert_eq!(
            config.layers(),
            [
                shipped("base/mpsc_channels.toml"),
                dir_base.display().to_string(),
                dir_env.display().to_string()
            ]
        );
        assert_eq!(capacity(&config, "shared.ffi"), 21);
        assert_eq!(capacity(&config, "worker.command_processor"), 12);
        assert_eq!(capacity(&config, "shared.event_publisher"), 5000);
        let ffi = config.channel("shared.ffi").unwrap();
        assert_eq!(ffi.send_timeout, Some(Duration::from_millis(5)));
        assert_eq!(ffi.overflow, OverflowPolicy::Error, "sibling keys survive");

        let env_name = dir_env.display().to_string();
        let base_name = dir_base.display().to_string();
        assert_eq!(
            config.source("shared.ffi.ruby_event_buffer_size"),
            Some(env_name.as_str())
        );
        assert_eq!(
            config.source("shared.ffi.send_timeout_ms"),
            Some(env_name.as_str())
        );
        assert_eq!(
            config.source("worker.command_processor.command_buffer_size"),
            Some(base_name.as_str())
        );
        let shipped_base = shipped("base/mpsc_channels.toml");
        assert_eq!(
            config.source("shared.ffi.overflow"),
            Some(shipped_base.as_str())
        );
        assert_eq!(
            config.source("shared.ffi"),
            None,
            "tables have no single source"
        );
        assert_eq!(config.source("shared.ffi.nope"), None);
    }

    #[test]
    fn missing_optional_config_dir_files_are_skipped() {
        let dir = TempDir::new();
        let dir_env = dir.write(
            "environments/test/mpsc_channels.toml",
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 3\n",
        );
        let config = load(Some("test"), Some(dir.path()));
        assert_eq!(
            config.layers(),
            [
                shipped("base/mpsc_channels.toml"),
                dir_env.display().to_string()
            ]
        );
        assert_eq!(capacity(&config, "shared.ffi"), 3);
    }

    #[test]
    fn provenance_follows_the_shipped_environment() {
        let config = load(Some("production"), None);
        let production = shipped("environments/production/mpsc_channels.toml");
        let base = shipped("base/mpsc_channels.toml");
        assert_eq!(
            config.source("orchestration.command_processor.command_buffer_size"),
            Some(production.as_str())
        );
        assert_eq!(
            config.source("shared.ffi.ruby_event_buffer_size"),
            Some(base.as_str())
        );
        assert_eq!(
            config.source("overflow_policy.log_warning_threshold"),
            Some(base.as_str())
        );
    }

    #[test]
    fn shipped_dir_label_names_the_compiled_in_files() {
        let options = LoadOptions {
            environment: Some("test".to_owned()),
            shipped_dir_label: Some("/opt/gems/tasker_channels/config/tasker".to_owned()),
            ..LoadOptions::default()
        };
        let config = Config::load_with_env(&options, no_env).unwrap();
        let base = Path::new("/opt/gems/tasker_channels/config/tasker/base/mpsc_channels.toml")
            .display()
            .to_string();
        assert_eq!(config.layers()[0], base);
        assert_eq!(
            config.source("shared.ffi.ruby_event_buffer_size"),
            Some(base.as_str())
        );
    }

    #[test]
    fn get_returns_leaves_and_tables_without_the_root_prefix() {
        let config = load(Some("test"), None);
        assert_eq!(
            config.get("shared.ffi.ruby_event_buffer_size"),
            Some(&toml::Value::Integer(1000))
        );
        assert!(config.get("shared.ffi").unwrap().is_table());
        assert!(config.get("shared").unwrap().is_table());
        assert_eq!(config.get("mpsc_channels.shared.ffi"), None);
        assert_eq!(config.get("shared.ffi.send_timeout_ms"), None);
        assert_eq!(config.get(""), None);
        assert!(!config.effective().contains_key("mpsc_channels"));
        assert_eq!(
            config.effective()["overflow_policy"]["drop_policy"].as_str(),
            Some("block")
        );
    }

    #[test]
    fn channels_come_in_schema_order_with_components() {
        let config = load(None, None);
        let names: Vec<&str> = config.channels().iter().map(|c| c.name.as_str()).collect();
        let schema_names: Vec<&str> = CHANNELS.iter().map(|c| c.name).collect();
        assert_eq!(names, schema_names);
        let ffi = config.channel("shared.ffi").unwrap();
        assert_eq!(ffi.component, "shared");
        assert_eq!(ffi.capacity_key, "ruby_event_buffer_size");
        assert_eq!(ffi.send_timeout, None);
        assert!(config.channel("shared").is_none());
    }

    #[test]
    fn channels_without_overflow_follow_drop_policy() {
        let dir = TempDir::new();
        let dir_base = dir.write(
            "base/mpsc_channels.toml",
            "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop_oldest\"\n\
             [mpsc_channels.worker.in_process_events]\noverflow = \"block\"\n",
        );
        let config = load(Some("test"), Some(dir.path()));
        assert_eq!(config.drop_policy(), OverflowPolicy::DropOldest);
        let policy = |name: &str| config.channel(name).unwrap().overflow;
        assert_eq!(
            policy("worker.command_processor"),
            OverflowPolicy::DropOldest
        );
        assert_eq!(
            policy("task_readiness.event_channel"),
            OverflowPolicy::DropOldest
        );
        assert_eq!(policy("shared.ffi"), OverflowPolicy::Error);
        let dir_base = dir_base.display().to_string();
        assert_eq!(
            config.overflow_source("worker.command_processor"),
            Some(dir_base.as_str())
        );
        let shipped_base = shipped("base/mpsc_channels.toml");
        assert_eq!(
            config.overflow_source("shared.ffi"),
            Some(shipped_base.as_str())
        );
        assert_eq!(config.overflow_source("nope"), None);
    }

    #[test]
    fn integer_one_is_an_accepted_warning_threshold() {
        let dir = TempDir::new();
        dir.write(
            "base/mpsc_channels.toml",
            "[mpsc_channels.overflow_policy]\nlog_warning_threshold = 1\n",
        );
        let config = load(Some("test"), Some(dir.path()));
        assert_eq!(config.log_warning_threshold(), 1.0);
        assert_eq!(
            config.get("overflow_policy.log_warning_threshold"),
            Some(&toml::Value::Float(1.0))
        );
    }

    #[test]
    fn every_problem_in_every_file_is_reported_at_once() {
        let dir = TempDir::new();
        let dir_base = dir.write(
            "base/mpsc_channels.toml",
            "[task_readiness.event_channel]\nbuffer_size = 100\n",
        );
        let dir_env = dir.write(
            "environments/staging/mpsc_channels.toml",
            "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\noverflow = \"dropp\"\n\
             [mpsc_channels.overflow_policy]\nlog_warning_treshold = 0.5\n",
        );
        let errors = load_err(Some("staging"), Some(dir.path()));
        let located: Vec<(String, Option<String>, Option<usize>)> = errors
            .problems
            .iter()
            .map(|p| (p.file.clone(), p.key.clone(), p.line))
            .collect();
        let base = dir_base.display().to_string();
        let env = dir_env.display().to_string();
        assert_eq!(
            located,
            vec![
                (
                    base.clone(),
                    Some("task_readiness.event_channel".into()),
                    Some(1)
                ),
                (
                    env.clone(),
                    Some("shared.ffi.ruby_event_buffer_size".into()),
                    Some(2)
                ),
                (env.clone(), Some("shared.ffi.overflow".into()), Some(3)),
                (
                    env.clone(),
                    Some("overflow_policy.log_warning_treshold".into()),
                    Some(5)
                ),
            ]
        );
        let text = errors.to_string();
        assert!(
            text.starts_with("invalid channel configuration (4 problems):\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "{env}:2:26: shared.ffi.ruby_event_buffer_size: capacity must be an integer in 1..=16777216, got 0"
        )), "{text}");
        assert!(
            text.contains("did you mean `log_warning_threshold`?"),
            "{text}"
        );
        assert!(text.contains("write it as [mpsc_channels.task_readiness.event_channel]"));
    }

    #[test]
    fn missing_config_dir_and_unknown_environment_are_reported_together() {
        let dir = TempDir::new();
        let missing = dir.path().join("absent");
        let errors = load_err(Some("staging"), Some(&missing));
        assert_eq!(errors.problems.len(), 2, "{errors}");
        assert!(errors.problems[0].message.contains("does not exist"));
        assert!(errors.problems[1]
            .message
            .contains("unknown environment \"staging\""));
        assert!(errors.problems[1]
            .message
            .contains("known environments: development, production, test"));
    }

    #[test]
    fn unknown_environment_without_config_dir_is_rejected() {
        let errors = load_err(Some("staging"), None);
        assert_eq!(errors.problems.len(), 1);
        let problem = &errors.problems[0];
        assert_eq!(problem.file, shipped("environments"));
        assert!(problem
            .message
            .contains("(from the `environment` argument)"));
    }

    #[test]
    fn a_base_lacking_a_required_key_is_reported_not_defaulted() {
        static BROKEN: layers::Shipped = layers::Shipped {
            base: "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 1\n",
            environments: &[("test", "")],
        };
        let errors = Config::load_from(&options(Some("test"), None), no_env, &BROKEN).unwrap_err();
        let keys: Vec<&str> = errors
            .problems
            .iter()
            .map(|p| p.key.as_deref().unwrap())
            .collect();
        assert!(keys.contains(&"overflow_policy.drop_policy"), "{keys:?}");
        assert!(keys.contains(&"orchestration.command_processor.command_buffer_size"));
        assert!(!keys.contains(&"shared.ffi.ruby_event_buffer_size"));
        assert!(errors
            .problems
            .iter()
            .all(|p| p.file == shipped("base/mpsc_channels.toml")));
    }

    #[test]
    fn errors_are_std_errors() {
        let errors = load_err(Some(""), None);
        let as_error: &dyn std::error::Error = &errors;
        assert!(as_error.to_string().contains("cannot name a folder"));
    }

    /// Where a problem is: file, key, line, column.
    type Location = (String, Option<String>, Option<usize>, Option<usize>);

    fn locations(errors: &ConfigErrors) -> Vec<Location> {
        errors
            .problems
            .iter()
            .map(|p| (p.file.clone(), p.key.clone(), p.line, p.column))
            .collect()
    }

    #[test]
    fn the_dispatch_side_refuses_drop_oldest_set_on_it_located_at_the_value() {
        for channel in ["shared.ffi", "worker.in_process_events"] {
            let dir = TempDir::new();
            let file = dir.write(
                "environments/test/mpsc_channels.toml",
                format!("# dispatch side\n[mpsc_channels.{channel}]\noverflow = \"drop_oldest\"\n"),
            );
            let errors = load_err(Some("test"), Some(dir.path()));
            assert_eq!(
                locations(&errors),
                [(
                    file.display().to_string(),
                    Some(format!("{channel}.overflow")),
                    Some(3),
                    Some(12)
                )]
            );
            let message = &errors.problems[0].message;
            assert!(
                message.starts_with(&format!("{channel} cannot use \"drop_oldest\"")),
                "{message}"
            );
            assert!(message.contains("publish already accepted"), "{message}");
        }

        let dir = TempDir::new();
        dir.write(
            "environments/test/mpsc_channels.toml",
            "[mpsc_channels]\nshared.ffi.overflow = \"drop_oldest\"\n",
        );
        let errors = load_err(Some("test"), Some(dir.path()));
        assert_eq!(
            (errors.problems[0].line, errors.problems[0].column),
            (Some(2), Some(23)),
            "a dotted key is located too"
        );
    }

    #[test]
    fn a_default_drop_oldest_is_refused_where_it_reaches_the_dispatch_side() {
        let dir = TempDir::new();
        let file = dir.write(
            "environments/test/mpsc_channels.toml",
            "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop_oldest\"\n",
        );
        let errors = load_err(Some("test"), Some(dir.path()));
        // shared.ffi sets its own "error" in the shipped base; worker.in_process_events does not.
        assert_eq!(
            locations(&errors),
            [(
                file.display().to_string(),
                Some("overflow_policy.drop_policy".to_owned()),
                Some(2),
                Some(15)
            )]
        );
        let message = &errors.problems[0].message;
        assert!(
            message.starts_with("worker.in_process_events has no overflow of its own"),
            "{message}"
        );
        assert!(
            message
                .contains("set overflow = \"block\" in [mpsc_channels.worker.in_process_events]"),
            "{message}"
        );

        // Where shared.ffi has no overflow of its own either, both channels are named, at the
        // line of the base file that set the default.
        static NO_FFI_OVERFLOW: layers::Shipped = layers::Shipped {
            base: "[mpsc_channels.orchestration.command_processor]\ncommand_buffer_size = 1\n\
                   [mpsc_channels.orchestration.event_listeners]\npgmq_event_buffer_size = 1\n\
                   [mpsc_channels.task_readiness.event_channel]\nbuffer_size = 1\n\
                   [mpsc_channels.worker.command_processor]\ncommand_buffer_size = 1\n\
                   [mpsc_channels.worker.in_process_events]\nbroadcast_buffer_size = 1\n\
                   [mpsc_channels.shared.event_publisher]\nevent_queue_buffer_size = 1\n\
                   [mpsc_channels.shared.ffi]\nruby_event_buffer_size = 1\n\
                   [mpsc_channels.overflow_policy]\nlog_warning_threshold = 0.8\n\
                   drop_policy = \"drop_oldest\"\nnotice_interval_ms = 0\n",
            environments: &[("test", "")],
        };
        let errors =
            Config::load_from(&options(Some("test"), None), no_env, &NO_FFI_OVERFLOW).unwrap_err();
        let base = shipped("base/mpsc_channels.toml");
        let key = Some("overflow_policy.drop_policy".to_owned());
        assert_eq!(
            locations(&errors),
            [
                (base.clone(), key.clone(), Some(17), Some(15)),
                (base, key, Some(17), Some(15))
            ]
        );
        assert!(errors.problems[0]
            .message
            .starts_with("shared.ffi has no overflow"));
        assert!(errors.problems[1]
            .message
            .starts_with("worker.in_process_events has no overflow"));
    }

    #[test]
    fn drop_oldest_stays_allowed_off_the_dispatch_side() {
        let dir = TempDir::new();
        dir.write(
            "environments/test/mpsc_channels.toml",
            "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop_oldest\"\n\
             [mpsc_channels.worker.in_process_events]\noverflow = \"error\"\n\
             [mpsc_channels.shared.event_publisher]\noverflow = \"drop_oldest\"\n",
        );
        let config = load(Some("test"), Some(dir.path()));
        let policy = |name: &str| config.channel(name).unwrap().overflow;
        assert_eq!(policy("shared.event_publisher"), OverflowPolicy::DropOldest);
        assert_eq!(
            policy("worker.command_processor"),
            OverflowPolicy::DropOldest
        );
        assert_eq!(policy("worker.in_process_events"), OverflowPolicy::Error);
        assert_eq!(policy("shared.ffi"), OverflowPolicy::Error);
    }
}
