use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::config::ChannelSpec;
use crate::monitor::{Monitor, MonitorEvent, OverflowAction};
use crate::policy::OverflowPolicy;
use crate::wait::Interrupt;

fn channel_with(
    overflow: OverflowPolicy,
    capacity: usize,
    send_timeout: Option<Duration>,
    monitor: &Monitor,
) -> MonitoredChannel<u32> {
    MonitoredChannel::from_info(
        ChannelInfo::for_tests(overflow, capacity, send_timeout),
        monitor,
    )
}

fn channel(policy: OverflowPolicy, capacity: usize) -> MonitoredChannel<u32> {
    channel_with(policy, capacity, None, &Monitor::new(0.8, Duration::ZERO))
}

fn fill(ch: &MonitoredChannel<u32>) {
    for i in 0..ch.capacity() as u32 {
        assert_eq!(ch.send(i).unwrap(), SendOutcome::Sent);
    }
}

type SendResult = Result<SendOutcome, SendError<u32>>;

/// `ch.send(msg)` on a thread of its own (where it may block).
fn send_on_another_thread(ch: &MonitoredChannel<u32>, msg: u32) -> thread::JoinHandle<SendResult> {
    let ch = ch.clone();
    thread::spawn(move || ch.send(msg))
}

/// The names of the notices a [`recording_monitor`] has seen, in order.
fn event_names(seen: &Mutex<Vec<MonitorEvent>>) -> Vec<&'static str> {
    let seen = seen.lock().unwrap();
    seen.iter().map(MonitorEvent::event_name).collect()
}

fn wait_until(condition: impl Fn() -> bool) {
    while !condition() {
        thread::yield_now();
    }
}

fn recording_monitor() -> (Monitor, Arc<Mutex<Vec<MonitorEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let monitor =
        Monitor::new(0.8, Duration::ZERO).with_hook(Arc::new(move |event: MonitorEvent| {
            sink.lock().unwrap().push(event);
        }));
    (monitor, seen)
}

#[test]
fn new_channel_reflects_its_spec() {
    let spec = ChannelSpec {
        name: "shared.ffi".into(),
        component: "shared".into(),
        capacity_key: "ruby_event_buffer_size".into(),
        capacity: 3,
        overflow: OverflowPolicy::Error,
        send_timeout: Some(Duration::from_millis(5)),
    };
    let ch: MonitoredChannel<()> = MonitoredChannel::new(&spec, &Monitor::new(0.8, Duration::ZERO));
    assert_eq!(ch.name(), "shared.ffi");
    assert_eq!(ch.component(), "shared");
    assert_eq!(ch.capacity(), 3);
    assert_eq!(ch.overflow(), OverflowPolicy::Error);
    assert_eq!(ch.send_timeout(), Some(Duration::from_millis(5)));
    assert!(ch.is_empty() && !ch.is_full() && !ch.is_closed());
}

#[test]
fn messages_come_out_in_order() {
    let ch = channel(OverflowPolicy::Block, 4);
    fill(&ch);
    assert!(ch.is_full());
    assert_eq!(ch.len(), 4);
    let got: Vec<u32> = (0..4).map(|_| ch.try_recv().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(ch.try_recv(), Err(RecvError::Empty));
    let stats = ch.stats();
    assert_eq!(
        (stats.sent, stats.received, stats.high_water_mark),
        (4, 4, 4)
    );
}

#[test]
fn drop_and_drop_oldest_discard_one_message_and_count_it() {
    // drop discards the new message; drop_oldest makes room by discarding the oldest.
    for (policy, outcome, kept, sent) in [
        (OverflowPolicy::Drop, SendOutcome::Dropped, [0, 1], 2),
        (OverflowPolicy::DropOldest, SendOutcome::Sent, [1, 99], 3),
    ] {
        let ch = channel(policy, 2);
        fill(&ch);
        assert_eq!(ch.send(99).unwrap(), outcome, "{policy}");
        assert_eq!([ch.try_recv().unwrap(), ch.try_recv().unwrap()], kept);
        let stats = ch.stats();
        assert_eq!(
            (stats.sent, stats.dropped, stats.rejected, stats.full_events),
            (sent, 1, 0, 1),
            "{policy}"
        );
    }
}

#[test]
fn error_fails_at_once_with_the_message_and_context() {
    let ch = channel(OverflowPolicy::Error, 1);
    fill(&ch);
    let err = ch.send(7).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Full);
    assert!(err.is_backpressure());
    assert_eq!(err.channel().name, "worker.command_processor");
    assert_eq!(err.channel().capacity, 1);
    assert_eq!(err.channel().overflow, OverflowPolicy::Error);
    assert_eq!(
        err.to_string(),
        "channel worker.command_processor is full (capacity 1, policy error)"
    );
    assert_eq!(err.into_inner(), 7);
    let stats = ch.stats();
    assert_eq!((stats.sent, stats.rejected, stats.blocked), (1, 1, 0));
}

