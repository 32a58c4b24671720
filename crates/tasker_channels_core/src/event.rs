//! Events and the messages channels carry.
//!
//! Owns what an event is (id, name, payload, source, time) and the rules for event names.
//! It must never route, queue or deliver events: that is the event bus's job.

use std::sync::Arc;
use std::time::SystemTime;

use crate::payload::Payload;

/// Longest event name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// Published by Ruby code through the FFI buffer (`shared.ffi`).
    Ruby,
    /// Emitted by Rust code through `shared.event_publisher` (e.g. the channel monitor).
    Rust,
    /// Forwarded from another process through PostgreSQL (see [`crate::pg`]).
    Remote,
}

impl EventSource {
    /// The name Ruby sees (`:ruby`, `:rust`, `:remote`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Ruby => "ruby",
            EventSource::Rust => "rust",
            EventSource::Remote => "remote",
        }
    }
}

/// One event on its way from a publisher to the subscribers.
///
/// Name and payload are shared, not owned: a producer that emits the same name (most do) or
/// the same payload many times clones two reference counts per event instead of copying
/// text and data. That matters beyond the copy: the event is freed on the dispatcher's
/// thread, and every allocation made on the producer's thread and freed on another contends
/// for the producer's allocator arena.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique within its event bus, increasing in acceptance order per publisher.
    pub id: u64,
    /// The dotted event name, e.g. `orchestration.tick`.
    pub name: Arc<str>,
    /// What the publisher attached.
    pub payload: Arc<Payload>,
    /// Who published it.
    pub source: EventSource,
    /// When the bus accepted it.
    pub published_at: SystemTime,
}

/// An event whose name and payload stay with the publisher's side of the bus, by reference:
/// the Ruby binding keeps them in a table of its own and only this small record travels
/// through `shared.ffi`. Whoever takes it from the channel hands `slot` back to that table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef {
    /// Unique within its event bus, like [`Event::id`].
    pub id: u64,
    /// Where the publisher's table holds the name and payload.
    pub slot: u32,
    /// When the bus accepted it.
    pub published_at: SystemTime,
}

/// What every channel of a registry carries: events on the event bus's channels, plain
/// values on the channels Ruby workers use directly.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A plain value, on the channels Ruby workers use directly.
    Value(Payload),
    /// An event carried whole: emitted by Rust code, so the dispatch side builds it anew.
    Event(Box<Event>),
    /// An event published by reference (see [`EventRef`]).
    Ref(EventRef),
}

/// Why an event name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event name {name:?}: {reason}")]
pub struct InvalidEventName {
    /// The refused name.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks an event name: dot-separated segments of printable, non-space characters,
/// none empty, no `*` (reserved for subscription patterns), at most [`MAX_NAME_BYTES`].
pub fn validate_name(name: &str) -> Result<(), InvalidEventName> {
    let refuse = |reason| {
        Err(InvalidEventName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse("it is longer than 255 bytes");
    }
    // One pass over the bytes (names are checked on every publish); only non-ASCII
    // characters are decoded for the Unicode whitespace check.
    let bytes = name.as_bytes();
    if bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' {
        return refuse("segments between dots must not be empty");
    }
    // The empty-segment check is part of the pass: at Rust producers' rates a substring
    // search for ".." cost more than the rest of an emit.
    let mut previous = 0u8;
    for &byte in bytes {
        match byte {
            b'.' if previous == b'.' => return refuse("segments between dots must not be empty"),
            b'*' => return refuse("`*` is reserved for subscription patterns"),
            b if b.is_ascii_whitespace() || b.is_ascii_control() => {
                return refuse("it contains whitespace or control characters")
            }
            _ => {}
        }
        previous = byte;
    }
    if !name.is_ascii() && name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("it contains whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_names() {
        for name in ["step.completed", "a", "channel.saturated", "x-1.y_2:z"] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_malformed_names_with_a_reason() {
        let cases = [
            ("", "it is empty"),
            ("a..b", "segments between dots must not be empty"),
            (".a", "segments between dots must not be empty"),
            ("a.", "segments between dots must not be empty"),
            ("a.*", "`*` is reserved for subscription patterns"),
            ("a b", "it contains whitespace or control characters"),
            ("a\nb", "it contains whitespace or control characters"),
            ("a\u{00a0}b", "it contains whitespace or control characters"),
            ("a*b.c", "`*` is reserved for subscription patterns"),
        ];
        for (name, reason) in cases {
            assert_eq!(validate_name(name).unwrap_err().reason, reason, "{name:?}");
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            validate_name(&long).unwrap_err().reason,
            "it is longer than 255 bytes"
        );
        assert_eq!(validate_name(&"a".repeat(MAX_NAME_BYTES)), Ok(()));
    }
}
