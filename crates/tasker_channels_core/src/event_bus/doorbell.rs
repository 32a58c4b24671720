//! The dispatchers' doorbell: how a write to the dispatch side wakes a dispatcher waiting for
//! one.
//!
//! Owns knowing whether any dispatcher is about to sleep, so that a ring with none costs one
//! load instead of an atomic exchange on every publish, and claiming a sleeper before waking
//! it, so a dispatcher already woken but not yet running (it waits for the GVL) is not woken
//! again by every later write. It must never let a write go unseen: a dispatcher counts
//! itself asleep before its last look at the queues, and a writer looks at the count after
//! its write, so one of the two always sees the other.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(super) struct Doorbell {
    /// Hands a wake-up to one waiter (or keeps it for the next one to wait); a waiter that
    /// drops a wake-up it got passes it on.
    notify: Notify,
    /// Dispatchers that counted themselves asleep and were not claimed by a ring yet.
    sleepers: AtomicUsize,
}

impl Doorbell {
    /// After a write to the dispatch side: wakes one sleeping dispatcher, if any is.
    #[inline]
    pub(super) fn ring(&self) {
        if self.sleepers.load(SeqCst) == 0 {
            return;
        }
        if self.claim_sleeper() {
            self.notify.notify_one();
        }
    }

    /// Wakes every dispatcher waiting now (the dispatch side closed).
    pub(super) fn ring_all(&self) {
        self.notify.notify_waiters();
    }

    /// What a dispatcher waits on; enable it before looking at the queues.
    pub(super) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// A dispatcher found nothing and is about to sleep: called before its last look.
    pub(super) fn going_to_sleep(&self) {
        self.sleepers.fetch_add(1, SeqCst);
    }

    /// A dispatcher that counted itself asleep goes on without a ring: it found work on its
    /// last look, timed out or was interrupted. Should a ring have claimed it meanwhile, its
    /// wake-up is passed on or kept, and some later wait returns early: harmless.
    pub(super) fn woke_unrung(&self) {
        self.claim_sleeper();
    }

    fn claim_sleeper(&self) -> bool {
        self.sleepers
            .fetch_update(SeqCst, SeqCst, |sleepers| sleepers.checked_sub(1))
            .is_ok()
    }
}
