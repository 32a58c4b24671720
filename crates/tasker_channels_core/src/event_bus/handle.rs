//! A bus that survives `fork`: [`BusHandle`] holds the live [`EventBus`] of this process and
//! rebuilds it from the same configuration on first use in a forked child.
//!
//! Owns telling a parent's bus from a child's (the fork generation it was built in), the
//! rebuild, and keeping a closed bus closed across the fork. tokio's worker threads do not
//! survive `fork`, so the parent's bus has no forwarder in the child: it must never be used
//! there, closed through its forwarder, or joined, only leaked.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::EventBus;
use crate::channel::MonitoredChannel;
use crate::config::Config;
use crate::event::Message;
use crate::fork::{CurrentProcess, ProcessIdentity};

/// The bus of this process, rebuilt from the same configuration after a fork.
///
/// `P` says which process this is; it is [`CurrentProcess`] outside tests.
#[derive(Debug)]
pub struct BusHandle<P: ProcessIdentity = CurrentProcess> {
    config: Arc<Config>,
    bus: ArcSwap<EventBus>,
    process: P,
}

impl BusHandle {
    /// Starts a bus for `config` in this process.
    pub fn start(config: Arc<Config>) -> Self {
        Self::start_in(config, CurrentProcess)
    }
}

impl<P: ProcessIdentity> BusHandle<P> {
    /// Starts a bus for `config` as a bus of `process`.
    pub(crate) fn start_in(config: Arc<Config>, process: P) -> Self {
        let bus = EventBus::start_in(&config, &process);
        BusHandle {
            config,
            bus: ArcSwap::new(bus),
            process,
        }
    }

    /// The configuration every bus of this handle is built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The live bus. In a forked child the parent's bus has no forwarder task: this builds a
    /// fresh one (same config, empty channels, event ids from the child's pid) and keeps the
    /// stale one allocated, never joined or freed (see `rebuild`). A bus closed before the
    /// fork stays closed.
    pub fn bus(&self) -> Arc<EventBus> {
        let bus = self.bus.load_full();
        if !bus.is_stale_in(&self.process) {
            return bus;
        }
        self.rebuild(&bus)
    }

    /// [`bus`](Self::bus) without touching the reference count, for the hot path.
    #[inline]
    pub fn current(&self) -> Guard<Arc<EventBus>> {
        let bus = self.bus.load();
        if !bus.is_stale_in(&self.process) {
            return bus;
        }
        self.rebuild(&bus);
        self.bus.load()
    }

    /// The bus if it belongs to this process, without rebuilding: `None` in a forked child
    /// that has not used it yet (its events belong to the parent).
    pub fn bus_if_current(&self) -> Option<Arc<EventBus>> {
        let bus = self.bus.load_full();
        (!bus.is_stale_in(&self.process)).then_some(bus)
    }

    /// The channel `name` of the live bus.
    pub fn channel(&self, name: &str) -> Option<MonitoredChannel<Message>> {
        self.bus().registry().get(name).cloned()
    }

    #[cold]
    fn rebuild(&self, stale: &Arc<EventBus>) -> Arc<EventBus> {
        let fresh = EventBus::start_in(&self.config, &self.process);
        if stale.is_closed() {
            fresh.close_intake();
        }
        let previous = self.bus.compare_and_swap(stale, Arc::clone(&fresh));
        if Arc::ptr_eq(&previous, stale) {
            // The parent's bus stays allocated in this process (its pages are the parent's
            // copy-on-write ones, and nothing here delivers from it): code that borrowed it
            // before the fork, such as a publish waiting for room when a trap handler forked,
            // may still read it. One per fork generation.
            std::mem::forget(previous);
            fresh
        } else {
            // Another thread rebuilt first; use its bus.
            fresh.close_intake();
            self.bus.load_full()
        }
    }
}

