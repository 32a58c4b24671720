//! Event payloads as Rust-owned plain data.
//!
//! Owns the value model that crosses between Ruby and Rust (nil, booleans, 64-bit integers,
//! floats, UTF-8 strings, symbols, points in time, arrays, and hashes whose keys are strings
//! or symbols) and its structural limits. It must never hold a Ruby object or a reference into one: payloads
//! are copied in on publish and copied out on delivery.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The deepest nesting a payload may have; deeper input is rejected as malformed.
pub const MAX_DEPTH: usize = 64;

/// A plain-data value carried by an event or pushed through a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Ruby's `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// A symbol, by name.
    Symbol(String),
    /// A point in time (Ruby's `Time`), with the UTC offset it was expressed in.
    Time(Timestamp),
    /// An array.
    Array(Vec<Payload>),
    /// Entries in insertion order; key kinds (string or symbol) are kept.
    Hash(Vec<(Key, Payload)>),
}

/// A point in time to the nanosecond, and the offset from UTC it was written in: what a
/// Ruby `Time` carries across, so that the instant, `Time#nsec`, `Time#utc_offset` and
/// `Time#utc?` survive the trip. A zone's name and rules (`"CET"`, daylight saving) are not
/// kept: a local time comes back with its fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    seconds: i64,
    nanoseconds: u32,
    offset: UtcOffset,
}

/// How a [`Timestamp`] is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UtcOffset {
    /// In UTC (Ruby's `Time#utc?`).
    Utc,
    /// At a fixed number of seconds east of UTC (Ruby's `Time#utc_offset`), within
    /// [`MAX_UTC_OFFSET_SECONDS`] either way. Zero is "+00:00", not UTC.
    Seconds(i32),
}

/// The largest offset from UTC a [`Timestamp`] may carry: one day, as Ruby allows.
pub const MAX_UTC_OFFSET_SECONDS: i32 = 86_400;

/// Why a [`Timestamp`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTimestamp {
    /// The nanoseconds were out of range.
    #[error("nanoseconds must be below 1_000_000_000, got {0}")]
    Nanoseconds(u32),
    /// The UTC offset was out of range.
    #[error("a UTC offset must be within {MAX_UTC_OFFSET_SECONDS} seconds either way, got {0}")]
    Offset(i32),
}

impl Timestamp {
    /// `seconds` since the Unix epoch plus `nanoseconds` (below one second), expressed at
    /// `offset`. Times before the epoch have negative `seconds` and positive `nanoseconds`
    /// (-1.5 s is -2 s + 500,000,000 ns), as Ruby's `Time#to_i` and `Time#nsec` give them.
    pub fn new(
        seconds: i64,
        nanoseconds: u32,
        offset: UtcOffset,
    ) -> Result<Self, InvalidTimestamp> {
        if nanoseconds >= 1_000_000_000 {
            return Err(InvalidTimestamp::Nanoseconds(nanoseconds));
        }
        if let UtcOffset::Seconds(east) = offset {
            if east.unsigned_abs() > MAX_UTC_OFFSET_SECONDS.unsigned_abs() {
                return Err(InvalidTimestamp::Offset(east));
            }
        }
        Ok(Timestamp {
            seconds,
            nanoseconds,
            offset,
        })
    }

    /// Seconds since the Unix epoch, rounded down.
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// Nanoseconds past [`Timestamp::seconds`], below 1,000,000,000.
    pub fn nanoseconds(&self) -> u32 {
        self.nanoseconds
    }

    /// The UTC offset the time was expressed in.
    pub fn offset(&self) -> UtcOffset {
        self.offset
    }
}

impl From<SystemTime> for Timestamp {
    /// In UTC. Saturates at the ends of the `i64` seconds range, some 292 billion years out.
    fn from(time: SystemTime) -> Self {
        let (seconds, nanoseconds) = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => (
                i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                after.subsec_nanos(),
            ),
            Err(before) => {
                let before = before.duration();
                // Round down to whole seconds, then count the nanoseconds forwards from there.
                let whole = before.as_secs() + u64::from(before.subsec_nanos() > 0);
                let rest = Duration::from_secs(whole) - before;
                (
                    i64::try_from(whole).map_or(i64::MIN, |whole| -whole),
                    rest.subsec_nanos(),
                )
            }
        };
        Timestamp {
            seconds,
            nanoseconds,
            offset: UtcOffset::Utc,
        }
    }
}

/// A hash key, remembering whether it was a string or a symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A string key.
    String(String),
    /// A symbol key, by name.
    Symbol(String),
}

impl Key {
    /// The key's text, whatever its kind.
    pub fn as_str(&self) -> &str {
        match self {
            Key::String(s) | Key::Symbol(s) => s,
        }
    }
}

