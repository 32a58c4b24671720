//! `Tasker::Channels::Runtime`: the Ruby face of one core `EventBus`.
//!
//! Owns turning Ruby calls into bus operations — `publish` (payloads kept by reference in the
//! slot table, sliced interruptible waits for room), the subscription table, the dispatch
//! loop that waits without the GVL and runs handlers on its Ruby thread, stats and metrics —
//! and restarting the dispatchers in a forked child whose bus the core's `BusHandle` rebuilt.
//! It must never put a Ruby object
//! into the bus, never wait while holding the GVL, and never block in `Drop`.

use std::os::raw::c_int;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Instant, SystemTime};

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{
    function, gc, method, prelude::*, typed_data::Obj, DataTypeFunctions, Error, RArray, RHash,
    RModule, RString, Ruby, Symbol, TypedData, Value,
};
use rb_sys::VALUE;
use tasker_channels_core::event_bus::BusHandle;
use tasker_channels_core::event_bus::PUBLISHER_CHANNEL;
use tasker_channels_core::{
    EventBus, EventRef, Message, OverflowPolicy, Pattern, PublishError, SendError, SendWait,
};

use crate::channel::RbChannel;
use crate::config::{load_config, RbConfig};
use crate::conversion::event::rust_event;
use crate::conversion::stats::{channel_stats_to_ruby, event_stats_to_ruby};
use crate::dispatch;
use crate::errors::{backpressure, guard, send_error_to_ruby, tasker_error};
use crate::gvl::deadline_from_seconds;
use crate::gvl_cell::GvlCell;
use crate::names::NameCache;
use crate::refusal::FullBuffer;
use crate::slot_table::{self, SlotTable};
use crate::subscribers::{Selector, Shape, Subscribers};
use crate::waiting::{self, Received};

/// How many events one dispatcher wake-up takes at most.
pub const BATCH_SIZE: usize = 256;
/// The most dispatcher threads one runtime runs (each may hold a batch of slots).
pub const MAX_DISPATCHERS: usize = 64;

/// Every runtime's bus handle while it lives, for the report at exit. Pruned of the dead on
/// each insert, so it holds at most as many entries as there are live runtimes.
static LIVE_HANDLES: Mutex<Vec<Weak<BusHandle>>> = Mutex::new(Vec::new());

fn register_live(handle: &Arc<BusHandle>) {
    let mut live = LIVE_HANDLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    live.retain(|weak| weak.strong_count() > 0);
    live.push(Arc::downgrade(handle));
}

/// What a set-up runtime holds.
pub struct State {
    handle: Arc<BusHandle>,
    slots: SlotTable,
    subscribers: Subscribers,
    names: NameCache,
    full_ffi: FullBuffer,
    /// The bus `publish` last used, read without the handle's atomics (publish holds the
    /// GVL). Stale means this process is a fork child, which may have gone through no Ruby
    /// fork hook (`Process.daemon`): its dispatchers must be restarted.
    published_to: GvlCell<Arc<EventBus>>,
}

impl State {
    /// The bus to publish to, and whether it just replaced the one `publish` used before.
    #[inline]
    fn publishing_bus(&self) -> (&EventBus, bool) {
        let (cached, stale) = self
            .published_to
            .with(|bus| (Arc::as_ptr(bus), bus.is_stale()));
        let (bus, replaced) = if stale {
            let fresh = self.handle.bus();
            let fresh_ptr = Arc::as_ptr(&fresh);
            self.published_to.with(|bus| *bus = fresh);
            (fresh_ptr, true)
        } else {
            (cached, false)
        };
        // SAFETY: the cache holds a reference to `bus` until it is replaced, which happens
        // only when the bus has gone stale in a fork child, and the handle keeps every bus it
        // replaced as stale alive for the life of the process (`BusHandle::rebuild`). So
        // the bus outlives any use of it, even a publish that is still waiting when a trap
        // handler forks and publishes again.
        (unsafe { &*bus }, replaced)
    }

