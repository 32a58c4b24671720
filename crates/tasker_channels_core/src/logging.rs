//! Log output for the crate's `tracing` events.
//!
//! Owns the process's one subscriber: a filter read from `TASKER_LOG` (default `warn`) that
//! every [`init_logging`] call re-reads, so a change takes effect at the next runtime, and the
//! choice of where records go — stderr, or a bounded [`LogQueue`] that a host language drains
//! on a thread of its own (the Ruby binding hands them to a Ruby `Logger`). It must never
//! block or panic on the thread that emits a record, never queue without bound (a full queue
//! drops the record and counts it), never replace a subscriber the host application already
//! installed, and never install twice.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Layer, Registry};

use crate::channel::{RecvError, RecvWait};
use crate::metrics::{MetricKind, PrometheusText};
use crate::wait::WaitStopped;

/// The variable holding the log filter, e.g. `TASKER_LOG=info` or
/// `TASKER_LOG=tasker_channels_core=debug`.
pub const LOG_ENV: &str = "TASKER_LOG";

const DEFAULT_FILTER: &str = "warn";

/// The most records a [`LogQueue`] may be sized for.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// One formatted record on its way to a host's logger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's level.
    pub level: Level,
    /// `target: message key=value ...`, without time, level or trailing newline (the host's
    /// logger adds its own).
    pub message: String,
}

/// A bounded queue of records between the threads that emit them and one reader.
///
/// Offering never blocks: a full queue drops the record and counts it. Memory follows
/// occupancy (tokio's bounded channel allocates in small blocks as it fills).
#[derive(Debug)]
pub struct LogQueue {
    capacity: usize,
    sender: mpsc::Sender<LogRecord>,
    receiver: Mutex<mpsc::Receiver<LogRecord>>,
    closed: AtomicBool,
    close_signal: Notify,
    counters: Arc<LogCounters>,
}

/// Process-wide totals, kept across queues so replacing one never resets them.
#[derive(Debug, Default)]
struct LogCounters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl LogQueue {
    /// A queue of `capacity` records (clamped to 1..=[`MAX_QUEUE_CAPACITY`]).
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::with_counters(capacity, Arc::default())
    }

    fn with_counters(capacity: usize, counters: Arc<LogCounters>) -> Arc<Self> {
        let capacity = capacity.clamp(1, MAX_QUEUE_CAPACITY);
        let (sender, receiver) = mpsc::channel(capacity);
        Arc::new(LogQueue {
            capacity,
            sender,
            receiver: Mutex::new(receiver),
            closed: AtomicBool::new(false),
            close_signal: Notify::new(),
            counters,
        })
    }

    /// The most records the queue holds at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records waiting for the reader.
    pub fn len(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Whether no record is queued right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue has been closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues `record` unless the queue is full or closed; a refused record is counted as
    /// dropped. Never blocks.
    pub fn offer(&self, record: LogRecord) -> bool {
        if self.is_closed() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.sender.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Takes up to `max` records, waiting for the first as long as `wait` allows. After
    /// [`close`](Self::close) it returns what is left, then [`RecvError::Closed`]. One
    /// reader at a time.
    pub fn recv_batch(&self, max: usize, wait: RecvWait<'_>) -> Result<Vec<LogRecord>, RecvError> {
        let mut receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
        let first = wait
            .block_on(self.next(&mut receiver))
            .map_err(|stopped| match stopped {
                WaitStopped::TimedOut => RecvError::TimedOut,
                WaitStopped::Interrupted => RecvError::Interrupted,
            })?;
        let Some(first) = first else {
            return Err(RecvError::Closed);
        };
        let mut batch = Vec::with_capacity(max.clamp(1, 64));
        batch.push(first);
        while batch.len() < max.max(1) {
            match receiver.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        self.counters
            .forwarded
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(batch)
    }

    /// The next record, or `None` once closed and empty.
    async fn next(&self, receiver: &mut mpsc::Receiver<LogRecord>) -> Option<LogRecord> {
        loop {
            // Registered before the flag is read, so a close in between still wakes us.
            let closing = self.close_signal.notified();
            if self.is_closed() {
                return receiver.try_recv().ok();
            }
            tokio::select! {
                biased;
                record = receiver.recv() => return record,
                () = closing => {}
            }
        }
    }

    /// Refuses further records and lets the reader finish what is queued.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_signal.notify_waiters();
    }
}

/// What [`log_stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Whether this crate's subscriber is the process's (false: the host installed its own).
    pub installed: bool,
    /// Whether records go to a [`LogQueue`] (true) or to stderr.
    pub to_queue: bool,
    /// The current queue's capacity (0 when writing to stderr).
    pub capacity: usize,
    /// Records in the current queue.
    pub queued: usize,
    /// Records the reader has taken, over the process's life.
    pub forwarded: u64,
    /// Records dropped because the queue was full, over the process's life.
    pub dropped: u64,
}

