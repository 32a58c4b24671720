//! Running Rust code without the GVL, interruptibly.
//!
//! Owns the one way this extension waits: release the GVL, run a Rust closure that may block,
//! let Ruby's unblock function wake it (or, where Ruby would not, notice a queued signal),
//! then take the GVL back and let Ruby deliver any pending `Thread#kill`, `Thread#raise`,
//! `Timeout` or signal. It must never touch a Ruby object while
//! the GVL is released, and never let a panic unwind through Ruby's C frames.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use magnus::Error;
use rb_sys::{rb_nogvl, rb_thread_check_ints};
use tasker_channels_core::Interrupt;

struct Call<F, R, U> {
    body: Option<F>,
    unblock: U,
    result: Option<Result<R, Box<dyn Any + Send>>>,
}

unsafe extern "C" fn run_body<F, R, U>(data: *mut c_void) -> *mut c_void
where
    F: FnOnce() -> R,
{
    let call = &mut *(data as *mut Call<F, R, U>);
    if let Some(body) = call.body.take() {
        call.result = Some(catch_unwind(AssertUnwindSafe(body)));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn run_unblock<F, R, U>(data: *mut c_void)
where
    U: Fn(),
{
    let call = &*(data as *const Call<F, R, U>);
    // A panic here would abort inside Ruby's signal path; swallow it, the waiter will
    // still return at the end of its slice.
    let _ = catch_unwind(AssertUnwindSafe(|| (call.unblock)()));
}

/// Runs `body` with the GVL released. `unblock` is what Ruby calls to wake `body` early (on
/// `Thread#kill`, `Thread#raise`, a signal, or VM shutdown); it must make `body` return
/// promptly, and it must be async-signal-safe — no locks, no allocation — because it is
/// declared so to Ruby (see [`unblocker`]). Without that declaration Ruby 3.1 starts and
/// joins a helper thread for every GVL release made while the main thread is alone.
///
/// Returns `None` when Ruby had an interrupt pending and did not run `body` at all.
/// A panic inside `body` is carried across the C frames and resumed here, with the GVL held,
/// for the caller's panic guard to turn into a Ruby exception.
pub fn without_gvl<F, R, U>(body: F, unblock: U) -> Option<R>
where
    F: FnOnce() -> R,
    U: Fn() + Sync,
{
    let mut call = Call {
        body: Some(body),
        unblock,
        result: None,
    };
    let data = &mut call as *mut Call<F, R, U> as *mut c_void;
    // SAFETY: `call` outlives the call; Ruby runs `run_body` at most once on this thread and
    // `run_unblock` only while `run_body` may be running, both with this same pointer.
    unsafe {
        // INTR_FAIL: like rb_thread_call_without_gvl2, skip the body when an interrupt is
        // pending and never raise from inside (a longjmp through Rust frames).
        rb_nogvl(
            Some(run_body::<F, R, U>),
            data,
            Some(run_unblock::<F, R, U>),
            data,
            (rb_sys::RB_NOGVL_INTR_FAIL | rb_sys::RB_NOGVL_UBF_ASYNC_SAFE) as i32,
        );
    }
    match call.result {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(panic)) => resume_unwind(panic),
    }
}

/// The unblock function for a wait on this thread with `interrupt`: raises its flag and
/// unparks this thread, both lock-free, so it is safe to run inside a signal handler.
pub fn unblocker(interrupt: &Interrupt) -> impl Fn() + Sync + '_ {
    let waiting_thread = std::thread::current();
    move || {
        interrupt.raise_flag();
        waiting_thread.unpark();
    }
}

/// Lets Ruby deliver pending interrupts on this thread. A `Thread#raise`, `Thread#kill`,
/// `Timeout` or signal comes back as an `Err` to return to Ruby unchanged.
pub fn check_interrupts() -> Result<(), Error> {
    magnus::rb_sys::protect(|| {
        // SAFETY: called on a Ruby thread with the GVL held (we are inside a method call).
        unsafe { rb_thread_check_ints() };
        rb_sys::Qnil as rb_sys::VALUE
    })
    .map(|_| ())
}

/// The longest a GVL-free wait lasts before it comes back to Ruby anyway. Kill, raise,
/// Timeout and (see [`WaitSlice`]) signals cut it short, so this only bounds what nothing
/// else wakes; coming back less often leaves the GVL to busy threads (each return takes it).
pub const WAIT_SLICE: Duration = Duration::from_secs(2);

