//! The Ruby exception classes the extension raises, and the translation of core errors
//! (refused sends, config problems, PostgreSQL failures, oversized envelopes) and Rust panics
//! into them.
//!
//! The classes are defined in Ruby (`lib/tasker/errors.rb`, loaded first, and
//! `lib/tasker/channels/postgres_errors.rb`); this module only looks them up, builds
//! instances cheaply, and provides `guard`, which every binding entry point uses so that no
//! panic ever unwinds into Ruby. Every other module turns a core error into a Ruby one by
//! calling a function here. It must never define an error class, nor decide *when* to fail:
//! it only translates failures the core reports.

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{
    exception::ExceptionClass, prelude::*, value::Lazy, Error, Exception, KwArgs, RArray, RClass,
    RModule, Ruby, Value,
};
use tasker_channels_core::pg::envelope::EnvelopeError;
use tasker_channels_core::pg::FailureKind;
use tasker_channels_core::{
    ConfigErrors, ForwardError, ListenError, PgError, SendError, SendErrorKind,
};

use crate::conversion::event::interned_str;

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
static CONNECTION_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| postgres_class(ruby, "ConnectionError"));
static PAYLOAD_TOO_LARGE: Lazy<ExceptionClass> =
    Lazy::new(|ruby| postgres_class(ruby, "PayloadTooLarge"));

/// The exception classes the extension raises, by name under `Tasker`.
const CLASS_NAMES: [&str; 4] = ["Error", "Backpressure", "ConfigError", "ClosedError"];

fn class_under_tasker(ruby: &Ruby, name: &str) -> ExceptionClass {
    lookup(ruby, name).expect("Tasker error classes are checked at load time")
}

/// The error classes `lib/tasker/channels/postgres_errors.rb` defines under `Tasker`: looked
/// up when first raised, since that file loads after the extension.
fn postgres_class(ruby: &Ruby, name: &str) -> ExceptionClass {
    lookup(ruby, name).unwrap_or_else(|_| {
        panic!("Tasker::{name} is defined by lib/tasker/channels/postgres_errors.rb")
    })
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
        let interned = |text: &str| interned_str(text).as_raw();
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
fn config_error(ruby: &Ruby, message: &str, problems: RArray) -> Error {
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
fn config_problem(ruby: &Ruby, fields: magnus::RHash) -> Result<Value, Error> {
    ruby.get_inner(&CONFIG_PROBLEM)
        .new_instance((KwArgs(fields),))
}

/// A failed config load as `Tasker::ConfigError`, every problem located.
pub fn config_errors_to_ruby(ruby: &Ruby, errors: &ConfigErrors) -> Error {
    match problems_to_ruby(ruby, errors) {
        Ok(problems) => config_error(ruby, &errors.to_string(), problems),
        Err(error) => error,
    }
}

/// Every problem as a `Tasker::ConfigError::Problem`, in file order.
fn problems_to_ruby(ruby: &Ruby, errors: &ConfigErrors) -> Result<RArray, Error> {
    let problems = ruby.ary_new_capa(errors.problems.len());
    for problem in &errors.problems {
        let fields = ruby.hash_new();
        fields.aset(ruby.to_symbol("file"), problem.file.as_str())?;
        fields.aset(ruby.to_symbol("key"), problem.key.as_deref())?;
        fields.aset(ruby.to_symbol("line"), problem.line)?;
        fields.aset(ruby.to_symbol("column"), problem.column)?;
        fields.aset(ruby.to_symbol("message"), problem.message.as_str())?;
        problems.push(config_problem(ruby, fields)?)?;
    }
    Ok(problems)
}

/// What a `Tasker::Backpressure` says: the refusal, then what to do about it.
pub fn backpressure_message<T>(error: &SendError<T>) -> String {
    format!("{error}: slow down and retry, or raise its capacity in the channel config")
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
            &backpressure_message(error),
            &channel.name,
            channel.capacity,
            channel.overflow.as_str(),
        ),
        SendErrorKind::Interrupted => {
            closed_error(ruby, format!("send to {} was interrupted", channel.name))
        }
    }
}

/// A listener's failure: `ArgumentError` for what the caller asked wrongly,
/// `Tasker::ConnectionError` for the server, `Tasker::ClosedError` once it stopped.
pub fn listen_error(ruby: &Ruby, error: ListenError) -> Error {
    match error {
        ListenError::Channel(invalid) => {
            Error::new(ruby.exception_arg_error(), invalid.to_string())
        }
        ListenError::Option(message) => Error::new(ruby.exception_arg_error(), message),
        ListenError::Pg(error) => connection_error(ruby, &error),
        ListenError::Closed => closed_error(ruby, error.to_string()),
        ListenError::Stopped => closed_error(ruby, error.to_string()),
    }
}

/// A forwarder's failure, as [`listen_error`] sorts a listener's.
pub fn forward_error(ruby: &Ruby, error: ForwardError) -> Error {
    match error {
        ForwardError::Channel(invalid) => {
            Error::new(ruby.exception_arg_error(), invalid.to_string())
        }
        ForwardError::Pg(error) => connection_error(ruby, &error),
        ForwardError::Stopped => closed_error(ruby, error.to_string()),
    }
}

/// `Tasker::ConnectionError` with `host`, `code` (SQLSTATE or nil) and `reason` (a Symbol).
pub fn connection_error(ruby: &Ruby, error: &PgError) -> Error {
    let kwargs = ruby.hash_new();
    let built = (|| {
        kwargs.aset(ruby.to_symbol("host"), error.host.clone())?;
        kwargs.aset(ruby.to_symbol("code"), error.code.clone())?;
        kwargs.aset(
            ruby.to_symbol("reason"),
            ruby.to_symbol(reason_name(error.kind)),
        )?;
        Ok(kwargs)
    })();
    postgres_exception(ruby, &CONNECTION_ERROR, error.to_string(), built)
}

fn reason_name(kind: FailureKind) -> &'static str {
    kind.as_str()
}

/// `Tasker::PayloadTooLarge` with `bytes`, `limit` and `channel` (nil when `channel` is empty:
/// a size check before any forwarder was chosen); `ArgumentError` for an envelope that
/// cannot be encoded at all.
pub fn envelope_error(ruby: &Ruby, error: EnvelopeError, channel: &str) -> Error {
    let EnvelopeError::TooLarge { bytes, limit, .. } = &error else {
        return Error::new(ruby.exception_arg_error(), error.to_string());
    };
    let kwargs = ruby.hash_new();
    let built = (|| {
        kwargs.aset(ruby.to_symbol("bytes"), *bytes)?;
        kwargs.aset(ruby.to_symbol("limit"), *limit)?;
        kwargs.aset(
            ruby.to_symbol("channel"),
            (!channel.is_empty()).then(|| channel.to_owned()),
        )?;
        Ok(kwargs)
    })();
    postgres_exception(ruby, &PAYLOAD_TOO_LARGE, error.to_string(), built)
}

/// `class.new(message, **keywords)`, or the error met building the keywords or the instance.
fn postgres_exception(
    ruby: &Ruby,
    class: &Lazy<ExceptionClass>,
    message: String,
    keywords: Result<magnus::RHash, Error>,
) -> Error {
    let built = keywords.and_then(|keywords| {
        ruby.get_inner(class)
            .funcall::<_, _, Value>("new", (message, KwArgs(keywords)))
    });
    match built.and_then(Exception::try_convert) {
        Ok(exception) => Error::from(exception),
        Err(failed) => failed,
    }
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