    /// How many published events the slot table holds right now.
    pub fn slots_in_use(&self) -> usize {
        self.slots.occupied()
    }

    fn tables(&self) -> dispatch::Tables<'_> {
        dispatch::Tables {
            slots: &self.slots,
            subscribers: &self.subscribers,
        }
    }
}

#[derive(Default, TypedData)]
#[magnus(class = "Tasker::Channels::Runtime", free_immediately, size, mark)]
pub struct Runtime {
    state: OnceLock<State>,
}

impl DataTypeFunctions for Runtime {
    fn mark(&self, marker: &gc::Marker) {
        if let Some(state) = self.state.get() {
            state.slots.mark(marker);
            state.subscribers.mark(marker);
            state.names.mark(marker);
            state.full_ffi.mark(marker);
        }
    }
}

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("Runtime", ruby.class_object())?;
    class.define_alloc_func::<Runtime>();
    class.const_set("BATCH_SIZE", BATCH_SIZE)?;
    class.define_private_method("_setup", method!(Runtime::setup, 3))?;
    class.define_method("config", method!(Runtime::config, 0))?;
    class.define_private_method("_channel", method!(Runtime::channel, 1))?;
    // publish is the hot path: bound by hand (see `publish_entry`).
    // SAFETY: the function has the (argc, argv, self) signature arity -1 declares.
    unsafe {
        let entry: unsafe extern "C" fn(c_int, *const VALUE, VALUE) -> VALUE = publish_entry;
        rb_sys::rb_define_method(
            class.as_raw(),
            c"publish".as_ptr(),
            Some(std::mem::transmute::<
                unsafe extern "C" fn(c_int, *const VALUE, VALUE) -> VALUE,
                unsafe extern "C" fn() -> VALUE,
            >(entry)),
            -1,
        );
    }
    class.define_private_method("_subscribe", method!(Runtime::subscribe, 2))?;
    class.define_private_method("_unsubscribe", method!(Runtime::unsubscribe, 1))?;
    class.define_private_method("_dispatch", method!(Runtime::dispatch, 1))?;
    class.define_private_method("_dispatch_loop", method!(Runtime::dispatch_loop, 0))?;
    class.define_private_method("_close_intake", method!(Runtime::close_intake, 0))?;
    class.define_method("closed?", method!(Runtime::is_closed, 0))?;
    class.define_private_method("_drained?", method!(Runtime::is_drained, 0))?;
    class.define_method("stats", method!(Runtime::stats, 0))?;
    class.define_private_method("_event_stats", method!(Runtime::event_stats, 0))?;
    class.define_method("metrics", method!(Runtime::metrics, 0))?;
    class.define_method("emit", method!(Runtime::emit, 2))?;
    class.define_singleton_method("_pending_everywhere", function!(pending_everywhere, 0))?;
    Ok(())
}

impl Runtime {
    pub fn state(&self, ruby: &Ruby) -> Result<&State, Error> {
        self.state.get().ok_or_else(|| {
            tasker_error(
                ruby,
                "this Tasker::Channels::Runtime was not initialized (call Runtime.new)",
            )
        })
    }

    /// The live bus of this process (a forked child's fresh one).
    pub fn bus(&self, ruby: &Ruby) -> Result<Arc<EventBus>, Error> {
        Ok(self.state(ruby)?.handle.bus())
    }

    /// `_setup(environment, config_dir, shipped_dir)`, from `initialize`.
    fn setup(
        ruby: &Ruby,
        rb_self: &Self,
        environment: Option<String>,
        config_dir: Option<String>,
        shipped_dir: Option<String>,
    ) -> Result<(), Error> {
        guard(|| {
            let already_initialized = || tasker_error(ruby, "this runtime is already initialized");
            if rb_self.state.get().is_some() {
                return Err(already_initialized());
            }
            tasker_channels_core::logging::init_logging();
            let config = load_config(ruby, environment, config_dir, shipped_dir)?;
            let handle = Arc::new(BusHandle::start(config));
            let bus = handle.bus();
            // Everything that can be in flight at once: the FFI buffer's events, the batches
            // every dispatcher holds, and one per publisher waiting for room.
            let limit = bus.ffi().capacity() + MAX_DISPATCHERS * BATCH_SIZE + 4096;
            register_live(&handle);
            let state = State {
                handle,
                slots: SlotTable::new(ruby, limit),
                subscribers: Subscribers::default(),
                names: NameCache::default(),
                full_ffi: FullBuffer::default(),
                published_to: GvlCell::new(bus),
            };
            // The load ran without the GVL, so another `_setup` may have finished meanwhile;
            // the state that lost is dropped, which closes its bus.
            rb_self
                .state
                .set(state)
                .map_err(|_lost| already_initialized())?;
            Ok(())
        })
    }