#[test]
fn block_with_timeout_hands_the_message_back() {
    let ch = channel_with(
        OverflowPolicy::Block,
        1,
        Some(Duration::from_millis(10)),
        &Monitor::new(0.8, Duration::ZERO),
    );
    fill(&ch);
    let err = ch.send(5).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::TimedOut);
    assert!(err.waited() >= Duration::from_millis(10));
    assert_eq!(err.into_inner(), 5);
    let stats = ch.stats();
    assert_eq!(
        (stats.rejected, stats.blocked, stats.full_events),
        (1, 1, 1)
    );
    assert_eq!(stats.sent, 1);
}

#[test]
fn block_waits_for_room() {
    let ch = channel(OverflowPolicy::Block, 1);
    fill(&ch);
    let sender = send_on_another_thread(&ch, 1);
    wait_until(|| ch.stats().blocked == 1);
    assert_eq!(ch.recv(RecvWait::forever()), Ok(0));
    assert_eq!(sender.join().unwrap().unwrap(), SendOutcome::Sent);
    assert_eq!(ch.recv(RecvWait::forever()), Ok(1));
    let stats = ch.stats();
    assert_eq!((stats.sent, stats.received, stats.rejected), (2, 2, 0));
    assert_eq!(ch.sample().send_wait.count(), 2);
    assert_eq!(ch.sample().send_wait.zero_wait, 1);
}

#[test]
fn explicit_wait_lets_an_error_channel_wait_for_room() {
    let ch = channel(OverflowPolicy::Error, 1);
    fill(&ch);
    let sender = {
        let ch = ch.clone();
        thread::spawn(move || ch.send_with(1, SendWait::forever()))
    };
    wait_until(|| ch.stats().blocked == 1);
    assert_eq!(ch.try_recv(), Ok(0));
    assert_eq!(sender.join().unwrap().unwrap(), SendOutcome::Sent);

    let err = ch
        .send_with(
            2,
            SendWait::until(Instant::now() + Duration::from_millis(5)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::TimedOut);
    assert_eq!(ch.stats().rejected, 1);
}

#[test]
fn interrupt_wakes_a_blocked_send_and_returns_the_message() {
    let ch = channel(OverflowPolicy::Block, 1);
    fill(&ch);
    let interrupt = Arc::new(Interrupt::new());
    let sender = {
        let (ch, interrupt) = (ch.clone(), Arc::clone(&interrupt));
        thread::spawn(move || ch.send_with(9, SendWait::policy().interruptible(&interrupt)))
    };
    wait_until(|| ch.stats().blocked == 1);
    interrupt.trigger();
    let err = sender.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Interrupted);
    assert_eq!(err.into_inner(), 9);
    assert_eq!(ch.stats().rejected, 1);
    assert_eq!(ch.len(), 1);
}

#[test]
fn interrupt_wakes_a_blocked_recv() {
    let ch = channel(OverflowPolicy::Block, 1);
    let interrupt = Arc::new(Interrupt::new());
    let receiver = {
        let (ch, interrupt) = (ch.clone(), Arc::clone(&interrupt));
        thread::spawn(move || ch.recv(RecvWait::forever().interruptible(&interrupt)))
    };
    interrupt.trigger();
    assert_eq!(receiver.join().unwrap(), Err(RecvError::Interrupted));
}

#[test]
fn recv_times_out_when_nothing_arrives() {
    let ch = channel(OverflowPolicy::Block, 1);
    let deadline = Instant::now() + Duration::from_millis(5);
    assert_eq!(ch.recv(RecvWait::until(deadline)), Err(RecvError::TimedOut));
    assert_eq!(
        ch.recv_batch(3, RecvWait::until(Instant::now())),
        Err(RecvError::TimedOut)
    );
}

