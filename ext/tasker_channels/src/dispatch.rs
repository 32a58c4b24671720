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
//!
//! Entering a protect frame costs about as much as the Ruby side of a small handler, so one
//! frame runs handler after handler, event after event, for as long as the batch repeats
//! what is already known (the same name, the same subscription table). The frame is left
//! only when something needs Rust values of its own — matching a new name, rebuilding a
//! Rust event's payload, re-matching against a changed table — or when a handler raises;
//! then the loop's position, kept in [`Run`] outside the frame, says where to resume.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{prelude::*, Error, Exception, Ruby, Value};
use rb_sys::VALUE;
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

#[derive(Default, Clone, Copy)]
struct Counts {
    delivered: u64,
    unmatched: u64,
    handler_errors: u64,
}

struct LastMatch {
    name: Value,
    generation: u64,
    matches: Arc<[u32]>,
}

/// The event whose handlers are under way. It was counted as delivered when it became
/// current: from then on it is never handed back, and its slot is released whatever happens.
struct Current {
    fields: EventFields,
    slot: Option<u32>,
    /// The subscriptions to call: `None` while they are `Run::last`'s (an event becomes
    /// current only when `last` holds the matches of its name in the table in use, and
    /// `last` changes only while no event is current), so taking an event costs no
    /// reference-count traffic; `Some` once a table change re-matched them.
    rematched: Option<Arc<[u32]>>,
    /// The next entry of the matches to call.
    next: usize,
    /// The id of the last subscription called, to re-match the rest after a table change.
    last_called: u64,
    event: Option<Value>,
}

/// Why the protected loop returned without a raise.
#[derive(Clone, Copy)]
enum Pause {
    /// Every event of the batch went through its handlers.
    Finished,
    /// The event at `at` needs matching or building outside the frame.
    Prepare,
    /// The subscription table changed while `current`'s handlers ran.
    Stale,
    /// A Rust panic, caught before it could reach C; the payload is in `Run::panic`.
    Panicked,
}

/// How a delivery ended early.
enum Stop {
    Unwind(Error),
    Panic(Box<dyn Any + Send>),
}

/// A batch's delivery, and where it stands. It lives on `deliver`'s stack frame, outside every
/// protect frame, and the protected loop borrows all it needs from here: a raise that jumps
/// out of the loop skips no frame owning a value with a destructor, and what the loop had
/// done is still here to resume from. Its Ruby values (the current event's name, payload and
/// Event; the previous event's name) are on the machine stack, where the GC sees and pins
/// them.
struct Run<'a> {
    ruby: &'a Ruby,
    tables: &'a Tables<'a>,
    bus_key: usize,
    batch: &'a [Message],
    /// The subscription table in use.
    list: Arc<List>,
    /// The previous event's name and matches: a batch mostly repeats a name, and an interned
    /// name is the same object each time.
    last: Option<LastMatch>,
    /// The previous Rust event's name and its interned String.
    last_rust_name: Option<(Arc<str>, Value)>,
    counts: Counts,
    /// The index in `batch` of the event under way (or to be taken next).
    at: usize,
    current: Option<Current>,
    /// Set while a handler runs: a raise then is a handler's (or the thread being stopped),
    /// anything else is not the handler's failure.
    in_handler: bool,
    pause: Pause,
    panic: Option<Box<dyn Any + Send>>,
}

