//! Ruby values for events on the dispatch side — `Tasker::Channels::Event` objects, event
//! names and sources — and the parts of an event Ruby hands to Rust.
//!
//! Owns building them cheaply — an Event is a frozen Struct filled in place (no `initialize`
//! call, no instance-variable chain), names are interned frozen strings, sources are static
//! symbols — and checking that what `emit` gets is a String or Symbol name and a plain-data
//! Hash payload. It must only run with the GVL held.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{
    prelude::*, value::Lazy, Error, RClass, RHash, RModule, RString, Ruby, Symbol, Value,
};
use rb_sys::VALUE;
use tasker_channels_core::{EventSource, Payload};

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

/// The fields of an Event, in the Struct's member order.
pub struct EventFields {
    pub id: u64,
    pub name: Value,
    pub payload: Value,
    pub source: EventSource,
    pub published_at: SystemTime,
}

/// A frozen `Tasker::Channels::Event`.
pub fn build(ruby: &Ruby, fields: &EventFields) -> Value {
    let class = ruby.get_inner(&EVENT_CLASS);
    let values = [
        ruby.integer_from_u64(fields.id).as_value(),
        fields.name,
        fields.payload,
        source_symbol(fields.source),
        epoch_nanos(ruby, fields.published_at),
    ];
    // SAFETY: GVL held; `class` is a Struct class with these five members (event.rb), every
    // value is live on this stack frame, and the object is frozen only once filled.
    unsafe {
        let event = rb_sys::rb_struct_alloc_noinit(class.as_raw());
        for (index, value) in values.iter().enumerate() {
            rb_sys::rb_struct_aset(event, rb_sys::LONG2FIX(index as _), value.as_raw());
        }
        // Just made from Event itself, so its class is no singleton class.
        super::freeze_instance_of(event, class.as_raw());
        Value::from_raw(event)
    }
}

/// `:ruby`, `:rust` or `:remote`: static symbols, made once (they are never freed or moved).
pub fn source_symbol(source: EventSource) -> Value {
    static SYMBOLS: OnceLock<[VALUE; 3]> = OnceLock::new();
    let symbols = SYMBOLS.get_or_init(|| {
        [EventSource::Ruby, EventSource::Rust, EventSource::Remote].map(|source| {
            let name = source.as_str();
            // SAFETY: GVL held; a short, non-empty literal.
            unsafe { rb_sys::rb_id2sym(rb_sys::rb_intern2(name.as_ptr().cast(), name.len() as _)) }
        })
    });
    let raw = match source {
        EventSource::Ruby => symbols[0],
        EventSource::Rust => symbols[1],
        EventSource::Remote => symbols[2],
    };
    // SAFETY: a static symbol is an immediate value, valid for the life of the process.
    unsafe { Value::from_raw(raw) }
}

/// An interned, frozen UTF-8 String for `text` (event names, channel names, messages): the
/// same object for the same text, so building one allocates nothing once it has been seen.
pub fn interned_str(text: &str) -> Value {
    // An empty &str's pointer is dangling; hand C a real one.
    let ptr = if text.is_empty() {
        c"".as_ptr()
    } else {
        text.as_ptr().cast()
    };
    // SAFETY: GVL held; `ptr` points at `text.len()` valid UTF-8 bytes for the call.
    unsafe {
        Value::from_raw(rb_sys::rb_enc_interned_str(
            ptr,
            text.len() as _,
            rb_sys::rb_utf8_encoding(),
        ))
    }
}

/// Nanoseconds since the epoch, as `Event#published_at` expects (a Fixnum until 2116).
fn epoch_nanos(ruby: &Ruby, at: SystemTime) -> Value {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    ruby.integer_from_u64(since_epoch.as_nanos() as u64)
        .as_value()
}

/// The name and payload of an event that crosses into Rust: plain data by the payload rules.
pub fn rust_event(ruby: &Ruby, name: Value, payload: Value) -> Result<(String, Payload), Error> {
    let name: String = if let Some(symbol) = Symbol::from_value(name) {
        symbol.name()?.into_owned()
    } else if let Some(string) = RString::from_value(name) {
        string
            .to_string()
            .map_err(|_| Error::new(ruby.exception_arg_error(), "event name must be valid UTF-8"))?
    } else {
        return Err(Error::new(
            ruby.exception_type_error(),
            format!("event name must be a String or Symbol, got {}", unsafe {
                name.classname()
            }),
        ));
    };
    if RHash::from_value(payload).is_none() {
        return Err(Error::new(
            ruby.exception_type_error(),
            format!("payload must be a Hash, got {}", unsafe {
                payload.classname()
            }),
        ));
    }
    Ok((name, super::payload::from_ruby(ruby, payload, "payload")?))
}
