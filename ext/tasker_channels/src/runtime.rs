//! `Tasker::Channels::NativeRuntime`: the Ruby face of one core `EventBus`.
//!
//! Owns turning Ruby calls into bus operations — publish with sliced, interruptible waits
//! for room, batched hand-over to dispatcher threads that wait without the GVL, stats and
//! metrics — and rebuilding the bus on first use in a forked child. It must never keep a
//! Ruby object inside the bus, never wait while holding the GVL, and never block in `Drop`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use magnus::{
    function, method, prelude::*, value::Lazy, Error, RArray, RClass, RHash, RModule, Ruby, Symbol,
    Value,
};
use tasker_channels_core::channel::{MonitoredChannel, SendError, SendErrorKind, SendWait};
use tasker_channels_core::config::Config;
use tasker_channels_core::event::{Event, EventSource, Message};
use tasker_channels_core::event_bus::EventBus;
use tasker_channels_core::metrics::ChannelStats;
use tasker_channels_core::policy::OverflowPolicy;

use crate::channel::RbChannel;
use crate::config::{load_config, RbConfig};
use crate::errors::{backpressure, closed_error, guard};
use crate::gvl::deadline_from_seconds;
use crate::payload_conversion;
use crate::waiting::{self, Received};

static EVENT_CLASS: Lazy<RClass> = Lazy::new(|ruby| {
    let channels: RModule = ruby
        .class_object()
        .const_get::<_, RModule>("Tasker")
        .and_then(|tasker| tasker.const_get("Channels"))
        .expect("Tasker::Channels is defined at load time");
    channels
        .const_get("Event")
        .expect("Tasker::Channels::Event is defined by lib/tasker/channels/event.rb")
});

/// The bus of this process, rebuilt from the same config after a fork.
pub struct BusHandle {
    config: Arc<Config>,
    bus: ArcSwap<EventBus>,
}

impl BusHandle {
    /// The live bus. In a forked child the parent's bus has no forwarder tasks here: build a
    /// fresh one (same config, empty channels) and let the stale one go without joining.
    pub fn bus(&self) -> Arc<EventBus> {
        let bus = self.bus.load_full();
        if !bus.is_stale() {
            return bus;
        }
        let fresh = EventBus::start(&self.config);
        let previous = self.bus.compare_and_swap(&bus, Arc::clone(&fresh));
        if Arc::ptr_eq(&previous, &bus) {
            fresh
        } else {
            // Another thread rebuilt first; use its bus.
            fresh.close_intake();
            self.bus.load_full()
        }
    }

    pub fn channel(&self, name: &str) -> Option<MonitoredChannel<Message>> {
        self.bus().registry().get(name).cloned()
    }
}

impl Drop for BusHandle {
    /// A runtime Ruby collected without `shutdown`: close the intake so the forwarder tasks
    /// finish and release the channels. Never blocks; a stale (pre-fork) bus is left alone.
    fn drop(&mut self) {
        let bus = self.bus.load();
        if !bus.is_stale() {
            bus.close_intake();
        }
    }
}

#[magnus::wrap(class = "Tasker::Channels::NativeRuntime", free_immediately, size)]
pub struct NativeRuntime {
    handle: Arc<BusHandle>,
}

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("NativeRuntime", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("new", function!(NativeRuntime::new, 3))?;
    class.define_method("config", method!(NativeRuntime::config, 0))?;
    class.define_method("channel", method!(NativeRuntime::channel, 1))?;
    class.define_method("publish", method!(NativeRuntime::publish, 3))?;
    class.define_method("next_batch", method!(NativeRuntime::next_batch, 2))?;
    class.define_method(
        "record_delivery",
        method!(NativeRuntime::record_delivery, 3),
    )?;
    class.define_method("close_intake", method!(NativeRuntime::close_intake, 0))?;
    class.define_method("closed?", method!(NativeRuntime::is_closed, 0))?;
    class.define_method("drained?", method!(NativeRuntime::is_drained, 0))?;
    class.define_method("stats", method!(NativeRuntime::stats, 0))?;
    class.define_method("event_stats", method!(NativeRuntime::event_stats, 0))?;
    class.define_method("metrics", method!(NativeRuntime::metrics, 0))?;
    class.define_method("emit", method!(NativeRuntime::emit, 2))?;
    Ok(())
}

