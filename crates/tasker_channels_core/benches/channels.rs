//! What monitoring costs: the monitored channel against the raw channels it could have been.
//!
//! Every variant moves the same number of `u64`s through the same capacity, from 1 or 4
//! producer threads to one consumer thread (and on a single thread, where nothing waits),
//! with blocking sends and receives. The baseline is `raw-pair`: concurrent-queue's
//! array-backed bounded queue plus event-listener with the monitored channel's wait logic
//! and no monitoring. The monitored channel keeps its messages in a block queue that
//! allocates as it fills instead, so the ratio covers both what monitoring costs and what
//! not reserving every slot up front costs. async-channel (the same pair with its own
//! extras), crossbeam and tokio mpsc are the usual alternatives; an unbounded crossbeam
//! channel shows what bounding costs.
//!
//! After criterion, the bench times each variant itself several times and prints medians
//! and monitored/other ratios, since criterion's numbers are not easy to read back. The
//! budget is 10% over the raw pair.

use std::hint::black_box;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_queue::{ConcurrentQueue, PushError};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use event_listener::{Event, Listener};
use tasker_channels_core::{ChannelInfo, Monitor, MonitoredChannel, OverflowPolicy, RecvWait};

const CAPACITY: usize = 1024;
const MESSAGES: u64 = 200_000;
/// Producer threads per run; `SAME_THREAD` sends and receives on one thread.
const PRODUCER_COUNTS: [u64; 3] = [SAME_THREAD, 1, 4];
const SAME_THREAD: u64 = 0;
const TABLE_RUNS: usize = 21;

/// One kind of channel, driven from plain threads.
trait Pipe {
    const NAME: &'static str;
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn open(capacity: usize) -> (Self::Tx, Self::Rx);
    fn clone_tx(tx: &Self::Tx) -> Self::Tx;
    fn send(tx: &Self::Tx, value: u64);
    fn recv(rx: &mut Self::Rx) -> u64;
}

struct Monitored;

impl Pipe for Monitored {
    const NAME: &'static str = "monitored";
    type Tx = MonitoredChannel<u64>;
    type Rx = MonitoredChannel<u64>;

    fn open(capacity: usize) -> (Self::Tx, Self::Rx) {
        let info = ChannelInfo {
            name: "bench.channel".into(),
            component: "bench".into(),
            capacity,
            overflow: OverflowPolicy::Block,
            send_timeout: None,
        };
        let channel = MonitoredChannel::from_info(info, &Monitor::new(0.8, Duration::ZERO));
        (channel.clone(), channel)
    }

    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }

    fn send(tx: &Self::Tx, value: u64) {
        let _ = tx.send(value).expect("open channel");
    }

    fn recv(rx: &mut Self::Rx) -> u64 {
        rx.recv(RecvWait::forever()).expect("open channel")
    }
}

/// An array-backed bounded queue with the monitored channel's wake-up logic (listen then
/// re-check, and a waiter count so nobody locks event-listener's list when no one waits)
/// and no monitoring at all: the baseline the 10% budget is measured against.
struct RawPair;

struct RawPairChannel {
    queue: ConcurrentQueue<u64>,
    room: Event,
    room_waiting: AtomicUsize,
    items: Event,
    items_waiting: AtomicUsize,
}

fn notify_waiters(event: &Event, waiting: &AtomicUsize) {
    fence(Ordering::SeqCst);
    if waiting.load(Ordering::Relaxed) > 0 {
        event.notify_additional(1);
    }
}

impl Pipe for RawPair {
    const NAME: &'static str = "raw-pair";
    type Tx = Arc<RawPairChannel>;
    type Rx = Arc<RawPairChannel>;

