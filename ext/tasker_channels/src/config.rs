//! `Tasker::Channels::Config`: the loaded configuration, read from Ruby.
//!
//! Owns the `Config` class's methods (values, provenance, channel view) and calling the
//! core's loader without the GVL; the values themselves are converted by
//! `crate::conversion::config`, a failed load by `crate::errors`. It must never load, merge or
//! validate anything itself.

use std::path::PathBuf;
use std::sync::Arc;

use magnus::{function, method, prelude::*, Error, RArray, RModule, Ruby, Value};
use tasker_channels_core::config::{CONFIG_DIR_VAR, ENVIRONMENT_VAR};
use tasker_channels_core::{Config, LoadOptions};

use crate::conversion::config::{channel_to_ruby, table_to_ruby, toml_to_ruby};
use crate::errors::{config_errors_to_ruby, guard};
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

impl RbConfig {
    fn environment(&self) -> String {
        self.0.environment().to_owned()
    }

    fn layers(&self) -> Vec<String> {
        self.0.layers().to_vec()
    }

    fn get(ruby: &Ruby, rb_self: &Self, dotted: String) -> Result<Value, Error> {
        match rb_self.0.get(&dotted) {
            Some(value) => toml_to_ruby(ruby, value),
            None => Ok(ruby.qnil().as_value()),
        }
    }

    fn source(&self, dotted: String) -> Option<String> {
        self.0.source(&dotted).map(str::to_owned)
    }

    fn channels(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        let list = ruby.ary_new_capa(rb_self.0.channels().len());
        for spec in rb_self.0.channels() {
            list.push(channel_to_ruby(ruby, spec)?)?;
        }
        Ok(list)
    }

    fn to_h(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
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
