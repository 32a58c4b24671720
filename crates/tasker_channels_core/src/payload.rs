//! Event payloads as Rust-owned plain data.
//!
//! Owns the value model that crosses between Ruby and Rust (nil, booleans, 64-bit integers,
//! floats, UTF-8 strings, symbols, arrays, and hashes whose keys are strings or symbols) and
//! its structural limits. It must never hold a Ruby object or a reference into one: payloads
//! are copied in on publish and copied out on delivery.

use std::fmt;

/// The deepest nesting a payload may have; deeper input is rejected as malformed.
pub const MAX_DEPTH: usize = 64;

/// A plain-data value carried by an event or pushed through a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Symbol(String),
    Array(Vec<Payload>),
    /// Entries in insertion order; key kinds (string or symbol) are kept.
    Hash(Vec<(Key, Payload)>),
}

/// A hash key, remembering whether it was a string or a symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    String(String),
    Symbol(String),
}

impl Key {
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
    fn large_unsigned_saturates() {
        assert_eq!(Payload::from(u64::MAX), Payload::Int(i64::MAX));
    }
}