impl NativeRuntime {
    fn new(
        ruby: &Ruby,
        environment: Option<String>,
        config_dir: Option<String>,
        shipped_dir: Option<String>,
    ) -> Result<Self, Error> {
        guard(|| {
            tasker_channels_core::logging::init_logging();
            let config = load_config(ruby, environment, config_dir, shipped_dir)?;
            let bus = EventBus::start(&config);
            Ok(NativeRuntime {
                handle: Arc::new(BusHandle {
                    config,
                    bus: ArcSwap::new(bus),
                }),
            })
        })
    }

    fn config(&self) -> RbConfig {
        RbConfig(Arc::clone(&self.handle.config))
    }

    fn channel(ruby: &Ruby, rb_self: &Self, name: String) -> Result<RbChannel, Error> {
        guard(|| {
            let bus = rb_self.handle.bus();
            bus.registry()
                .channel(&name)
                .map_err(|unknown| Error::new(ruby.exception_arg_error(), unknown.to_string()))?;
            Ok(RbChannel::new(Arc::clone(&rb_self.handle), name))
        })
    }

    /// `publish(name, payload, wait_seconds)` → event id.
    fn publish(
        ruby: &Ruby,
        rb_self: &Self,
        name: Value,
        payload: Value,
        wait: Value,
    ) -> Result<u64, Error> {
        guard(|| {
            let name = event_name(ruby, name)?;
            let wait_seconds: Option<f64> = if wait.is_nil() {
                None
            } else {
                Some(f64::try_convert(wait).map_err(|_| {
                    Error::new(
                        ruby.exception_type_error(),
                        format!("wait: must be a number of seconds, got {}", unsafe {
                            wait.classname()
                        }),
                    )
                })?)
            };
            let wait_seconds = wait_seconds.unwrap_or(0.0);
            // Only a real wait needs the clock (and validation of the number).
            let deadline = if wait_seconds == 0.0 {
                None
            } else {
                deadline_from_seconds(ruby, "wait:", Some(wait_seconds))?
            };
            let payload = event_payload(ruby, payload)?;
            let bus = rb_self.handle.bus();
            let event = bus
                .prepare(name, payload, EventSource::Ruby)
                .map_err(|invalid| Error::new(ruby.exception_arg_error(), invalid.to_string()))?;
            publish_event(ruby, &bus, event, deadline)
        })
    }

    /// `next_batch(max, timeout_seconds_or_nil)` → Array of Events; [] on timeout; nil once
    /// the bus is closed and drained.
    fn next_batch(
        ruby: &Ruby,
        rb_self: &Self,
        max: usize,
        timeout: Option<f64>,
    ) -> Result<Value, Error> {
        guard(|| {
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            let bus = rb_self.handle.bus();
            match waiting::receive(deadline, |deadline, interrupt| {
                bus.next_batch(max, deadline, interrupt)
            })? {
                Received::Got(events) => Ok(events_to_ruby(ruby, events)?.as_value()),
                Received::TimedOut => Ok(ruby.ary_new().as_value()),
                Received::Closed => Ok(ruby.qnil().as_value()),
            }
        })
    }

    fn record_delivery(&self, delivered: u64, handler_errors: u64, unmatched: u64) {
        self.handle
            .bus()
            .record_delivery(delivered, handler_errors, unmatched);
    }

    fn close_intake(&self) {
        self.handle.bus().close_intake();
    }

    fn is_closed(&self) -> bool {
        self.handle.bus().is_closed()
    }

    fn is_drained(&self) -> bool {
        self.handle.bus().is_drained()
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guard(|| {
            let stats = rb_self.handle.bus().registry().stats();
            let list = ruby.ary_new_capa(stats.len());
            for row in &stats {
                list.push(stats_to_ruby(ruby, row)?)?;
            }
            Ok(list)
        })
    }