impl fmt::Display for Key {
    /// Written as Ruby would index it: `:user` or `"user"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Symbol(s) => write!(f, ":{s}"),
            Key::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl Payload {
    /// An empty hash, the payload of an event published without one.
    pub fn empty_hash() -> Self {
        Payload::Hash(Vec::new())
    }

    /// A hash with symbol keys, the shape of the events Rust emits.
    pub fn symbol_hash<I, K>(entries: I) -> Self
    where
        I: IntoIterator<Item = (K, Payload)>,
        K: Into<String>,
    {
        Payload::Hash(
            entries
                .into_iter()
                .map(|(k, v)| (Key::Symbol(k.into()), v))
                .collect(),
        )
    }

    /// Looks a key up in a hash payload by name, whatever its kind.
    pub fn get(&self, name: &str) -> Option<&Payload> {
        match self {
            Payload::Hash(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == name)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Nesting depth: 0 for a scalar, 1 for a flat array or hash.
    pub fn depth(&self) -> usize {
        match self {
            Payload::Array(items) => 1 + items.iter().map(Payload::depth).max().unwrap_or(0),
            Payload::Hash(entries) => 1 + entries.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }
}

impl From<bool> for Payload {
    fn from(v: bool) -> Self {
        Payload::Bool(v)
    }
}
impl From<i64> for Payload {
    fn from(v: i64) -> Self {
        Payload::Int(v)
    }
}
impl From<u64> for Payload {
    /// Saturates at `i64::MAX`: counters never get near it, and a payload integer is an i64.
    fn from(v: u64) -> Self {
        Payload::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Payload {
    fn from(v: usize) -> Self {
        Payload::from(v as u64)
    }
}
impl From<f64> for Payload {
    fn from(v: f64) -> Self {
        Payload::Float(v)
    }
}
impl From<&str> for Payload {
    fn from(v: &str) -> Self {
        Payload::String(v.to_owned())
    }
}
impl From<String> for Payload {
    fn from(v: String) -> Self {
        Payload::String(v)
    }
}

impl From<Timestamp> for Payload {
    fn from(v: Timestamp) -> Self {
        Payload::Time(v)
    }
}
impl From<SystemTime> for Payload {
    fn from(v: SystemTime) -> Self {
        Payload::Time(Timestamp::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(Payload::Int(1).depth(), 0);
        assert_eq!(Payload::Array(vec![]).depth(), 1);
        let nested = Payload::symbol_hash([("a", Payload::Array(vec![Payload::Nil]))]);
        assert_eq!(nested.depth(), 2);
    }

    #[test]
    fn get_finds_string_and_symbol_keys() {
        let hash = Payload::Hash(vec![
            (Key::String("a".into()), Payload::Int(1)),
            (Key::Symbol("b".into()), Payload::Int(2)),
        ]);
        assert_eq!(hash.get("a"), Some(&Payload::Int(1)));
        assert_eq!(hash.get("b"), Some(&Payload::Int(2)));
        assert_eq!(hash.get("c"), None);
        assert_eq!(Payload::Nil.get("a"), None);
    }

    #[test]
    fn keys_display_as_ruby_index() {
        assert_eq!(Key::Symbol("user".into()).to_string(), ":user");
        assert_eq!(Key::String("user".into()).to_string(), "\"user\"");
    }

    #[test]
    fn timestamps_check_their_parts() {
        let noon = Timestamp::new(1_700_000_000, 5, UtcOffset::Seconds(3600)).unwrap();
        assert_eq!(
            (noon.seconds(), noon.nanoseconds(), noon.offset()),
            (1_700_000_000, 5, UtcOffset::Seconds(3600))
        );
        assert_eq!(
            Timestamp::new(0, 1_000_000_000, UtcOffset::Utc),
            Err(InvalidTimestamp::Nanoseconds(1_000_000_000))
        );
        for east in [-86_400, 86_400] {
            assert!(Timestamp::new(0, 0, UtcOffset::Seconds(east)).is_ok());
        }
        for east in [-86_401, 86_401, i32::MIN] {
            assert_eq!(
                Timestamp::new(0, 0, UtcOffset::Seconds(east)),
                Err(InvalidTimestamp::Offset(east))
            );
        }
        assert_eq!(Payload::from(noon).depth(), 0);
    }

    #[test]
    fn system_times_become_utc_timestamps_on_both_sides_of_the_epoch() {
        let after = UNIX_EPOCH + Duration::new(12, 345);
        assert_eq!(
            Timestamp::from(after),
            Timestamp::new(12, 345, UtcOffset::Utc).unwrap()
        );
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(
            Timestamp::from(before),
            Timestamp::new(-2, 500_000_000, UtcOffset::Utc).unwrap()
        );
        let whole = UNIX_EPOCH - Duration::from_secs(3);
        assert_eq!(
            Payload::from(whole),
            Payload::Time(Timestamp::new(-3, 0, UtcOffset::Utc).unwrap())
        );
    }

    #[test]
    fn large_unsigned_saturates() {
        assert_eq!(Payload::from(u64::MAX), Payload::Int(i64::MAX));
    }
}
