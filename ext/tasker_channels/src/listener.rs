//! `Tasker::Channels::Listener` and `Tasker::Channels::Forwarder`: the Ruby faces of the core's
//! PostgreSQL listener and forwarder.
//!
//! Owns turning Ruby calls into listener and forwarder operations, waiting for their outcome
//! without the GVL (connects, LISTEN confirmations, stops, forward queue room) in slices that
//! Ruby can interrupt. Their errors become `Tasker::ConnectionError`,
//! `Tasker::PayloadTooLarge`, `Tasker::ClosedError` or `ArgumentError` in `crate::errors`.
//! It must never touch a Ruby object without the GVL and never block in `Drop`.

mod forwarding;

use std::future::Future;
use std::time::Instant;

use magnus::{function, method, prelude::*, Error, RArray, RHash, RModule, Ruby, Value};
use tasker_channels_core::pg::names::InvalidChannel;
use tasker_channels_core::pg::relay;
use tasker_channels_core::pg::stats::{write_prometheus, ForwarderStats, ListenerStats};
use tasker_channels_core::wait::{block_on, WaitStopped};
use tasker_channels_core::{Interrupt, ListenError, Listener, ListenerOptions, PrometheusText};

use crate::conversion::stats::listener_stats_to_ruby;
use crate::errors::{guard, listen_error};
use crate::gvl::{check_interrupts, deadline_from_seconds, unblocker, without_gvl, WaitSlice};
use crate::runtime::bus_of;

pub use forwarding::RbForwarder;

#[magnus::wrap(class = "Tasker::Channels::Listener", free_immediately, size)]
pub struct RbListener {
    listener: Listener,
}

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("Listener", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("_start", function!(RbListener::start, 6))?;
    class.define_singleton_method("_metrics", function!(prometheus, 2))?;
    class.define_singleton_method("_drain", function!(drain, 2))?;
    class.define_method("id", method!(RbListener::id, 0))?;
    class.define_method("target", method!(RbListener::target, 0))?;
    class.define_method("channels", method!(RbListener::channels, 0))?;
    class.define_method("connected?", method!(RbListener::is_connected, 0))?;
    class.define_method("stopped?", method!(RbListener::is_stopped, 0))?;
    class.define_method("stats", method!(RbListener::stats, 0))?;
    class.define_method("_listen", method!(RbListener::listen, 2))?;
    class.define_method("_unlisten", method!(RbListener::unlisten, 2))?;
    class.define_method("_stop", method!(RbListener::stop, 1))?;
    forwarding::define(ruby, channels)
}

impl RbListener {
    /// `_start(runtime, url, channels, coalesce, coalesce_limit, queue_warning)`: connects
    /// and LISTENs before it returns.
    fn start(
        ruby: &Ruby,
        runtime: Value,
        url: String,
        channels: Vec<String>,
        coalesce: bool,
        coalesce_limit: usize,
        queue_warning: f64,
    ) -> Result<Self, Error> {
        guard(|| {
            let bus = bus_of(ruby, runtime)?;
            let mut options = ListenerOptions::new(url, channels);
            options.coalesce = coalesce;
            options.coalesce_limit = coalesce_limit;
            options.queue_warning = queue_warning;
            let (listener, startup) =
                Listener::start(&bus, options).map_err(|error| listen_error(ruby, error))?;
            // Dropping the listener on an interrupt stops it.
            match wait(startup, None)? {
                Some(Ok(())) => Ok(RbListener { listener }),
                Some(Err(error)) => Err(listen_error(ruby, error)),
                None => unreachable!("an unbounded wait ends with the future or an interrupt"),
            }
        })
    }

    fn id(&self) -> u64 {
        self.listener.id()
    }

    fn target(&self) -> String {
        self.listener.target().to_owned()
    }

    fn channels(&self) -> Vec<String> {
        self.listener.channels()
    }

    fn is_connected(&self) -> bool {
        self.listener.is_connected()
    }

    fn is_stopped(&self) -> bool {
        self.listener.is_stopped()
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        listener_stats_to_ruby(ruby, &rb_self.listener.stats())
    }

    /// `_listen(names, timeout_seconds_or_nil)` → true once the server confirmed; false when
    /// the timeout passed first (the LISTEN still happens when the listener gets to it).
    fn listen(
        ruby: &Ruby,
        rb_self: &Self,
        names: Vec<String>,
        timeout: Option<f64>,
    ) -> Result<bool, Error> {
        rb_self.command(ruby, timeout, |listener| listener.listen(names))
    }

