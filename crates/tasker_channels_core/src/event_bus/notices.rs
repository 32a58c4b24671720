//! The channel monitor's notices turned into `channel.*` bus events.
//!
//! Owns the hook the monitor calls when a channel saturates, overflows or recovers: it builds
//! the event, damps overflow floods to one event per saturation episode, and offers it to
//! `shared.event_publisher`. It must never wait (the thread that triggered the notice is in
//! the middle of a send) and never hold the publisher strongly (the monitor would keep it
//! alive through itself).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use crate::channel::{SendWait, WeakChannel};
use crate::config::Config;
use crate::event::{Event, EventSource, Message};
use crate::monitor::{MonitorEvent, MonitorHook};
use crate::payload::Payload;
use crate::policy::OverflowPolicy;

/// What the monitor hook needs: ids, the publisher channel (weakly, to avoid a cycle through
/// the monitor), and one "overflow reported" flag per channel so a flood of drops yields one
/// `channel.overflow` event per saturation episode rather than one per message.
pub(super) struct NoticeState {
    ids: Arc<AtomicU64>,
    publisher: OnceLock<WeakChannel<Message>>,
    overflow_reported: Vec<(String, AtomicBool)>,
}

impl NoticeState {
    /// Notices for every channel of `config`, numbered from `ids`; they go nowhere until
    /// [`publish_to`](Self::publish_to) names the publisher.
    pub(super) fn new(config: &Config, ids: Arc<AtomicU64>) -> Self {
        NoticeState {
            ids,
            publisher: OnceLock::new(),
            overflow_reported: config
                .channels()
                .iter()
                .map(|spec| (spec.name.clone(), AtomicBool::new(false)))
                .collect(),
        }
    }

    /// Where notices go from now on (set once, when the bus exists).
    pub(super) fn publish_to(&self, publisher: WeakChannel<Message>) {
        let _ = self.publisher.set(publisher);
    }

    fn overflow_flag(&self, channel: &str) -> Option<&AtomicBool> {
        self.overflow_reported
            .iter()
            .find(|(name, _)| name == channel)
            .map(|(_, flag)| flag)
    }
}

impl MonitorHook for NoticeState {
    fn on_event(&self, notice: MonitorEvent) {
        let channel = notice.channel();
        match &notice {
            MonitorEvent::Recovered { .. } => {
                if let Some(flag) = self.overflow_flag(&channel.name) {
                    flag.store(false, Ordering::Relaxed);
                }
            }
            MonitorEvent::Overflow { .. } => {
                let already = self
                    .overflow_flag(&channel.name)
                    .is_some_and(|flag| flag.swap(true, Ordering::Relaxed));
                if already {
                    return;
                }
            }
            MonitorEvent::Saturated { .. } => {}
        }
        let Some(publisher) = self.publisher.get().and_then(WeakChannel::upgrade) else {
            return;
        };
        if publisher.is_closed() {
            // Shut down: notices about the last drain have nowhere to go, and are not refusals.
            return;
        }
        let event = Event {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            name: notice.event_name().into(),
            payload: notice_payload(&notice).into(),
            source: EventSource::Rust,
            published_at: SystemTime::now(),
        };
        // Never wait here: the thread that triggered the notice is in the middle of a send.
        let message = Message::Event(Box::new(event));
        // shared.event_publisher counts what enters; a notice it refuses is simply not said.
        let _not_said = if publisher.overflow() == OverflowPolicy::Block {
            publisher.send_with(message, SendWait::until(Instant::now()))
        } else {
            publisher.send(message)
        };
    }
}

fn notice_payload(notice: &MonitorEvent) -> Payload {
    let channel = notice.channel();
    let mut entries = vec![
        ("channel", Payload::from(channel.name.as_str())),
        ("component", Payload::from(channel.component.as_str())),
        ("capacity", Payload::from(channel.capacity)),
        ("length", Payload::from(notice.length())),
        ("policy", Payload::from(channel.overflow.as_str())),
    ];
    match notice {
        MonitorEvent::Saturated {
            usage_percent,
            threshold,
            suppressed,
            ..
        }
        | MonitorEvent::Recovered {
            usage_percent,
            threshold,
            suppressed,
            ..
        } => {
            entries.push(("usage_percent", Payload::from(*usage_percent)));
            entries.push(("threshold", Payload::from(*threshold)));
            entries.push(("suppressed", Payload::from(*suppressed)));
        }
        MonitorEvent::Overflow { action, .. } => {
            entries.push(("action", Payload::from(action.as_str())));
        }
    }
    Payload::symbol_hash(entries)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::channel::RecvWait;
    use crate::event::EventSource;
    use crate::event_bus::testing::{events, publish, small_bus};
    use crate::event_bus::FFI_CHANNEL;
    use crate::payload::Payload;

    #[test]
    fn monitor_notices_become_rust_events_once_per_overflow_episode() {
        let bus = small_bus();
        // Overflow shared.ffi many times; only one channel.overflow for it until it recovers.
        for n in 0..200 {
            let _ = publish(&bus, n);
        }
        let mut notices = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(batch) = bus.next_batch(16, RecvWait::until(deadline)) {
            if batch.is_empty() {
                break;
            }
            notices.extend(
                events(batch)
                    .into_iter()
                    .filter(|e| e.source == EventSource::Rust),
            );
        }
        let ffi_overflows = notices
            .iter()
            .filter(|e| {
                &*e.name == "channel.overflow"
                    && e.payload.get("channel") == Some(&Payload::from(FFI_CHANNEL))
            })
            .count();
        assert!(
            ffi_overflows <= 2,
            "overflow events must not flood: {ffi_overflows}"
        );
        let saturated = notices
            .iter()
            .find(|e| &*e.name == "channel.saturated")
            .expect("a saturation notice");
        assert_eq!(saturated.payload.get("capacity"), Some(&Payload::Int(4)));
        assert!(bus.stats().emitted >= 1);
    }
}
