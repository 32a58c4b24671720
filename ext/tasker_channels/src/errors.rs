//! Ruby exception classes and the conversion of core errors and Rust panics into them.
//!
//! Owns `Tasker::Error` and its subclasses, and `guard`, which every binding entry point
//! uses so that no panic ever unwinds into Ruby. It must never decide *when* to fail:
//! it only translates failures the core reports.

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{
    exception::ExceptionClass, function, prelude::*, value::Lazy, Error, Exception, IntoValue,
    RArray, RModule, Ruby, Value,
};

static TASKER_ERROR: Lazy<ExceptionClass> = Lazy::new(|ruby| class_under_tasker(ruby, "Error"));
static BACKPRESSURE: Lazy<ExceptionClass> =
    Lazy::new(|ruby| class_under_tasker(ruby, "Backpressure"));
static CONFIG_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| class_under_tasker(ruby, "ConfigError"));
static CLOSED_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| class_under_tasker(ruby, "ClosedError"));

fn class_under_tasker(ruby: &Ruby, name: &str) -> ExceptionClass {
    let tasker: RModule = ruby
        .class_object()
        .const_get("Tasker")
        .expect("Tasker is defined at load time");
    tasker
        .const_get(name)
        .expect("Tasker error classes are defined at load time")
}

/// Defines the error hierarchy under `Tasker`.
pub fn define(ruby: &Ruby, tasker: RModule) -> Result<(), Error> {
    let base = tasker.define_error("Error", ruby.exception_standard_error())?;
    let backpressure = tasker.define_error("Backpressure", base)?;
    // Readers for what a rescuer needs to decide: which channel, how big, which policy.
    let _: Value = backpressure.funcall(
        "attr_reader",
        (
            ruby.to_symbol("channel"),
            ruby.to_symbol("capacity"),
            ruby.to_symbol("policy"),
        ),
    )?;
    let config_error = tasker.define_error("ConfigError", base)?;
    let _: Value = config_error.funcall("attr_reader", (ruby.to_symbol("errors"),))?;
    tasker.define_error("ClosedError", base)?;
    Ok(())
}

/// `Tasker::Error` with a message.
pub fn tasker_error(ruby: &Ruby, message: impl Into<String>) -> Error {
    Error::new(ruby.get_inner(&TASKER_ERROR), message.into())
}

/// `Tasker::ClosedError` with a message.
pub fn closed_error(ruby: &Ruby, message: impl Into<String>) -> Error {
    Error::new(ruby.get_inner(&CLOSED_ERROR), message.into())
}

/// `Tasker::Backpressure` carrying the channel's name, capacity and policy. Built without a
/// Ruby method call beyond the exception's own constructor: a refused publish is a normal
/// event under load, and should cost little more than a plain `raise`.
pub fn backpressure(
    ruby: &Ruby,
    message: &str,
    channel: &str,
    capacity: usize,
    policy: &str,
) -> Error {
    let [channel_ivar, capacity_ivar, policy_ivar] = backpressure_ivars(ruby);
    let class = ruby.get_inner(&BACKPRESSURE);
    // SAFETY: GVL held; every VALUE is live on this frame; the strings are valid buffers.
    unsafe {
        use magnus::rb_sys::{AsRawValue, FromRawValue};
        let exception =
            rb_sys::rb_exc_new(class.as_raw(), message.as_ptr().cast(), message.len() as _);
        let interned = |text: &str| {
            rb_sys::rb_enc_interned_str(
                text.as_ptr().cast(),
                text.len() as _,
                rb_sys::rb_utf8_encoding(),
            )
        };
        rb_sys::rb_ivar_set(exception, channel_ivar, interned(channel));
        rb_sys::rb_ivar_set(
            exception,
            capacity_ivar,
            ruby.integer_from_u64(capacity as u64).as_raw(),
        );
        rb_sys::rb_ivar_set(exception, policy_ivar, interned(policy));
        match Exception::from_value(Value::from_raw(exception)) {
            Some(exception) => Error::from(exception),
            None => Error::new(class, message.to_owned()),
        }
    }
}

/// The IDs of `Tasker::Backpressure`'s `@channel`, `@capacity` and `@policy`.
pub fn backpressure_ivars(ruby: &Ruby) -> [rb_sys::ID; 3] {
    static IVARS: LazyId3 = LazyId3::new(["@channel", "@capacity", "@policy"]);
    IVARS.get(ruby)
}

/// `Tasker::Backpressure` itself.
pub fn backpressure_class(ruby: &Ruby) -> rb_sys::VALUE {
    use magnus::rb_sys::AsRawValue;
    ruby.get_inner(&BACKPRESSURE).as_raw()
}

/// Three instance-variable IDs of the gem's own fixed set, interned once.
struct LazyId3 {
    names: [&'static str; 3],
    ids: std::sync::OnceLock<[rb_sys::ID; 3]>,
}

impl LazyId3 {
    const fn new(names: [&'static str; 3]) -> Self {
        LazyId3 {
            names,
            ids: std::sync::OnceLock::new(),
        }
    }

    fn get(&self, _ruby: &Ruby) -> [rb_sys::ID; 3] {
        *self.ids.get_or_init(|| {
            // SAFETY: GVL held (proved by `_ruby`); short non-empty literals.
            self.names
                .map(|name| unsafe { rb_sys::rb_intern2(name.as_ptr().cast(), name.len() as _) })
        })
    }
}

/// `Tasker::ConfigError` whose message lists every problem and whose `errors` returns them.
pub fn config_error(ruby: &Ruby, message: &str, problems: RArray) -> Error {
    build_exception(ruby, ruby.get_inner(&CONFIG_ERROR), message, |exc| {
        problems.freeze();
        set_ivar(exc, "@errors", problems)
    })
}

fn build_exception(
    ruby: &Ruby,
    class: ExceptionClass,
    message: &str,
    set_attributes: impl FnOnce(Exception) -> Result<(), Error>,
) -> Error {
    match class
        .new_instance((ruby.str_new(message),))
        .and_then(|exc| {
            set_attributes(exc)?;
            Ok(exc)
        }) {
        Ok(exc) => Error::from(exc),
        Err(err) => err,
    }
}

fn set_ivar(exc: Exception, name: &str, value: impl IntoValue) -> Result<(), Error> {
    let _: Value = exc.funcall("instance_variable_set", (name, value))?;
    Ok(())
}

/// Runs a binding body, turning a Rust panic into a `Tasker::Error` instead of letting it
/// unwind across the FFI (which would abort the process).
pub fn guard<T>(body: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            // SAFETY of the unwrap: guard is only used on Ruby threads holding the GVL.
            let ruby = Ruby::get().expect("guard runs on a Ruby thread");
            Err(tasker_error(
                &ruby,
                format!("internal error in tasker_channels (a Rust panic): {detail}"),
            ))
        }
    }
}

/// `Tasker::Channels::Testing`: `panic!(message)` panics inside the extension so the specs can
/// prove a panic reaches Ruby as `Tasker::Error` rather than aborting the process; `noop(a, b)`
/// does nothing, as the baseline a native call costs.
pub fn define_testing_hooks(_ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let testing = channels.define_module("Testing")?;
    testing.define_module_function("panic!", function!(trigger_panic, 1))?;
    // The cheapest possible native call with publish's arity: the benchmarks' baseline.
    testing.define_module_function("noop", function!(noop, 2))?;
    Ok(())
}

fn noop(_name: Value, _payload: Value) {}

fn trigger_panic(message: String) -> Result<(), Error> {
    guard(|| panic!("{message}"))
}
