//! The notification listener: one LISTEN connection feeding `orchestration.event_listeners`.
//!
//! Owns the listening connection and its task on the process's tokio runtime: it drives
//! `Connection::poll_message` itself, turns each notification into an event, and hands it
//! on with a send that waits for room. While that send waits, the socket is not read (the
//! backlog stays in PostgreSQL, this process's memory stays flat) — unless the listener
//! coalesces, in which case it keeps reading into a bounded table of identical wake-ups.
//! It also owns LISTEN/UNLISTEN (always quoted), reconnecting with backoff, and the
//! `listener.disconnected` / `listener.reconnected` events. It must never run a query on the
//! listening connection while a hand-over is waiting, never drop a notification it read
//! (only `stop` abandons the one in hand), and never block a non-async caller.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

use crate::channel::{MonitoredChannel, SendError, SendOutcome};
use crate::event::{Event, EventSource, Message};
use crate::event_bus::EventBus;
use crate::fork;
use crate::payload::{Key, Payload};

use super::backoff::Backoff;
use super::coalesce::{CoalesceTable, Merge, Pending};
use super::envelope;
use super::names::{channel_list, event_name_for, statements, InvalidChannel, PgChannel};
use super::queue_usage::{self, SamplerSettings};
use super::relay::{self, LISTENER_CHANNEL};
use super::stats::{ListenerCounters, ListenerStats};
use super::target::{is_invalid_utf8, FailureKind, PgConnection, PgError, Target};
use super::task::TaskControl;
use super::FirstConnection;

/// Distinct pending wake-ups a coalescing listener holds before it stops reading.
pub const DEFAULT_COALESCE_LIMIT: usize = 1024;
/// `pg_notification_queue_usage()` at which `listener.queue_saturated` is emitted.
pub const DEFAULT_QUEUE_WARNING: f64 = 0.5;
/// How often the server's queue usage is sampled.
pub const DEFAULT_QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// At most one queue notice per this interval.
pub const DEFAULT_QUEUE_NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// The first reconnect delay; it doubles up to [`DEFAULT_RECONNECT_MAX_DELAY`].
pub const DEFAULT_RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest reconnect delay.
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// Notifications handled per turn before the task looks at its stop signal and commands.
const READ_BURST: usize = 1024;
/// Control commands waiting for the task (listen/unlisten callers wait beyond this).
const COMMAND_QUEUE: usize = 16;
/// How long a stopping listener waits for the server to acknowledge the goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How to listen. [`ListenerOptions::new`] gives the defaults above.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// A `postgresql://` URL or `key=value` string (see [`Target::parse`]).
    pub url: String,
    /// The PostgreSQL channels to LISTEN on.
    pub channels: Vec<String>,
    /// Merge identical (channel, payload) notifications while the way on is full.
    pub coalesce: bool,
    /// The most distinct pending entries while coalescing.
    pub coalesce_limit: usize,
    /// The first reconnect delay; it doubles up to `reconnect_max_delay`.
    pub reconnect_first_delay: Duration,
    /// The longest reconnect delay.
    pub reconnect_max_delay: Duration,
    /// How often to sample `pg_notification_queue_usage()`; zero: never.
    pub queue_sample_interval: Duration,
    /// A fraction in (0, 1].
    pub queue_warning: f64,
    /// The least time between two queue notices.
    pub queue_notice_interval: Duration,
}

impl ListenerOptions {
    /// Options with the defaults, for `url` and `channels`.
    pub fn new<I, S>(url: impl Into<String>, channels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            url: url.into(),
            channels: channels.into_iter().map(Into::into).collect(),
            coalesce: false,
            coalesce_limit: DEFAULT_COALESCE_LIMIT,
            reconnect_first_delay: DEFAULT_RECONNECT_FIRST_DELAY,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
            queue_sample_interval: DEFAULT_QUEUE_SAMPLE_INTERVAL,
            queue_warning: DEFAULT_QUEUE_WARNING,
            queue_notice_interval: DEFAULT_QUEUE_NOTICE_INTERVAL,
        }
    }
}

/// Why a listener could not start, or a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// A PostgreSQL channel name is invalid.
    #[error(transparent)]
    Channel(#[from] InvalidChannel),
    /// PostgreSQL refused or could not be reached.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The event bus is closed.
    #[error("the event bus is closed (the runtime was shut down)")]
    Closed,
    /// The listener was stopped.
    #[error("the listener is stopped")]
    Stopped,
    /// An option is out of range.
    #[error("invalid listener option: {0}")]
    Option(String),
}

