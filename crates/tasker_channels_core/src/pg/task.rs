//! The owner's side of a PostgreSQL task (a listener or a forwarder): the reply that says
//! whether its first connection came up, and the controls that stop it and tell when it
//! ended.
//!
//! Owns fork safety for those controls: a task belongs to the process that spawned it, so in
//! a forked child every control is inert and, on drop, leaked, since the parent's threads
//! that may have held their locks no longer exist. It must never block.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{oneshot, watch};

use crate::fork;

/// Resolves once a task's first connection is up, or failed (the task has then ended); a
/// task that ended without saying reports its `stopped` error.
#[derive(Debug)]
pub struct FirstConnection<E> {
    reply: oneshot::Receiver<Result<(), E>>,
    stopped: fn() -> E,
}

impl<E> FirstConnection<E> {
    pub(crate) fn new(reply: oneshot::Receiver<Result<(), E>>, stopped: fn() -> E) -> Self {
        FirstConnection { reply, stopped }
    }
}

impl<E> Future for FirstConnection<E> {
    type Output = Result<(), E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let stopped = self.stopped;
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|result| result.unwrap_or_else(|_| Err(stopped())))
    }
}

/// How the owner reaches its task: a stop signal, the task's "finished" flag, and whatever
/// else the owner sends it (`extra`: the listener's commands), in the fork generation the
/// task was spawned in.
pub(crate) struct TaskControl<T = ()> {
    generation: u64,
    controls: ManuallyDrop<Controls<T>>,
}

struct Controls<T> {
    stop: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
    extra: T,
}

impl<T> TaskControl<T> {
    /// Controls of a task spawned in this process just now.
    pub(crate) fn new(
        stop: watch::Sender<bool>,
        finished: watch::Receiver<bool>,
        extra: T,
    ) -> Self {
        TaskControl {
            generation: fork::generation(),
            controls: ManuallyDrop::new(Controls {
                stop,
                finished,
                extra,
            }),
        }
    }

    /// True in a forked child: the task and its connections belong to the parent.
    pub(crate) fn is_stale(&self) -> bool {
        self.generation != fork::generation()
    }

    /// True once the task ended, and always in a forked child.
    pub(crate) fn is_finished(&self) -> bool {
        self.is_stale() || *self.controls.finished.borrow()
    }

    /// Asks the task to stop; does nothing in a forked child.
    pub(crate) fn request_stop(&self) {
        if !self.is_stale() {
            self.controls.stop.send_replace(true);
        }
    }

    /// Resolves once the task has ended (at once in a forked child).
    pub(crate) fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut finished = self.controls.finished.clone();
        let stale = self.is_stale();
        async move {
            if !stale {
                let _ = finished.wait_for(|done| *done).await;
            }
        }
    }

    /// What else the owner sends the task; check [`is_stale`](Self::is_stale) before use.
    pub(crate) fn extra(&self) -> &T {
        &self.controls.extra
    }
}

impl<T> Drop for TaskControl<T> {
    /// Stops the task without waiting; in a forked child, leaks the controls.
    fn drop(&mut self) {
        if self.is_stale() {
            return;
        }
        self.controls.stop.send_replace(true);
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.controls) };
    }
}