#[test]
fn close_wakes_waiting_senders_and_receivers() {
    let full = channel(OverflowPolicy::Block, 1);
    fill(&full);
    let sender = send_on_another_thread(&full, 1);
    let empty = channel(OverflowPolicy::Block, 1);
    let receiver = {
        let ch = empty.clone();
        thread::spawn(move || ch.recv(RecvWait::forever()))
    };
    wait_until(|| full.stats().blocked == 1);
    assert!(full.close());
    assert!(!full.close(), "close is idempotent");
    empty.close();
    let err = sender.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Closed);
    assert_eq!(err.into_inner(), 1);
    assert_eq!(receiver.join().unwrap(), Err(RecvError::Closed));
}

#[test]
fn closed_channel_refuses_sends_and_drains_to_receivers() {
    let ch = channel(OverflowPolicy::DropOldest, 3);
    assert!(ch.send(1).unwrap().is_sent());
    assert!(ch.send(2).unwrap().is_sent());
    ch.close();
    assert!(ch.is_closed());
    assert_eq!(ch.send(3).unwrap_err().kind(), SendErrorKind::Closed);
    assert_eq!(ch.recv(RecvWait::forever()), Ok(1));
    assert_eq!(ch.recv_batch(10, RecvWait::forever()), Ok(vec![2]));
    assert_eq!(ch.recv(RecvWait::forever()), Err(RecvError::Closed));
    assert_eq!(ch.try_recv(), Err(RecvError::Closed));
    assert_eq!(ch.stats().rejected, 1);
}

#[test]
fn recv_batch_takes_up_to_max_and_wakes_senders() {
    let ch = channel(OverflowPolicy::Block, 2);
    fill(&ch);
    let senders: Vec<_> = (10..12).map(|n| send_on_another_thread(&ch, n)).collect();
    wait_until(|| ch.stats().blocked == 2);
    let mut got = ch.recv_batch(5, RecvWait::forever()).unwrap();
    // A woken sender may slip its message into the same batch; the queued ones come first.
    assert_eq!(got[..2], [0, 1]);
    for sender in senders {
        assert_eq!(sender.join().unwrap().unwrap(), SendOutcome::Sent);
    }
    while got.len() < 4 {
        let before = got.len();
        assert_eq!(ch.recv_batch_into(&mut got, 1, RecvWait::forever()), Ok(1));
        assert_eq!(got.len(), before + 1);
    }
    got[2..].sort_unstable();
    assert_eq!(got, [0, 1, 10, 11]);
    assert_eq!(ch.recv_batch(0, RecvWait::forever()), Ok(vec![]));
    assert_eq!(ch.try_recv(), Err(RecvError::Empty));
    assert_eq!(ch.stats().received, 4);
}

#[test]
fn sliced_wait_counts_one_send_once() {
    let (monitor, seen) = recording_monitor();
    let ch = channel_with(OverflowPolicy::Error, 1, None, &monitor);
    fill(&ch);
    let mut progress = SendProgress::new();
    let mut msg = 5;
    for _ in 0..3 {
        let slice_end = Instant::now() + Duration::from_millis(2);
        let err = ch
            .send_with(msg, SendWait::until(slice_end).slice(&mut progress))
            .unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::TimedOut);
        msg = err.into_inner();
    }
    let stats = ch.stats();
    assert_eq!(
        (stats.rejected, stats.blocked, stats.full_events),
        (0, 1, 1)
    );
    assert!(progress.waiting_since().is_some());
    let overflows = |seen: &Mutex<Vec<MonitorEvent>>| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, MonitorEvent::Overflow { .. }))
            .count()
    };
    assert_eq!(overflows(&seen), 0);

    ch.record_rejected(SendErrorKind::TimedOut);
    assert_eq!(ch.stats().rejected, 1);
    assert_eq!(overflows(&seen), 1);

    // A later slice that finds room records the wait from the first slice.
    assert_eq!(ch.try_recv(), Ok(0));
    let slice_end = Instant::now() + Duration::from_millis(2);
    assert_eq!(
        ch.send_with(msg, SendWait::until(slice_end).slice(&mut progress))
            .unwrap(),
        SendOutcome::Sent
    );
    let wait = ch.sample().send_wait;
    assert_eq!((wait.zero_wait, wait.count()), (1, 2));
    assert!(wait.sum_us >= 6_000, "{}", wait.sum_us);
}