enum Command {
    Listen(Vec<PgChannel>, oneshot::Sender<Result<(), ListenError>>),
    Unlisten(Vec<PgChannel>, oneshot::Sender<Result<(), ListenError>>),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A running listener. Dropping it stops it (without waiting); in a forked child it is
/// inert: its task lived in the parent, and the child never touches the parent's connection.
pub struct Listener {
    id: u64,
    target: String,
    coalesce_limit: Option<usize>,
    counters: Arc<ListenerCounters>,
    /// Stops the task when dropped; in a forked child, leaks its controls, since their locks
    /// may have been held by a thread that no longer exists.
    control: TaskControl<mpsc::Sender<Command>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("id", &self.id)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Resolves once the first connection is up and LISTENing (or failed: the listener has then
/// ended). A listener whose first connection fails does not retry.
pub type Startup = FirstConnection<ListenError>;

/// A listen/unlisten in progress; resolves once the server confirmed it (or, while
/// disconnected, once it is recorded for the reconnect).
pub type CommandReply = Pin<Box<dyn Future<Output = Result<(), ListenError>> + Send>>;

impl Listener {
    /// Validates the options, then starts the listener's task on the process runtime. Await
    /// the returned [`Startup`] to learn whether the first connection came up.
    pub fn start(
        bus: &Arc<EventBus>,
        options: ListenerOptions,
    ) -> Result<(Listener, Startup), ListenError> {
        let channels = channel_list(options.channels.iter().cloned())?;
        if !(options.queue_warning > 0.0 && options.queue_warning <= 1.0) {
            return Err(ListenError::Option(format!(
                "queue_warning must be a fraction in (0, 1], got {}",
                options.queue_warning
            )));
        }
        if options.coalesce && options.coalesce_limit == 0 {
            return Err(ListenError::Option(
                "coalesce_limit must be at least 1".into(),
            ));
        }
        let target = Target::parse(&options.url)?;
        if bus.is_closed() || bus.is_stale() {
            return Err(ListenError::Closed);
        }
        let to = bus
            .registry()
            .get(LISTENER_CHANNEL)
            .cloned()
            .ok_or(ListenError::Closed)?;
        if to.is_closed() {
            return Err(ListenError::Closed);
        }
        relay::ensure_started(bus);

        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(ListenerCounters::new(channels));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (finished_tx, finished_rx) = watch::channel(false);
        let (startup_tx, startup_rx) = oneshot::channel();
        let coalesce_limit = options.coalesce.then_some(options.coalesce_limit);
        let task = Task {
            id,
            bus: Arc::clone(bus),
            to,
            target: target.with_application_name(&format!("tasker_channels listener {id}")),
            sampler_target: target
                .with_application_name(&format!("tasker_channels queue sampler {id}")),
            table: coalesce_limit.map(CoalesceTable::new),
            counters: Arc::clone(&counters),
            commands: commands_rx,
            stop: stop_rx,
            names: HashMap::new(),
            options,
        };
        fork::runtime_handle().spawn(task.run(startup_tx, finished_tx));
        Ok((
            Listener {
                id,
                target: target.describe().to_owned(),
                coalesce_limit,
                counters,
                control: TaskControl::new(stop_tx, finished_rx, commands_tx),
            },
            FirstConnection::new(startup_rx, || ListenError::Stopped),
        ))
    }

    /// Unique among this process's listeners.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where it listens, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// True in a forked child: the task and its connection belong to the parent.
    pub fn is_stale(&self) -> bool {
        self.control.is_stale()
    }

    /// The PostgreSQL channels it listens on now.
    pub fn channels(&self) -> Vec<String> {
        self.counters
            .channels()
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect()
    }

    /// Whether its connection is up now.
    pub fn is_connected(&self) -> bool {
        !self.is_stale() && self.counters.connected.load(Ordering::Relaxed)
    }

    /// Whether it has been stopped.
    pub fn is_stopped(&self) -> bool {
        self.control.is_finished()
    }

    /// Its counters now.
    pub fn stats(&self) -> ListenerStats {
        let mut stats = self
            .counters
            .snapshot(self.id, &self.target, self.coalesce_limit);
        if self.is_stale() {
            stats.connected = false;
            stats.stopped = true;
        }
        stats
    }

    /// Starts listening on more channels (already listened ones are ignored). Names are
    /// checked here; the returned future resolves once the server confirmed the LISTEN,
    /// which waits while the listener is backpressured.
    pub fn listen<I, S>(&self, names: I) -> Result<CommandReply, InvalidChannel>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let channels = channel_list(names)?;
        Ok(self.command(|reply| Command::Listen(channels, reply)))
    }

    /// Stops listening on channels (unknown ones are ignored).
    pub fn unlisten<I, S>(&self, names: I) -> Result<CommandReply, InvalidChannel>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let channels = channel_list(names)?;
        Ok(self.command(|reply| Command::Unlisten(channels, reply)))
    }

