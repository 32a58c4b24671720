//! The dispatch loop's delivery step: a batch taken from the bus, run through the matching
//! handlers on this Ruby thread.
//!
//! Owns turning each message into what handlers get (`(name, payload)` straight from the
//! slot table, or an `Event` built at most once, only when a one-parameter handler wants
//! it), calling every handler under `rb_protect`, sending handler failures to the runtime's
//! error handler, counting the outcome, and — when something unwinds the thread (a kill, a
//! `throw`, `exit`, a signal) — handing the rest of the batch back to the bus, in order,
//! before letting the unwind continue. It must never lose a taken event, never keep a slot
//! after its event was delivered, and never call a handler of a stale subscription table.

use std::sync::Arc;

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{prelude::*, Error, Ruby, Value};
use tasker_channels_core::{EventBus, EventSource, Message};

use crate::conversion::event::{self as event_object, EventFields};
use crate::conversion::payload as payload_conversion;
use crate::slot_table::{self, SlotTable};
use crate::subscribers::{List, Shape, Subscribers};

/// What delivering needs of its runtime: where published payloads wait, and who subscribed.
pub struct Tables<'a> {
    pub slots: &'a SlotTable,
    pub subscribers: &'a Subscribers,
}

#[derive(Default)]
struct Counts {
    delivered: u64,
    unmatched: u64,
    handler_errors: u64,
}

/// Where a batch's matching stands: the subscription table in use, and the previous
/// event's name and matches (a batch mostly repeats a name, and an interned name is the same
/// object each time). The remembered name stays referenced from this stack frame, so the GC
/// can neither free nor move it meanwhile.
struct Cursor {
    list: Arc<List>,
    last: Option<LastMatch>,
    /// The previous Rust event's name and its interned String.
    last_rust_name: Option<(Arc<str>, Value)>,
}

struct LastMatch {
    name: Value,
    generation: u64,
    matches: Arc<[u32]>,
}

/// Delivers `batch` (taken from `bus`); returns how many events reached a handler. On an
/// unwind the undelivered rest goes back to the bus and the unwind is returned.
pub fn deliver(
    ruby: &Ruby,
    state: &Tables<'_>,
    runtime: Value,
    bus: &EventBus,
    batch: Vec<Message>,
) -> Result<usize, Error> {
    let bus_key = slot_table::bus_key(bus);
    let mut counts = Counts::default();
    let mut cursor = Cursor {
        list: state.subscribers.load(),
        last: None,
        last_rust_name: None,
    };
    let mut messages = batch.into_iter();
    while let Some(message) = messages.next() {
        let outcome = deliver_one(
            ruby,
            state,
            runtime,
            bus_key,
            &mut cursor,
            &message,
            &mut counts,
        );
        if let Err(Unwind { error, started }) = outcome {
            bus.record_delivery(counts.delivered, counts.handler_errors, counts.unmatched);
            if started {
                bus.give_back(messages);
            } else {
                bus.give_back(std::iter::once(message).chain(messages));
            }
            return Err(error);
        }
    }
    bus.record_delivery(counts.delivered, counts.handler_errors, counts.unmatched);
    Ok(counts.delivered as usize)
}

/// What stopped a delivery: the thread is unwinding. `started` says whether the event had
/// reached a handler (then it counts as delivered and is not handed back).
struct Unwind {
    error: Error,
    started: bool,
}

/// One event through its handlers. Once its handlers started its slot is released whatever
/// happens: an event is never delivered twice.
fn deliver_one(
    ruby: &Ruby,
    state: &Tables<'_>,
    runtime: Value,
    bus_key: usize,
    cursor: &mut Cursor,
    message: &Message,
    counts: &mut Counts,
) -> Result<(), Unwind> {
    let (fields, slot) = match *message {
        Message::Ref(held) => {
            let (name, payload) = state.slots.get(ruby, held.slot);
            let fields = EventFields {
                id: held.id,
                name,
                payload,
                source: EventSource::Ruby,
                published_at: held.published_at,
            };
            (fields, Some(held.slot))
        }
        Message::Event(ref event) => {
            // Producers mostly share one name among their events: the pointer says so
            // before the text has to.
            let name = match &cursor.last_rust_name {
                Some((text, name)) if Arc::ptr_eq(text, &event.name) || *text == event.name => {
                    *name
                }
                _ => {
                    let name = event_object::interned_str(&event.name);
                    cursor.last_rust_name = Some((Arc::clone(&event.name), name));
                    name
                }
            };
            let fields = EventFields {
                id: event.id,
                name,
                payload: payload_conversion::to_ruby(ruby, &event.payload),
                source: event.source,
                published_at: event.published_at,
            };
            (fields, None)
        }
        // Only events are written to the dispatch side.
        Message::Value(_) => {
            counts.unmatched += 1;
            return Ok(());
        }
    };
    let outcome = run_handlers(ruby, state, runtime, cursor, &fields, counts);
    let started = !matches!(outcome, Err(Unwind { started: false, .. }));
    if let (true, Some(slot)) = (started, slot) {
        state.slots.release(ruby, bus_key, slot);
    }
    outcome
}

