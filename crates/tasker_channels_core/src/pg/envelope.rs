//! The JSON envelope a forwarded event travels in, as a NOTIFY payload.
//!
//! Owns the wire format between processes: the envelope's fields (name, id, source, origin
//! pid and host, publish time, payload), the payload encoding that keeps what JSON alone
//! would lose (Symbol vs String keys and values, integers vs floats, non-finite floats), and
//! the size rule PostgreSQL imposes. It must never talk to a server, and decoding must never
//! panic on hostile input: anything unexpected is an error value.
//!
//! # Payload encoding
//!
//! - `nil`, booleans, integers, strings, arrays: plain JSON. Floats always carry a fraction
//!   or exponent (`1.0`), so they come back as floats.
//! - Hash keys: a Symbol key is written with a leading colon, as Ruby prints it
//!   (`{step_id: 1}` → `{":step_id":1}`); a String key is written as is
//!   (`{"step_id" => 1}` → `{"step_id":1}`), except that a String key starting with `:`, `$`
//!   or `\` gets one more `\` in front (`":x"` → `"\\:x"`). Key order is kept.
//! - Values JSON has no word for are one-key objects whose key starts with `$` (which no
//!   encoded hash key can): `{"$sym":"urgent"}` for the Symbol `:urgent`, `{"$float":"NaN"}`,
//!   `"Infinity"` or `"-Infinity"` for non-finite floats.
//!
//! The envelope: `{"tasker_event":1,"name":…,"id":…,"source":"ruby","pid":…,"host":…,
//! "published_at_ns":…,"payload":…}`, fields in that order. A notification whose payload
//! starts with `{"tasker_event":` is read as an envelope.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::EventSource;
use crate::payload::{Key, Payload, Timestamp, UtcOffset, MAX_DEPTH};

/// PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more ("payload string too long").
pub const MAX_NOTIFY_PAYLOAD_BYTES: usize = 7_999;

/// What every envelope starts with; a notification payload with this prefix is an envelope.
pub const ENVELOPE_PREFIX: &str = "{\"tasker_event\":";

/// The envelope format this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// Why an event cannot be forwarded, or an envelope not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The event is too large for one NOTIFY.
    #[error(
        "event {name:?} encodes to {bytes} bytes for NOTIFY, over PostgreSQL's limit of \
         {limit} bytes: send a key (an id to look the data up by) instead of the data"
    )]
    TooLarge {
        /// The event's name.
        name: String,
        /// Its encoded size.
        bytes: usize,
        /// The largest NOTIFY payload allowed.
        limit: usize,
    },
    /// The text could not be read as an envelope.
    #[error("not a forwarded event: {0}")]
    Malformed(String),
    /// The envelope names a format this build cannot read.
    #[error(
        "forwarded event format {found} is not supported (this build reads {ENVELOPE_VERSION})"
    )]
    UnsupportedVersion {
        /// The version the envelope names.
        found: u32,
    },
}

/// Where a forwarded event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The sending process's id.
    pub pid: u32,
    /// The sending machine's host name.
    pub host: String,
    /// The event's id in its own process.
    pub id: u64,
    /// The event's source in its own process.
    pub source: String,
    /// When its own bus accepted it.
    pub published_at: SystemTime,
}

/// A forwarded event as read from a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The event's name.
    pub name: String,
    /// Its payload, key kinds kept.
    pub payload: Payload,
    /// Where it came from.
    pub origin: Origin,
}

/// The name of the process's host, read once per process; `"unknown"` if it cannot be read.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
        // when the name fits, and the last byte is forced to NUL in case it did not.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
        if rc != 0 {
            return "unknown".to_owned();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    tasker_event: u32,
    name: &'a str,
    id: u64,
    source: &'a str,
    pid: u32,
    host: &'a str,
    published_at_ns: u64,
    payload: Encoded<'a>,
}

/// Encodes one event for NOTIFY, refusing it when the result would be over the limit.
pub fn encode(
    name: &str,
    id: u64,
    source: EventSource,
    published_at: SystemTime,
    payload: &Payload,
) -> Result<String, EnvelopeError> {
    let envelope = EnvelopeOut {
        tasker_event: ENVELOPE_VERSION,
        name,
        id,
        source: source.as_str(),
        pid: std::process::id(),
        host: host_name(),
        published_at_ns: nanos_since_epoch(published_at),
        payload: Encoded(payload),
    };
    let text = serde_json::to_string(&envelope)
        .map_err(|error| EnvelopeError::Malformed(error.to_string()))?;
    check_size(name, text.len())?;
    Ok(text)
}

