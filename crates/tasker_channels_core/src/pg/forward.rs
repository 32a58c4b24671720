//! Forwarding events to other processes: NOTIFY through a bounded queue on a connection of
//! its own.
//!
//! Owns the forward queue (a [`MonitoredChannel`] sized and governed like the channel it is
//! configured from), the task that takes batches from it and NOTIFYs them in one statement
//! per batch, and reconnecting when that connection breaks. Events are encoded (and refused
//! for size) by [`super::envelope`] before they are queued. It must never resend a batch
//! whose fate is unknown (delivery is at most once: a batch in flight when the connection
//! breaks is counted as lost, not retried), and never hold more than the queue's capacity
//! plus one batch.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_postgres::Client;

use crate::channel::{ChannelInfo, MonitoredChannel, RecvError};
use crate::event::Message;
use crate::fork;
use crate::monitor::Monitor;
use crate::payload::Payload;

use super::backoff::Backoff;
use super::listener::{DEFAULT_RECONNECT_FIRST_DELAY, DEFAULT_RECONNECT_MAX_DELAY};
use super::names::{InvalidChannel, PgChannel};
use super::stats::{load, ForwarderCounters, ForwarderStats};
use super::target::{PgError, Target};
use super::task::TaskControl;
use super::FirstConnection;

/// Events NOTIFYed per statement (one round trip, one transaction).
pub const FORWARD_BATCH: usize = 256;

/// One statement NOTIFYs a whole batch, in order.
const NOTIFY_BATCH_SQL: &str = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload";

/// How to forward.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// A `postgresql://` URL or `key=value` string.
    pub url: String,
    /// The PostgreSQL channel to NOTIFY.
    pub channel: String,
    /// Capacity, policy and send timeout of the forward queue; its name and component are
    /// what stats show.
    pub queue: ChannelInfo,
    /// The first reconnect delay; it doubles up to `reconnect_max_delay`.
    pub reconnect_first_delay: Duration,
    /// The longest reconnect delay.
    pub reconnect_max_delay: Duration,
}

impl ForwardOptions {
    /// Options whose queue copies `like` (capacity, policy, timeout) under the name
    /// `forward.<channel>`.
    pub fn new(url: impl Into<String>, channel: impl Into<String>, like: &ChannelInfo) -> Self {
        let channel = channel.into();
        Self {
            url: url.into(),
            queue: ChannelInfo {
                name: format!("forward.{channel}"),
                component: "forward".to_owned(),
                ..like.clone()
            },
            channel,
            reconnect_first_delay: DEFAULT_RECONNECT_FIRST_DELAY,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
        }
    }
}

/// Why a forwarder could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The PostgreSQL channel name is invalid.
    #[error(transparent)]
    Channel(#[from] InvalidChannel),
    /// PostgreSQL refused or could not be reached.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The forwarder was stopped.
    #[error("the forwarder is stopped")]
    Stopped,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A running forwarder. Offer encoded events with `queue().send_with(...)` carrying
/// `Message::Value(Payload::String(envelope))`. Dropping it stops it without waiting; in a
/// forked child it is inert (its task and connection are the parent's).
pub struct Forwarder {
    id: u64,
    target: String,
    channel: PgChannel,
    queue: MonitoredChannel<Message>,
    counters: Arc<ForwarderCounters>,
    control: TaskControl,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("id", &self.id)
            .field("channel", &self.channel.as_str())
            .finish_non_exhaustive()
    }
}

/// Resolves once the forwarder's first connection is up (or failed: it has then ended).
pub type ForwardStartup = FirstConnection<ForwardError>;