/// Delivers `batch` (taken from `bus`); returns how many events reached a handler. On an
/// unwind the undelivered rest goes back to the bus and the unwind is returned.
pub fn deliver(
    ruby: &Ruby,
    state: &Tables<'_>,
    runtime: Value,
    bus: &EventBus,
    mut batch: Vec<Message>,
) -> Result<usize, Error> {
    let (outcome, counts, undelivered) = {
        let mut run = Run {
            ruby,
            tables: state,
            bus_key: slot_table::bus_key(bus),
            batch: &batch,
            list: state.subscribers.load(),
            last: None,
            last_rust_name: None,
            counts: Counts::default(),
            at: 0,
            current: None,
            in_handler: false,
            pause: Pause::Finished,
            panic: None,
        };
        let outcome = run.deliver_all(runtime);
        let undelivered = match outcome {
            Ok(()) => batch.len(),
            Err(_) => run.stop_here(),
        };
        (outcome, run.counts, undelivered)
    };
    bus.record_delivery(counts.delivered, counts.handler_errors, counts.unmatched);
    match outcome {
        Ok(()) => Ok(counts.delivered as usize),
        Err(stop) => {
            bus.give_back(batch.drain(undelivered..));
            match stop {
                Stop::Unwind(error) => Err(error),
                Stop::Panic(payload) => std::panic::resume_unwind(payload),
            }
        }
    }
}

