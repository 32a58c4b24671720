//! Exact accounting under concurrent producers: every message is delivered or counted.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tasker_channels_core::{
    ChannelInfo, Monitor, MonitoredChannel, OverflowPolicy, RecvError, RecvWait, SendErrorKind,
    SendOutcome,
};

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 20_000;

fn channel(
    overflow: OverflowPolicy,
    capacity: usize,
    send_timeout: Option<Duration>,
) -> MonitoredChannel<u64> {
    MonitoredChannel::from_info(
        ChannelInfo::for_tests(overflow, capacity, send_timeout),
        &Monitor::new(0.8, Duration::ZERO),
    )
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    sent: u64,
    dropped: u64,
    rejected: u64,
}

/// Runs the producers against one consumer that drains until the channel is closed and
/// empty; returns what the producers were told and what the consumer received (in order).
fn run(ch: &MonitoredChannel<u64>) -> (Tally, Vec<u64>) {
    let consumer = {
        let ch = ch.clone();
        thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match ch.recv_batch(64, RecvWait::forever()) {
                    Ok(batch) => got.extend(batch),
                    Err(RecvError::Closed) => return got,
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        })
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let ch = ch.clone();
            thread::spawn(move || {
                let mut tally = Tally::default();
                for i in 0..PER_PRODUCER {
                    match ch.send(p * PER_PRODUCER + i) {
                        Ok(SendOutcome::Sent) => tally.sent += 1,
                        Ok(SendOutcome::Dropped) => tally.dropped += 1,
                        Err(err) => {
                            assert_eq!(err.kind(), SendErrorKind::TimedOut);
                            tally.rejected += 1;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for producer in producers {
        let t = producer.join().unwrap();
        total.sent += t.sent;
        total.dropped += t.dropped;
        total.rejected += t.rejected;
    }
    ch.close();
    (total, consumer.join().unwrap())
}

/// Messages from one producer must arrive in the order it sent them.
fn assert_per_producer_order(got: &[u64]) {
    let mut last = vec![None; PRODUCERS as usize];
    for &msg in got {
        let producer = (msg / PER_PRODUCER) as usize;
        assert!(last[producer] < Some(msg), "out of order: {msg}");
        last[producer] = Some(msg);
    }
}

#[test]
fn block_delivers_everything() {
    let ch = channel(OverflowPolicy::Block, 16, None);
    let (told, got) = run(&ch);
    let stats = ch.stats();
    assert_eq!(told.sent, PRODUCERS * PER_PRODUCER);
    assert_eq!(got.len() as u64, told.sent);
    assert_eq!((stats.sent, stats.received), (told.sent, told.sent));
    assert_eq!((stats.dropped, stats.rejected), (0, 0));
    assert!(stats.blocked <= stats.full_events);
    assert_eq!(ch.sample().send_wait.count(), stats.sent);
    assert!(stats.high_water_mark <= 16);
    assert_per_producer_order(&got);
}

#[test]
fn drop_counts_every_discarded_message() {
    let ch = channel(OverflowPolicy::Drop, 8, None);
    let (told, got) = run(&ch);
    let stats = ch.stats();
    assert_eq!(told.sent + told.dropped, PRODUCERS * PER_PRODUCER);
    assert_eq!(stats.sent, told.sent);
    assert_eq!(stats.dropped, told.dropped);
    assert_eq!(stats.received, got.len() as u64);
    assert_eq!(stats.received, stats.sent);
    assert_eq!(stats.full_events, stats.dropped);
    assert_eq!((stats.rejected, stats.blocked), (0, 0));
    assert_per_producer_order(&got);
}

#[test]
fn drop_oldest_counts_every_displaced_message() {
    let ch = channel(OverflowPolicy::DropOldest, 8, None);
    let (told, got) = run(&ch);
    let stats = ch.stats();
    assert_eq!(told.sent, PRODUCERS * PER_PRODUCER);
    assert_eq!(stats.sent, told.sent);
    assert_eq!(stats.received, got.len() as u64);
    assert_eq!(stats.received + stats.dropped, stats.sent);
    assert_eq!(stats.full_events, stats.dropped);
    assert_eq!((stats.rejected, stats.blocked), (0, 0));
    assert_per_producer_order(&got);
}

#[test]
fn block_with_timeout_rejects_what_it_hands_back() {
    let ch = channel(OverflowPolicy::Block, 4, Some(Duration::from_micros(50)));
    let (told, got) = run(&ch);
    let stats = ch.stats();
    assert_eq!(told.sent + told.rejected, PRODUCERS * PER_PRODUCER);
    assert_eq!((stats.sent, stats.rejected), (told.sent, told.rejected));
    assert_eq!(stats.received, got.len() as u64);
    assert_eq!(stats.received, stats.sent);
    assert_eq!(stats.dropped, 0);
    assert_per_producer_order(&got);
}

#[test]
fn many_receivers_share_the_work_without_loss() {
    let ch = channel(OverflowPolicy::Block, 4, None);
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let (ch, total) = (ch.clone(), Arc::clone(&total));
            thread::spawn(move || {
                while let Ok(n) = ch.recv(RecvWait::forever()) {
                    total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let ch = ch.clone();
            thread::spawn(move || {
                for i in 1..=1000u64 {
                    assert!(ch.send(i).unwrap().is_sent());
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    ch.close();
    for receiver in receivers {
        receiver.join().unwrap();
    }
    assert_eq!(
        total.load(std::sync::atomic::Ordering::Relaxed),
        PRODUCERS * 500 * 1001
    );
    assert_eq!(ch.stats().received, PRODUCERS * 1000);
}