    fn config(ruby: &Ruby, rb_self: &Self) -> Result<RbConfig, Error> {
        Ok(RbConfig(Arc::clone(rb_self.state(ruby)?.handle.config())))
    }

    fn channel(ruby: &Ruby, rb_self: &Self, name: String) -> Result<RbChannel, Error> {
        guard(|| {
            let state = rb_self.state(ruby)?;
            state
                .handle
                .bus()
                .registry()
                .channel(&name)
                .map_err(|unknown| Error::new(ruby.exception_arg_error(), unknown.to_string()))?;
            Ok(RbChannel::new(Arc::clone(&state.handle), name))
        })
    }

    /// `publish(name, payload = {}, wait: 0)` or `publish(name, **payload)` → event id.
    fn publish(
        ruby: &Ruby,
        rb_self: &Self,
        self_value: Value,
        args: &[Value],
    ) -> Result<u64, Error> {
        {
            let state = rb_self.state(ruby)?;
            let (name, payload, wait) = publish_arguments(ruby, args)?;
            let name = state.names.resolve(ruby, name)?;
            if !payload.is_frozen() {
                freeze_payload(payload);
            }
            let (bus, replaced) = state.publishing_bus();
            let bus_key = slot_table::bus_key(bus);
            if replaced {
                // A forked child no Ruby hook told about: restart what the parent ran here.
                let _: Value = self_value.funcall("after_fork_in_child", ())?;
            }
            let deadline = match wait {
                None => None,
                Some(seconds) => deadline_from_seconds(ruby, "wait:", Some(seconds))?,
            };
            let Some(slot) = state.slots.hold(ruby, bus_key, name, payload.as_value()) else {
                let ffi = bus.ffi();
                return Err(backpressure(
                    ruby,
                    &format!(
                        "{} is full: every event slot of this runtime is in use; slow down and retry",
                        ffi.name()
                    ),
                    ffi.name(),
                    ffi.capacity(),
                    ffi.overflow().as_str(),
                ));
            };
            let event = EventRef {
                id: bus.next_id(),
                slot,
                published_at: SystemTime::now(),
            };
            let sent = publish_ref(bus, event, deadline);
            let refused = match sent {
                Ok(Ok(id)) => return Ok(id),
                Ok(Err(refused)) => state.full_ffi.error(ruby, &refused),
                Err(interrupted) => interrupted,
            };
            state.slots.release(ruby, bus_key, slot);
            Err(refused)
        }
    }

    /// `_subscribe(pattern, handler)` → subscription id.
    fn subscribe(
        ruby: &Ruby,
        rb_self: &Self,
        pattern: Value,
        handler: Value,
    ) -> Result<u64, Error> {
        let state = rb_self.state(ruby)?;
        let Some(proc) = magnus::block::Proc::from_value(handler) else {
            return Err(Error::new(
                ruby.exception_type_error(),
                format!("a handler must be a Proc, got {}", unsafe {
                    handler.classname()
                }),
            ));
        };
        let selector = if let Some(symbol) = Symbol::from_value(pattern) {
            parse_pattern(ruby, &symbol.name()?)?
        } else if let Some(string) = RString::from_value(pattern) {
            parse_pattern(ruby, &string.to_string()?)?
        } else if pattern.is_kind_of(ruby.class_regexp()) {
            Selector::Regexp(pattern.into())
        } else {
            return Err(Error::new(
                ruby.exception_type_error(),
                format!(
                    "subscription pattern must be a String, Symbol or Regexp, got {}",
                    unsafe { pattern.classname() }
                ),
            ));
        };
        let shape = Shape::for_arity(proc.arity());
        Ok(state.subscribers.add(selector, proc.as_value(), shape))
    }