    fn event_stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let stats = rb_self.handle.bus().stats();
        let hash = ruby.hash_new();
        hash.aset(ruby.to_symbol("published"), stats.published)?;
        hash.aset(ruby.to_symbol("emitted"), stats.emitted)?;
        hash.aset(ruby.to_symbol("delivered"), stats.delivered)?;
        hash.aset(ruby.to_symbol("unmatched"), stats.unmatched)?;
        hash.aset(ruby.to_symbol("handler_errors"), stats.handler_errors)?;
        Ok(hash)
    }

    fn metrics(&self) -> String {
        self.handle.bus().prometheus_text()
    }

    /// Emits a Rust-sourced event through `shared.event_publisher`, as Rust code linking the
    /// core would; returns the id, or false when the publisher's policy discarded it.
    fn emit(ruby: &Ruby, rb_self: &Self, name: Value, payload: Value) -> Result<Value, Error> {
        guard(|| {
            let name = event_name(ruby, name)?;
            let payload = event_payload(ruby, payload)?;
            let bus = rb_self.handle.bus();
            if bus
                .registry()
                .get(tasker_channels_core::event_bus::PUBLISHER_CHANNEL)
                .is_some_and(|c| c.policy() == OverflowPolicy::Block)
            {
                return Err(Error::new(
                    ruby.exception_arg_error(),
                    "emit from Ruby needs shared.event_publisher to be non-blocking",
                ));
            }
            match bus.emit(name, payload) {
                Ok(id) => Ok(ruby.integer_from_u64(id).as_value()),
                Err(tasker_channels_core::event_bus::PublishError::Dropped { .. }) => {
                    Ok(ruby.qfalse().as_value())
                }
                Err(tasker_channels_core::event_bus::PublishError::InvalidName(invalid)) => {
                    Err(Error::new(ruby.exception_arg_error(), invalid.to_string()))
                }
                Err(tasker_channels_core::event_bus::PublishError::Refused(refused)) => {
                    Err(send_error_to_ruby(ruby, &refused))
                }
            }
        })
    }
}

fn event_name(ruby: &Ruby, name: Value) -> Result<String, Error> {
    if let Some(symbol) = Symbol::from_value(name) {
        return symbol
            .name()
            .map(|name| name.into_owned())
            .map_err(|_| Error::new(ruby.exception_arg_error(), "event name must be valid UTF-8"));
    }
    if let Some(string) = magnus::RString::from_value(name) {
        return string
            .to_string()
            .map_err(|_| Error::new(ruby.exception_arg_error(), "event name must be valid UTF-8"));
    }
    Err(Error::new(
        ruby.exception_type_error(),
        format!("event name must be a String or Symbol, got {}", unsafe {
            name.classname()
        }),
    ))
}

/// An event's payload is a Hash (SPEC §5), converted by the payload rules.
fn event_payload(
    ruby: &Ruby,
    payload: Value,
) -> Result<tasker_channels_core::payload::Payload, Error> {
    if RHash::from_value(payload).is_none() {
        return Err(Error::new(
            ruby.exception_type_error(),
            format!("payload must be a Hash, got {}", unsafe {
                payload.classname()
            }),
        ));
    }
    payload_conversion::from_ruby(ruby, payload, "payload")
}

/// Puts an event into `shared.ffi`. Without `wait` (and unless the channel blocks) this is
/// one non-blocking attempt with the GVL held; otherwise it waits for room without the GVL,
/// in slices so Ruby can deliver interrupts, until `deadline` (or the channel's own send
/// timeout for a `block` channel, forever when it has none).
fn publish_event(
    ruby: &Ruby,
    bus: &EventBus,
    event: Event,
    wait_deadline: Option<Instant>,
) -> Result<u64, Error> {
    let ffi = bus.ffi();
    if wait_deadline.is_none() && ffi.policy() != OverflowPolicy::Block {
        return bus
            .publish_prepared(event, SendWait::policy())
            .map_err(|refused| send_error_to_ruby(ruby, &refused));
    }
    let deadline = wait_deadline.or_else(|| ffi.send_timeout().map(|t| Instant::now() + t));
    let sent = waiting::send(
        ffi,
        Message::Event(Box::new(event)),
        deadline,
        |message, wait| match message {
            Message::Event(event) => bus.publish_prepared(*event, wait),
            Message::Value(_) => unreachable!("publish only sends events"),
        },
    )?;
    sent.map_err(|refused| send_error_to_ruby(ruby, &refused))
}

/// Backpressure for a full channel, ClosedError for a closed one.
pub fn send_error_to_ruby<T>(ruby: &Ruby, error: &SendError<T>) -> Error {
    let channel = error.channel();
    match error.kind() {
        SendErrorKind::Closed => closed_error(
            ruby,
            format!("{} is closed (the runtime was shut down)", channel.name),
        ),
        SendErrorKind::Full | SendErrorKind::TimedOut => backpressure(
            ruby,
            &format!("{error}: slow down and retry, or raise its capacity in the channel config"),
            &channel.name,
            channel.capacity,
            channel.policy.as_str(),
        ),
        SendErrorKind::Interrupted => {
            closed_error(ruby, format!("send to {} was interrupted", channel.name))
        }
    }
}

