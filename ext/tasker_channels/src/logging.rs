//! `Tasker::Channels::Logging`'s native half: where the core's `tracing` records go.
//!
//! Owns switching records between stderr and a bounded queue, re-reading `TASKER_LOG`, the
//! pipeline's counters, and the queue's reader handle, which waits for records without the
//! GVL and hands them to Ruby as `[[level, message], ...]`. It must never call the Ruby
//! logger itself (a Ruby thread does, in `lib/tasker/channels/logging.rb`), never touch a
//! Ruby value without the GVL, and never wait with the GVL held.

use std::sync::Arc;

use magnus::{function, method, prelude::*, Error, RArray, RHash, RModule, Ruby, Symbol, Value};
use tasker_channels_core::logging::{self, LogQueue, MAX_QUEUE_CAPACITY};
use tracing::Level;

use crate::errors::guard;
use crate::gvl::deadline_from_seconds;
use crate::waiting::{self, Received};

/// How many records one wake-up of the reader takes at most.
const BATCH_SIZE: usize = 256;

#[magnus::wrap(class = "Tasker::Channels::Logging::Queue", free_immediately, size)]
struct RbLogQueue(Arc<LogQueue>);

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let module = channels.define_module("Logging")?;
    module.const_set("MAX_QUEUE_SIZE", MAX_QUEUE_CAPACITY)?;
    module.define_singleton_method("_route_to_queue", function!(route_to_queue, 1))?;
    module.define_singleton_method("_route_to_stderr", function!(route_to_stderr, 0))?;
    module.define_singleton_method("_reload_filter", function!(reload_filter, 0))?;
    module.define_singleton_method("_stats", function!(stats, 0))?;
    let queue = module.define_class("Queue", ruby.class_object())?;
    queue.undef_default_alloc_func();
    queue.define_method("capacity", method!(RbLogQueue::capacity, 0))?;
    queue.define_method("closed?", method!(RbLogQueue::is_closed, 0))?;
    queue.define_method("_next_batch", method!(RbLogQueue::next_batch, 1))?;
    Ok(())
}

/// Records go to a bounded queue of `capacity`; returns it, or nil when another `tracing`
/// subscriber owns the process's logs.
fn route_to_queue(capacity: usize) -> Result<Option<RbLogQueue>, Error> {
    guard(|| Ok(logging::route_to_queue(capacity).map(RbLogQueue)))
}

fn route_to_stderr() -> Result<(), Error> {
    guard(|| {
        logging::route_to_stderr();
        Ok(())
    })
}

/// Installs the subscriber if needed and applies `TASKER_LOG` as it is now.
fn reload_filter() -> Result<bool, Error> {
    guard(|| Ok(logging::init_logging()))
}

fn stats(ruby: &Ruby) -> Result<RHash, Error> {
    guard(|| {
        let stats = logging::log_stats();
        let hash = ruby.hash_new();
        let output = if stats.to_queue { "logger" } else { "stderr" };
        hash.aset(ruby.to_symbol("output"), ruby.to_symbol(output))?;
        hash.aset(ruby.to_symbol("installed"), stats.installed)?;
        hash.aset(ruby.to_symbol("queue_capacity"), stats.capacity)?;
        hash.aset(ruby.to_symbol("queued"), stats.queued)?;
        hash.aset(ruby.to_symbol("forwarded"), stats.forwarded)?;
        hash.aset(ruby.to_symbol("dropped"), stats.dropped)?;
        Ok(hash)
    })
}

/// The logger method a record's level maps to (`trace` has none: it goes to `debug`).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

impl RbLogQueue {
    fn capacity(&self) -> usize {
        self.0.capacity()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// `_next_batch(timeout)`: waits up to `timeout` seconds (nil: as long as it takes)
    /// without the GVL. → `[[level, message], ...]`, `[]` on timeout, nil once closed and
    /// drained.
    fn next_batch(ruby: &Ruby, rb_self: &Self, timeout: Option<f64>) -> Result<Value, Error> {
        guard(|| {
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            let queue = &rb_self.0;
            let received = waiting::receive(deadline, |wait| queue.recv_batch(BATCH_SIZE, wait))?;
            let batch = match received {
                Received::Got(batch) => batch,
                Received::TimedOut => return Ok(ruby.ary_new().as_value()),
                Received::Closed => return Ok(ruby.qnil().as_value()),
            };
            let list: RArray = ruby.ary_new_capa(batch.len());
            for record in batch {
                let level: Symbol = ruby.to_symbol(level_name(record.level));
                list.push(ruby.ary_new_from_values(&[
                    level.as_value(),
                    ruby.str_new(&record.message).as_value(),
                ]))?;
            }
            Ok(list.as_value())
        })
    }
}
