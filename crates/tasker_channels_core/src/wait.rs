//! Blocking waits that can time out and be interrupted from another thread.
//!
//! Owns the one small executor every blocking channel operation parks in, and the
//! [`Interrupt`] flag that wakes it. The Ruby binding waits here without the GVL and hands
//! Ruby an unblock function that calls [`Interrupt::trigger`], so `trigger` must never
//! allocate, never block for more than a short critical section, and be callable from any
//! thread. This module must never know what it is waiting for: it only polls a future.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

/// Why [`block_on`] gave up before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WaitStopped {
    /// The deadline passed.
    #[error("the wait timed out")]
    TimedOut,
    /// [`Interrupt::trigger`] was called.
    #[error("the wait was interrupted")]
    Interrupted,
}

/// A flag another thread can raise to stop a blocking wait.
///
/// Share it with `Arc`. One thread waits with it at a time: a second thread registering
/// replaces the first as the one `trigger` unparks (the first still sees the flag the next
/// time it wakes). The flag stays raised until [`Interrupt::reset`], so a trigger that lands
/// between two waits is not lost.
#[derive(Debug, Default)]
pub struct Interrupt {
    triggered: AtomicBool,
    waiter: Mutex<Option<Thread>>,
}

impl Interrupt {
    /// An interrupt not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag and wakes the thread waiting with it, if any.
    ///
    /// Safe from any thread, including an unblock callback: it takes a lock that is only
    /// ever held for a pointer-sized store, and unparking does not allocate.
    pub fn trigger(&self) {
        // The flag is published before the waiter is read, and `block_on` registers before
        // it reads the flag, so either the waiter sees the flag or we see the waiter.
        self.triggered.store(true, Ordering::SeqCst);
        if let Some(thread) = self.waiter().as_ref() {
            thread.unpark();
        }
    }

    /// Raises the flag without waking anyone and without taking any lock: for an unblock
    /// function that may run inside a signal handler and unparks the waiting thread itself
    /// (`std::thread::Thread::unpark` is a lock-free atomic swap and a futex wake).
    pub fn raise_flag(&self) {
        self.triggered.store(true, Ordering::SeqCst);
    }

    /// Lowers the flag so the interrupt can be used for another wait.
    pub fn reset(&self) {
        self.triggered.store(false, Ordering::SeqCst);
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    fn waiter(&self) -> MutexGuard<'_, Option<Thread>> {
        // Nothing that can panic runs under this lock, so poisoning carries no broken state.
        self.waiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register_current_thread(&self) -> Registration<'_> {
        *self.waiter() = Some(thread::current());
        Registration { interrupt: self }
    }
}

/// Removes the waiting thread from its [`Interrupt`] when the wait ends, however it ends.
struct Registration<'a> {
    interrupt: &'a Interrupt,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiter = self.interrupt.waiter();
        let registered_here = waiter
            .as_ref()
            .is_some_and(|thread| thread.id() == thread::current().id());
        if registered_here {
            *waiter = None;
        }
    }
}

/// Wakes a parked thread; one per thread, reused by every wait on it.
struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static THREAD_WAKER: Waker = Waker::from(Arc::new(Unparker(thread::current())));
}

/// Runs `fut` to completion on this thread, parking between polls.
///
/// Stops with [`WaitStopped::TimedOut`] once `deadline` passes and with
/// [`WaitStopped::Interrupted`] once `interrupt` is triggered (also when it was already
/// triggered on entry), dropping the future. A future that is ready when polled wins over
/// a deadline or interrupt observed at the same moment, so completed work is never thrown
/// away. `deadline: None` waits for as long as it takes.
pub fn block_on<F: Future>(
    fut: F,
    deadline: Option<Instant>,
    interrupt: Option<&Interrupt>,
) -> Result<F::Output, WaitStopped> {
    let mut fut = pin!(fut);
    let waker = THREAD_WAKER.with(Waker::clone);
    let mut cx = Context::from_waker(&waker);
    let _registration = interrupt.map(Interrupt::register_current_thread);

    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return Ok(output);
        }
        if interrupt.is_some_and(Interrupt::is_triggered) {
            return Err(WaitStopped::Interrupted);
        }
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(WaitStopped::TimedOut);
                }
                thread::park_timeout(deadline - now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{pending, ready};
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;

    #[test]
    fn ready_future_completes() {
        assert_eq!(block_on(ready(7), None, None), Ok(7));
    }

    #[test]
    fn ready_future_wins_over_a_raised_interrupt() {
        let interrupt = Interrupt::new();
        interrupt.trigger();
        assert_eq!(block_on(ready(1), None, Some(&interrupt)), Ok(1));
    }

    #[test]
    fn pending_future_times_out_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            block_on(pending::<()>(), Some(deadline), None),
            Err(WaitStopped::TimedOut)
        );
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn past_deadline_stops_without_parking() {
        let past = Instant::now();
        assert_eq!(
            block_on(pending::<()>(), Some(past), None),
            Err(WaitStopped::TimedOut)
        );
    }

    #[test]
    fn already_triggered_interrupt_stops_a_pending_wait() {
        let interrupt = Interrupt::new();
        interrupt.trigger();
        assert_eq!(
            block_on(pending::<()>(), None, Some(&interrupt)),
            Err(WaitStopped::Interrupted)
        );
    }

    #[test]
    fn trigger_from_another_thread_wakes_an_endless_wait() {
        let interrupt = Arc::new(Interrupt::new());
        let (started_tx, started_rx) = sync_channel(1);
        let waiter = {
            let interrupt = Arc::clone(&interrupt);
            thread::spawn(move || {
                started_tx.send(()).unwrap();
                block_on(pending::<()>(), None, Some(&interrupt))
            })
        };
        started_rx.recv().unwrap();
        interrupt.trigger();
        assert_eq!(waiter.join().unwrap(), Err(WaitStopped::Interrupted));
    }

    #[test]
    fn reset_lowers_the_flag() {
        let interrupt = Interrupt::new();
        interrupt.trigger();
        assert!(interrupt.is_triggered());
        interrupt.reset();
        assert!(!interrupt.is_triggered());
        let past = Instant::now();
        assert_eq!(
            block_on(pending::<()>(), Some(past), Some(&interrupt)),
            Err(WaitStopped::TimedOut)
        );
    }

    #[test]
    fn waiter_is_unregistered_after_the_wait() {
        let interrupt = Interrupt::new();
        let _ = block_on(ready(()), None, Some(&interrupt));
        assert!(interrupt.waiter().is_none());
    }

    #[test]
    fn waker_from_another_thread_resumes_the_wait() {
        use std::sync::atomic::AtomicBool;

        struct FlagFuture {
            flag: Arc<AtomicBool>,
            waker_tx: Option<std::sync::mpsc::SyncSender<Waker>>,
        }
        impl Future for FlagFuture {
            type Output = ();
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                if self.flag.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                if let Some(tx) = self.waker_tx.take() {
                    tx.send(cx.waker().clone()).unwrap();
                }
                Poll::Pending
            }
        }

        let flag = Arc::new(AtomicBool::new(false));
        let (waker_tx, waker_rx) = sync_channel(1);
        let setter = {
            let flag = Arc::clone(&flag);
            thread::spawn(move || {
                let waker: Waker = waker_rx.recv().unwrap();
                flag.store(true, Ordering::SeqCst);
                waker.wake();
            })
        };
        let fut = FlagFuture {
            flag,
            waker_tx: Some(waker_tx),
        };
        assert_eq!(block_on(fut, None, None), Ok(()));
        setter.join().unwrap();
    }
}