impl<P: ProcessIdentity> Drop for BusHandle<P> {
    /// A handle dropped without closing its bus: close the intake so the forwarder task
    /// finishes and releases the channels. Never blocks; a stale (pre-fork) bus is left alone.
    fn drop(&mut self) {
        let bus = self.bus.load();
        if !bus.is_stale_in(&self.process) {
            bus.close_intake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::channel::RecvWait;
    use crate::event::EventSource;
    use crate::event_bus::testing::{publish, small_config, take_all};
    use crate::event_bus::FFI_CHANNEL;
    use crate::payload::Payload;

    /// A process whose fork the test decides.
    #[derive(Debug)]
    struct SimulatedProcess {
        generation: AtomicU64,
        pid: AtomicU32,
    }

    impl SimulatedProcess {
        fn parent(pid: u32) -> Self {
            SimulatedProcess {
                generation: AtomicU64::new(0),
                pid: AtomicU32::new(pid),
            }
        }

        /// What the fork handler and the kernel do: a new generation and a new pid.
        fn fork_into(&self, child_pid: u32) {
            self.pid.store(child_pid, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl ProcessIdentity for &SimulatedProcess {
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }

        fn pid(&self) -> u32 {
            self.pid.load(Ordering::SeqCst)
        }
    }

    fn handle_in(process: &SimulatedProcess) -> BusHandle<&SimulatedProcess> {
        BusHandle::start_in(Arc::new(small_config()), process)
    }

    #[test]
    fn the_same_bus_serves_until_the_process_forks() {
        let process = SimulatedProcess::parent(100);
        let handle = handle_in(&process);
        let first = handle.bus();
        assert!(Arc::ptr_eq(&first, &handle.bus()));
        assert!(Arc::ptr_eq(&first, &handle.current()));
        assert!(handle.bus_if_current().is_some());
        assert_eq!(first.next_id(), 1, "the first process numbers from zero");
    }

    #[test]
    fn a_child_gets_a_fresh_empty_bus_with_ids_from_its_pid() {
        let process = SimulatedProcess::parent(100);
        let handle = handle_in(&process);
        let parent_bus = handle.bus();
        publish(&parent_bus, 1).unwrap();

        process.fork_into(4242);
        assert!(
            handle.bus_if_current().is_none(),
            "the parent's bus is not the child's"
        );
        let child_bus = handle.current();
        assert!(!Arc::ptr_eq(&parent_bus, &child_bus));
        assert!(Arc::ptr_eq(&child_bus, &handle.bus()), "rebuilt once");
        assert_eq!(child_bus.ffi().len(), 0, "the parent's events stay with it");
        assert!(!child_bus.is_closed());
        assert!(Arc::ptr_eq(handle.config(), handle.config()));

        let id = publish(&child_bus, 2).unwrap();
        assert_eq!(id, (4242 << 32) + 1);
        let delivered = take_all(&child_bus, 1);
        assert_eq!(*delivered[0].payload, Payload::Int(2));
        assert_eq!(delivered[0].source, EventSource::Ruby);
        // The parent's bus was left as it was, not closed.
        assert!(!parent_bus.is_closed());
    }

    #[test]
    fn a_bus_closed_before_the_fork_stays_closed_in_the_child() {
        let process = SimulatedProcess::parent(100);
        let handle = handle_in(&process);
        handle.bus().close_intake();
        process.fork_into(4243);
        let child_bus = handle.bus();
        assert!(child_bus.is_closed());
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        assert!(child_bus
            .next_batch(16, RecvWait::deadline(deadline))
            .is_err());
    }

    #[test]
    fn threads_racing_to_rebuild_share_one_bus() {
        let process = SimulatedProcess::parent(100);
        let handle = handle_in(&process);
        process.fork_into(4244);
        let buses: Vec<Arc<EventBus>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4).map(|_| scope.spawn(|| handle.bus())).collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let live = handle.bus();
        assert!(buses.iter().all(|bus| Arc::ptr_eq(bus, &live)));
        assert!(!live.is_closed());
    }

    #[test]
    fn dropping_the_handle_closes_its_own_bus_only() {
        let process = SimulatedProcess::parent(100);
        let handle = handle_in(&process);
        let bus = handle.bus();
        drop(handle);
        assert!(bus.is_closed());

        let handle = handle_in(&process);
        let parent_bus = handle.bus();
        process.fork_into(4245);
        drop(handle);
        assert!(
            !parent_bus.is_closed(),
            "a stale bus is leaked, never closed from the child"
        );
        assert_eq!(parent_bus.registry().get(FFI_CHANNEL).unwrap().len(), 0);
    }
}