    fn command(
        &self,
        build: impl FnOnce(oneshot::Sender<Result<(), ListenError>>) -> Command,
    ) -> CommandReply {
        if self.is_stale() {
            return Box::pin(async { Err(ListenError::Stopped) });
        }
        let commands = self.control.extra().clone();
        let (reply_tx, reply_rx) = oneshot::channel();
        let command = build(reply_tx);
        Box::pin(async move {
            commands
                .send(command)
                .await
                .map_err(|_| ListenError::Stopped)?;
            reply_rx.await.unwrap_or(Err(ListenError::Stopped))
        })
    }

    /// Asks the task to stop: it closes its connections (the one hand-over in progress, if
    /// any, is abandoned). Does not wait; see [`stopped`](Self::stopped).
    pub fn stop(&self) {
        self.control.request_stop();
    }

    /// Resolves once the task has ended and its connections are closed.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.control.finished()
    }
}

/// How a session ended.
enum End {
    Stopped,
    /// The connection broke; the listener reconnects.
    Lost(PgError),
    /// The first session failed before it was listening (reported through Startup).
    Failed,
}

enum Purpose {
    /// The first query of a session: backend pid, then LISTEN on every channel.
    Setup,
    Listen(Vec<PgChannel>, oneshot::Sender<Result<(), ListenError>>),
    Unlisten(Vec<PgChannel>, oneshot::Sender<Result<(), ListenError>>),
}

type QueryFuture<'a> = Pin<
    Box<dyn Future<Output = Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>> + Send + 'a>,
>;
type SendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SendOutcome, SendError<Message>>> + Send + 'a>>;

// A stack temporary of one turn; boxing the large variant would allocate per notification.
#[allow(clippy::large_enum_variant)]
enum Step {
    Stop,
    Sent(Result<SendOutcome, SendError<Message>>),
    Queried(Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>),
    Command(Option<Command>),
    Read(Option<Result<AsyncMessage, tokio_postgres::Error>>),
}

/// What a session that reconnected announces once it listens again.
struct Reconnected {
    attempts: u32,
    down_since: Instant,
}

struct Task {
    id: u64,
    bus: Arc<EventBus>,
    to: MonitoredChannel<Message>,
    target: Target,
    /// The same server, named differently in `pg_stat_activity`.
    sampler_target: Target,
    options: ListenerOptions,
    table: Option<CoalesceTable>,
    counters: Arc<ListenerCounters>,
    commands: mpsc::Receiver<Command>,
    stop: watch::Receiver<bool>,
    /// Event names by channel, for the channels listened on (cleared on UNLISTEN).
    names: HashMap<String, String>,
}

impl Task {
    async fn run(
        mut self,
        startup: oneshot::Sender<Result<(), ListenError>>,
        finished: watch::Sender<bool>,
    ) {
        let mut startup = Some(startup);
        let first = tokio::select! {
            biased;
            _ = super::stop_requested(&mut self.stop) => None,
            connected = self.target.connect() => Some(connected),
        };
        let mut session = match first {
            None => {
                self.finish(&finished, startup.take(), Err(ListenError::Stopped));
                return;
            }
            Some(Err(error)) => {
                self.counters.set_last_error(error.to_string());
                self.finish(&finished, startup.take(), Err(ListenError::Pg(error)));
                return;
            }
            Some(Ok(session)) => session,
        };
        // The sampler has a connection of its own and outlives reconnects of this one.
        let sampler = self.start_sampler(self.stop.clone());
        let mut reconnected = None;
        loop {
            let (client, mut connection) = session;
            let end = self
                .serve(&client, &mut connection, &mut startup, reconnected.take())
                .await;
            let error = match end {
                End::Stopped => {
                    close(client, connection).await;
                    break;
                }
                End::Failed => break,
                End::Lost(error) => error,
            };
            drop(client);
            drop(connection);
            match self.reconnect(error).await {
                Some((pair, info)) => {
                    session = pair;
                    reconnected = Some(info);
                }
                None => break,
            }
        }
        let mut sampler = sampler;
        if *self.stop.borrow() {
            // Stopping: the sampler closes its own connection on the same signal.
            let _ = tokio::time::timeout(CLOSE_GRACE * 2, &mut sampler).await;
        }
        sampler.abort();
        self.finish(&finished, startup.take(), Err(ListenError::Stopped));
    }

    fn start_sampler(&self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let settings = SamplerSettings {
            interval: self.options.queue_sample_interval,
            threshold: self.options.queue_warning,
            notice_interval: self.options.queue_notice_interval,
            reconnect_first_delay: self.options.reconnect_first_delay,
            reconnect_max_delay: self.options.reconnect_max_delay,
        };
        tokio::spawn(queue_usage::run(
            self.id,
            self.sampler_target.clone(),
            settings,
            Arc::clone(&self.bus),
            Arc::clone(&self.counters),
            stop,
        ))
    }