/// Checks, before an event is accepted, that it will fit in a NOTIFY whatever id and time it
/// gets: encodes it with the widest id and timestamp. Returns the worst-case size.
pub fn check_forwardable(name: &str, payload: &Payload) -> Result<usize, EnvelopeError> {
    let widest = UNIX_EPOCH + Duration::from_nanos(u64::MAX);
    let text = serde_json::to_string(&EnvelopeOut {
        tasker_event: ENVELOPE_VERSION,
        name,
        id: u64::MAX,
        source: EventSource::Remote.as_str(),
        pid: u32::MAX,
        host: host_name(),
        published_at_ns: nanos_since_epoch(widest),
        payload: Encoded(payload),
    })
    .map_err(|error| EnvelopeError::Malformed(error.to_string()))?;
    check_size(name, text.len())?;
    Ok(text.len())
}

fn check_size(name: &str, bytes: usize) -> Result<(), EnvelopeError> {
    if bytes > MAX_NOTIFY_PAYLOAD_BYTES {
        return Err(EnvelopeError::TooLarge {
            name: name.chars().take(80).collect(),
            bytes,
            limit: MAX_NOTIFY_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

fn nanos_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// True when a notification payload is meant to be read as an envelope.
pub fn is_envelope(notification_payload: &str) -> bool {
    notification_payload.starts_with(ENVELOPE_PREFIX)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn {
    tasker_event: u32,
    name: String,
    id: u64,
    source: String,
    pid: u32,
    host: String,
    published_at_ns: u64,
    payload: Decoded,
}

/// Reads an envelope made by [`encode`] (in any process).
pub fn decode(text: &str) -> Result<Remote, EnvelopeError> {
    let envelope: EnvelopeIn = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(error) => {
            // A newer format is named as such, not reported as garbage.
            return Err(match version_of(text) {
                Some(found) if found != ENVELOPE_VERSION => {
                    EnvelopeError::UnsupportedVersion { found }
                }
                _ => EnvelopeError::Malformed(error.to_string()),
            });
        }
    };
    if envelope.tasker_event != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion {
            found: envelope.tasker_event,
        });
    }
    Ok(Remote {
        name: envelope.name,
        payload: envelope.payload.0,
        origin: Origin {
            pid: envelope.pid,
            host: envelope.host,
            id: envelope.id,
            source: envelope.source,
            published_at: UNIX_EPOCH + Duration::from_nanos(envelope.published_at_ns),
        },
    })
}

fn version_of(text: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    u32::try_from(value.get("tasker_event")?.as_u64()?).ok()
}

/// Serializes a payload in the encoding described in the module docs.
struct Encoded<'a>(&'a Payload);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Payload::Nil => serializer.serialize_unit(),
            Payload::Bool(b) => serializer.serialize_bool(*b),
            Payload::Int(i) => serializer.serialize_i64(*i),
            Payload::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Payload::Float(f) => {
                let word = if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("$float", word)?;
                map.end()
            }
            Payload::String(s) => serializer.serialize_str(s),
            Payload::Symbol(s) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("$sym", s)?;
                map.end()
            }
            Payload::Time(time) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("$time", &encode_time(time))?;
                map.end()
            }
            Payload::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Encoded(item))?;
                }
                seq.end()
            }
            Payload::Hash(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(&encode_key(key), &Encoded(value))?;
                }
                map.end()
            }
        }
    }
}

/// `seconds.nanoseconds` (nine digits) then `Z` for UTC or `@` and the offset in seconds
/// east: `"1700000000.000000001Z"`, `"1700000000.500000000@3600"`.
fn encode_time(time: &Timestamp) -> String {
    let zone = match time.offset() {
        UtcOffset::Utc => "Z".to_owned(),
        UtcOffset::Seconds(east) => format!("@{east}"),
    };
    format!("{}.{:09}{zone}", time.seconds(), time.nanoseconds())
}

fn decode_time(word: &str) -> Option<Timestamp> {
    let (instant, offset) = match word.strip_suffix('Z') {
        Some(instant) => (instant, UtcOffset::Utc),
        None => {
            let (instant, east) = word.split_once('@')?;
            (instant, UtcOffset::Seconds(east.parse().ok()?))
        }
    };
    let (seconds, nanoseconds) = instant.split_once('.')?;
    if nanoseconds.len() != 9 {
        return None;
    }
    Timestamp::new(seconds.parse().ok()?, nanoseconds.parse().ok()?, offset).ok()
}

