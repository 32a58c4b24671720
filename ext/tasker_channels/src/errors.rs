//! The Ruby exception classes the extension raises, and the conversion of core errors and
//! Rust panics into them.
//!
//! The classes are defined in Ruby (`lib/tasker/errors.rb`, loaded first); this module only
//! looks them up, builds instances cheaply, and provides `guard`, which every binding entry
//! point uses so that no panic ever unwinds into Ruby. It must never define an error class,
//! nor decide *when* to fail: it only translates failures the core reports.

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{
    exception::ExceptionClass, function, prelude::*, value::Lazy, Error, Exception, KwArgs, RArray,
    RClass, RModule, Ruby, Value,
};

static TASKER_ERROR: Lazy<ExceptionClass> = Lazy::new(|ruby| class_under_tasker(ruby, "Error"));
static BACKPRESSURE: Lazy<ExceptionClass> =
    Lazy::new(|ruby| class_under_tasker(ruby, "Backpressure"));
static CONFIG_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| class_under_tasker(ruby, "ConfigError"));
static CLOSED_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| class_under_tasker(ruby, "ClosedError"));
static CONFIG_PROBLEM: Lazy<RClass> = Lazy::new(|ruby| {
    let config_error: RClass = ruby.get_inner(&CONFIG_ERROR).as_r_class();
    config_error
        .const_get("Problem")
        .expect("Tasker::ConfigError::Problem is checked at load time")
});

/// The exception classes the extension raises, by name under `Tasker`.
const CLASS_NAMES: [&str; 4] = ["Error", "Backpressure", "ConfigError", "ClosedError"];

fn class_under_tasker(ruby: &Ruby, name: &str) -> ExceptionClass {
    lookup(ruby, name).expect("Tasker error classes are checked at load time")
}

fn lookup(ruby: &Ruby, name: &str) -> Result<ExceptionClass, Error> {
    let tasker: RModule = ruby.class_object().const_get("Tasker")?;
    tasker.const_get(name)
}

/// Checks that `lib/tasker/errors.rb` has defined every class the extension raises, so a
/// missing one fails the `require` with a clear message instead of a later raise.
pub fn check_defined(ruby: &Ruby) -> Result<(), Error> {
    let missing = |name: &str| {
        Error::new(
            ruby.exception_load_error(),
            format!(
                "Tasker::{name} is not defined: load the extension with `require \"tasker_channels\"` \
                 (it requires tasker/errors first), not by its file name"
            ),
        )
    };
    for name in CLASS_NAMES {
        lookup(ruby, name).map_err(|_| missing(name))?;
    }
    let config_error: RClass = lookup(ruby, "ConfigError")?.as_r_class();
    config_error
        .const_get::<_, RClass>("Problem")
        .map_err(|_| missing("ConfigError::Problem"))?;
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

/// `Tasker::Backpressure` carrying the channel's name, capacity and policy (a frozen String,
/// as `Channel#policy` spells it). Built without a Ruby method call beyond the exception's
/// own constructor, which gets the message only (its keywords stay nil, so it does no work):
/// the attributes are set directly. A refused publish is a normal event under load, and
/// should cost little more than a plain `raise`.
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
        let interned = |text: &str| crate::event_object::interned_str(text).as_raw();
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

/// `Tasker::ConfigError.new(message, errors: problems)`: the message lists every problem and
/// `errors` returns them (the constructor freezes the list).
pub fn config_error(ruby: &Ruby, message: &str, problems: RArray) -> Error {
    let keywords = ruby.hash_new();
    let built = keywords
        .aset(ruby.to_symbol("errors"), problems)
        .and_then(|()| {
            ruby.get_inner(&CONFIG_ERROR)
                .new_instance((ruby.str_new(message), KwArgs(keywords)))
        });
    match built {
        Ok(exception) => Error::from(exception),
        Err(error) => error,
    }
}

/// `Tasker::ConfigError::Problem.new(**fields)`: one located configuration problem.
pub fn config_problem(ruby: &Ruby, fields: magnus::RHash) -> Result<Value, Error> {
    ruby.get_inner(&CONFIG_PROBLEM)
        .new_instance((KwArgs(fields),))
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