    fn finish(
        &mut self,
        finished: &watch::Sender<bool>,
        startup: Option<oneshot::Sender<Result<(), ListenError>>>,
        outcome: Result<(), ListenError>,
    ) {
        self.counters.connected.store(false, Ordering::Relaxed);
        self.counters.backpressured.store(false, Ordering::Relaxed);
        self.counters.stopped.store(true, Ordering::Relaxed);
        if let Some(startup) = startup {
            let _ = startup.send(outcome);
        }
        // Commands still queued learn the listener is gone.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            let (Command::Listen(_, reply) | Command::Unlisten(_, reply)) = command;
            let _ = reply.send(Err(ListenError::Stopped));
        }
        finished.send_replace(true);
    }

    /// Runs one connection until it breaks or the listener stops.
    async fn serve(
        &mut self,
        client: &Client,
        connection: &mut PgConnection,
        startup: &mut Option<oneshot::Sender<Result<(), ListenError>>>,
        mut reconnected: Option<Reconnected>,
    ) -> End {
        let to = self.to.clone();
        let mut inflight: Option<SendFuture<'_>> = None;
        // A notification read while the coalescing table was full of other keys.
        let mut held: Option<Pending> = None;
        let channels = self.counters.channels();
        let mut setup_sql = String::from("SELECT pg_backend_pid()");
        if !channels.is_empty() {
            setup_sql.push_str("; ");
            setup_sql.push_str(&statements("LISTEN", &channels));
        }
        let mut query: Option<(QueryFuture<'_>, Purpose)> = Some((
            Box::pin(async move { client.simple_query(&setup_sql).await }),
            Purpose::Setup,
        ));

        loop {
            let waiting = inflight.is_some();
            let can_read = !waiting || (self.table.is_some() && held.is_none());
            let settled = !waiting && held.is_none() && self.table_is_empty();
            let can_command = query.is_none() && settled;
            let step = tokio::select! {
                biased;
                _ = super::stop_requested(&mut self.stop) => Step::Stop,
                sent = poll_slot(&mut inflight), if waiting => Step::Sent(sent),
                done = poll_query(&mut query), if query.is_some() => Step::Queried(done),
                command = self.commands.recv(), if can_command => Step::Command(command),
                message = poll_fn(|cx| connection.poll_message(cx)), if can_read => Step::Read(message),
            };
            match step {
                Step::Stop => return End::Stopped,
                Step::Command(None) => return End::Stopped,
                Step::Sent(sent) => {
                    inflight = None;
                    self.counters.backpressured.store(false, Ordering::Relaxed);
                    if !self.handed_over(sent) {
                        return End::Stopped;
                    }
                    if let Some(end) = self.refill(&to, &mut inflight, &mut held) {
                        return end;
                    }
                }
                Step::Queried(done) => {
                    let (_, purpose) = query.take().expect("a query was in flight");
                    match (purpose, done) {
                        (Purpose::Setup, Ok(rows)) => {
                            let pid = first_integer(&rows).unwrap_or(0);
                            self.counters.backend_pid.store(pid, Ordering::Relaxed);
                            self.counters.connected.store(true, Ordering::Relaxed);
                            if let Some(startup) = startup.take() {
                                let _ = startup.send(Ok(()));
                            }
                            if let Some(info) = reconnected.take() {
                                let event = self.reconnected_event(&info);
                                if let Some(end) = self.start_send(&to, event, &mut inflight) {
                                    return end;
                                }
                            }
                        }
                        (Purpose::Setup, Err(error)) => {
                            let error = self.target.error(&error);
                            self.counters.set_last_error(error.to_string());
                            if let Some(startup) = startup.take() {
                                let _ = startup.send(Err(ListenError::Pg(error)));
                                return End::Failed;
                            }
                            return self.lose(error, &to, &mut inflight, &mut held).await;
                        }
                        (Purpose::Listen(added, reply), Ok(_)) => {
                            let mut channels = self.counters.channels();
                            channels.extend(added);
                            self.counters.set_channels(channels);
                            let _ = reply.send(Ok(()));
                        }
                        (Purpose::Unlisten(removed, reply), Ok(_)) => {
                            self.forget(&removed);
                            let _ = reply.send(Ok(()));
                        }
                        (Purpose::Listen(_, reply) | Purpose::Unlisten(_, reply), Err(error)) => {
                            let error = self.target.error(&error);
                            let _ = reply.send(Err(ListenError::Pg(error.clone())));
                            if client.is_closed() {
                                return self.lose(error, &to, &mut inflight, &mut held).await;
                            }
                        }
                    }
                }
                Step::Command(Some(command)) => {
                    if let Some((sql, purpose)) = self.plan(command) {
                        query = Some((
                            Box::pin(async move { client.simple_query(&sql).await }),
                            purpose,
                        ));
                    }
                }
                Step::Read(None) => {
                    let error = self
                        .target
                        .failure(FailureKind::Connection, "the server closed the connection");
                    return self.lose(error, &to, &mut inflight, &mut held).await;
                }
                Step::Read(Some(Err(error))) => {
                    let error = self.broken(&error);
                    return self.lose(error, &to, &mut inflight, &mut held).await;
                }
                Step::Read(Some(Ok(first))) => {
                    // Take whatever else is already readable in the same turn, without going
                    // back through select!, as long as nothing has to wait. A message is only
                    // fetched when it will be handled in this loop.
                    let mut next = Some(first);
                    let mut budget = READ_BURST;
                    while let Some(message) = next.take() {
                        if let AsyncMessage::Notification(notification) = message {
                            let note = Pending::new(
                                notification.channel().to_owned(),
                                notification.payload().to_owned(),
                                notification.process_id(),
                            );
                            if let Some(end) =
                                self.on_notification(note, &to, &mut inflight, &mut held)
                            {
                                return end;
                            }
                        } else if let AsyncMessage::Notice(notice) = &message {
                            tracing::debug!(
                                listener = self.id,
                                code = notice.code().code(),
                                "{}",
                                notice.message()
                            );
                        }
                        budget -= 1;
                        let still_reading =
                            inflight.is_none() || (self.table.is_some() && held.is_none());
                        if budget == 0 || !still_reading {
                            break;
                        }
                        match poll_fn(|cx| Poll::Ready(connection.poll_message(cx))).await {
                            Poll::Ready(Some(Ok(message))) => next = Some(message),
                            Poll::Ready(None) => {
                                let error = self.target.failure(
                                    FailureKind::Connection,
                                    "the server closed the connection",
                                );
                                return self.lose(error, &to, &mut inflight, &mut held).await;
                            }
                            Poll::Ready(Some(Err(error))) => {
                                let error = self.broken(&error);
                                return self.lose(error, &to, &mut inflight, &mut held).await;
                            }
                            Poll::Pending => {}
                        }
                    }
                }
            }
        }
    }

    /// The error that ended a connection. A payload that is not valid UTF-8 ends it one of two
    /// ways, both counted as undecodable: the server refuses to convert it for our UTF-8
    /// client and terminates the session (SQLSTATE 22021 / 22P05, the usual case, e.g. from
    /// a SQL_ASCII database), or the client library cannot decode it and gives up.
    fn broken(&self, error: &tokio_postgres::Error) -> PgError {
        let undecodable_reason = if is_invalid_utf8(error) {
            Some(self.target.failure(
                FailureKind::Connection,
                "a notification payload was not valid UTF-8 and the client library gave up \
                 on the connection",
            ))
        } else {
            let error = self.target.error(error);
            matches!(error.code.as_deref(), Some("22021" | "22P05")).then_some(error)
        };
        let Some(error) = undecodable_reason else {
            return self.target.error(error);
        };
        self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            listener = self.id,
            target = self.target.describe(),
            "a notification payload could not be delivered as UTF-8 ({}); the session ended, \
             the listener reconnects (counted as undecodable)",
            error.reason
        );
        error
    }

    fn table_is_empty(&self) -> bool {
        self.table.as_ref().map_or(true, CoalesceTable::is_empty)
    }

    /// Turns a listen/unlisten command into SQL, or answers it at once when there is
    /// nothing to send.
    fn plan(&mut self, command: Command) -> Option<(String, Purpose)> {
        let current = self.counters.channels();
        match command {
            Command::Listen(wanted, reply) => {
                let added: Vec<PgChannel> = wanted
                    .into_iter()
                    .filter(|channel| !current.contains(channel))
                    .collect();
                if added.is_empty() {
                    let _ = reply.send(Ok(()));
                    return None;
                }
                Some((statements("LISTEN", &added), Purpose::Listen(added, reply)))
            }
            Command::Unlisten(unwanted, reply) => {
                let removed: Vec<PgChannel> = unwanted
                    .into_iter()
                    .filter(|channel| current.contains(channel))
                    .collect();
                if removed.is_empty() {
                    let _ = reply.send(Ok(()));
                    return None;
                }
                Some((
                    statements("UNLISTEN", &removed),
                    Purpose::Unlisten(removed, reply),
                ))
            }
        }
    }

    /// While disconnected, a command only changes the set the reconnect will LISTEN on.
    fn apply_offline(&mut self, command: Command) {
        let mut channels = self.counters.channels();
        match command {
            Command::Listen(wanted, reply) => {
                for channel in wanted {
                    if !channels.contains(&channel) {
                        channels.push(channel);
                    }
                }
                self.counters.set_channels(channels);
                let _ = reply.send(Ok(()));
            }
            Command::Unlisten(unwanted, reply) => {
                self.forget(&unwanted);
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn forget(&mut self, removed: &[PgChannel]) {
        let mut channels = self.counters.channels();
        channels.retain(|channel| !removed.contains(channel));
        self.counters.set_channels(channels);
        for channel in removed {
            self.names.remove(channel.as_str());
        }
    }

    /// Handles one notification; `Some(end)` when the session must end.
    fn on_notification<'a>(
        &mut self,
        note: Pending,
        to: &'a MonitoredChannel<Message>,
        inflight: &mut Option<SendFuture<'a>>,
        held: &mut Option<Pending>,
    ) -> Option<End> {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let Some(table) = self.table.as_mut() else {
            let event = self.event_for(note);
            return self.start_send(to, event, inflight);
        };
        if inflight.is_none() && table.is_empty() {
            let event = self.event_for(note);
            return self.start_send(to, event, inflight);
        }
        match table.merge(note) {
            Merge::Merged => {
                self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Merge::Added => {}
            Merge::Full(note) => {
                self.counters.coalesce_full.fetch_add(1, Ordering::Relaxed);
                *held = Some(note);
            }
        }
        self.publish_table_gauges(held.as_ref());
        None
    }

    /// After a hand-over finished: the next pending entry goes out, and a held notification
    /// gets into the table if there is room now.
    fn refill<'a>(
        &mut self,
        to: &'a MonitoredChannel<Message>,
        inflight: &mut Option<SendFuture<'a>>,
        held: &mut Option<Pending>,
    ) -> Option<End> {
        self.table.as_ref()?;
        while inflight.is_none() {
            let Some(next) = self.table.as_mut().and_then(CoalesceTable::pop_front) else {
                break;
            };
            let event = self.event_for(next);
            if let Some(end) = self.start_send(to, event, inflight) {
                return Some(end);
            }
        }
        let table = self.table.as_mut().expect("coalescing");
        if let Some(note) = held.take() {
            match table.merge(note) {
                Merge::Merged => {
                    self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                }
                Merge::Added => {}
                Merge::Full(note) => *held = Some(note),
            }
        }
        self.publish_table_gauges(held.as_ref());
        None
    }

    fn publish_table_gauges(&self, held: Option<&Pending>) {
        if let Some(table) = &self.table {
            let held_count = held.map_or(0, |note| note.count);
            self.counters
                .coalesce_pending_entries
                .store(table.len(), Ordering::Relaxed);
            self.counters.coalesce_pending_notifications.store(
                table.pending_notifications() + held_count,
                Ordering::Relaxed,
            );
        }
    }

    /// Offers an event; if the channel is full the send stays in `inflight` and the caller
    /// stops reading (or coalesces). `Some(end)` when the bus closed.
    fn start_send<'a>(
        &mut self,
        to: &'a MonitoredChannel<Message>,
        event: Event,
        inflight: &mut Option<SendFuture<'a>>,
    ) -> Option<End> {
        debug_assert!(inflight.is_none());
        let mut send: SendFuture<'a> =
            Box::pin(to.send_async_forever(Message::Event(Box::new(event))));
        match poll_now(&mut send) {
            Poll::Ready(sent) => (!self.handed_over(sent)).then_some(End::Stopped),
            Poll::Pending => {
                self.counters
                    .backpressure_waits
                    .fetch_add(1, Ordering::Relaxed);
                self.counters.backpressured.store(true, Ordering::Relaxed);
                *inflight = Some(send);
                None
            }
        }
    }

    /// Counts a finished hand-over; false when the channel is closed (the bus shut down).
    fn handed_over(&self, sent: Result<SendOutcome, SendError<Message>>) -> bool {
        match sent {
            Ok(_) => {
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                tracing::debug!(
                    listener = self.id,
                    "the event bus closed; the listener stops"
                );
                false
            }
        }
    }

    /// The connection broke: hand on everything already read (in order, waiting for room),
    /// then report the disconnect.
    async fn lose<'a>(
        &mut self,
        error: PgError,
        to: &'a MonitoredChannel<Message>,
        inflight: &mut Option<SendFuture<'a>>,
        held: &mut Option<Pending>,
    ) -> End {
        self.counters.connected.store(false, Ordering::Relaxed);
        loop {
            if let Some(send) = inflight.as_mut() {
                let sent = tokio::select! {
                    biased;
                    _ = super::stop_requested(&mut self.stop) => return End::Stopped,
                    sent = send => sent,
                };
                *inflight = None;
                self.counters.backpressured.store(false, Ordering::Relaxed);
                if !self.handed_over(sent) {
                    return End::Stopped;
                }
            }
            if let Some(end) = self.refill(to, inflight, held) {
                return end;
            }
            if inflight.is_none() {
                break;
            }
        }
        End::Lost(error)
    }

    /// Retries with backoff until a connection is up (or the listener stops), answering
    /// commands meanwhile. Emits `listener.disconnected` first.
    async fn reconnect(&mut self, error: PgError) -> Option<((Client, PgConnection), Reconnected)> {
        let down_since = Instant::now();
        self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        self.counters.backend_pid.store(0, Ordering::Relaxed);
        self.counters.set_last_error(error.to_string());
        tracing::warn!(
            listener = self.id,
            target = self.target.describe(),
            code = error.code.as_deref().unwrap_or(""),
            "listener lost its connection ({}); reconnecting. Notifications sent until it \
             listens again are lost (PostgreSQL keeps none for a disconnected listener)",
            error.reason
        );
        let event = self.disconnected_event(&error);
        if !self.deliver(event).await {
            return None;
        }
        let mut backoff = Backoff::new(
            self.options.reconnect_first_delay,
            self.options.reconnect_max_delay,
        );
        loop {
            let wake_at = tokio::time::Instant::now() + backoff.next_delay();
            loop {
                let command = tokio::select! {
                    biased;
                    _ = super::stop_requested(&mut self.stop) => return None,
                    _ = tokio::time::sleep_until(wake_at) => break,
                    command = self.commands.recv() => command,
                };
                match command {
                    Some(command) => self.apply_offline(command),
                    None => return None,
                }
            }
            let attempt = tokio::select! {
                biased;
                _ = super::stop_requested(&mut self.stop) => return None,
                attempt = self.target.connect() => attempt,
            };
            match attempt {
                Ok(pair) => {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    return Some((
                        pair,
                        Reconnected {
                            attempts: backoff.attempts(),
                            down_since,
                        },
                    ));
                }
                Err(error) => {
                    let level_error = !error.is_transient();
                    self.counters.set_last_error(error.to_string());
                    if level_error {
                        tracing::error!(listener = self.id, "reconnect failed: {error}");
                    } else {
                        tracing::debug!(listener = self.id, "reconnect failed: {error}");
                    }
                }
            }
        }
    }

    /// Hands an event on, waiting for room; false when stopped or the bus closed.
    async fn deliver(&mut self, event: Event) -> bool {
        let sent = tokio::select! {
            biased;
            _ = super::stop_requested(&mut self.stop) => return false,
            sent = self.to.send_async_forever(Message::Event(Box::new(event))) => sent,
        };
        self.handed_over(sent)
    }

    fn event_for(&mut self, note: Pending) -> Event {
        if envelope::is_envelope(&note.payload) {
            match self.remote_event(&note.payload) {
                Ok(event) => {
                    self.counters.remote_events.fetch_add(1, Ordering::Relaxed);
                    return event;
                }
                Err(error) => {
                    self.counters.remote_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = self.id, channel = note.channel, "{error}");
                }
            }
        }
        let name = match self.names.get(&note.channel) {
            Some(name) => name.clone(),
            None => {
                let name = event_name_for(&note.channel);
                self.names.insert(note.channel.clone(), name.clone());
                name
            }
        };
        let mut entries = vec![
            ("channel", Payload::String(note.channel)),
            ("payload", Payload::String(note.payload)),
            ("backend_pid", Payload::Int(i64::from(note.backend_pid))),
        ];
        if self.table.is_some() {
            entries.push(("count", Payload::from(note.count)));
        }
        self.rust_event(name, Payload::symbol_hash(entries))
    }

    fn remote_event(&self, text: &str) -> Result<Event, String> {
        let remote = envelope::decode(text).map_err(|error| error.to_string())?;
        let origin = Payload::symbol_hash([
            ("pid", Payload::from(u64::from(remote.origin.pid))),
            ("host", Payload::String(remote.origin.host)),
            ("id", Payload::from(remote.origin.id)),
            ("source", Payload::Symbol(remote.origin.source)),
        ]);
        let payload = match remote.payload {
            Payload::Hash(mut entries) => {
                entries.push((Key::Symbol(ORIGIN_KEY.to_owned()), origin));
                Payload::Hash(entries)
            }
            other => other,
        };
        let mut event = self
            .bus
            .prepare(remote.name, payload, EventSource::Remote)
            .map_err(|error| error.to_string())?;
        event.published_at = remote.origin.published_at;
        Ok(event)
    }

    fn rust_event(&self, name: String, payload: Payload) -> Event {
        match self.bus.prepare(name, payload, EventSource::Rust) {
            Ok(event) => event,
            // Names made here are valid by construction; should one not be, the event still
            // goes out under a name that says so rather than vanishing.
            Err(invalid) => self
                .bus
                .prepare(
                    "pg.invalid_channel_name",
                    Payload::symbol_hash([("name", Payload::String(invalid.name))]),
                    EventSource::Rust,
                )
                .expect("a fixed valid name"),
        }
    }

    fn listener_payload(&self, mut entries: Vec<(&'static str, Payload)>) -> Payload {
        let channels = self
            .counters
            .channels()
            .into_iter()
            .map(|c| Payload::String(c.as_str().to_owned()))
            .collect();
        let mut all = vec![
            ("listener", Payload::from(self.id)),
            ("target", Payload::from(self.target.describe())),
            ("channels", Payload::Array(channels)),
        ];
        all.append(&mut entries);
        Payload::symbol_hash(all)
    }

    fn disconnected_event(&self, error: &PgError) -> Event {
        let payload = self.listener_payload(vec![
            ("reason", Payload::String(error.reason.clone())),
            (
                "code",
                error.code.clone().map_or(Payload::Nil, Payload::String),
            ),
        ]);
        self.rust_event("listener.disconnected".into(), payload)
    }

    fn reconnected_event(&self, info: &Reconnected) -> Event {
        let down = info.down_since.elapsed();
        let payload = self.listener_payload(vec![
            ("attempts", Payload::from(u64::from(info.attempts))),
            (
                "downtime_ms",
                Payload::from(u64::try_from(down.as_millis()).unwrap_or(u64::MAX)),
            ),
        ]);
        self.rust_event("listener.reconnected".into(), payload)
    }
}

