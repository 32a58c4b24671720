//! Conversions between Ruby values and the core's values, one file per kind of value.
//!
//! - [`payload`]: event payloads both ways, by the plain-data rules of the Ruby API.
//! - [`event`]: `Tasker::Channels::Event` objects, interned names and source symbols on the
//!   dispatch side, and the name and payload of an event Ruby hands to Rust.
//! - [`stats`]: the Hashes `stats` methods return (bus, channel, listener, forwarder).
//! - [`config`]: a loaded configuration's TOML values and channel specs.
//!
//! Everything here runs on a Ruby thread holding the GVL and builds or reads values only: it
//! must never decide anything about the bus, never keep a Ruby object past the call, and
//! never translate an error (that is `crate::errors`).

pub mod config;
pub mod event;
pub mod payload;
pub mod stats;

use rb_sys::VALUE;

/// Freezes `object`, whose class is `class` (never a singleton class). On Ruby 3.1 that is
/// what `rb_obj_freeze` does for such an object, set the flag, without its two calls into
/// libruby; from 3.2 freezing also moves the object to a frozen shape, so it takes the call.
///
/// # Safety
/// GVL held; `object` is a live heap object whose class is exactly `class`.
#[inline]
pub unsafe fn freeze_instance_of(object: VALUE, class: VALUE) {
    let basic = object as *mut rb_sys::RBasic;
    let flag_is_enough = rb_sys::RUBY_API_VERSION_MAJOR == 3 && rb_sys::RUBY_API_VERSION_MINOR == 1;
    if flag_is_enough && (*basic).klass == class {
        (*basic).flags |= rb_sys::ruby_fl_type::RUBY_FL_FREEZE as VALUE;
    } else {
        rb_sys::rb_obj_freeze(object);
    }
}
