//! The two wake-ups of a channel (room appeared, a message arrived) and the count of who
//! waits on each, so the other side pays for a notify only when someone listens.
//!
//! Every wait listens first and then re-checks the queue before sleeping, so a wake-up
//! between the check and the sleep is never lost; this file must keep that ordering.

use std::sync::atomic::{fence, AtomicUsize, Ordering};

use event_listener::{Event, EventListener};

/// An event plus a count of who is waiting on it. event-listener takes a lock on every
/// notify, even with no listener; the count lets the other side skip that when no one
/// waits, which is almost always.
pub(super) struct WakeUp {
    event: Event,
    waiting: AtomicUsize,
}

/// Counts one waiter for as long as it is listening; dropping it (also when an async wait
/// is abandoned) stops the count.
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl WakeUp {
    pub(super) fn new() -> Self {
        Self {
            event: Event::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Registers a waiter. The caller must re-check its condition after this and before
    /// sleeping: `listen` fences after registering, and [`notify`](Self::notify) fences
    /// before reading the count, so either the re-check sees the change or the notifier
    /// sees the waiter.
    pub(super) fn listen(&self) -> (Waiting<'_>, EventListener) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        (Waiting(&self.waiting), self.event.listen())
    }

    /// Wakes up to `count` more waiters, if there are any.
    #[inline]
    pub(super) fn notify(&self, count: usize) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.event.notify_additional(count);
        }
    }

    pub(super) fn notify_all(&self) {
        self.event.notify(usize::MAX);
    }
}
