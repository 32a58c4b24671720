//! The `Tasker::Backpressure` a full `shared.ffi` raises, built from cached parts.
//!
//! Owns the one refusal that is routine under load: `publish` into a full FFI buffer. Its
//! message and its `channel` and `policy` Strings are made once per runtime and kept (the
//! runtime's mark function pins them), so a refusal costs the exception and its three
//! instance variables, not a formatted message and two interned-string lookups. It must build
//! exactly what [`crate::errors::send_error_to_ruby`] builds for the same error.

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{gc, value::Opaque, Error, Ruby, Value};
use tasker_channels_core::{SendError, SendErrorKind};

use crate::conversion::event::interned_str;
use crate::errors::{
    backpressure_class, backpressure_ivars, backpressure_message, send_error_to_ruby,
};
use crate::gvl_cell::GvlCell;

struct Parts {
    message: Opaque<Value>,
    channel: Opaque<Value>,
    policy: Opaque<Value>,
    capacity: usize,
}

#[derive(Default)]
pub struct FullBuffer {
    parts: GvlCell<Option<Parts>>,
}

impl FullBuffer {
    pub fn mark(&self, marker: &gc::Marker) {
        self.parts.with(|parts| {
            if let Some(parts) = parts {
                marker.mark(parts.message);
                marker.mark(parts.channel);
                marker.mark(parts.policy);
            }
        });
    }

    /// The Ruby error for `refused`: cached when it is the FFI buffer being full, built as
    /// usual otherwise.
    pub fn error<T>(&self, ruby: &Ruby, refused: &SendError<T>) -> Error {
        if refused.kind() != SendErrorKind::Full {
            return send_error_to_ruby(ruby, refused);
        }
        let cached = self.parts.with(|parts| {
            parts
                .as_ref()
                .map(|p| (p.message, p.channel, p.policy, p.capacity))
        });
        let (message, channel, policy, capacity) = match cached {
            Some(parts) => parts,
            None => {
                let parts = self.build(ruby, refused);
                let copy = (parts.message, parts.channel, parts.policy, parts.capacity);
                self.parts.with(|slot| *slot = Some(parts));
                copy
            }
        };
        let class = backpressure_class(ruby);
        // SAFETY: GVL held; the class is Tasker::Backpressure and every VALUE is pinned.
        unsafe {
            let exception = rb_sys::rb_exc_new_str(class, ruby.get_inner(message).as_raw());
            let [channel_ivar, capacity_ivar, policy_ivar] = backpressure_ivars(ruby);
            rb_sys::rb_ivar_set(exception, channel_ivar, ruby.get_inner(channel).as_raw());
            rb_sys::rb_ivar_set(
                exception,
                capacity_ivar,
                ruby.integer_from_u64(capacity as u64).as_raw(),
            );
            rb_sys::rb_ivar_set(exception, policy_ivar, ruby.get_inner(policy).as_raw());
            match magnus::Exception::from_value(Value::from_raw(exception)) {
                Some(exception) => Error::from(exception),
                None => send_error_to_ruby(ruby, refused),
            }
        }
    }

    /// `_ruby`: the GVL is held.
    fn build<T>(&self, _ruby: &Ruby, refused: &SendError<T>) -> Parts {
        let channel = refused.channel();
        let interned = |text: &str| -> Opaque<Value> { interned_str(text).into() };
        Parts {
            message: interned(&backpressure_message(refused)),
            channel: interned(&channel.name),
            policy: interned(channel.overflow.as_str()),
            capacity: channel.capacity,
        }
    }
}