/// Where records go, shared by the subscriber's layers and whoever switches it.
#[derive(Debug, Default)]
struct Route {
    queue: ArcSwapOption<LogQueue>,
    counters: Arc<LogCounters>,
}

impl Route {
    fn to_queue(&self) -> bool {
        self.queue.load().is_some()
    }
}

/// Lets a layer see a record only when records currently go its way. Asked per record, never
/// cached per callsite, so switching takes effect at once.
struct RouteFilter {
    route: Arc<Route>,
    wants_queue: bool,
}

impl<S> Filter<S> for RouteFilter {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        self.route.to_queue() == self.wants_queue
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

/// Writes each formatted record into the current queue (the fmt layer writes a record's line
/// in one piece, then drops the writer).
struct QueueWriter {
    route: Arc<Route>,
    level: Level,
    line: Vec<u8>,
}

impl Write for QueueWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueueWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let record = LogRecord {
            level: self.level,
            message: text.trim_end_matches('\n').to_owned(),
        };
        match self.route.queue.load().as_ref() {
            Some(queue) => {
                queue.offer(record);
            }
            // Switched back to stderr between filtering and writing: count, don't lose silently.
            None => {
                self.route.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Clone)]
struct MakeQueueWriter(Arc<Route>);

impl<'a> MakeWriter<'a> for MakeQueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> QueueWriter {
        self.writer(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> QueueWriter {
        self.writer(*meta.level())
    }
}

impl MakeQueueWriter {
    fn writer(&self, level: Level) -> QueueWriter {
        QueueWriter {
            route: Arc::clone(&self.0),
            level,
            line: Vec::new(),
        }
    }
}

/// `warn` for every target. A `Targets` filter (levels per target, `TASKER_LOG=info` or
/// `TASKER_LOG=tasker_channels_core=debug,warn`) rather than an `EnvFilter`: it needs no
/// regular-expression engine, which would double the size of the installed library.
fn default_filter() -> Targets {
    DEFAULT_FILTER
        .parse()
        .expect("the default log filter is a valid level")
}

/// Reads a `TASKER_LOG` value: comma-separated `level` or `target=level` items (levels
/// `off`, `error`, `warn`, `info`, `debug`, `trace`; targets are module paths). `Targets`
/// alone would take any word as a target and quietly hide everything else.
fn parse_filter(text: &str) -> Result<Targets, String> {
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (target, level) = match item.split_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, item),
        };
        if let Some(target) = target {
            let valid = !target.is_empty()
                && target
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if !valid {
                return Err(format!("{target:?} is not a module path"));
            }
        }
        level.parse::<LevelFilter>().map_err(|_| {
            format!("{level:?} is not a level (off, error, warn, info, debug, trace)")
        })?;
    }
    text.parse::<Targets>().map_err(|error| error.to_string())
}

/// The subscriber's handles: its reloadable filter and its route.
struct Router {
    filter: reload::Handle<Targets, Registry>,
    route: Arc<Route>,
    /// The `TASKER_LOG` value last applied (`None`: unset or blank).
    applied: Mutex<Option<Option<String>>>,
}

