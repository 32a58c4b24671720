//! Fork awareness and the process-wide async runtime.
//!
//! Owns the fork generation (bumped in the child by a `pthread_atfork` handler, so every kind
//! of fork is seen, not only Ruby's) and the tokio runtime the event bus's forwarders run on.
//! tokio's worker threads do not survive `fork`: a child gets a fresh runtime on first use and
//! the parent's copy is leaked, never dropped or joined, because joining threads that do not
//! exist would hang. It must never block in the fork handler or touch a lock a vanished thread
//! might hold.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Once;

use tokio::runtime::{Handle, Runtime};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALL_HANDLER: Once = Once::new();

extern "C" fn bump_generation_in_child() {
    // Async-signal-safe: a single atomic add, no allocation, no locks.
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// How many forks separate this process from the one that first asked. Objects that own
/// threads record it at creation; a different value later means they are in a child and
/// their threads are gone.
pub fn generation() -> u64 {
    INSTALL_HANDLER.call_once(|| {
        // SAFETY: registers a handler that only performs an atomic add.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(bump_generation_in_child)) };
        if rc != 0 {
            tracing::error!(rc, "pthread_atfork failed: fork detection is disabled");
        }
    });
    GENERATION.load(Ordering::SeqCst)
}

/// Which fork a process is and its id: what an object that owns threads needs to tell that
/// it now lives in a child. [`CurrentProcess`] asks the fork handler and the kernel; tests
/// put a process of their own in its place to simulate a fork.
pub trait ProcessIdentity: Send + Sync {
    /// How many forks separate this process from the first one (see [`generation`]).
    fn generation(&self) -> u64;
    /// The process id.
    fn pid(&self) -> u32;
}

/// The process this code runs in.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurrentProcess;

impl ProcessIdentity for CurrentProcess {
    #[inline]
    fn generation(&self) -> u64 {
        generation()
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

struct ProcessRuntime {
    generation: u64,
    runtime: Runtime,
}

/// A lock-free slot: a `Mutex` held by a thread of the parent would stay locked forever in
/// the child.
static RUNTIME: AtomicPtr<ProcessRuntime> = AtomicPtr::new(ptr::null_mut());

/// The tokio runtime of this process (one small worker thread), built on first use and again
/// on first use after a fork.
pub fn runtime_handle() -> Handle {
    let current = generation();
    loop {
        let existing = RUNTIME.load(Ordering::Acquire);
        // SAFETY: a published ProcessRuntime is leaked, so the pointer stays valid forever.
        if let Some(process) = unsafe { existing.as_ref() } {
            if process.generation == current {
                return process.runtime.handle().clone();
            }
        }
        let fresh = Box::into_raw(Box::new(ProcessRuntime {
            generation: current,
            runtime: build_runtime(),
        }));
        match RUNTIME.compare_exchange(existing, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // The stale runtime (if any) is deliberately leaked: its threads are gone.
            Ok(_) => return unsafe { &*fresh }.runtime.handle().clone(),
            Err(_) => {
                // Another thread published first; ours never ran a task, so it can go.
                let lost = unsafe { Box::from_raw(fresh) };
                lost.runtime.shutdown_background();
            }
        }
    }
}

fn build_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tasker-channels")
        .enable_all()
        .build()
        .expect("the tokio runtime for tasker_channels could not start (out of threads?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_per_generation() {
        let task = runtime_handle().spawn(async { 6 * 7 });
        assert_eq!(runtime_handle().block_on(task).unwrap(), 42);
        let first = RUNTIME.load(Ordering::Acquire);
        runtime_handle();
        assert_eq!(
            RUNTIME.load(Ordering::Acquire),
            first,
            "no rebuild without a fork"
        );
    }

    #[test]
    fn generation_is_stable_without_fork() {
        assert_eq!(generation(), generation());
        assert_eq!(CurrentProcess.generation(), generation());
        assert_eq!(CurrentProcess.pid(), std::process::id());
    }
}