    fn unsubscribe(ruby: &Ruby, rb_self: &Self, id: u64) -> Result<bool, Error> {
        Ok(rb_self.state(ruby)?.subscribers.remove(id))
    }

    /// `_dispatch(timeout_seconds_or_nil)`: waits up to `timeout` for one batch and delivers
    /// it here. → number delivered, or nil once the bus is closed and drained.
    fn dispatch(ruby: &Ruby, rb_self: Obj<Self>, timeout: Option<f64>) -> Result<Value, Error> {
        guard(|| {
            let state = rb_self.state(ruby)?;
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            let bus = state.handle.bus();
            match waiting::receive(deadline, |wait| bus.next_batch(BATCH_SIZE, wait))? {
                Received::Got(batch) => {
                    let delivered =
                        dispatch::deliver(ruby, &state.tables(), rb_self.as_value(), &bus, batch)?;
                    Ok(ruby.integer_from_u64(delivered as u64).as_value())
                }
                Received::TimedOut => Ok(ruby.integer_from_i64(0).as_value()),
                Received::Closed => Ok(ruby.qnil().as_value()),
            }
        })
    }

    /// `_dispatch_loop`: an auto dispatcher's life — wait without the GVL, deliver, repeat
    /// until the bus is closed and drained.
    fn dispatch_loop(ruby: &Ruby, rb_self: Obj<Self>) -> Result<(), Error> {
        guard(|| {
            let state = rb_self.state(ruby)?;
            loop {
                // Looked up each round: after a fork this thread serves the child's new bus.
                let bus = state.handle.bus();
                match waiting::receive(None, |wait| bus.next_batch(BATCH_SIZE, wait))? {
                    Received::Got(batch) => {
                        dispatch::deliver(ruby, &state.tables(), rb_self.as_value(), &bus, batch)?;
                    }
                    Received::TimedOut => {}
                    Received::Closed => return Ok(()),
                }
            }
        })
    }

    fn close_intake(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        rb_self.state(ruby)?.handle.bus().close_intake();
        Ok(())
    }

    fn is_closed(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        Ok(rb_self.state(ruby)?.handle.bus().is_closed())
    }

    fn is_drained(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        Ok(rb_self.state(ruby)?.handle.bus().is_drained())
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guard(|| {
            let stats = rb_self.state(ruby)?.handle.bus().registry().stats();
            let list = ruby.ary_new_capa(stats.len());
            for row in &stats {
                list.push(channel_stats_to_ruby(ruby, row)?)?;
            }
            Ok(list)
        })
    }

    fn event_stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let state = rb_self.state(ruby)?;
        event_stats_to_ruby(ruby, &state.handle.bus().stats(), state.subscribers.len())
    }

    fn metrics(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        Ok(rb_self.state(ruby)?.handle.bus().prometheus_text())
    }

    /// Emits a Rust-sourced event through `shared.event_publisher`, as Rust code linking the
    /// core would; returns the id, or false when the publisher's policy discarded it.
    fn emit(ruby: &Ruby, rb_self: &Self, name: Value, payload: Value) -> Result<Value, Error> {
        guard(|| {
            let (name, payload) = rust_event(ruby, name, payload)?;
            let bus = rb_self.state(ruby)?.handle.bus();
            if bus
                .registry()
                .get(PUBLISHER_CHANNEL)
                .is_some_and(|c| c.overflow() == OverflowPolicy::Block)
            {
                return Err(Error::new(
                    ruby.exception_arg_error(),
                    "emit from Ruby needs shared.event_publisher to be non-blocking",
                ));
            }
            match bus.emit(name, payload) {
                Ok(id) => Ok(ruby.integer_from_u64(id).as_value()),
                Err(PublishError::Dropped { .. }) => Ok(ruby.qfalse().as_value()),
                Err(PublishError::InvalidName(invalid)) => {
                    Err(Error::new(ruby.exception_arg_error(), invalid.to_string()))
                }
                Err(PublishError::Refused(refused)) => Err(send_error_to_ruby(ruby, &refused)),
            }
        })
    }
}