    /// `_unlisten(names, timeout_seconds_or_nil)`, as `_listen`.
    fn unlisten(
        ruby: &Ruby,
        rb_self: &Self,
        names: Vec<String>,
        timeout: Option<f64>,
    ) -> Result<bool, Error> {
        rb_self.command(ruby, timeout, |listener| listener.unlisten(names))
    }

    /// Sends a LISTEN/UNLISTEN `command` and waits up to `timeout` for the server's answer.
    fn command(
        &self,
        ruby: &Ruby,
        timeout: Option<f64>,
        command: impl FnOnce(
            &Listener,
        )
            -> Result<tasker_channels_core::pg::listener::CommandReply, InvalidChannel>,
    ) -> Result<bool, Error> {
        guard(|| {
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            let reply = command(&self.listener)
                .map_err(|invalid| Error::new(ruby.exception_arg_error(), invalid.to_string()))?;
            command_outcome(ruby, wait(reply, deadline)?)
        })
    }

    /// `_stop(timeout)` → true once the connections are closed within `timeout` seconds.
    fn stop(ruby: &Ruby, rb_self: &Self, timeout: Option<f64>) -> Result<bool, Error> {
        guard(|| {
            let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
            rb_self.listener.stop();
            Ok(wait(Box::pin(rb_self.listener.stopped()), deadline)?.is_some())
        })
    }
}

fn command_outcome(ruby: &Ruby, outcome: Option<Result<(), ListenError>>) -> Result<bool, Error> {
    match outcome {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(error)) => Err(listen_error(ruby, error)),
    }
}

/// `Listener._metrics(listeners, forwarders)`: Prometheus families for all of them at once,
/// so each family's header appears once.
fn prometheus(listeners: RArray, forwarders: RArray) -> Result<String, Error> {
    let mut listener_stats: Vec<ListenerStats> = Vec::with_capacity(listeners.len());
    for value in listeners.into_iter() {
        let listener = <&RbListener>::try_convert(value)?;
        listener_stats.push(listener.listener.stats());
    }
    let mut forwarder_stats: Vec<ForwarderStats> = Vec::with_capacity(forwarders.len());
    for value in forwarders.into_iter() {
        let forwarder = <&RbForwarder>::try_convert(value)?;
        forwarder_stats.push(forwarder.stats_snapshot());
    }
    let mut out = PrometheusText::new();
    write_prometheus(&mut out, &listener_stats, &forwarder_stats);
    Ok(out.into_string())
}

/// `Listener._drain(runtime, timeout)`: after the runtime's listeners stopped, closes
/// `orchestration.event_listeners` and waits until the relay moved the rest to the dispatch
/// side. True when it finished (or none ran) and gave nothing up.
fn drain(ruby: &Ruby, runtime: Value, timeout: Option<f64>) -> Result<bool, Error> {
    guard(|| {
        let deadline = deadline_from_seconds(ruby, "timeout:", timeout)?;
        let bus = bus_of(ruby, runtime)?;
        let Some(state) = relay::close(&bus) else {
            return Ok(true);
        };
        let finished = {
            let state = std::sync::Arc::clone(&state);
            Box::pin(async move { state.finished().await })
        };
        let done = wait(finished, deadline)?.is_some();
        Ok(done && state.undelivered() == 0)
    })
}

/// Waits for `future` without the GVL, in slices, delivering Ruby interrupts between them.
/// `None` when `deadline` passed first.
pub fn wait<F>(mut future: F, deadline: Option<Instant>) -> Result<Option<F::Output>, Error>
where
    F: Future + Unpin,
{
    let interrupt = Interrupt::new();
    loop {
        let slice = WaitSlice::plan(deadline);
        interrupt.reset();
        let outcome = without_gvl(
            || loop {
                match block_on(&mut future, Some(slice.step_end()), Some(&interrupt)) {
                    Err(WaitStopped::TimedOut) if slice.continues() => {}
                    outcome => return outcome.ok(),
                }
            },
            unblocker(&interrupt),
        );
        if let Some(Some(output)) = outcome {
            return Ok(Some(output));
        }
        check_interrupts()?;
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(None);
        }
    }
}