#[test]
fn scheduled_length_checks_never_miss_a_peak_or_a_crossing() {
    let (monitor, seen) = recording_monitor();
    // Threshold 0.8 of 50: warns at 40, re-arms below 35.
    let ch = channel_with(OverflowPolicy::Error, 50, None, &monitor);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next_random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % 100
    };
    let (mut peak, mut armed, mut expected) = (0, true, Vec::new());
    for i in 0..50_000 {
        // Drift up and down so the length sweeps the whole range many times.
        let send_bias = if (i / 2_000) % 2 == 0 { 60 } else { 40 };
        if next_random() < send_bias {
            if ch.len() == ch.capacity() {
                continue;
            }
            assert!(ch.send(i).unwrap().is_sent());
            peak = peak.max(ch.len());
            if armed && ch.len() >= 40 {
                expected.push("channel.saturated");
                armed = false;
            }
        } else if ch.try_recv().is_ok() && !armed && ch.len() < 35 {
            expected.push("channel.recovered");
            armed = true;
        }
    }
    assert!(expected.len() > 4, "the walk should cross several times");
    let names = event_names(&seen);
    assert_eq!(names, expected);
    assert_eq!(ch.stats().high_water_mark, peak);
    assert_eq!(ch.stats().full_events, 0);
}

#[test]
fn every_overflow_reaches_the_hook() {
    let (monitor, seen) = recording_monitor();
    let drop = channel_with(OverflowPolicy::Drop, 1, None, &monitor);
    let oldest = channel_with(OverflowPolicy::DropOldest, 1, None, &monitor);
    let error = channel_with(OverflowPolicy::Error, 1, None, &monitor);
    for ch in [&drop, &oldest, &error] {
        fill(ch);
        let _ = ch.send(1);
    }
    let actions: Vec<OverflowAction> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            MonitorEvent::Overflow { action, .. } => Some(*action),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        [
            OverflowAction::DroppedNew,
            OverflowAction::DroppedOldest,
            OverflowAction::Rejected
        ]
    );
}

#[test]
fn a_sender_finding_the_channel_full_raises_saturation() {
    let (monitor, seen) = recording_monitor();
    let ch = channel_with(OverflowPolicy::Error, 2, None, &monitor);
    // Fill behind the watch's back, so no send ever reported a length change.
    ch.shared.queue.push(1).unwrap();
    ch.shared.queue.push(2).unwrap();
    assert!(seen.lock().unwrap().is_empty());
    let _ = ch.send(3);
    let _ = ch.send(4);
    let names = event_names(&seen);
    assert_eq!(
        names,
        ["channel.saturated", "channel.overflow", "channel.overflow"]
    );
    assert_eq!(ch.stats().high_water_mark, 2);
}