/// `Runtime._pending_everywhere` → `[[environment, pending], ...]` for every live runtime of
/// this process still holding accepted, undelivered events: what the exit report names.
fn pending_everywhere(ruby: &Ruby) -> Result<RArray, Error> {
    let handles: Vec<Arc<BusHandle>> = LIVE_HANDLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let report = ruby.ary_new();
    for handle in handles {
        let pending = handle.bus_if_current().map_or(0, |bus| bus.stats().pending);
        if pending > 0 {
            report.push((handle.config().environment().to_owned(), pending))?;
        }
    }
    Ok(report)
}

/// `Runtime#publish`, bound without magnus's method wrapper: on the publish path its self
/// conversion and handle lookup cost as much as the rest of the call. Same contract: no
/// panic crosses into Ruby (`guard`), and an error is raised only once every Rust value of
/// the call has been dropped.
unsafe extern "C" fn publish_entry(argc: c_int, argv: *const VALUE, rb_self: VALUE) -> VALUE {
    // SAFETY: Ruby calls this on a Ruby thread holding the GVL.
    let ruby = Ruby::get_unchecked();
    let result = guard(|| {
        let data_type = (Runtime::data_type() as *const magnus::typed_data::DataType).cast();
        // SAFETY: `rb_self` is a live object; a typed-data object of our type holds a
        // `Runtime` (DataType is a transparent wrapper of rb_data_type_t).
        let runtime = unsafe {
            if !rb_sys::RB_TYPE_P(rb_self, rb_sys::ruby_value_type::RUBY_T_DATA)
                || !rb_sys::RTYPEDDATA_P(rb_self)
                || rb_sys::RTYPEDDATA_TYPE(rb_self) != data_type
            {
                return Err(tasker_error(
                    &ruby,
                    "publish called on something that is not a Runtime",
                ));
            }
            &*(rb_sys::RTYPEDDATA_GET_DATA(rb_self) as *const Runtime)
        };
        let argc = usize::try_from(argc).unwrap_or(0);
        let mut args = [ruby.qnil().as_value(); 3];
        if argc > args.len() {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!("wrong number of arguments (given {argc}, expected 1..2): publish(name, payload = {{}}, wait: 0)"),
            ));
        }
        for (index, arg) in args.iter_mut().enumerate().take(argc) {
            // SAFETY: Ruby passes `argc` live arguments at `argv`.
            *arg = unsafe { Value::from_raw(*argv.add(index)) };
        }
        // SAFETY: as above.
        let self_value = unsafe { Value::from_raw(rb_self) };
        Runtime::publish(&ruby, runtime, self_value, &args[..argc])
    });
    match result {
        Ok(id) => ruby.integer_from_u64(id).as_raw(),
        // SAFETY: nothing of this call is left to drop; raising unwinds into Ruby.
        Err(error) => magnus::rb_sys::resume_error(error),
    }
}

