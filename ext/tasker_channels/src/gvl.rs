//! Running Rust code without the GVL, interruptibly.
//!
//! Owns the one way this extension waits: release the GVL, run a Rust closure that may block,
//! let Ruby's unblock function wake it, then take the GVL back and let Ruby deliver any pending
//! `Thread#kill`, `Thread#raise`, `Timeout` or signal. It must never touch a Ruby object while
//! the GVL is released, and never let a panic unwind through Ruby's C frames.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use magnus::Error;
use rb_sys::{rb_nogvl, rb_thread_check_ints};
use tasker_channels_core::Interrupt;

/// The longest a single GVL-free wait lasts before Ruby gets to check for interrupts.
/// Measured on Ruby 3.1: a wait that began while another Ruby thread was alive can miss
/// SIGINT if that thread exits meanwhile; returning to Ruby this often bounds the delay.
pub const WAIT_SLICE: Duration = Duration::from_millis(100);

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

/// How long a wait on any other thread lasts before checking in. Kill, raise and Timeout
/// reach such a thread through the unblock function at once; signals go to the main thread.
/// Checking in less often leaves the GVL to busy threads (each check takes it back).
pub const BACKGROUND_WAIT_SLICE: Duration = Duration::from_secs(2);

/// The end of the next wait slice: never later than `deadline`, never longer than
/// [`WAIT_SLICE`] on the main thread (where signals land) or [`BACKGROUND_WAIT_SLICE`]
/// elsewhere. Must be called with the GVL held.
pub fn slice_deadline(deadline: Option<Instant>) -> Instant {
    // SAFETY: called on a Ruby thread with the GVL held.
    let on_main_thread = unsafe { rb_sys::rb_thread_current() == rb_sys::rb_thread_main() };
    let slice = if on_main_thread {
        WAIT_SLICE
    } else {
        BACKGROUND_WAIT_SLICE
    };
    let slice_end = Instant::now() + slice;
    match deadline {
        Some(deadline) if deadline < slice_end => deadline,
        _ => slice_end,
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