fn events_to_ruby(ruby: &Ruby, events: Vec<Event>) -> Result<RArray, Error> {
    let class = ruby.get_inner(&EVENT_CLASS);
    let ivars = EVENT_IVARS.map(|name| ruby.intern(name));
    let ruby_source = ruby.to_symbol("ruby");
    let rust_source = ruby.to_symbol("rust");
    let list = ruby.ary_new_capa(events.len());
    for event in events {
        let payload = payload_conversion::to_ruby(ruby, &event.payload);
        let name = ruby.str_new(&event.name);
        name.freeze();
        let source = match event.source {
            EventSource::Ruby => ruby_source,
            EventSource::Rust => rust_source,
            EventSource::Remote => ruby.to_symbol("remote"),
        };
        let published_at = epoch_nanos(ruby, event.published_at);
        let id = ruby.integer_from_u64(event.id).as_value();
        list.push(build_event(
            class,
            &ivars,
            [
                id,
                name.as_value(),
                payload,
                source.as_value(),
                published_at,
            ],
        ))?;
    }
    Ok(list)
}

const EVENT_IVARS: [&str; 5] = ["@id", "@name", "@payload", "@source", "@published_at_ns"];

/// A frozen `Tasker::Channels::Event` with its five readers' ivars set directly: the same
/// object `Event.new` builds, without a Ruby method call per event on the dispatch path.
fn build_event(class: RClass, ivars: &[magnus::value::Id; 5], values: [Value; 5]) -> Value {
    use magnus::rb_sys::{AsRawId, AsRawValue, FromRawValue};
    // SAFETY: GVL held; `class` is the Event class (a plain Ruby class), every value is live
    // on this stack frame, and the object is frozen only after its ivars are set.
    unsafe {
        let object = rb_sys::rb_obj_alloc(class.as_raw());
        for (ivar, value) in ivars.iter().zip(values) {
            rb_sys::rb_ivar_set(object, ivar.as_raw(), value.as_raw());
        }
        rb_sys::rb_obj_freeze(object);
        Value::from_raw(object)
    }
}

/// Nanoseconds since the epoch, as `Event#published_at` expects.
fn epoch_nanos(ruby: &Ruby, at: SystemTime) -> Value {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    ruby.integer_from_u64(since_epoch.as_nanos() as u64)
        .as_value()
}

fn stats_to_ruby(ruby: &Ruby, row: &ChannelStats) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    let set = |key: &str, value: Value| hash.aset(ruby.to_symbol(key), value);
    set("channel", ruby.str_new(&row.channel).as_value())?;
    set("component", ruby.str_new(&row.component).as_value())?;
    set(
        "capacity",
        ruby.integer_from_u64(row.capacity as u64).as_value(),
    )?;
    set(
        "length",
        ruby.integer_from_u64(row.length as u64).as_value(),
    )?;
    set(
        "usage_percent",
        ruby.float_from_f64(row.usage_percent).as_value(),
    )?;
    set(
        "high_water_mark",
        ruby.integer_from_u64(row.high_water_mark as u64).as_value(),
    )?;
    set("policy", ruby.str_new(row.policy.as_str()).as_value())?;
    for (key, value) in [
        ("sent", row.sent),
        ("received", row.received),
        ("dropped", row.dropped),
        ("rejected", row.rejected),
        ("blocked", row.blocked),
        ("full_events", row.full_events),
        ("send_wait_p50_us", row.send_wait_p50_us),
        ("send_wait_p99_us", row.send_wait_p99_us),
    ] {
        set(key, ruby.integer_from_u64(value).as_value())?;
    }
    Ok(hash)
}

/// The live bus of a `Tasker::Channels::Runtime` (its `@native` runtime's, rebuilt in a
/// forked child), for bindings that attach to a runtime from outside.
pub fn bus_of(ruby: &Ruby, runtime: Value) -> Result<Arc<EventBus>, Error> {
    let native: Value = runtime.funcall("instance_variable_get", ("@native",))?;
    let native = <&NativeRuntime>::try_convert(native).map_err(|_| {
        Error::new(
            ruby.exception_type_error(),
            "expected a Tasker::Channels::Runtime",
        )
    })?;
    Ok(native.handle.bus())
}