    fn open(capacity: usize) -> (Self::Tx, Self::Rx) {
        let channel = Arc::new(RawPairChannel {
            queue: ConcurrentQueue::bounded(capacity),
            room: Event::new(),
            room_waiting: AtomicUsize::new(0),
            items: Event::new(),
            items_waiting: AtomicUsize::new(0),
        });
        (Arc::clone(&channel), channel)
    }

    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        Arc::clone(tx)
    }

    fn send(tx: &Self::Tx, mut value: u64) {
        loop {
            match tx.queue.push(value) {
                Ok(()) => break,
                Err(PushError::Full(back)) => value = back,
                Err(PushError::Closed(_)) => panic!("closed"),
            }
            tx.room_waiting.fetch_add(1, Ordering::SeqCst);
            let listener = tx.room.listen();
            let pushed = match tx.queue.push(value) {
                Ok(()) => true,
                Err(PushError::Full(back)) => {
                    value = back;
                    listener.wait();
                    false
                }
                Err(PushError::Closed(_)) => panic!("closed"),
            };
            tx.room_waiting.fetch_sub(1, Ordering::Release);
            if pushed {
                break;
            }
        }
        notify_waiters(&tx.items, &tx.items_waiting);
    }

    fn recv(rx: &mut Self::Rx) -> u64 {
        loop {
            if let Ok(value) = rx.queue.pop() {
                notify_waiters(&rx.room, &rx.room_waiting);
                return value;
            }
            rx.items_waiting.fetch_add(1, Ordering::SeqCst);
            let listener = rx.items.listen();
            let popped = rx.queue.pop();
            if popped.is_err() {
                listener.wait();
            }
            rx.items_waiting.fetch_sub(1, Ordering::Release);
            if let Ok(value) = popped {
                notify_waiters(&rx.room, &rx.room_waiting);
                return value;
            }
        }
    }
}

struct AsyncChannel;

impl Pipe for AsyncChannel {
    const NAME: &'static str = "async-channel";
    type Tx = async_channel::Sender<u64>;
    type Rx = async_channel::Receiver<u64>;

    fn open(capacity: usize) -> (Self::Tx, Self::Rx) {
        async_channel::bounded(capacity)
    }

    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }

    fn send(tx: &Self::Tx, value: u64) {
        tx.send_blocking(value).expect("open channel");
    }

    fn recv(rx: &mut Self::Rx) -> u64 {
        rx.recv_blocking().expect("open channel")
    }
}

struct Crossbeam;

impl Pipe for Crossbeam {
    const NAME: &'static str = "crossbeam";
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;

    fn open(capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(capacity)
    }

    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }

    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).expect("open channel");
    }

    fn recv(rx: &mut Self::Rx) -> u64 {
        rx.recv().expect("open channel")
    }
}

struct CrossbeamUnbounded;

impl Pipe for CrossbeamUnbounded {
    const NAME: &'static str = "crossbeam-unbounded";
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;

    // The comparison baseline for what bounding costs; never used outside this bench.
    #[allow(clippy::disallowed_methods)]
    fn open(_capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::unbounded()
    }

    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }

    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).expect("open channel");
    }

    fn recv(rx: &mut Self::Rx) -> u64 {
        rx.recv().expect("open channel")
    }
}

struct TokioMpsc;

impl Pipe for TokioMpsc {
    const NAME: &'static str = "tokio-mpsc";
    type Tx = tokio::sync::mpsc::Sender<u64>;
    type Rx = tokio::sync::mpsc::Receiver<u64>;

    fn open(capacity: usize) -> (Self::Tx, Self::Rx) {
        tokio::sync::mpsc::channel(capacity)
    }

    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }

    fn send(tx: &Self::Tx, value: u64) {
        tx.blocking_send(value).expect("open channel");
    }

    fn recv(rx: &mut Self::Rx) -> u64 {
        rx.blocking_recv().expect("open channel")
    }
}