fn encode_key(key: &Key) -> String {
    match key {
        Key::Symbol(name) => format!(":{name}"),
        Key::String(name) if name.starts_with([':', '$', '\\']) => format!("\\{name}"),
        Key::String(name) => name.clone(),
    }
}

fn decode_key(encoded: String) -> Result<Key, String> {
    if let Some(name) = encoded.strip_prefix(':') {
        return Ok(Key::Symbol(name.to_owned()));
    }
    if let Some(name) = encoded.strip_prefix('\\') {
        return Ok(Key::String(name.to_owned()));
    }
    if encoded.starts_with('$') {
        return Err(format!(
            "hash key {encoded:?} is reserved (a `$` tag must be an object's only key)"
        ));
    }
    Ok(Key::String(encoded))
}

/// A payload read back from the encoding, nested at most [`MAX_DEPTH`] deep.
struct Decoded(Payload);

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PayloadSeed { depth: 0 }
            .deserialize(deserializer)
            .map(Decoded)
    }
}

#[derive(Clone, Copy)]
struct PayloadSeed {
    depth: usize,
}

impl PayloadSeed {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "the payload nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(PayloadSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Payload, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an encoded payload value")
    }

    fn visit_unit<E>(self) -> Result<Payload, E> {
        Ok(Payload::Nil)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Payload, E> {
        Ok(Payload::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Payload, E> {
        Ok(Payload::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Payload, E> {
        i64::try_from(v)
            .map(Payload::Int)
            .map_err(|_| E::custom(format!("integer {v} is outside the 64-bit signed range")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Payload, E> {
        Ok(Payload::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Payload, E> {
        Ok(Payload::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Payload, E> {
        Ok(Payload::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Payload::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        let inner = self.nested()?;
        let mut entries: Vec<(Key, Payload)> = Vec::new();
        while let Some(encoded) = map.next_key::<String>()? {
            if entries.is_empty() && encoded.starts_with('$') {
                return finish_tag(&encoded, &mut map);
            }
            let key = decode_key(encoded).map_err(de::Error::custom)?;
            let value = map.next_value_seed(inner)?;
            entries.push((key, value));
        }
        Ok(Payload::Hash(entries))
    }
}

fn finish_tag<'de, A: MapAccess<'de>>(tag: &str, map: &mut A) -> Result<Payload, A::Error> {
    let word: String = map.next_value()?;
    if map.next_key::<de::IgnoredAny>()?.is_some() {
        return Err(de::Error::custom(format!(
            "tag {tag:?} must be its object's only key"
        )));
    }
    match tag {
        "$sym" => Ok(Payload::Symbol(word)),
        "$time" => decode_time(&word).map(Payload::Time).ok_or_else(|| {
            de::Error::custom(format!(
                "bad $time value {word:?} (expected seconds.nanoseconds then Z or an offset in seconds)"
            ))
        }),
        "$float" => match word.as_str() {
            "NaN" => Ok(Payload::Float(f64::NAN)),
            "Infinity" => Ok(Payload::Float(f64::INFINITY)),
            "-Infinity" => Ok(Payload::Float(f64::NEG_INFINITY)),
            other => Err(de::Error::custom(format!("unknown $float value {other:?}"))),
        },
        other => Err(de::Error::custom(format!(
            "unknown tag {other:?} (this build knows $sym, $time and $float)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload::Hash(vec![
            (Key::Symbol("step_id".into()), Payload::Int(1)),
            (
                Key::String("label".into()),
                Payload::Symbol("urgent".into()),
            ),
            (Key::Symbol("ratio".into()), Payload::Float(0.5)),
            (Key::Symbol("whole".into()), Payload::Float(2.0)),
            (Key::String(":looks_like_symbol".into()), Payload::Nil),
            (Key::String("$dollar".into()), Payload::Bool(true)),
            (Key::String("\\slash".into()), Payload::Bool(false)),
            (Key::Symbol("".into()), Payload::Symbol("".into())),
            (Key::String("".into()), Payload::String("".into())),
            (
                Key::Symbol("nested".into()),
                Payload::Array(vec![
                    Payload::Hash(vec![(Key::String("a".into()), Payload::Int(-7))]),
                    Payload::Float(f64::INFINITY),
                    Payload::Float(f64::NEG_INFINITY),
                    Payload::Int(i64::MIN),
                    Payload::Int(i64::MAX),
                    Payload::String("ünï \"quoted\" \u{0}".into()),
                    Payload::Time(Timestamp::new(1_700_000_000, 1, UtcOffset::Utc).unwrap()),
                    Payload::Time(
                        Timestamp::new(-2, 500_000_000, UtcOffset::Seconds(-3600)).unwrap(),
                    ),
                ]),
            ),
        ])
    }

    #[test]
    fn key_kinds_values_and_order_survive_the_round_trip() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let text = encode("step.completed", 42, EventSource::Ruby, at, &sample()).unwrap();
        assert!(is_envelope(&text), "{text}");
        assert!(text.contains(r#"":step_id":1"#), "{text}");
        assert!(text.contains(r#""label":{"$sym":"urgent"}"#), "{text}");
        assert!(text.contains(r#""\\:looks_like_symbol":null"#), "{text}");
        assert!(text.contains(r#"":whole":2.0"#), "{text}");
        let remote = decode(&text).unwrap();
        assert_eq!(remote.name, "step.completed");
        assert_eq!(remote.payload, sample());
        assert_eq!(remote.origin.id, 42);
        assert_eq!(remote.origin.pid, std::process::id());
        assert_eq!(remote.origin.host, host_name());
        assert_eq!(remote.origin.source, "ruby");
        assert_eq!(remote.origin.published_at, at);
    }

    #[test]
    fn nan_survives_as_nan() {
        let payload = Payload::symbol_hash([("x", Payload::Float(f64::NAN))]);
        let text = encode("n", 1, EventSource::Rust, SystemTime::now(), &payload).unwrap();
        match decode(&text).unwrap().payload.get("x") {
            Some(Payload::Float(f)) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payloads_over_the_notify_limit_are_refused_with_their_size() {
        let big = |len| Payload::symbol_hash([("blob", Payload::String("x".repeat(len)))]);
        let ok = check_forwardable("e", &big(7_000)).unwrap();
        assert!(ok <= MAX_NOTIFY_PAYLOAD_BYTES);
        let error = check_forwardable("e", &big(8_000)).unwrap_err();
        match &error {
            EnvelopeError::TooLarge { bytes, limit, .. } => {
                assert!(*bytes > 8_000);
                assert_eq!(*limit, MAX_NOTIFY_PAYLOAD_BYTES);
            }
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().contains("over PostgreSQL's limit"));
        // The worst-case check is never looser than the real encoding.
        for len in (7_500..7_999).step_by(7) {
            let payload = big(len);
            let checked = check_forwardable("e", &payload).is_ok();
            let encoded = encode("e", 9, EventSource::Ruby, SystemTime::now(), &payload).is_ok();
            assert!(!checked || encoded, "{len}");
        }
    }

    #[test]
    fn hostile_envelopes_are_errors_not_panics() {
        let cases = [
            "{\"tasker_event\":",
            "{\"tasker_event\":1}",
            "{\"tasker_event\":\"1\"}",
            "[1,2]",
            r#"{"tasker_event":1,"name":"a","id":1,"source":"ruby","pid":1,"host":"h","published_at_ns":0,"payload":{"$nope":1}}"#,
            r#"{"tasker_event":1,"name":"a","id":1,"source":"ruby","pid":1,"host":"h","published_at_ns":0,"payload":{"$sym":"a","b":1}}"#,
            r#"{"tasker_event":1,"name":"a","id":1,"source":"ruby","pid":1,"host":"h","published_at_ns":0,"payload":{"a":1,"$sym":"x"}}"#,
            r#"{"tasker_event":1,"name":"a","id":1,"source":"ruby","pid":1,"host":"h","published_at_ns":0,"payload":18446744073709551615}"#,
            r#"{"tasker_event":1,"name":"a","id":1,"source":"ruby","pid":1,"host":"h","published_at_ns":0,"payload":1,"extra":2}"#,
        ];
        for case in cases {
            assert!(decode(case).is_err(), "{case}");
        }
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        let text = format!(
            r#"{{"tasker_event":1,"name":"a","id":1,"source":"ruby","pid":1,"host":"h","published_at_ns":0,"payload":{deep}}}"#
        );
        assert!(decode(&text).unwrap_err().to_string().contains("deeper"));
        assert_eq!(
            decode(r#"{"tasker_event":2,"name":"a"}"#),
            Err(EnvelopeError::UnsupportedVersion { found: 2 })
        );
    }
}