impl Forwarder {
    /// Starts the forwarder's connection task; await the [`ForwardStartup`] to know it connected.
    pub fn start(options: ForwardOptions) -> Result<(Forwarder, ForwardStartup), ForwardError> {
        let channel = PgChannel::new(options.channel.clone())?;
        let target = Target::parse(&options.url)?;
        // The queue's own saturation is visible in its stats; it has no monitor hook.
        let queue = MonitoredChannel::from_info(
            options.queue.clone(),
            &Monitor::new(0.8, std::time::Duration::ZERO),
        );
        let counters = Arc::new(ForwarderCounters::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let (finished_tx, finished_rx) = watch::channel(false);
        let (startup_tx, startup_rx) = oneshot::channel();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let task = ForwardTask {
            id,
            target: target.with_application_name(&format!("tasker_channels forwarder {id}")),
            channel: channel.clone(),
            queue: queue.clone(),
            counters: Arc::clone(&counters),
            stop: stop_rx,
            options,
        };
        fork::runtime_handle().spawn(task.run(startup_tx, finished_tx));
        Ok((
            Forwarder {
                id,
                target: target.describe().to_owned(),
                channel,
                queue,
                counters,
                control: TaskControl::new(stop_tx, finished_rx, ()),
            },
            FirstConnection::new(startup_rx, || ForwardError::Stopped),
        ))
    }

    /// Unique among this process's forwarders.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The PostgreSQL channel it NOTIFYs.
    pub fn channel(&self) -> &str {
        self.channel.as_str()
    }

    /// The server it talks to, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Where encoded events wait for their NOTIFY.
    pub fn queue(&self) -> &MonitoredChannel<Message> {
        &self.queue
    }

    /// True in a forked child.
    pub fn is_stale(&self) -> bool {
        self.control.is_stale()
    }

    /// Whether its connection is up now.
    pub fn is_connected(&self) -> bool {
        !self.is_stale() && self.counters.connected.load(Ordering::Relaxed)
    }

    /// Whether it has been stopped.
    pub fn is_stopped(&self) -> bool {
        self.control.is_finished()
    }

    /// Counts an event refused for size before it reached the queue.
    pub fn record_too_large(&self) {
        self.counters.too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops taking events; what is queued is still sent, then the task ends.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Stops now: what is still queued is counted as lost.
    pub fn stop(&self) {
        self.queue.close();
        self.control.request_stop();
    }

    /// Resolves once the task has ended and its connection is closed.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.control.finished()
    }

    /// Its counters now.
    pub fn stats(&self) -> ForwarderStats {
        let c = &self.counters;
        let queue = self.queue.stats();
        ForwarderStats {
            id: self.id,
            target: self.target.clone(),
            channel: self.channel.as_str().to_owned(),
            connected: self.is_connected(),
            stopped: self.is_stopped(),
            sent: load(&c.sent),
            lost: load(&c.lost),
            too_large: load(&c.too_large),
            failed_batches: load(&c.failed_batches),
            reconnects: load(&c.reconnects),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            queued: queue.length,
            queue_capacity: queue.capacity,
            queue_dropped: queue.dropped,
            queue_rejected: queue.rejected,
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

impl Drop for Forwarder {
    /// Stops now (the control then stops the task); in a forked child, touches nothing.
    fn drop(&mut self) {
        if !self.is_stale() {
            self.stop();
        }
    }
}

struct ForwardTask {
    id: u64,
    target: Target,
    channel: PgChannel,
    queue: MonitoredChannel<Message>,
    counters: Arc<ForwarderCounters>,
    stop: watch::Receiver<bool>,
    options: ForwardOptions,
}

impl ForwardTask {
    async fn run(
        mut self,
        startup: oneshot::Sender<Result<(), ForwardError>>,
        finished: watch::Sender<bool>,
    ) {
        let first = tokio::select! {
            biased;
            _ = super::stop_requested(&mut self.stop) => None,
            connected = self.target.connect() => Some(connected),
        };
        let (mut client, connection) = match first {
            None => return self.finish(&finished, Some(startup), Err(ForwardError::Stopped)),
            Some(Err(error)) => {
                self.counters.set_last_error(error.to_string());
                return self.finish(&finished, Some(startup), Err(ForwardError::Pg(error)));
            }
            Some(Ok(pair)) => pair,
        };
        let mut driver = tokio::spawn(connection);
        self.counters.connected.store(true, Ordering::Relaxed);
        let _ = startup.send(Ok(()));

        let mut backoff = Backoff::new(
            self.options.reconnect_first_delay,
            self.options.reconnect_max_delay,
        );
        loop {
            let batch = tokio::select! {
                biased;
                _ = super::stop_requested(&mut self.stop) => break,
                batch = self.queue.recv_batch_async(FORWARD_BATCH) => batch,
            };
            let payloads: Vec<String> = match batch {
                Err(RecvError::Closed) => break,
                Err(_) => continue,
                Ok(batch) => batch
                    .into_iter()
                    .filter_map(|message| match message {
                        Message::Value(Payload::String(text)) => Some(text),
                        _ => None,
                    })
                    .collect(),
            };
            let count = payloads.len();
            self.counters.in_flight.store(count, Ordering::Relaxed);
            let sent = tokio::select! {
                biased;
                _ = super::stop_requested(&mut self.stop) => None,
                sent = notify_batch(&client, self.channel.as_str(), &payloads) => Some(sent),
            };
            self.counters.in_flight.store(0, Ordering::Relaxed);
            match sent {
                None => {
                    self.counters
                        .lost
                        .fetch_add(count as u64, Ordering::Relaxed);
                    break;
                }
                Some(Ok(())) => {
                    self.counters
                        .sent
                        .fetch_add(count as u64, Ordering::Relaxed);
                }
                Some(Err(error)) => {
                    let error = self.target.error(&error);
                    self.counters
                        .lost
                        .fetch_add(count as u64, Ordering::Relaxed);
                    self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                    self.counters.set_last_error(error.to_string());
                    tracing::warn!(
                        forwarder = self.id,
                        channel = self.channel.as_str(),
                        lost = count,
                        "forwarding failed ({error}); the batch is not retried (at most once)"
                    );
                    if !client.is_closed() {
                        continue;
                    }
                    self.counters.connected.store(false, Ordering::Relaxed);
                    driver.abort();
                    match self.reconnect(&mut backoff).await {
                        Some((fresh, fresh_connection)) => {
                            client = fresh;
                            driver = tokio::spawn(fresh_connection);
                            self.counters.connected.store(true, Ordering::Relaxed);
                            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                            backoff.reset();
                        }
                        None => break,
                    }
                }
            }
        }
        // Stopped: what is still queued will not be sent.
        let mut left = 0u64;
        while self.queue.try_recv().is_ok() {
            left += 1;
        }
        self.counters.lost.fetch_add(left, Ordering::Relaxed);
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut driver).await;
        driver.abort();
        self.finish(&finished, None, Ok(()));
    }

    async fn reconnect(
        &mut self,
        backoff: &mut Backoff,
    ) -> Option<(Client, super::target::PgConnection)> {
        loop {
            let delay = backoff.next_delay();
            tokio::select! {
                biased;
                _ = super::stop_requested(&mut self.stop) => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            let attempt = tokio::select! {
                biased;
                _ = super::stop_requested(&mut self.stop) => return None,
                attempt = self.target.connect() => attempt,
            };
            match attempt {
                Ok(pair) => return Some(pair),
                Err(error) => self.counters.set_last_error(error.to_string()),
            }
        }
    }

    fn finish(
        &self,
        finished: &watch::Sender<bool>,
        startup: Option<oneshot::Sender<Result<(), ForwardError>>>,
        outcome: Result<(), ForwardError>,
    ) {
        self.queue.close();
        self.counters.connected.store(false, Ordering::Relaxed);
        self.counters.stopped.store(true, Ordering::Relaxed);
        if let Some(startup) = startup {
            let _ = startup.send(outcome);
        }
        finished.send_replace(true);
    }
}

async fn notify_batch(
    client: &Client,
    channel: &str,
    payloads: &[String],
) -> Result<(), tokio_postgres::Error> {
    if payloads.is_empty() {
        return Ok(());
    }
    client
        .execute(NOTIFY_BATCH_SQL, &[&channel, &payloads])
        .await
        .map(|_| ())
}