impl Router {
    /// Builds a subscriber whose default output is `stderr`, and the router that steers it.
    fn build<W>(stderr: W, ansi: bool) -> (impl Subscriber + Send + Sync, Router)
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let (filter, handle) = reload::Layer::new(default_filter());
        let route = Arc::new(Route::default());
        let subscriber = Registry::default()
            .with(filter)
            .with(layers(stderr, ansi, &route));
        let router = Router {
            filter: handle,
            route,
            applied: Mutex::new(None),
        };
        (subscriber, router)
    }

    /// Applies `spec` (a `TASKER_LOG` value) unless it is the one in force. An invalid spec
    /// falls back to the default and says so once per change.
    fn apply_filter(&self, spec: Option<String>) {
        let spec = spec.filter(|spec| !spec.trim().is_empty());
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if applied.as_ref() == Some(&spec) {
            return;
        }
        let (filter, rejected) = match &spec {
            Some(text) => match parse_filter(text) {
                Ok(filter) => (filter, None),
                Err(error) => (default_filter(), Some((text.clone(), error))),
            },
            None => (default_filter(), None),
        };
        let _ = self.filter.reload(filter);
        *applied = Some(spec);
        drop(applied);
        if let Some((spec, error)) = rejected {
            tracing::warn!(%spec, %error, "{LOG_ENV} is not a valid filter; using \"{DEFAULT_FILTER}\"");
        }
    }

    fn to_queue(&self, capacity: usize) -> Arc<LogQueue> {
        let capacity = capacity.clamp(1, MAX_QUEUE_CAPACITY);
        if let Some(queue) = self.route.queue.load_full() {
            if queue.capacity() == capacity && !queue.is_closed() {
                return queue;
            }
        }
        let queue = LogQueue::with_counters(capacity, Arc::clone(&self.route.counters));
        if let Some(previous) = self.route.queue.swap(Some(Arc::clone(&queue))) {
            previous.close();
        }
        queue
    }

    fn to_stderr(&self) {
        if let Some(previous) = self.route.queue.swap(None) {
            previous.close();
        }
    }

    fn stats(&self, installed: bool) -> LogStats {
        let queue = self.route.queue.load();
        LogStats {
            installed,
            to_queue: queue.is_some(),
            capacity: queue.as_ref().map_or(0, |q| q.capacity()),
            queued: queue.as_ref().map_or(0, |q| q.len()),
            forwarded: self.route.counters.forwarded.load(Ordering::Relaxed),
            dropped: self.route.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The two outputs, each seeing records only while the route points its way.
fn layers<S, W>(stderr: W, ansi: bool, route: &Arc<Route>) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let to_stderr = tracing_subscriber::fmt::layer()
        .with_writer(stderr)
        .with_ansi(ansi)
        .with_filter(RouteFilter {
            route: Arc::clone(route),
            wants_queue: false,
        });
    let to_queue = tracing_subscriber::fmt::layer()
        .without_time()
        .with_level(false)
        .with_ansi(false)
        .with_writer(MakeQueueWriter(Arc::clone(route)))
        .with_filter(RouteFilter {
            route: Arc::clone(route),
            wants_queue: true,
        });
    to_stderr.and_then(to_queue)
}

struct Installed {
    router: Router,
    /// Whether ours is the process's global subscriber.
    ours: bool,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let (subscriber, router) = Router::build(io::stderr, io::stderr().is_terminal());
        let ours = tracing::subscriber::set_global_default(subscriber).is_ok();
        Installed { router, ours }
    })
}

/// Installs the subscriber once per process, and (re)applies `TASKER_LOG` on every call, so
/// a changed value takes effect at the next call. Returns whether this process's subscriber
/// is ours: `false` when the host had already set a global one (which is then left in
/// place). Safe to call any number of times from any thread.
pub fn init_logging() -> bool {
    let installed = installed();
    if installed.ours {
        installed.router.apply_filter(std::env::var(LOG_ENV).ok());
    }
    installed.ours
}

/// Sends records to a bounded queue of `capacity` (clamped to 1..=[`MAX_QUEUE_CAPACITY`])
/// instead of stderr, and returns it for the reader. Keeps the current queue when it has that
/// capacity; otherwise the previous one is closed (its reader finishes what it holds). `None`
/// when the host's subscriber owns the process's logs.
pub fn route_to_queue(capacity: usize) -> Option<Arc<LogQueue>> {
    if !init_logging() {
        return None;
    }
    Some(installed().router.to_queue(capacity))
}

