//! A loaded configuration as Ruby values: TOML values and tables, and channel specs.
//!
//! Owns the mapping from TOML types to Ruby ones (a datetime becomes its TOML text) and the
//! Hash shape of `Config#channels`. It must never read, merge or validate configuration.

use magnus::{prelude::*, Error, RHash, Ruby, Value};
use tasker_channels_core::ChannelSpec;

/// One entry of `Config#channels`.
pub fn channel_to_ruby(ruby: &Ruby, spec: &ChannelSpec) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("name"), spec.name.as_str())?;
    hash.aset(ruby.to_symbol("component"), spec.component.as_str())?;
    hash.aset(ruby.to_symbol("capacity"), spec.capacity)?;
    hash.aset(ruby.to_symbol("overflow"), spec.overflow.as_str())?;
    hash.aset(
        ruby.to_symbol("send_timeout_ms"),
        spec.send_timeout.map(|t| t.as_millis() as u64),
    )?;
    Ok(hash)
}

/// A TOML value as the Ruby value `Config#[]` returns.
pub fn toml_to_ruby(ruby: &Ruby, value: &toml::Value) -> Result<Value, Error> {
    Ok(match value {
        toml::Value::String(s) => ruby.str_new(s).as_value(),
        toml::Value::Integer(i) => ruby.integer_from_i64(*i).as_value(),
        toml::Value::Float(f) => ruby.float_from_f64(*f).as_value(),
        toml::Value::Boolean(b) => ruby.into_value(*b),
        toml::Value::Datetime(d) => ruby.str_new(&d.to_string()).as_value(),
        toml::Value::Array(items) => {
            let list = ruby.ary_new_capa(items.len());
            for item in items {
                list.push(toml_to_ruby(ruby, item)?)?;
            }
            list.as_value()
        }
        toml::Value::Table(table) => table_to_ruby(ruby, table)?,
    })
}

/// A TOML table as a Hash with String keys, as `Config#to_h` returns it.
pub fn table_to_ruby(ruby: &Ruby, table: &toml::Table) -> Result<Value, Error> {
    let hash = ruby.hash_new();
    for (key, value) in table {
        hash.aset(key.as_str(), toml_to_ruby(ruby, value)?)?;
    }
    Ok(hash.as_value())
}
