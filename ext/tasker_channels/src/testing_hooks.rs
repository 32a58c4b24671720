//! `Tasker::Channels::Testing`'s native half, and the `Runtime` primitives its Ruby methods
//! wrap (`lib/tasker/channels/testing.rb`).
//!
//! Owns what specs and benchmarks need to reach inside the extension: a Rust panic that must
//! arrive as `Tasker::Error`, the cheapest native call (the benchmarks' baseline), a Rust
//! producer emitting into a runtime, and the slot table's occupancy. It must never be what
//! an application relies on: nothing here is part of the publish or dispatch path.

use std::sync::Arc;

use magnus::{function, method, prelude::*, Error, RClass, RModule, Ruby, Value};
use tasker_channels_core::event::validate_name;
use tasker_channels_core::Payload;

use crate::conversion::event::rust_event;
use crate::errors::guard;
use crate::runtime::Runtime;

/// `Testing.panic!(message)` and `Testing.noop(a, b)`; `Runtime#_emit_from_rust` and
/// `Runtime#_slots_in_use`. Runs after the `Runtime` class is defined.
pub fn define(_ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let testing = channels.define_module("Testing")?;
    testing.define_module_function("panic!", function!(trigger_panic, 1))?;
    // The cheapest possible native call with publish's arity: the benchmarks' baseline.
    testing.define_module_function("noop", function!(noop, 2))?;
    let runtime: RClass = channels.const_get("Runtime")?;
    runtime.define_private_method("_emit_from_rust", method!(emit_from_rust, 3))?;
    runtime.define_private_method("_slots_in_use", method!(slots_in_use, 0))?;
    Ok(())
}

fn noop(_name: Value, _payload: Value) {}

/// Panics inside the extension, so the specs can prove a panic reaches Ruby as
/// `Tasker::Error` rather than aborting the process.
fn trigger_panic(message: String) -> Result<(), Error> {
    guard(|| panic!("{message}"))
}

/// `_emit_from_rust(name, payload, count)`: returns at once; a task on the extension's
/// tokio runtime emits `count` copies, each waiting for room in `shared.event_publisher`
/// whatever its policy.
fn emit_from_rust(
    ruby: &Ruby,
    rb_self: &Runtime,
    name: Value,
    payload: Value,
    count: u64,
) -> Result<(), Error> {
    guard(|| {
        let (name, payload) = rust_event(ruby, name, payload)?;
        validate_name(&name)
            .map_err(|invalid| Error::new(ruby.exception_arg_error(), invalid.to_string()))?;
        let bus = rb_self.bus(ruby)?;
        // Shared, as a producer emitting one payload again and again would: each event
        // clones two reference counts, and the dispatcher still builds a fresh Ruby Hash.
        let (name, payload): (Arc<str>, Arc<Payload>) = (name.into(), payload.into());
        tasker_channels_core::fork::runtime_handle().spawn(async move {
            for _ in 0..count {
                if bus
                    .emit_waiting(Arc::clone(&name), Arc::clone(&payload))
                    .await
                    .is_err()
                {
                    // Refused (the bus is shutting down): every later copy would be too.
                    break;
                }
            }
        });
        Ok(())
    })
}

/// `_slots_in_use`: how many published events the slot table holds right now.
fn slots_in_use(ruby: &Ruby, rb_self: &Runtime) -> Result<usize, Error> {
    Ok(rb_self.state(ruby)?.slots_in_use())
}