/// Splits `publish`'s arguments: `(name)`, `(name, payload)`, either with `wait:`, or
/// `(name, **payload)` where every keyword but `wait` is the payload.
fn publish_arguments(ruby: &Ruby, args: &[Value]) -> Result<(Value, RHash, Option<f64>), Error> {
    // SAFETY: called from a method body on a Ruby thread.
    let keywords_given = unsafe { rb_sys::rb_keyword_given_p() } != 0;
    let (positional, keywords) = match (keywords_given, args.split_last()) {
        (true, Some((last, rest))) => (rest, RHash::from_value(*last)),
        _ => (args, None),
    };
    let (name, payload) = match positional {
        [name] => (*name, None),
        [name, payload] => (*name, Some(*payload)),
        _ => {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!(
                    "wrong number of arguments (given {}, expected 1..2): publish(name, payload = {{}}, wait: 0)",
                    positional.len()
                ),
            ))
        }
    };
    let mut wait = None;
    let mut fields = None;
    if let Some(keywords) = keywords {
        let wait_key = ruby.to_symbol("wait");
        if let Some(seconds) = keywords.get(wait_key) {
            wait = wait_seconds(ruby, seconds)?;
            if keywords.len() > 1 {
                let rest: RHash = keywords.funcall("dup", ())?;
                rest.delete::<_, Value>(wait_key)?;
                fields = Some(rest);
            }
        } else {
            fields = Some(keywords);
        }
    }
    let payload = match (payload, fields) {
        (Some(_), Some(fields)) => {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!(
                    "publish takes a payload Hash or payload keywords, not both (got keywords {}; only wait: is an option)",
                    fields.as_value().inspect()
                ),
            ))
        }
        (Some(payload), None) => RHash::from_value(payload).ok_or_else(|| {
            Error::new(
                ruby.exception_type_error(),
                format!("payload must be a Hash, got {}", unsafe { payload.classname() }),
            )
        })?,
        (None, Some(fields)) => fields,
        (None, None) => ruby.hash_new(),
    };
    Ok((name, payload, wait))
}

/// Freezes a payload Hash's top level (a subclass or singleton takes the full call).
#[inline]
fn freeze_payload(payload: RHash) {
    // SAFETY: GVL held; `payload` is a live Hash, checked against Hash itself.
    unsafe { crate::conversion::freeze_instance_of(payload.as_raw(), rb_sys::rb_cHash) }
}

/// `wait:` in seconds; 0 (or nil) means "don't wait".
fn wait_seconds(ruby: &Ruby, wait: Value) -> Result<Option<f64>, Error> {
    if wait.is_nil() {
        return Ok(None);
    }
    let seconds = f64::try_convert(wait).map_err(|_| {
        Error::new(
            ruby.exception_type_error(),
            format!("wait: must be a number of seconds, got {}", unsafe {
                wait.classname()
            }),
        )
    })?;
    if seconds == 0.0 {
        Ok(None)
    } else {
        Ok(Some(seconds))
    }
}

/// Puts an event into `shared.ffi`. Without a deadline (and unless the channel blocks) this
/// is one non-blocking attempt with the GVL held; otherwise it waits for room without the
/// GVL, in slices so Ruby can deliver interrupts, until `deadline` (or the channel's own send
/// timeout for a `block` channel, forever when it has none).
#[inline]
fn publish_ref(
    bus: &EventBus,
    event: EventRef,
    wait_deadline: Option<Instant>,
) -> Result<Result<u64, SendError<Message>>, Error> {
    let ffi = bus.ffi();
    if wait_deadline.is_none() && ffi.overflow() != OverflowPolicy::Block {
        return Ok(bus.publish_ref(event, SendWait::policy()));
    }
    let deadline = wait_deadline.or_else(|| ffi.send_timeout().map(|t| Instant::now() + t));
    waiting::send(
        ffi,
        Message::Ref(event),
        deadline,
        |message, wait| match message {
            Message::Ref(event) => bus.publish_ref(event, wait),
            _ => unreachable!("publish only sends references"),
        },
    )
}

fn parse_pattern(ruby: &Ruby, pattern: &str) -> Result<Selector, Error> {
    Pattern::parse(pattern)
        .map(Selector::Pattern)
        .map_err(|invalid| Error::new(ruby.exception_arg_error(), invalid.to_string()))
}

/// The live bus of a `Tasker::Channels::Runtime` Ruby object (a forked child's fresh one).
pub fn bus_of(ruby: &Ruby, runtime: Value) -> Result<Arc<EventBus>, Error> {
    let runtime = <&Runtime>::try_convert(runtime).map_err(|_| {
        Error::new(
            ruby.exception_type_error(),
            "expected a Tasker::Channels::Runtime",
        )
    })?;
    runtime.bus(ruby)
}