#[test]
fn saturation_warns_once_per_crossing_and_rearms_below_the_margin() {
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let buffer = Arc::clone(&buffer);
        move || CaptureWriter(Arc::clone(&buffer))
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let warnings = || {
        String::from_utf8(buffer.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("channel saturated"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    tracing::subscriber::with_default(subscriber, || {
        // Threshold 0.8 of 10: warns at 8, re-arms below 7.
        let ch = channel(OverflowPolicy::Block, 10);
        for i in 0..10 {
            assert!(ch.send(i).unwrap().is_sent());
        }
        assert_eq!(warnings().len(), 1);
        for _ in 0..3 {
            ch.try_recv().unwrap(); // down to 7: still not re-armed
        }
        assert!(ch.send(0).unwrap().is_sent());
        assert_eq!(warnings().len(), 1);
        ch.try_recv().unwrap();
        ch.try_recv().unwrap(); // 6 < 7: re-armed
        assert!(ch.send(0).unwrap().is_sent()); // 7
        assert_eq!(warnings().len(), 1);
        assert!(ch.send(0).unwrap().is_sent()); // 8: second crossing
        assert_eq!(warnings().len(), 2);
    });
    let first = &warnings()[0];
    for field in [
        "channel=worker.command_processor",
        "component=worker",
        "capacity=10",
        "length=8",
        "usage_percent=80",
        "threshold=0.8",
    ] {
        assert!(first.contains(field), "{field} missing from {first}");
    }
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn channels_and_their_futures_cross_threads() {
    fn shared_across_threads<X: Send + Sync>(_: &X) {}
    fn movable_to_a_task<X: Send>(_: &X) {}
    let ch = channel(OverflowPolicy::Block, 1);
    shared_across_threads(&ch);
    movable_to_a_task(&ch.send_async(1));
    movable_to_a_task(&ch.send_async_forever(1));
    movable_to_a_task(&ch.recv_async());
    movable_to_a_task(&ch.recv_batch_async(4));
}

#[test]
fn weak_channel_does_not_keep_the_channel_alive() {
    let ch = channel(OverflowPolicy::Block, 1);
    let weak = ch.downgrade();
    assert!(weak.upgrade().is_some());
    drop(ch);
    assert!(weak.upgrade().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_send_and_recv_move_every_message() {
    let ch: MonitoredChannel<u32> = channel(OverflowPolicy::Block, 4);
    let producer = {
        let ch = ch.clone();
        tokio::spawn(async move {
            for i in 0..1000 {
                assert_eq!(ch.send_async(i).await.unwrap(), SendOutcome::Sent);
            }
            ch.close();
        })
    };
    let mut got = Vec::new();
    loop {
        match ch.recv_batch_async(16).await {
            Ok(batch) => got.extend(batch),
            Err(RecvError::Closed) => break,
            Err(other) => panic!("{other}"),
        }
    }
    producer.await.unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    let stats = ch.stats();
    assert_eq!(
        (stats.sent, stats.received, stats.rejected),
        (1000, 1000, 0)
    );
    assert_eq!(ch.recv_async().await, Err(RecvError::Closed));
}

#[tokio::test]
async fn async_block_send_times_out_with_the_message() {
    let ch = channel_with(
        OverflowPolicy::Block,
        1,
        Some(Duration::from_millis(10)),
        &Monitor::new(0.8, Duration::ZERO),
    );
    assert!(ch.send_async(1).await.unwrap().is_sent());
    let err = ch.send_async(2).await.unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::TimedOut);
    assert_eq!(err.into_inner(), 2);
    assert_eq!(ch.stats().rejected, 1);
    assert_eq!(ch.recv_async().await, Ok(1));
}

#[tokio::test]
async fn async_send_applies_non_blocking_policies() {
    let ch = channel(OverflowPolicy::Drop, 1);
    assert!(ch.send_async(1).await.unwrap().is_sent());
    assert_eq!(ch.send_async(2).await.unwrap(), SendOutcome::Dropped);
    assert_eq!(ch.recv_async().await, Ok(1));
}

#[test]
fn async_sender_and_blocking_receiver_share_a_channel() {
    let ch = channel(OverflowPolicy::Block, 2);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let receiver = {
        let ch = ch.clone();
        thread::spawn(move || {
            let mut total = 0u64;
            while let Ok(n) = ch.recv(RecvWait::forever()) {
                total += u64::from(n);
            }
            total
        })
    };
    runtime.block_on(async {
        for i in 0..500 {
            assert!(ch.send_async(i).await.unwrap().is_sent());
        }
    });
    ch.close();
    assert_eq!(receiver.join().unwrap(), (0..500u64).sum::<u64>());
}

#[test]
fn a_first_try_then_waiting_slices_count_one_full_event() {
    let ch = channel(OverflowPolicy::Block, 1);
    assert_eq!(ch.send(1).unwrap(), SendOutcome::Sent);
    let mut progress = SendProgress::new();
    let msg = ch
        .send_with(2, SendWait::no_wait().slice(&mut progress))
        .unwrap_err()
        .into_inner();
    let deadline = Instant::now() + Duration::from_millis(5);
    let refused = ch
        .send_with(msg, SendWait::until(deadline).slice(&mut progress))
        .unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::TimedOut);
    assert_eq!(ch.stats().full_events, 1);
    assert_eq!(
        ch.stats().rejected,
        0,
        "slices leave the final count to the caller"
    );
}