/// Sends records to stderr again, closing the queue (its reader finishes what it holds).
pub fn route_to_stderr() {
    installed().router.to_stderr();
}

/// Where records go now, and how many were forwarded and dropped.
pub fn log_stats() -> LogStats {
    let installed = installed();
    installed.router.stats(installed.ours)
}

/// Counter: log records handed to Ruby.
pub const LOG_RECORDS_FORWARDED: &str = "tasker_log_records_forwarded_total";
/// Counter: log records dropped because the queue was full.
pub const LOG_RECORDS_DROPPED: &str = "tasker_log_records_dropped_total";
/// Gauge: log records waiting for Ruby.
pub const LOG_QUEUE_LENGTH: &str = "tasker_log_queue_length";

/// Appends the log pipeline's families (process-wide) to Prometheus text.
pub fn write_prometheus(out: &mut PrometheusText) {
    write_stats(out, &log_stats());
}

fn write_stats(out: &mut PrometheusText, stats: &LogStats) {
    out.family(
        LOG_RECORDS_FORWARDED,
        MetricKind::Counter,
        "Log records handed to the host's logger.",
    );
    out.sample_u64(LOG_RECORDS_FORWARDED, &[], stats.forwarded);
    out.family(
        LOG_RECORDS_DROPPED,
        MetricKind::Counter,
        "Log records dropped because the logger's bounded queue was full.",
    );
    out.sample_u64(LOG_RECORDS_DROPPED, &[], stats.dropped);
    out.family(
        LOG_QUEUE_LENGTH,
        MetricKind::Gauge,
        "Log records waiting for the host's logger.",
    );
    out.sample_u64(LOG_QUEUE_LENGTH, &[], stats.queued as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::Interrupt;
    use std::time::{Duration, Instant};

    /// An in-memory stand-in for stderr.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Runs `body` with a fresh subscriber and router as this thread's default.
    fn with_router(body: impl FnOnce(&Router, &Captured)) {
        let stderr = Captured::default();
        let (subscriber, router) = Router::build(stderr.clone(), false);
        router.apply_filter(None);
        tracing::subscriber::with_default(subscriber, || body(&router, &stderr));
    }

    fn take_all(queue: &LogQueue) -> Vec<LogRecord> {
        match queue.recv_batch(usize::MAX, RecvWait::until(Instant::now())) {
            Ok(batch) => batch,
            Err(RecvError::TimedOut) => Vec::new(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn repeated_calls_agree_and_never_panic() {
        let first = init_logging();
        for _ in 0..3 {
            assert_eq!(init_logging(), first);
        }
        let from_threads: Vec<bool> = (0..4)
            .map(|_| std::thread::spawn(init_logging))
            .map(|handle| handle.join().unwrap())
            .collect();
        assert!(from_threads.iter().all(|&installed| installed == first));
    }

    #[test]
    fn records_go_to_stderr_until_routed_to_a_queue_and_back() {
        with_router(|router, stderr| {
            tracing::warn!(channel = "shared.ffi", "to stderr");
            let queue = router.to_queue(8);
            tracing::warn!(channel = "shared.ffi", "to the queue");
            tracing::error!("also queued");
            router.to_stderr();
            tracing::warn!("stderr again");

            let text = stderr.text();
            assert!(
                text.contains("WARN") && text.contains("to stderr"),
                "{text}"
            );
            assert!(text.contains("stderr again"), "{text}");
            assert!(
                !text.contains("queue") && !text.contains("also queued"),
                "{text}"
            );

            let records = take_all(&queue);
            assert_eq!(records.len(), 2, "{records:?}");
            assert_eq!(records[0].level, Level::WARN);
            assert!(
                records[0]
                    .message
                    .ends_with("to the queue channel=\"shared.ffi\""),
                "{records:?}"
            );
            assert!(records[0]
                .message
                .starts_with("tasker_channels_core::logging"));
            assert!(!records[0].message.contains("WARN") && !records[0].message.contains('\n'));
            assert_eq!(records[1].level, Level::ERROR);
            // Closed by the switch back: the reader sees the end once it took everything.
            assert_eq!(
                queue.recv_batch(8, RecvWait::forever()).unwrap_err(),
                RecvError::Closed
            );
        });
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        with_router(|router, _| {
            let queue = router.to_queue(2);
            for n in 0..5 {
                tracing::warn!(n, "burst");
            }
            let stats = router.stats(true);
            assert_eq!((stats.queued, stats.dropped, stats.capacity), (2, 3, 2));
            assert_eq!(take_all(&queue).len(), 2);
            let stats = router.stats(true);
            assert_eq!((stats.queued, stats.forwarded, stats.dropped), (0, 2, 3));
        });
    }

    #[test]
    fn the_filter_is_reloaded_when_the_spec_changes() {
        with_router(|router, stderr| {
            tracing::info!("hidden at warn");
            router.apply_filter(Some("info".into()));
            tracing::info!("shown at info");
            router.apply_filter(Some("error".into()));
            tracing::warn!("hidden at error");
            router.apply_filter(Some("not a [valid filter".into()));
            tracing::warn!("shown at the default");
            let text = stderr.text();
            assert!(!text.contains("hidden"), "{text}");
            assert!(text.contains("shown at info"), "{text}");
            assert!(text.contains("is not a valid filter"), "{text}");
            assert!(text.contains("shown at the default"), "{text}");
        });
    }

    #[test]
    fn filters_take_levels_per_target_and_refuse_anything_else() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("tasker_channels_core=debug, warn").is_ok());
        assert!(parse_filter("tasker_channels_core::monitor=trace").is_ok());
        assert!(parse_filter("loud").unwrap_err().contains("not a level"));
        assert!(parse_filter("a b=info")
            .unwrap_err()
            .contains("not a module path"));
        assert!(parse_filter("x=[y]").is_err());
    }

    #[test]
    fn the_same_capacity_keeps_the_queue_and_another_replaces_it() {
        with_router(|router, _| {
            let first = router.to_queue(4);
            assert!(Arc::ptr_eq(&first, &router.to_queue(4)));
            tracing::warn!("for the first");
            let second = router.to_queue(16);
            tracing::warn!("for the second");
            assert!(first.is_closed() && !second.is_closed());
            assert_eq!(take_all(&first).len(), 1);
            assert_eq!(
                first.recv_batch(1, RecvWait::forever()).unwrap_err(),
                RecvError::Closed
            );
            assert_eq!(take_all(&second).len(), 1);
        });
    }

    #[test]
    fn a_reader_waits_until_a_deadline_an_interrupt_or_the_close() {
        let queue = LogQueue::new(4);
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            queue.recv_batch(4, RecvWait::until(soon)).unwrap_err(),
            RecvError::TimedOut
        );
        let interrupt = Interrupt::new();
        interrupt.trigger();
        assert_eq!(
            queue
                .recv_batch(4, RecvWait::forever().interruptible(&interrupt))
                .unwrap_err(),
            RecvError::Interrupted
        );

        let reader = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Ok(batch) = queue.recv_batch(4, RecvWait::forever()) {
                    seen.extend(batch.into_iter().map(|record| record.message));
                }
                seen
            })
        };
        for n in 0..3 {
            assert!(queue.offer(LogRecord {
                level: Level::INFO,
                message: format!("record {n}"),
            }));
        }
        queue.close();
        assert!(!queue.offer(LogRecord {
            level: Level::INFO,
            message: "late".into(),
        }));
        assert_eq!(reader.join().unwrap(), ["record 0", "record 1", "record 2"]);
    }

    #[test]
    fn prometheus_families_carry_the_counts() {
        let mut out = PrometheusText::new();
        write_stats(
            &mut out,
            &LogStats {
                installed: true,
                to_queue: true,
                capacity: 8,
                queued: 1,
                forwarded: 5,
                dropped: 3,
            },
        );
        let values = crate::metrics::tests::parse_exposition(out.as_str());
        assert_eq!(values[LOG_RECORDS_FORWARDED], 5.0);
        assert_eq!(values[LOG_RECORDS_DROPPED], 3.0);
        assert_eq!(values[LOG_QUEUE_LENGTH], 1.0);
    }
}
