//! `Tasker::Channels::Config`: the loaded configuration, read from Ruby.
//!
//! Owns converting the core's `Config` (values, provenance, channel view) and its
//! `ConfigErrors` into Ruby values, and calling the core's loader without the GVL. It must
//! never load, merge or validate anything itself.

use std::path::PathBuf;
use std::sync::Arc;

use magnus::{function, method, prelude::*, Error, RArray, RHash, RModule, Ruby, Value};
use tasker_channels_core::config::{
    ChannelSpec, Config, ConfigErrors, LoadOptions, CONFIG_DIR_VAR, ENVIRONMENT_VAR,
};

use crate::errors::{config_error, config_problem, guard};
use crate::gvl::{check_interrupts, without_gvl};

#[magnus::wrap(class = "Tasker::Channels::Config", free_immediately, size)]
pub struct RbConfig(pub Arc<Config>);

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("Config", ruby.class_object())?;
    // Built only by `Config.load`: an allocated-but-empty Config would have nothing to read.
    class.undef_default_alloc_func();
    class.define_singleton_method("_load", function!(load, 3))?;
    class.define_method("environment", method!(RbConfig::environment, 0))?;
    class.define_method("layers", method!(RbConfig::layers, 0))?;
    class.define_method("[]", method!(RbConfig::get, 1))?;
    class.define_method("source", method!(RbConfig::source, 1))?;
    class.define_method("channels", method!(RbConfig::channels, 0))?;
    class.define_method("to_h", method!(RbConfig::to_h, 0))?;
    class.define_method(
        "log_warning_threshold",
        method!(RbConfig::log_warning_threshold, 0),
    )?;
    class.define_method(
        "notice_interval_ms",
        method!(RbConfig::notice_interval_ms, 0),
    )?;
    Ok(())
}

/// Loads a configuration the way every Ruby entry point does: with the GVL released, so
/// other Ruby threads run while files are read and checked.
pub fn load_config(
    ruby: &Ruby,
    environment: Option<String>,
    config_dir: Option<String>,
    shipped_dir: Option<String>,
) -> Result<Arc<Config>, Error> {
    let options = LoadOptions {
        environment,
        config_dir: config_dir.map(PathBuf::from),
        shipped_dir_label: shipped_dir,
    };
    // Read while the GVL keeps Ruby's `ENV[]=` (setenv) from racing the read.
    let variables = [ENVIRONMENT_VAR, CONFIG_DIR_VAR].map(|name| {
        (
            name,
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
        )
    });
    let env = |wanted: &str| {
        variables
            .iter()
            .find(|(name, _)| *name == wanted)
            .and_then(|(_, value)| value.clone())
    };
    let loaded = loop {
        // Nothing here waits on anything but the file system (layer files are only read when
        // regular and small), so there is nothing for an unblock function to cut short.
        match without_gvl(|| Config::load_with_env(&options, env), || {}) {
            Some(loaded) => break loaded,
            // An interrupt was pending: let Ruby deliver it (a raise ends the load).
            None => check_interrupts()?,
        }
    };
    loaded
        .map(Arc::new)
        .map_err(|errors| config_errors_to_ruby(ruby, &errors))
}

fn load(
    ruby: &Ruby,
    environment: Option<String>,
    config_dir: Option<String>,
    shipped_dir: Option<String>,
) -> Result<RbConfig, Error> {
    guard(|| load_config(ruby, environment, config_dir, shipped_dir).map(RbConfig))
}

fn config_errors_to_ruby(ruby: &Ruby, errors: &ConfigErrors) -> Error {
    match problems_to_ruby(ruby, errors) {
        Ok(problems) => config_error(ruby, &errors.to_string(), problems),
        Err(error) => error,
    }
}

/// Every problem as a `Tasker::ConfigError::Problem`, in file order.
fn problems_to_ruby(ruby: &Ruby, errors: &ConfigErrors) -> Result<RArray, Error> {
    let problems = ruby.ary_new_capa(errors.problems.len());
    for problem in &errors.problems {
        let fields = ruby.hash_new();
        fields.aset(ruby.to_symbol("file"), problem.file.as_str())?;
        fields.aset(ruby.to_symbol("key"), problem.key.as_deref())?;
        fields.aset(ruby.to_symbol("line"), problem.line)?;
        fields.aset(ruby.to_symbol("column"), problem.column)?;
        fields.aset(ruby.to_symbol("message"), problem.message.as_str())?;
        problems.push(config_problem(ruby, fields)?)?;
    }
    Ok(problems)
}

impl RbConfig {
    fn environment(&self) -> String {
        self.0.environment().to_owned()
    }

    fn layers(&self) -> Vec<String> {
        self.0.layers().to_vec()
    }

    fn get(ruby: &Ruby, rb_self: &Self, dotted: String) -> Value {
        rb_self
            .0
            .get(&dotted)
            .map_or_else(|| ruby.qnil().as_value(), |v| toml_to_ruby(ruby, v))
    }

    fn source(&self, dotted: String) -> Option<String> {
        self.0.source(&dotted).map(str::to_owned)
    }

    fn channels(ruby: &Ruby, rb_self: &Self) -> RArray {
        let list = ruby.ary_new_capa(rb_self.0.channels().len());
        for spec in rb_self.0.channels() {
            let _ = list.push(channel_to_ruby(ruby, spec));
        }
        list
    }

    fn to_h(ruby: &Ruby, rb_self: &Self) -> Value {
        table_to_ruby(ruby, rb_self.0.effective())
    }

    fn log_warning_threshold(&self) -> f64 {
        self.0.log_warning_threshold()
    }

    fn notice_interval_ms(&self) -> u64 {
        // Validated to at most one hour, so it always fits.
        u64::try_from(self.0.notice_interval().as_millis()).unwrap_or(u64::MAX)
    }
}

fn channel_to_ruby(ruby: &Ruby, spec: &ChannelSpec) -> RHash {
    let hash = ruby.hash_new();
    let _ = hash.aset(ruby.to_symbol("name"), spec.name.as_str());
    let _ = hash.aset(ruby.to_symbol("component"), spec.component.as_str());
    let _ = hash.aset(ruby.to_symbol("capacity"), spec.capacity);
    let _ = hash.aset(ruby.to_symbol("overflow"), spec.overflow.as_str());
    let _ = hash.aset(
        ruby.to_symbol("send_timeout_ms"),
        spec.send_timeout.map(|t| t.as_millis() as u64),
    );
    hash
}

fn toml_to_ruby(ruby: &Ruby, value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => ruby.str_new(s).as_value(),
        toml::Value::Integer(i) => ruby.integer_from_i64(*i).as_value(),
        toml::Value::Float(f) => ruby.float_from_f64(*f).as_value(),
        toml::Value::Boolean(b) => ruby.into_value(*b),
        toml::Value::Datetime(d) => ruby.str_new(&d.to_string()).as_value(),
        toml::Value::Array(items) => {
            let list = ruby.ary_new_capa(items.len());
            for item in items {
                let _ = list.push(toml_to_ruby(ruby, item));
            }
            list.as_value()
        }
        toml::Value::Table(table) => table_to_ruby(ruby, table),
    }
}

fn table_to_ruby(ruby: &Ruby, table: &toml::Table) -> Value {
    let hash = ruby.hash_new();
    for (key, value) in table {
        let _ = hash.aset(key.as_str(), toml_to_ruby(ruby, value));
    }
    hash.as_value()
}
