//! Channel waits from Ruby: try once with the GVL held, then wait without it in slices.
//!
//! Owns the one loop every blocking Ruby call uses (push, pop, publish with `wait:`, the
//! dispatchers' `next_batch`): a first attempt that costs no GVL release, then GVL-free
//! slices that Ruby's unblock function can cut short (and that a main-thread wait cuts short
//! itself when a signal is queued, see [`WaitSlice`]), with pending interrupts delivered
//! between slices, and the final failure of a send counted once. It must never touch a Ruby
//! object outside the GVL nor decide what a result means to Ruby.

use std::time::Instant;

use magnus::Error;
use tasker_channels_core::{
    Interrupt, Message, MonitoredChannel, RecvError, RecvWait, SendError, SendErrorKind,
    SendProgress, SendWait,
};

use crate::gvl::{check_interrupts, unblocker, without_gvl, WaitSlice};

/// How a receive ended.
pub enum Received<T> {
    Got(T),
    TimedOut,
    Closed,
}

/// Receives with `attempt(wait)` until it yields, the channel is closed and drained, or
/// `deadline` passes (`None`: wait for as long as it takes).
pub fn receive<T>(
    deadline: Option<Instant>,
    attempt: impl Fn(RecvWait<'_>) -> Result<T, RecvError>,
) -> Result<Received<T>, Error> {
    match attempt(RecvWait::until(Instant::now())) {
        Ok(taken) => return Ok(Received::Got(taken)),
        Err(RecvError::Closed) => return Ok(Received::Closed),
        Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(Received::TimedOut),
        Err(_) => {}
    }
    let interrupt = Interrupt::new();
    loop {
        let slice = WaitSlice::plan(deadline);
        interrupt.reset();
        let taken = without_gvl(
            || loop {
                match attempt(RecvWait::until(slice.step_end()).interruptible(&interrupt)) {
                    Err(RecvError::TimedOut) if slice.continues() => {}
                    outcome => return outcome,
                }
            },
            unblocker(&interrupt),
        );
        match taken {
            Some(Ok(taken)) => return Ok(Received::Got(taken)),
            Some(Err(RecvError::Closed)) => return Ok(Received::Closed),
            Some(Err(_)) | None => {
                check_interrupts()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Received::TimedOut);
                }
            }
        }
    }
}

/// Sends `message` with `attempt(message, wait)`, waiting for room until `deadline` (`None`:
/// forever) whatever `channel`'s policy. A refusal hands the message back for the next slice;
/// only the final failure is counted on `channel` and returned. A Ruby interrupt (kill, raise,
/// Timeout) is returned as the `Err` of the outer result, also counted.
pub fn send<R>(
    channel: &MonitoredChannel<Message>,
    message: Message,
    deadline: Option<Instant>,
    attempt: impl Fn(Message, SendWait<'_>) -> Result<R, SendError<Message>>,
) -> Result<Result<R, SendError<Message>>, Error> {
    let mut progress = SendProgress::new();
    let message = match attempt(message, SendWait::no_wait().slice(&mut progress)) {
        Ok(sent) => return Ok(Ok(sent)),
        Err(refused) if refused.kind() == SendErrorKind::Closed => {
            channel.record_rejected(SendErrorKind::Closed);
            return Ok(Err(refused));
        }
        Err(refused) => refused.into_inner(),
    };
    let interrupt = Interrupt::new();
    let mut pending = Some(message);
    loop {
        let slice = WaitSlice::plan(deadline);
        interrupt.reset();
        let result = without_gvl(
            || {
                let mut message = pending.take().expect("a message is pending while sending");
                loop {
                    let wait = SendWait::until(slice.step_end())
                        .interruptible(&interrupt)
                        .slice(&mut progress);
                    match attempt(message, wait) {
                        Err(refused)
                            if refused.kind() == SendErrorKind::TimedOut && slice.continues() =>
                        {
                            message = refused.into_inner();
                        }
                        outcome => return outcome,
                    }
                }
            },
            unblocker(&interrupt),
        );
        match result {
            None => {}
            Some(Ok(sent)) => return Ok(Ok(sent)),
            Some(Err(refused)) => {
                let kind = refused.kind();
                let final_failure = match kind {
                    SendErrorKind::Closed | SendErrorKind::Full => true,
                    SendErrorKind::TimedOut => deadline.is_some_and(|d| Instant::now() >= d),
                    SendErrorKind::Interrupted => false,
                };
                if final_failure {
                    channel.record_rejected(kind);
                    return Ok(Err(refused));
                }
                pending = Some(refused.into_inner());
            }
        }
        if let Err(interrupted) = check_interrupts() {
            channel.record_rejected(SendErrorKind::Interrupted);
            return Err(interrupted);
        }
    }
}
