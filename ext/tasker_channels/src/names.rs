//! Event names as `publish` takes them: checked against the naming rules once, interned once.
//!
//! Owns turning the name a publisher passes (a String or Symbol, frozen or not) into the
//! interned, frozen String handlers receive, and a small cache of the names a runtime has
//! already seen, so a repeated name costs a hash and a comparison instead of a validation and
//! an intern-table lookup. The cache is direct-mapped and fixed in size (it never grows with
//! load); the runtime's mark function pins the Strings it holds. It must never let an invalid
//! name through, and never call Ruby while it holds the cache.

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{gc, prelude::*, value::Opaque, Error, RString, Ruby, Symbol, Value};
use tasker_channels_core::event::validate_name;

use crate::gvl_cell::GvlCell;

const WAYS: usize = 64;

struct Seen {
    bytes: Box<[u8]>,
    /// ASCII bytes mean the same name in any ASCII-compatible encoding; other names were
    /// accepted as UTF-8 and match only a UTF-8 (or US-ASCII) String.
    ascii: bool,
    name: Opaque<Value>,
}

pub struct NameCache {
    ways: GvlCell<Vec<Option<Seen>>>,
    /// The interned name `resolve` returned last. A publisher passing that very object again
    /// (a frozen literal is the interned String itself) gets it back without hashing: it is
    /// marked here, so no other object can have its address, and it is frozen, so its text
    /// is still the text that was checked.
    last: GvlCell<Option<Opaque<Value>>>,
}

impl Default for NameCache {
    fn default() -> Self {
        NameCache {
            ways: GvlCell::new((0..WAYS).map(|_| None).collect()),
            last: GvlCell::new(None),
        }
    }
}

impl NameCache {
    pub fn mark(&self, marker: &gc::Marker) {
        self.ways.with(|ways| {
            for seen in ways.iter().flatten() {
                marker.mark(seen.name);
            }
        });
        if let Some(last) = self.last.with(|last| *last) {
            marker.mark(last);
        }
    }

    /// The interned name handlers get for `name`; `ArgumentError`/`TypeError` for a name
    /// that breaks the rules.
    #[inline]
    pub fn resolve(&self, ruby: &Ruby, name: Value) -> Result<Value, Error> {
        let text = if let Some(symbol) = Symbol::from_value(name) {
            // SAFETY: GVL held; a Symbol's name is an interned frozen String.
            unsafe { Value::from_raw(rb_sys::rb_sym2str(symbol.as_raw())) }
        } else if RString::from_value(name).is_some() {
            name
        } else {
            return Err(Error::new(
                ruby.exception_type_error(),
                format!("event name must be a String or Symbol, got {}", unsafe {
                    name.classname()
                }),
            ));
        };
        let same_as_last = self
            .last
            .with(|last| last.is_some_and(|last| ruby.get_inner(last).as_raw() == text.as_raw()));
        if same_as_last {
            return Ok(text);
        }
        // SAFETY: `text` is a live String on this frame; no Ruby call while its bytes are used.
        let bytes = unsafe { string_bytes(text) };
        let way = way_of(bytes);
        let hit = self.ways.with(|ways| match &ways[way] {
            Some(seen) if &*seen.bytes == bytes && (seen.ascii || utf8_labelled(text)) => {
                Some(seen.name)
            }
            _ => None,
        });
        if let Some(hit) = hit {
            self.last.with(|last| *last = Some(hit));
            return Ok(ruby.get_inner(hit));
        }
        let interned = checked_interned(ruby, text)?;
        // SAFETY: as above, for the interned copy.
        let bytes: Box<[u8]> = unsafe { string_bytes(interned) }.into();
        let ascii = bytes.is_ascii();
        self.ways.with(|ways| {
            ways[way] = Some(Seen {
                bytes,
                ascii,
                name: interned.into(),
            })
        });
        self.last.with(|last| *last = Some(interned.into()));
        Ok(interned)
    }
}

/// Validates `text` and returns its interned frozen copy (itself when already interned).
fn checked_interned(ruby: &Ruby, text: Value) -> Result<Value, Error> {
    // SAFETY: as in `resolve`; the check runs before any Ruby call.
    let bytes = unsafe { string_bytes(text) };
    let valid = std::str::from_utf8(bytes)
        .ok()
        .filter(|name| utf8_labelled(text) || name.is_ascii())
        .ok_or_else(|| {
            Error::new(
                ruby.exception_arg_error(),
                "event name must be a valid UTF-8 String (or ASCII in any encoding)",
            )
        })?;
    validate_name(valid)
        .map_err(|invalid| Error::new(ruby.exception_arg_error(), invalid.to_string()))?;
    // SAFETY: GVL held; `text` is a live String.
    Ok(unsafe { Value::from_raw(rb_sys::rb_str_to_interned_str(text.as_raw())) })
}

fn way_of(bytes: &[u8]) -> usize {
    (text_hash(bytes) as usize) % WAYS
}

/// FNV-1a: a few cycles per byte for names of a few dozen bytes; what the extension's small
/// direct-mapped caches index by.
pub fn text_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn utf8_labelled(text: Value) -> bool {
    // SAFETY: GVL held; reads the String's encoding index.
    unsafe {
        let index = rb_sys::rb_enc_get_index(text.as_raw());
        index == rb_sys::rb_utf8_encindex() || index == rb_sys::rb_usascii_encindex()
    }
}

/// The bytes of a String.
///
/// # Safety
/// GVL held, `text` a live String, and the slice not used across a call into Ruby.
pub unsafe fn string_bytes<'a>(text: Value) -> &'a [u8] {
    let raw = text.as_raw();
    let len = rb_sys::RSTRING_LEN(raw) as usize;
    if len == 0 {
        // The pointer of an empty String may be anything; never build a slice from it.
        return &[];
    }
    std::slice::from_raw_parts(rb_sys::RSTRING_PTR(raw).cast::<u8>(), len)
}
