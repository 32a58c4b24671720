//! The `tasker_channels` Ruby extension: a thin magnus binding over `tasker_channels_core`.
//!
//! Each module here converts between Ruby and the core's public API and nothing more; the
//! logic (config, channels, monitoring, event routing) lives in the core crate.

mod channel;
mod config;
mod conversion;
mod dispatch;
mod errors;
mod gvl;
mod gvl_cell;
mod listener;
mod logging;
mod names;
mod pattern;
mod refusal;
mod runtime;
mod slot_table;
mod subscribers;
mod testing_hooks;
mod waiting;

use magnus::{prelude::*, Error, Ruby};

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let tasker = ruby.define_module("Tasker")?;
    let channels = tasker.define_module("Channels")?;
    channels.const_set("NATIVE_VERSION", env!("CARGO_PKG_VERSION"))?;
    errors::check_defined(ruby)?;
    config::define(ruby, channels)?;
    channel::define(ruby, channels)?;
    pattern::define(ruby, channels)?;
    runtime::define(ruby, channels)?;
    logging::define(ruby, channels)?;
    listener::define(ruby, channels)?;
    testing_hooks::define(ruby, channels)?;
    Ok(())
}