/// Moves `messages` from `producers` threads to one consumer; returns the time from the
/// moment all threads are ready until the consumer has received the last message.
fn transfer<P: Pipe>(producers: u64, messages: u64) -> Duration {
    if producers == SAME_THREAD {
        return same_thread::<P>(messages);
    }
    let (tx, mut rx) = P::open(CAPACITY);
    let start = Arc::new(Barrier::new(producers as usize + 2));
    let per_producer = messages / producers;
    let total = per_producer * producers;

    let senders: Vec<_> = (0..producers)
        .map(|_| {
            let tx = P::clone_tx(&tx);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for i in 0..per_producer {
                    P::send(&tx, i);
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = {
        let start = Arc::clone(&start);
        thread::spawn(move || {
            start.wait();
            let mut checksum = 0u64;
            for _ in 0..total {
                checksum = checksum.wrapping_add(P::recv(&mut rx));
            }
            black_box(checksum);
            Instant::now()
        })
    };
    start.wait();
    let began = Instant::now();
    let finished = consumer.join().expect("consumer");
    for sender in senders {
        sender.join().expect("producer");
    }
    finished.saturating_duration_since(began)
}

/// Sends and receives on one thread in bursts that never fill the channel: no waiting and
/// no contention, so what remains is each channel's per-message bookkeeping, which is
/// where monitoring adds its cost.
fn same_thread<P: Pipe>(messages: u64) -> Duration {
    const BURST: u64 = 64;
    let (tx, mut rx) = P::open(CAPACITY);
    let began = Instant::now();
    let mut checksum = 0u64;
    for burst in 0..messages / BURST {
        for i in 0..BURST {
            P::send(&tx, burst * BURST + i);
        }
        for _ in 0..BURST {
            checksum = checksum.wrapping_add(P::recv(&mut rx));
        }
    }
    black_box(checksum);
    began.elapsed()
}

fn bench_variant<P: Pipe>(c: &mut Criterion, group_name: &str) {
    let mut group = c.benchmark_group(group_name);
    group
        .throughput(Throughput::Elements(MESSAGES))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for producers in PRODUCER_COUNTS {
        group.bench_with_input(
            BenchmarkId::new(P::NAME, producers_label(producers)),
            &producers,
            |b, &producers| {
                b.iter_custom(|iters| (0..iters).map(|_| transfer::<P>(producers, MESSAGES)).sum())
            },
        );
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    bench_variant::<Monitored>(c, "bounded");
    bench_variant::<RawPair>(c, "bounded");
    bench_variant::<AsyncChannel>(c, "bounded");
    bench_variant::<Crossbeam>(c, "bounded");
    bench_variant::<TokioMpsc>(c, "bounded");
    bench_variant::<Crossbeam>(c, "bounded_vs_unbounded");
    bench_variant::<CrossbeamUnbounded>(c, "bounded_vs_unbounded");
}

criterion_group!(benches, throughput);

fn producers_label(producers: u64) -> String {
    match producers {
        SAME_THREAD => "same-thread".to_owned(),
        n => format!("{n}p"),
    }
}

type Transfer = fn(u64, u64) -> Duration;

const VARIANTS: [(&str, Transfer); 6] = [
    (Monitored::NAME, transfer::<Monitored>),
    (RawPair::NAME, transfer::<RawPair>),
    (AsyncChannel::NAME, transfer::<AsyncChannel>),
    (Crossbeam::NAME, transfer::<Crossbeam>),
    (TokioMpsc::NAME, transfer::<TokioMpsc>),
    (CrossbeamUnbounded::NAME, transfer::<CrossbeamUnbounded>),
];

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Medians per variant; each round runs every variant once, so drift in machine load hits
/// every variant alike.
fn ratio_table() {
    println!();
    println!(
        "{TABLE_RUNS} rounds, {MESSAGES} messages, capacity {CAPACITY}; ratio = monitored / \
         other (budget vs raw-pair: <= 1.10); the minimum is the steadier figure on a busy machine"
    );
    println!(
        "{:<12} {:<20} {:>10} {:>8} {:>10} {:>8}",
        "producers", "channel", "median ms", "ratio", "min ms", "ratio"
    );
    // TASKER_BENCH_ONLY=<channel> runs just that variant (and the monitored one), for profiling.
    let only = std::env::var("TASKER_BENCH_ONLY").ok();
    let variants: Vec<(&str, Transfer)> = VARIANTS
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| *i == 0 || only.as_deref().map_or(true, |only| only == *name))
        .map(|(_, variant)| variant)
        .collect();
    for producers in PRODUCER_COUNTS {
        let mut samples = vec![Vec::with_capacity(TABLE_RUNS); variants.len()];
        for (_, run) in &variants {
            run(producers, MESSAGES);
        }
        for _ in 0..TABLE_RUNS {
            for (i, (_, run)) in variants.iter().enumerate() {
                samples[i].push(run(producers, MESSAGES).as_secs_f64() * 1e3);
            }
        }
        let mins: Vec<f64> = samples
            .iter()
            .map(|runs| runs.iter().copied().fold(f64::INFINITY, f64::min))
            .collect();
        let medians: Vec<f64> = samples.into_iter().map(median).collect();
        for (i, (name, _)) in variants.iter().enumerate() {
            println!(
                "{:<12} {:<20} {:>10.2} {:>8.3} {:>10.2} {:>8.3}",
                producers_label(producers),
                name,
                medians[i],
                medians[0] / medians[i],
                mins[i],
                mins[0] / mins[i]
            );
        }
    }
}

fn main() {
    // TASKER_BENCH_TABLE_ONLY=1 skips criterion, for quick comparisons while profiling.
    if std::env::var_os("TASKER_BENCH_TABLE_ONLY").is_none() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    ratio_table();
}
