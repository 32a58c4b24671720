//! `Tasker::Channels::Channel`: a Ruby worker thread's handle on one configured channel.
//!
//! Owns push (the channel's policy applies; a `block` wait happens without the GVL and can be
//! interrupted) and pop (waits without the GVL), carrying plain-data payloads. It must never
//! let Ruby write into or read from the event bus's own channels behind the bus's back.

use std::sync::Arc;
use std::time::Instant;

use magnus::{method, prelude::*, Error, RModule, Ruby, Value};
use tasker_channels_core::event_bus::{
    BusHandle, FFI_CHANNEL, IN_PROCESS_CHANNEL, PUBLISHER_CHANNEL,
};
use tasker_channels_core::{Message, MonitoredChannel, OverflowPolicy, SendErrorKind, SendOutcome};

use crate::conversion;
use crate::errors::{closed_error, guard, send_error_to_ruby};
use crate::gvl::deadline_from_seconds;
use crate::waiting::{self, Received};

#[magnus::wrap(class = "Tasker::Channels::Channel", free_immediately, size)]
pub struct RbChannel {
    handle: Arc<BusHandle>,
    name: String,
}

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("Channel", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("name", method!(RbChannel::name, 0))?;
    class.define_method("capacity", method!(RbChannel::capacity, 0))?;
    class.define_method("size", method!(RbChannel::size, 0))?;
    class.define_method("policy", method!(RbChannel::policy, 0))?;
    class.define_method("push", method!(RbChannel::push, 1))?;
    class.define_method("_pop", method!(RbChannel::pop, 1))?;
    class.define_method("close", method!(RbChannel::close, 0))?;
    class.define_method("closed?", method!(RbChannel::is_closed, 0))?;
    Ok(())
}

impl RbChannel {
    pub fn new(handle: Arc<BusHandle>, name: String) -> Self {
        RbChannel { handle, name }
    }

    /// The channel in this process's current bus (a forked child gets its fresh one).
    fn channel(&self) -> MonitoredChannel<Message> {
        self.handle
            .channel(&self.name)
            .expect("a handle is only made for a configured channel")
    }

    fn owned_by_bus(&self) -> bool {
        [FFI_CHANNEL, IN_PROCESS_CHANNEL, PUBLISHER_CHANNEL].contains(&self.name.as_str())
    }

    fn refuse_bus_channel(&self, ruby: &Ruby, operation: &str) -> Result<(), Error> {
        if self.owned_by_bus() {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!(
                    "{} carries the event bus's events: use publish/subscribe instead of {operation} (Runtime#shutdown closes it)",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn capacity(&self) -> usize {
        self.channel().capacity()
    }

    fn size(&self) -> usize {
        self.channel().len()
    }

    fn policy(&self) -> &'static str {
        self.channel().overflow().as_str()
    }

    /// Closing a bus channel would silently refuse every later publish: only the runtime's
    /// shutdown closes those.
    fn close(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        rb_self.refuse_bus_channel(ruby, "close")?;
        Ok(rb_self.channel().close())
    }

    fn is_closed(&self) -> bool {
        self.channel().is_closed()
    }

    /// true when sent, false when the `drop` policy discarded it; raises Tasker::Backpressure
    /// (`error`, or a `block` timeout) or Tasker::ClosedError.
    fn push(ruby: &Ruby, rb_self: &Self, value: Value) -> Result<bool, Error> {
        guard(|| {
            rb_self.refuse_bus_channel(ruby, "push")?;
            let message = Message::Value(conversion::payload::from_ruby(ruby, value, "value")?);
            let channel = rb_self.channel();
            if channel.overflow() != OverflowPolicy::Block {
                return channel
                    .send(message)
                    .map(|outcome| outcome == SendOutcome::Sent)
                    .map_err(|refused| send_error_to_ruby(ruby, &refused));
            }
            push_waiting(ruby, &channel, message)
        })
    }

    /// `_pop(timeout_seconds_or_nil)`: the payload, or nil on timeout or when closed and empty.
    fn pop(ruby: &Ruby, rb_self: &Self, timeout: Option<f64>) -> Result<Value, Error> {
        guard(|| {
            rb_self.refuse_bus_channel(ruby, "pop")?;
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            let channel = rb_self.channel();
            match waiting::receive(deadline, |wait| channel.recv(wait))? {
                Received::Got(message) => Ok(popped_to_ruby(ruby, message)),
                Received::TimedOut | Received::Closed => Ok(ruby.qnil().as_value()),
            }
        })
    }
}

fn popped_to_ruby(ruby: &Ruby, message: Message) -> Value {
    match message {
        Message::Value(payload) => conversion::payload::to_ruby(ruby, &payload),
        Message::Event(_) | Message::Ref(_) => unreachable!("bus channels refuse pop"),
    }
}

/// A `block` channel's push: waits for room without the GVL, up to the channel's
/// `send_timeout` (forever when unset).
fn push_waiting(
    ruby: &Ruby,
    channel: &MonitoredChannel<Message>,
    message: Message,
) -> Result<bool, Error> {
    let deadline = channel
        .send_timeout()
        .map(|timeout| Instant::now() + timeout);
    match waiting::send(channel, message, deadline, |message, wait| {
        channel.send_with(message, wait)
    })? {
        Ok(outcome) => Ok(outcome == SendOutcome::Sent),
        Err(refused) if refused.kind() == SendErrorKind::Closed => {
            Err(closed_error(ruby, format!("{} is closed", channel.name())))
        }
        Err(refused) => Err(send_error_to_ruby(ruby, &refused)),
    }
}