impl Run<'_> {
    fn deliver_all(&mut self, runtime: Value) -> Result<(), Stop> {
        loop {
            if self.current.is_none() {
                if self.at == self.batch.len() {
                    return Ok(());
                }
                self.prepare().map_err(Stop::Unwind)?;
                continue;
            }
            match self.run_protected() {
                Ok(Pause::Finished) => return Ok(()),
                Ok(Pause::Prepare) => {}
                Ok(Pause::Stale) => self.rematch().map_err(Stop::Unwind)?,
                Ok(Pause::Panicked) => {
                    let payload = self.panic.take().unwrap_or_else(|| Box::new("panic"));
                    return Err(Stop::Panic(payload));
                }
                Err(error) => self.handler_raised(runtime, error)?,
            }
        }
    }

    /// Ends a delivery that stopped early: the event under way (if its handlers started)
    /// lets go of its slot. Returns the index from which the batch goes back to the bus.
    fn stop_here(&mut self) -> usize {
        match self.current.take() {
            Some(current) => {
                if let Some(slot) = current.slot {
                    self.tables.slots.release(self.ruby, self.bus_key, slot);
                }
                self.at + 1
            }
            None => self.at,
        }
    }

    /// Takes the event at `at` the long way: rebuilds a Rust event, matches a name not seen
    /// just before. Nothing has run for it yet, so an unwind here (an interrupt during a
    /// Regexp match) hands it back too.
    fn prepare(&mut self) -> Result<(), Error> {
        let ruby = self.ruby;
        let (fields, slot) = match self.batch[self.at] {
            Message::Ref(held) => (self.ref_fields(held), Some(held.slot)),
            Message::Event(ref event) => {
                // Producers mostly share one name among their events, and comparing two
                // `Arc<str>`s looks at the pointers before the text.
                let name = match &self.last_rust_name {
                    Some((text, name)) if *text == event.name => *name,
                    _ => {
                        let name = event_object::interned_str(&event.name);
                        self.last_rust_name = Some((Arc::clone(&event.name), name));
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
                self.counts.unmatched += 1;
                self.at += 1;
                return Ok(());
            }
        };
        let subscribers = self.tables.subscribers;
        if !subscribers.is_current(&self.list) {
            self.list = subscribers.load();
        }
        let unmatched = match self.known_unmatched(fields.name) {
            Some(unmatched) => unmatched,
            None => {
                let found = subscribers.matching(ruby, &self.list, fields.name, 0)?;
                let none = found.is_empty();
                self.last = Some(LastMatch {
                    name: fields.name,
                    generation: self.list.generation,
                    matches: found,
                });
                none
            }
        };
        self.begin(fields, slot, unmatched);
        Ok(())
    }

    /// Whether `name` matches nothing, when `last` already holds its matches in the table in
    /// use; `None` when they must be looked up.
    #[inline]
    fn known_unmatched(&self, name: Value) -> Option<bool> {
        match &self.last {
            Some(seen)
                if seen.name.as_raw() == name.as_raw()
                    && seen.generation == self.list.generation =>
            {
                Some(seen.matches.is_empty())
            }
            _ => None,
        }
    }

    fn ref_fields(&self, held: tasker_channels_core::EventRef) -> EventFields {
        let (name, payload) = self.tables.slots.get(self.ruby, held.slot);
        EventFields {
            id: held.id,
            name,
            payload,
            source: EventSource::Ruby,
            published_at: held.published_at,
        }
    }

    /// Makes the event at `at` current, or settles it at once when nothing matches. Inlined
    /// into both callers: as a call, moving its arguments in cost as much as the work.
    #[inline(always)]
    fn begin(&mut self, fields: EventFields, slot: Option<u32>, unmatched: bool) {
        if unmatched {
            self.counts.unmatched += 1;
            if let Some(slot) = slot {
                self.tables.slots.release(self.ruby, self.bus_key, slot);
            }
            self.at += 1;
            return;
        }
        self.counts.delivered += 1;
        self.current = Some(Current {
            fields,
            slot,
            rematched: None,
            next: 0,
            last_called: 0,
            event: None,
        });
    }

    /// Takes the event at `at` when its matches are the previous event's, in the table still
    /// current: what the protected loop may do itself. False when it needs `prepare`.
    fn begin_known(&mut self) -> bool {
        let held = match self.batch[self.at] {
            Message::Ref(held) => held,
            Message::Value(_) => {
                self.counts.unmatched += 1;
                self.at += 1;
                return true;
            }
            Message::Event(_) => return false,
        };
        if !self.tables.subscribers.is_current(&self.list) {
            return false;
        }
        let fields = self.ref_fields(held);
        let Some(unmatched) = self.known_unmatched(fields.name) else {
            return false;
        };
        self.begin(fields, Some(held.slot), unmatched);
        true
    }

    /// After the table changed under `current`: the stale table's handlers are no longer
    /// marked, so the rest of its subscriptions are re-matched against the current one.
    fn rematch(&mut self) -> Result<(), Error> {
        let subscribers = self.tables.subscribers;
        self.list = subscribers.load();
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        current.rematched = Some(subscribers.matching(
            self.ruby,
            &self.list,
            current.fields.name,
            current.last_called,
        )?);
        current.next = 0;
        Ok(())
    }

    /// A raise came out of the protected loop. A handler's failure goes to the error handler
    /// and the loop resumes with the next handler; anything else stops the delivery.
    fn handler_raised(&mut self, runtime: Value, error: Error) -> Result<(), Stop> {
        let ruby = self.ruby;
        let in_handler = std::mem::replace(&mut self.in_handler, false);
        let current = match self.current.as_mut() {
            Some(current) if in_handler && is_handler_failure(ruby, &error) => current,
            _ => return Err(Stop::Unwind(error)),
        };
        self.counts.handler_errors += 1;
        let event = *current
            .event
            .get_or_insert_with(|| event_object::build(ruby, &current.fields));
        report(ruby, runtime, error, event).map_err(Stop::Unwind)
    }

    /// Runs the loop inside one `rb_protect`: `Ok` when it paused by itself, `Err` with
    /// what was raised (or thrown) out of it.
    fn run_protected(&mut self) -> Result<Pause, Error> {
        unsafe extern "C" fn trampoline(run: VALUE) -> VALUE {
            // SAFETY: `run` is the `&mut Run` `run_protected` passed, alive for the call.
            let run = unsafe { &mut *(run as *mut Run<'_>) };
            // A panic must not unwind into C: it is kept and resumed once out of the frame.
            match catch_unwind(AssertUnwindSafe(|| run.protected_loop())) {
                Ok(pause) => run.pause = pause,
                Err(payload) => {
                    run.panic = Some(payload);
                    run.pause = Pause::Panicked;
                }
            }
            rb_sys::Qnil as VALUE
        }
        // SAFETY: GVL held. As in magnus' `protect`: catching a raise is a `rescue`, so `$!`
        // goes back to what it was (an exception still propagating through an outer frame),
        // and this local keeps that exception visible to the GC meanwhile.
        let previous_errinfo = unsafe { rb_sys::rb_errinfo() };
        let mut state = 0;
        // SAFETY: the trampoline gets back the pointer given here, and `self` outlives the
        // call.
        unsafe { rb_sys::rb_protect(Some(trampoline), self as *mut Self as VALUE, &mut state) };
        match state {
            0 => Ok(self.pause),
            // TAG_RAISE
            6 => {
                // SAFETY: after a raise, `$!` holds the exception.
                let raised = unsafe {
                    let raised = Value::from_raw(rb_sys::rb_errinfo());
                    rb_sys::rb_set_errinfo(previous_errinfo);
                    raised
                };
                Err(Exception::from_value(raised).map_or_else(
                    || Error::new(self.ruby.exception_runtime_error(), "a raise without $!"),
                    Error::from,
                ))
            }
            // A throw, a kill, a `break` out of a handler: jumped again inside magnus'
            // `protect`, which turns the tag into the `Error` that resumes it later.
            tag => Err(
                magnus::rb_sys::protect(|| unsafe { rb_sys::rb_jump_tag(tag) })
                    .expect_err("rb_jump_tag does not return"),
            ),
        }
    }

    /// Calls handlers, taking each next event it can, until the batch is done or something
    /// needs the frame left. Runs inside `rb_protect`: everything it changes lives in `self`,
    /// and it owns no value with a destructor across a call into Ruby.
    fn protected_loop(&mut self) -> Pause {
        let ruby = self.ruby;
        loop {
            let Some(current) = self.current.as_mut() else {
                if self.at == self.batch.len() {
                    return Pause::Finished;
                }
                if !self.begin_known() {
                    return Pause::Prepare;
                }
                continue;
            };
            let matches = match (&current.rematched, &self.last) {
                (Some(rematched), _) => rematched,
                (None, Some(last)) => &last.matches,
                (None, None) => unreachable!("an event is current only once `last` is set"),
            };
            let Some(&index) = matches.get(current.next) else {
                if let Some(slot) = current.slot {
                    self.tables.slots.release(ruby, self.bus_key, slot);
                }
                self.current = None;
                self.at += 1;
                continue;
            };
            let entry = &self.list.entries[index as usize];
            let (handler, shape, id) = (ruby.get_inner(entry.handler), entry.shape, entry.id);
            let (arguments, argc) = match shape {
                Shape::Event => {
                    let event = match current.event {
                        Some(event) => event,
                        None => {
                            settle(self);
                            let current = self.current.as_mut().expect("current");
                            let event = event_object::build(ruby, &current.fields);
                            current.event = Some(event);
                            event
                        }
                    };
                    ([event.as_raw(), rb_sys::Qnil as VALUE], 1)
                }
                Shape::NameAndPayload => (
                    [
                        current.fields.name.as_raw(),
                        current.fields.payload.as_raw(),
                    ],
                    2,
                ),
            };
            // Building the Event may have run the GC, and a handler may have subscribed or
            // unsubscribed: a stale table's handlers are no longer marked.
            if !self.tables.subscribers.is_current(&self.list) {
                return Pause::Stale;
            }
            let current = self.current.as_mut().expect("current");
            current.last_called = id;
            current.next += 1;
            self.in_handler = true;
            settle(self);
            // SAFETY: GVL held; `handler` is a Proc (checked at subscribe) of the current
            // table, which the runtime marks; the arguments are live on this stack frame.
            unsafe {
                rb_sys::rb_proc_call_with_block(
                    handler.as_raw(),
                    argc,
                    arguments.as_ptr(),
                    rb_sys::Qnil as VALUE,
                )
            };
            self.in_handler = false;
        }
    }
}

/// Makes every change to `run` so far visible in memory before a call into Ruby that may
/// jump out of the protected loop: through `&mut` the compiler may otherwise keep them in
/// registers past the call (nothing else may see `run` meanwhile, as far as it knows), and a
/// jump would lose them.
#[inline(always)]
fn settle(run: &mut Run<'_>) {
    std::hint::black_box(run as *mut Run<'_>);
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
