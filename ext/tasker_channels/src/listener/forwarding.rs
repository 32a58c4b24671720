//! `Tasker::Channels::Forwarder`: local events into a forward queue, NOTIFYed by the core.
//!
//! Owns converting a Ruby event's parts into the envelope (refusing it for size with
//! `Tasker::PayloadTooLarge`), offering it to the forward queue under the queue's policy
//! (a `block` wait happens without the GVL and can be interrupted), and the size check that
//! lets `publish` refuse early. It must never keep a Ruby object past the call.

use std::time::{Duration, Instant, UNIX_EPOCH};

use magnus::{function, method, prelude::*, Error, RHash, RModule, Ruby, Symbol, Value};
use tasker_channels_core::event_bus::PUBLISHER_CHANNEL;
use tasker_channels_core::pg::envelope;
use tasker_channels_core::pg::stats::ForwarderStats;
use tasker_channels_core::{
    EventSource, ForwardOptions, Forwarder, Message, OverflowPolicy, Payload, SendOutcome,
};

use super::wait;
use crate::conversion;
use crate::conversion::stats::forwarder_stats_to_ruby;
use crate::errors::{closed_error, envelope_error, forward_error, guard, send_error_to_ruby};
use crate::gvl::deadline_from_seconds;
use crate::runtime::bus_of;
use crate::waiting;

#[magnus::wrap(class = "Tasker::Channels::Forwarder", free_immediately, size)]
pub struct RbForwarder {
    forwarder: Forwarder,
}

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("Forwarder", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("_start", function!(RbForwarder::start, 3))?;
    class.define_singleton_method("check_size", function!(check_size, 2))?;
    class.define_method("id", method!(RbForwarder::id, 0))?;
    class.define_method("to", method!(RbForwarder::channel, 0))?;
    class.define_method("target", method!(RbForwarder::target, 0))?;
    class.define_method("connected?", method!(RbForwarder::is_connected, 0))?;
    class.define_method("stopped?", method!(RbForwarder::is_stopped, 0))?;
    class.define_method("stats", method!(RbForwarder::stats, 0))?;
    class.define_method("_offer", method!(RbForwarder::offer, 5))?;
    class.define_method("_close", method!(RbForwarder::close, 1))?;
    class.define_method("_stop", method!(RbForwarder::stop, 1))?;
    Ok(())
}

impl RbForwarder {
    /// `_start(runtime, url, pg_channel)`: connects before it returns. The queue takes its
    /// capacity, policy and send timeout from the runtime's `shared.event_publisher`.
    fn start(ruby: &Ruby, runtime: Value, url: String, channel: String) -> Result<Self, Error> {
        guard(|| {
            let bus = bus_of(ruby, runtime)?;
            if bus.is_closed() {
                return Err(closed_error(
                    ruby,
                    "the runtime was shut down: it cannot forward",
                ));
            }
            let like = bus
                .registry()
                .get(PUBLISHER_CHANNEL)
                .expect("the config schema always defines shared.event_publisher")
                .info()
                .as_ref()
                .clone();
            let (forwarder, startup) = Forwarder::start(ForwardOptions::new(url, channel, &like))
                .map_err(|error| forward_error(ruby, error))?;
            match wait(startup, None)? {
                Some(Ok(())) => Ok(RbForwarder { forwarder }),
                Some(Err(error)) => Err(forward_error(ruby, error)),
                None => unreachable!("an unbounded wait ends with the future or an interrupt"),
            }
        })
    }

    pub fn stats_snapshot(&self) -> ForwarderStats {
        self.forwarder.stats()
    }

    fn id(&self) -> u64 {
        self.forwarder.id()
    }

    fn channel(&self) -> String {
        self.forwarder.channel().to_owned()
    }

    fn target(&self) -> String {
        self.forwarder.target().to_owned()
    }

    fn is_connected(&self) -> bool {
        self.forwarder.is_connected()
    }

    fn is_stopped(&self) -> bool {
        self.forwarder.is_stopped()
    }

    /// `_offer(name, payload, id, source, published_at_ns)` → true when queued, false when
    /// the queue's `drop` policy discarded it. Raises `Tasker::PayloadTooLarge`,
    /// `Tasker::Backpressure` (policy `error`, or a `block` wait that timed out) or
    /// `Tasker::ClosedError` (stopped).
    fn offer(
        ruby: &Ruby,
        rb_self: &Self,
        name: String,
        payload: Value,
        id: u64,
        source: Symbol,
        published_at_ns: u64,
    ) -> Result<bool, Error> {
        guard(|| {
            let payload = conversion::payload::from_ruby(ruby, payload, "payload")?;
            let source = match source.name()?.as_ref() {
                "rust" => EventSource::Rust,
                "remote" => EventSource::Remote,
                _ => EventSource::Ruby,
            };
            let published_at = UNIX_EPOCH + Duration::from_nanos(published_at_ns);
            let text =
                envelope::encode(&name, id, source, published_at, &payload).map_err(|error| {
                    rb_self.forwarder.record_too_large();
                    envelope_error(ruby, error, rb_self.forwarder.channel())
                })?;
            let queue = rb_self.forwarder.queue();
            let message = Message::Value(Payload::String(text));
            let outcome = if queue.overflow() != OverflowPolicy::Block {
                queue
                    .send(message)
                    .map_err(|refused| send_error_to_ruby(ruby, &refused))?
            } else {
                let deadline = queue.send_timeout().map(|timeout| Instant::now() + timeout);
                waiting::send(queue, message, deadline, |message, wait| {
                    queue.send_with(message, wait)
                })?
                .map_err(|refused| send_error_to_ruby(ruby, &refused))?
            };
            Ok(outcome == SendOutcome::Sent)
        })
    }

    /// `_close(timeout)`: stop taking events, send what is queued, wait for the end.
    fn close(ruby: &Ruby, rb_self: &Self, timeout: Option<f64>) -> Result<bool, Error> {
        guard(|| {
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            rb_self.forwarder.close();
            let finished = wait(Box::pin(rb_self.forwarder.stopped()), deadline)?.is_some();
            if !finished {
                // Out of time: give up on what is left (counted as lost).
                rb_self.forwarder.stop();
            }
            Ok(finished && rb_self.forwarder.stats().lost == 0)
        })
    }

    /// `_stop(timeout)`: stop now (what is queued is counted as lost).
    fn stop(ruby: &Ruby, rb_self: &Self, timeout: Option<f64>) -> Result<bool, Error> {
        guard(|| {
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            rb_self.forwarder.stop();
            Ok(wait(Box::pin(rb_self.forwarder.stopped()), deadline)?.is_some())
        })
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        forwarder_stats_to_ruby(ruby, &rb_self.forwarder.stats())
    }
}

/// `Forwarder.check_size(name, payload)` → the worst-case encoded size in bytes, or
/// `Tasker::PayloadTooLarge`. For `publish` to refuse an event it would forward.
fn check_size(ruby: &Ruby, name: String, payload: Value) -> Result<usize, Error> {
    guard(|| {
        let payload = conversion::payload::from_ruby(ruby, payload, "payload")?;
        envelope::check_forwardable(&name, &payload)
            .map_err(|error| envelope_error(ruby, error, ""))
    })
}