/// The key under which a forwarded event's payload carries where it came from.
pub const ORIGIN_KEY: &str = "tasker_origin";

/// Says goodbye (Terminate) and waits briefly for the server to close its side.
async fn close(client: Client, mut connection: PgConnection) {
    drop(client);
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = poll_fn(|cx| connection.poll_message(cx)).await {}
    })
    .await;
}

async fn poll_slot<F: Future + ?Sized>(slot: &mut Option<Pin<Box<F>>>) -> F::Output {
    match slot.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn poll_query(
    slot: &mut Option<(QueryFuture<'_>, Purpose)>,
) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
    match slot.as_mut() {
        Some((future, _)) => future.await,
        None => std::future::pending().await,
    }
}

/// Polls a boxed future once with a waker that does nothing: a future still pending is
/// polled again through select!, with the task's own waker, before the task sleeps.
fn poll_now<T>(future: &mut Pin<Box<dyn Future<Output = T> + Send + '_>>) -> Poll<T> {
    struct Ignore;
    impl std::task::Wake for Ignore {
        fn wake(self: Arc<Self>) {}
    }
    static IGNORE: std::sync::OnceLock<std::task::Waker> = std::sync::OnceLock::new();
    let waker = IGNORE.get_or_init(|| std::task::Waker::from(Arc::new(Ignore)));
    let mut cx = Context::from_waker(waker);
    future.as_mut().poll(&mut cx)
}

fn first_integer(rows: &[SimpleQueryMessage]) -> Option<i64> {
    rows.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|text| text.parse().ok()),
        _ => None,
    })
}