fn run_handlers(
    ruby: &Ruby,
    state: &Tables<'_>,
    runtime: Value,
    cursor: &mut Cursor,
    fields: &EventFields,
    counts: &mut Counts,
) -> Result<(), Unwind> {
    let Cursor { list, last, .. } = cursor;
    let subscribers = &state.subscribers;
    if !subscribers.is_current(list) {
        *list = subscribers.load();
    }
    let unwind = |error| Unwind {
        error,
        started: true,
    };
    // Nothing has run yet: an unwind here (an interrupt during a Regexp match) hands this
    // event back too.
    let mut matches = match last {
        Some(seen)
            if seen.name.as_raw() == fields.name.as_raw() && seen.generation == list.generation =>
        {
            Arc::clone(&seen.matches)
        }
        _ => {
            let found = subscribers
                .matching(ruby, list, fields.name, 0)
                .map_err(|error| Unwind {
                    error,
                    started: false,
                })?;
            *last = Some(LastMatch {
                name: fields.name,
                generation: list.generation,
                matches: Arc::clone(&found),
            });
            found
        }
    };
    if matches.is_empty() {
        counts.unmatched += 1;
        return Ok(());
    }
    counts.delivered += 1;
    let mut event: Option<Value> = None;
    let mut next = 0;
    let mut last_called = 0;
    while next < matches.len() {
        let entry = &list.entries[matches[next] as usize];
        let argument = match entry.shape {
            Shape::Event => Some(*event.get_or_insert_with(|| event_object::build(ruby, fields))),
            Shape::NameAndPayload => None,
        };
        // Building the Event may have run the GC, and a handler may have subscribed or
        // unsubscribed: a stale table's handlers are no longer marked, so re-match the rest
        // against the current one.
        if !subscribers.is_current(list) {
            *list = subscribers.load();
            matches = subscribers
                .matching(ruby, list, fields.name, last_called)
                .map_err(unwind)?;
            next = 0;
            continue;
        }
        let handler = ruby.get_inner(entry.handler);
        last_called = entry.id;
        next += 1;
        let called = match argument {
            Some(event) => call(handler, &[event]),
            None => call(handler, &[fields.name, fields.payload]),
        };
        if let Err(error) = called {
            if !is_handler_failure(ruby, &error) {
                return Err(unwind(error));
            }
            counts.handler_errors += 1;
            let event = *event.get_or_insert_with(|| event_object::build(ruby, fields));
            report(ruby, runtime, error, event).map_err(unwind)?;
        }
    }
    Ok(())
}

/// Calls a Proc under `rb_protect`, so a raise or throw comes back as an `Err` here instead
/// of jumping over this frame.
#[inline]
fn call(handler: Value, arguments: &[Value]) -> Result<Value, Error> {
    let raw: [rb_sys::VALUE; 2] = [
        arguments[0].as_raw(),
        arguments.get(1).map_or(rb_sys::Qnil as _, |v| v.as_raw()),
    ];
    magnus::rb_sys::protect(|| {
        // SAFETY: GVL held; `handler` is a Proc (checked at subscribe) kept alive by the
        // current subscription table, and the arguments are live on this stack frame.
        unsafe {
            rb_sys::rb_proc_call_with_block(
                handler.as_raw(),
                arguments.len() as _,
                raw.as_ptr(),
                rb_sys::Qnil as _,
            )
        }
    })
    // SAFETY: the VALUE returned by a successful call is a live Ruby object.
    .map(|raw| unsafe { Value::from_raw(raw) })
}

/// A handler failure goes to the error handler and dispatch goes on; everything else is the
/// thread being stopped — killed, thrown out of, exited, signalled — and must unwind.
fn is_handler_failure(ruby: &Ruby, error: &Error) -> bool {
    let Some(exception) = error.value() else {
        return false;
    };
    let stops_the_thread = [ruby.exception_signal(), ruby.exception_system_exit()]
        .iter()
        .any(|class| exception.is_kind_of(*class));
    !stops_the_thread
}

/// Hands a handler failure to the runtime's error handler (Ruby's `report_handler_error`,
/// which already shields itself from a failing `on_error` block).
fn report(ruby: &Ruby, runtime: Value, error: Error, event: Value) -> Result<(), Error> {
    let exception = error.value().unwrap_or_else(|| ruby.qnil().as_value());
    match runtime.funcall::<_, _, Value>("report_handler_error", (exception, event)) {
        Ok(_) => Ok(()),
        Err(failure) if is_handler_failure(ruby, &failure) => Ok(()),
        Err(unwind) => Err(unwind),
    }
}
