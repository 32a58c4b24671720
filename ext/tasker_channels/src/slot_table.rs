//! The slot table: where Ruby-published events wait, by reference, while their index
//! crosses the bus.
//!
//! Owns a Ruby Array holding `[name, payload]` pairs (slot `i` at `2i` and `2i + 1`) and the
//! free list of slot indices. The runtime's mark function pins the Array, and the Array marks
//! (and lets compaction move) the names and payloads itself, so the only thing that travels
//! through Rust channels is a `u32`. It must never be touched without the GVL, never hold
//! more slots than its limit, and never keep a slot after its event was delivered, refused
//! or left behind by a fork.

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{gc, prelude::*, value::Opaque, RArray, Ruby, Value};
use tasker_channels_core::EventBus;

use crate::gvl_cell::GvlCell;

/// Identifies `bus` for the slot table: each slot remembers the bus it was held for, and a
/// forked child's bus is a different one.
pub fn bus_key(bus: &EventBus) -> usize {
    bus as *const EventBus as usize
}

pub struct SlotTable {
    array: Opaque<RArray>,
    state: GvlCell<Slots>,
}

struct Slots {
    /// Indices below `allocated` that are free, most recently freed last (reused first, so
    /// the table stays as small as the occupancy it has seen).
    free: Vec<u32>,
    allocated: u32,
    limit: u32,
    /// Identifies the bus the held events were published into; a different bus (a forked
    /// child's) means every slot belongs to events this process will never deliver.
    bus: usize,
}

impl SlotTable {
    /// A table that never holds more than `limit` events. The Array starts empty and grows
    /// with occupancy.
    pub fn new(ruby: &Ruby, limit: usize) -> Self {
        let array = ruby.ary_new();
        // Every publish stores a young payload into this long-lived Array, and through the
        // write barrier each store cost about as much as the rest of the slot's work. A
        // WB-unprotected Array is instead rescanned by every minor GC (a few thousand
        // entries at most, since the table is bounded) and may be written without barrier.
        // SAFETY: GVL held; `array` is a live Array this table alone writes to.
        unsafe { rb_sys::rb_gc_writebarrier_unprotect(array.as_raw()) };
        SlotTable {
            array: array.into(),
            state: GvlCell::new(Slots {
                free: Vec::new(),
                allocated: 0,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                bus: 0,
            }),
        }
    }

    pub fn mark(&self, marker: &gc::Marker) {
        marker.mark(self.array);
    }

    /// Keeps `name` and `payload` and returns their slot, or `None` when the table is at its
    /// limit. `bus` identifies the bus the event goes into (see [`Slots::bus`]).
    #[inline]
    pub fn hold(&self, ruby: &Ruby, bus: usize, name: Value, payload: Value) -> Option<u32> {
        let array = ruby.get_inner(self.array);
        let slot = self.state.with(|slots| {
            if slots.bus != bus {
                // Only a fork changes the bus: the parent's events stay in the parent.
                slots.free.clear();
                slots.allocated = 0;
                slots.bus = bus;
                return Err(true);
            }
            match slots.free.pop() {
                Some(slot) => Ok(slot),
                None if slots.allocated < slots.limit => {
                    slots.allocated += 1;
                    Ok(slots.allocated - 1)
                }
                None => Err(false),
            }
        });
        let slot = match slot {
            Ok(slot) => slot,
            Err(true) => {
                // Outside the cell: clearing the Array is a Ruby call.
                array.clear().ok()?;
                return self.hold(ruby, bus, name, payload);
            }
            Err(false) => return None,
        };
        let at = 2 * slot as isize;
        if at + 1 < array_len(array) {
            // A reused slot: write in place, skipping the checks `store` makes for growth.
            // SAFETY: GVL held; the Array is ours, neither frozen nor shared, and `at + 1`
            // is within its length.
            unsafe {
                write_unbarriered(array, at, name);
                write_unbarriered(array, at + 1, payload);
            }
        } else {
            // Payload first, so the Array grows once when a new slot is appended.
            array.store(at + 1, payload).ok()?;
            array.store(at, name).ok()?;
        }
        Some(slot)
    }

    /// The name and payload in `slot`.
    #[inline]
    pub fn get(&self, ruby: &Ruby, slot: u32) -> (Value, Value) {
        let array = ruby.get_inner(self.array);
        let at = 2 * slot as isize;
        if at + 1 >= array_len(array) {
            // Only a slot dropped by a fork's reset can be out of range.
            return (ruby.qnil().as_value(), ruby.qnil().as_value());
        }
        // SAFETY: GVL held; `at + 1` is within the Array's length.
        unsafe {
            (
                Value::from_raw(rb_sys::RARRAY_AREF(array.as_raw(), at)),
                Value::from_raw(rb_sys::RARRAY_AREF(array.as_raw(), at + 1)),
            )
        }
    }

    /// Lets go of `slot`'s name and payload and makes it free for the next event.
    #[inline]
    pub fn release(&self, ruby: &Ruby, bus: usize, slot: u32) {
        // A slot of a bus from before a fork was already dropped with the rest, and its index
        // may hold a child's event by now (a publish that waited across a fork, in a trap
        // handler, gives up in the child): leave it alone.
        let current = self.state.with(|slots| {
            let current = slots.bus == bus && slot < slots.allocated;
            if current {
                slots.free.push(slot);
            }
            current
        });
        if !current {
            return;
        }
        let array = ruby.get_inner(self.array);
        let at = 2 * slot as isize;
        if at + 1 < array_len(array) {
            let nil = ruby.qnil().as_value();
            // SAFETY: as in `hold`.
            unsafe {
                write_unbarriered(array, at, nil);
                write_unbarriered(array, at + 1, nil);
            }
        }
    }

    /// How many slots hold an event right now.
    pub fn occupied(&self) -> usize {
        self.state
            .with(|slots| slots.allocated as usize - slots.free.len())
    }
}

/// Stores `value` at `at` of the table's Array without the GC's write barrier, which a
/// WB-unprotected object does not need (see [`SlotTable::new`]).
///
/// # Safety
/// GVL held; `array` is the table's WB-unprotected Array and `at` is within its length. The
/// storage is looked up here, after any allocation that may have moved it.
#[inline]
unsafe fn write_unbarriered(array: RArray, at: isize, value: Value) {
    let storage = rb_sys::RARRAY_CONST_PTR(array.as_raw()).cast_mut();
    *storage.offset(at) = value.as_raw();
}

/// The Array's length, read in place: magnus' `RArray::len` is a call across crates on
/// every publish and every release when the build does no cross-crate inlining.
#[inline(always)]
fn array_len(array: RArray) -> isize {
    // SAFETY: GVL held (every caller); `array` is a live Array.
    unsafe { rb_sys::RARRAY_LEN(array.as_raw()) as isize }
}