/// How often a main-thread wait that Ruby cannot wake for a signal looks for one itself.
/// Ruby hands the GVL over once a 100 ms timeslice when another thread is busy, so a few
/// milliseconds here are lost in that hand-off; each look is a timed-out park, no GVL.
pub const SIGNAL_POLL: Duration = Duration::from_millis(5);

/// The slice of a main-thread wait that begins with a signal already queued but not
/// delivered (inside a trap handler, where Ruby holds signals back, or racing the signal's
/// own delivery): watching would return at once and spin, so it returns this often instead.
pub const PENDING_SIGNAL_SLICE: Duration = Duration::from_millis(100);

extern "C" {
    /// Whether a signal waits in Ruby's queue for the main thread. Exported by every CRuby
    /// since 1.9 (for the Tk binding); it reads one counter and may run without the GVL.
    fn rb_thread_check_trap_pending() -> c_int;
}

fn signal_pending() -> bool {
    // SAFETY: reads Ruby's signal queue length; needs neither the GVL nor a Ruby thread.
    unsafe { rb_thread_check_trap_pending() != 0 }
}

/// One GVL-free stretch of a wait, planned with the GVL held: when it ends, and whether it
/// must watch for signals itself.
///
/// Signals land on the main thread, and on Ruby 3.1 nothing calls the unblock function of a
/// main thread that waits while another Ruby thread is alive: the signal handler calls it
/// only for a main thread that was alone when the wait began (`RB_NOGVL_UBF_ASYNC_SAFE`), and
/// otherwise only a thread waiting for the GVL passes the signal on (once per 100 ms
/// timeslice), which a CPU-bound thread that holds the GVL never does. A wait that began
/// beside another thread that has since exited has no one at all. Such a wait polls Ruby's
/// signal queue every [`SIGNAL_POLL`] and returns as soon as a signal is queued, so the
/// signal costs one GVL hand-off, as it does for `Queue#pop`.
#[derive(Debug, Clone, Copy)]
pub struct WaitSlice {
    end: Instant,
    watch_signals: bool,
}

impl WaitSlice {
    /// Plans the next slice of a wait that must end by `deadline` (`None`: no end). Must be
    /// called with the GVL held, right before the GVL-free part.
    pub fn plan(deadline: Option<Instant>) -> Self {
        // SAFETY: called on a Ruby thread with the GVL held.
        let (on_main_thread, alone) = unsafe {
            (
                rb_sys::rb_thread_current() == rb_sys::rb_thread_main(),
                rb_sys::rb_thread_alone() != 0,
            )
        };
        let (length, watch_signals) = if !on_main_thread || alone {
            // Off the main thread no signal is ours to deliver; a lone main thread has its
            // unblock function called by the signal handler itself.
            (WAIT_SLICE, false)
        } else if signal_pending() {
            (PENDING_SIGNAL_SLICE, false)
        } else {
            (WAIT_SLICE, true)
        };
        let slice_end = Instant::now() + length;
        let end = match deadline {
            Some(deadline) if deadline < slice_end => deadline,
            _ => slice_end,
        };
        Self { end, watch_signals }
    }

    /// The deadline for the next step of the GVL-free wait: the slice's end, or sooner on a
    /// wait that watches for signals.
    pub fn step_end(&self) -> Instant {
        if self.watch_signals {
            self.end.min(Instant::now() + SIGNAL_POLL)
        } else {
            self.end
        }
    }

    /// After a step that timed out: whether to wait on without the GVL. False once the slice
    /// is over, or when a signal is queued for Ruby to deliver.
    pub fn continues(&self) -> bool {
        Instant::now() < self.end && !(self.watch_signals && signal_pending())
    }
}

/// Turns a Ruby timeout in seconds (nil = wait forever) into a deadline, rejecting negative,
/// NaN and infinite values with the argument's name.
pub fn deadline_from_seconds(
    ruby: &magnus::Ruby,
    name: &str,
    seconds: Option<f64>,
) -> Result<Option<Instant>, Error> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => {
            // Anything past a day is as good as forever, and keeps Instant arithmetic safe.
            let capped = s.min(86_400.0);
            Ok(Some(Instant::now() + Duration::from_secs_f64(capped)))
        }
        Some(s) => Err(Error::new(
            ruby.exception_arg_error(),
            format!("{name} must be a finite number of seconds >= 0, got {s}"),
        )),
    }
}