/// Waits for the listener's task to end, from async code; for tests and shutdown paths.
pub async fn stop_and_wait(listener: &Listener) {
    listener.stop();
    listener.stopped().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_anything_starts() {
        let options = |f: fn(&mut ListenerOptions)| {
            let mut o = ListenerOptions::new("host=/nonexistent", ["ok"]);
            f(&mut o);
            o
        };
        let config = crate::config::Config::load_with_env(
            &crate::config::LoadOptions {
                environment: Some("test".into()),
                ..Default::default()
            },
            |_| None,
        )
        .unwrap();
        let bus = EventBus::start(&config);
        let invalid_channel = Listener::start(&bus, options(|o| o.channels = vec!["".into()]));
        assert!(matches!(invalid_channel, Err(ListenError::Channel(_))));
        let bad_warning = Listener::start(&bus, options(|o| o.queue_warning = 1.5));
        assert!(matches!(bad_warning, Err(ListenError::Option(_))));
        let bad_url = Listener::start(&bus, options(|o| o.url = "postgresql:///x".into()));
        assert!(matches!(bad_url, Err(ListenError::Pg(e)) if e.kind == FailureKind::InvalidUrl));
        bus.close_intake();
        let closed = Listener::start(&bus, options(|_| {}));
        assert!(matches!(closed, Err(ListenError::Closed)));
    }
}
