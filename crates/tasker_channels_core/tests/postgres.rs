//! The listener and forwarder against a real PostgreSQL (a throwaway cluster on a Unix
//! socket). Skipped, with a note, when the PostgreSQL binaries are not installed.

mod pg_cluster;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pg_cluster::Cluster;
use tasker_channels_core::fork;
use tasker_channels_core::pg::envelope;
use tasker_channels_core::pg::relay;
use tasker_channels_core::pg::FailureKind;
use tasker_channels_core::{
    Config, Event, EventBus, EventSource, ForwardOptions, Forwarder, Key, ListenError, Listener,
    ListenerOptions, LoadOptions, Message, Payload, RecvWait,
};

macro_rules! cluster_or_skip {
    () => {
        match Cluster::shared() {
            Some(cluster) => cluster,
            None => return,
        }
    };
}

/// A bus whose listener path is small, so backpressure shows quickly.
fn bus_with(listener_capacity: usize, dispatch_capacity: usize) -> Arc<EventBus> {
    let dir = tempfile::Builder::new()
        .prefix("tasker_pg_config_")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("environments/test")).unwrap();
    std::fs::write(
        dir.path().join("environments/test/mpsc_channels.toml"),
        format!(
            "[mpsc_channels.orchestration.event_listeners]\n\
             pgmq_event_buffer_size = {listener_capacity}\n\
             [mpsc_channels.worker.in_process_events]\n\
             broadcast_buffer_size = {dispatch_capacity}\n"
        ),
    )
    .unwrap();
    let options = LoadOptions {
        environment: Some("test".into()),
        config_dir: Some(dir.path().to_path_buf()),
        shipped_dir_label: None,
    };
    EventBus::start(&Config::load_with_env(&options, |_| None).unwrap())
}

fn start(bus: &Arc<EventBus>, options: ListenerOptions) -> Listener {
    let (listener, startup) = Listener::start(bus, options).expect("listener options");
    fork::runtime_handle()
        .block_on(startup)
        .expect("the listener connects");
    listener
}

/// A forwarder to `channel`, its queue shaped like the bus's publisher, once it connected.
fn start_forwarder(pg: &Cluster, bus: &EventBus, channel: &str) -> Forwarder {
    let publisher = bus.registry().get("shared.event_publisher").unwrap();
    let like = publisher.info().as_ref().clone();
    let (forwarder, startup) =
        Forwarder::start(ForwardOptions::new(pg.url(), channel, &like)).unwrap();
    fork::runtime_handle().block_on(startup).unwrap();
    forwarder
}

/// Queues an encoded envelope for the forwarder to send; true when it entered the queue.
fn queue_envelope(forwarder: &Forwarder, text: String) -> bool {
    let sent = forwarder
        .queue()
        .send(Message::Value(Payload::String(text)));
    sent.is_ok_and(|outcome| outcome.is_sent())
}

fn stop(listener: &Listener) {
    listener.stop();
    fork::runtime_handle().block_on(listener.stopped());
}

/// Takes events until `want` returns true for the collected list, or panics after `within`.
fn collect_until(
    bus: &EventBus,
    within: Duration,
    mut want: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    while !want(&events) {
        assert!(
            Instant::now() < deadline,
            "timed out with {} events; last: {:?}",
            events.len(),
            events.last().map(|e| (&e.name, &e.payload))
        );
        if let Ok(batch) = bus.next_batch(
            512,
            RecvWait::until(Instant::now() + Duration::from_millis(50)),
        ) {
            // This test is the dispatcher: it accounts for what it took.
            bus.record_delivery(batch.len() as u64, 0, 0);
            // Monitor notices (channel.saturated, ...) are not what these tests count.
            events.extend(
                batch
                    .into_iter()
                    .filter_map(|message| match message {
                        Message::Event(event) => Some(*event),
                        _ => None,
                    })
                    .filter(|event| !event.name.starts_with("channel.")),
            );
        }
    }
    events
}

fn payload_str<'a>(event: &'a Event, key: &str) -> &'a str {
    match event.payload.get(key) {
        Some(Payload::String(text)) => text,
        other => panic!("{key} of {}: {other:?}", event.name),
    }
}

fn int(event: &Event, key: &str) -> i64 {
    match event.payload.get(key) {
        Some(Payload::Int(n)) => *n,
        other => panic!("{key} of {}: {other:?}", event.name),
    }
}

#[test]
fn every_notification_arrives_exactly_once_as_a_named_event() {
    let pg = cluster_or_skip!();
    let bus = bus_with(100, 100);
    let listener = start(
        &bus,
        ListenerOptions::new(pg.url(), ["exactly_once", "pgmq.q_orders.INSERT"]),
    );
    const N: usize = 20_000;
    pg.execute(&format!(
        "SELECT pg_notify('exactly_once', 'n' || g) FROM generate_series(1, {N}) g; \
         NOTIFY \"pgmq.q_orders.INSERT\""
    ));
    let events = collect_until(&bus, Duration::from_secs(60), |events| events.len() > N);
    let pgmq: Vec<_> = events
        .iter()
        .filter(|e| &*e.name == "pg.pgmq.q_orders.INSERT")
        .collect();
    assert_eq!(pgmq.len(), 1);
    assert_eq!(payload_str(pgmq[0], "payload"), "");
    assert_eq!(payload_str(pgmq[0], "channel"), "pgmq.q_orders.INSERT");
    let seen: Vec<&str> = events
        .iter()
        .filter(|e| &*e.name == "pg.exactly_once")
        .map(|e| payload_str(e, "payload"))
        .collect();
    assert_eq!(seen.len(), N);
    let distinct: HashSet<&str> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), N, "no duplicates");
    // One transaction: delivered in order.
    let expected: Vec<String> = (1..=N).map(|n| format!("n{n}")).collect();
    assert_eq!(seen, expected);
    let first = events
        .iter()
        .find(|e| &*e.name == "pg.exactly_once")
        .unwrap();
    assert_eq!(first.source, EventSource::Rust);
    assert!(int(first, "backend_pid") > 0);
    assert!(
        first.payload.get("count").is_none(),
        "count only when coalescing"
    );
    let stats = listener.stats();
    assert_eq!((stats.received, stats.events), (N as u64 + 1, N as u64 + 1));
    assert!(stats.connected && stats.backend_pid.is_some());
    stop(&listener);
    assert!(listener.is_stopped() && !listener.is_connected());
}

#[test]
fn a_stalled_consumer_leaves_the_backlog_in_postgresql_and_loses_nothing() {
    let pg = cluster_or_skip!();
    let bus = bus_with(50, 50);
    let mut options = ListenerOptions::new(pg.url(), ["stalled"]);
    options.queue_sample_interval = Duration::from_millis(100);
    options.queue_warning = 0.000_01;
    options.queue_notice_interval = Duration::from_millis(10);
    let listener = start(&bus, options);
    const N: usize = 100_000;
    pg.execute(&format!(
        "SELECT pg_notify('stalled', g::text) FROM generate_series(1, {N}) g"
    ));
    // Nobody consumes: the listener reads what fits and then stops reading.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(listener.stats().backpressured
        && listener
            .stats()
            .queue_usage
            .is_some_and(|usage| usage > 0.0))
    {
        assert!(Instant::now() < deadline, "{:?}", listener.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let stalled = listener.stats();
    // What it read is bounded by the two channels plus the relay's batch and the one in hand.
    assert!(
        stalled.received <= 50 + 50 + 64 + 2,
        "read {} while stalled",
        stalled.received
    );
    assert!(stalled.backpressure_waits >= 1);
    let events = collect_until(&bus, Duration::from_secs(120), |events| {
        events.iter().filter(|e| &*e.name == "pg.stalled").count() >= N
    });
    let payloads: HashSet<&str> = events
        .iter()
        .filter(|e| &*e.name == "pg.stalled")
        .map(|e| payload_str(e, "payload"))
        .collect();
    assert_eq!(payloads.len(), N, "every notification, once");
    // The server's queue filled past the (tiny) threshold: a damped notice was emitted.
    let notices: Vec<_> = events
        .iter()
        .filter(|e| e.name.starts_with("listener.queue_"))
        .collect();
    assert!(
        notices
            .iter()
            .any(|e| &*e.name == "listener.queue_saturated"),
        "{:?}",
        listener.stats()
    );
    stop(&listener);
}

#[test]
fn coalescing_merges_identical_wake_ups_with_exact_counts() {
    let pg = cluster_or_skip!();
    let bus = bus_with(4, 4);
    let mut options = ListenerOptions::new(pg.url(), ["wake"]);
    options.coalesce = true;
    let listener = start(&bus, options);
    // Separate transactions: PostgreSQL folds identical pairs inside one.
    const ROUNDS: usize = 300;
    pg.execute(&format!(
        "DO $$ BEGIN FOR i IN 1..{ROUNDS} LOOP \
           PERFORM pg_notify('wake', 'orders'); PERFORM pg_notify('wake', 'billing'); \
           PERFORM pg_notify('wake', 'orders'); COMMIT; \
         END LOOP; END $$"
    ));
    // 3 per round except that each transaction folds its two 'orders': 2 per round.
    let total = (2 * ROUNDS) as i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while listener.stats().received < total as u64 {
        assert!(Instant::now() < deadline, "{:?}", listener.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = listener.stats();
    assert!(stats.coalesced > 0, "{stats:?}");
    let events = collect_until(&bus, Duration::from_secs(30), |events| {
        events
            .iter()
            .filter(|e| &*e.name == "pg.wake")
            .map(|e| int(e, "count"))
            .sum::<i64>()
            >= total
    });
    let wake: Vec<_> = events.iter().filter(|e| &*e.name == "pg.wake").collect();
    let count_of = |payload: &str| -> i64 {
        wake.iter()
            .filter(|e| payload_str(e, "payload") == payload)
            .map(|e| int(e, "count"))
            .sum()
    };
    assert_eq!(count_of("orders"), ROUNDS as i64);
    assert_eq!(count_of("billing"), ROUNDS as i64);
    assert!(wake.len() < 2 * ROUNDS, "some were merged: {}", wake.len());
    let stats = listener.stats();
    assert_eq!(stats.received - stats.coalesced, wake.len() as u64);
    assert_eq!(stats.coalesce_pending_notifications, 0);
    stop(&listener);
}

#[test]
fn a_full_coalescing_table_stops_reading_instead_of_dropping() {
    let pg = cluster_or_skip!();
    let bus = bus_with(2, 2);
    let mut options = ListenerOptions::new(pg.url(), ["wide"]);
    options.coalesce = true;
    options.coalesce_limit = 8;
    let listener = start(&bus, options);
    const N: usize = 2_000;
    pg.execute(&format!(
        "SELECT pg_notify('wide', 'key' || g) FROM generate_series(1, {N}) g"
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while listener.stats().coalesce_full == 0 {
        assert!(Instant::now() < deadline, "{:?}", listener.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(listener.stats().coalesce_pending_entries <= 8);
    let events = collect_until(&bus, Duration::from_secs(60), |events| {
        events.iter().filter(|e| &*e.name == "pg.wide").count() >= N
    });
    let distinct: HashSet<&str> = events
        .iter()
        .filter(|e| &*e.name == "pg.wide")
        .map(|e| payload_str(e, "payload"))
        .collect();
    assert_eq!(distinct.len(), N);
    stop(&listener);
}

#[test]
fn listen_and_unlisten_change_what_arrives() {
    let pg = cluster_or_skip!();
    let bus = bus_with(100, 100);
    let listener = start(&bus, ListenerOptions::new(pg.url(), Vec::<String>::new()));
    let handle = fork::runtime_handle();
    handle
        .block_on(
            listener
                .listen(["later", "with \"quotes\"", "Case"])
                .unwrap(),
        )
        .unwrap();
    assert_eq!(listener.channels(), ["later", "with \"quotes\"", "Case"]);
    pg.execute(
        "SELECT pg_notify('later', '1'); SELECT pg_notify('with \"quotes\"', '2'); \
         SELECT pg_notify('case', 'folded, not ours'); SELECT pg_notify('Case', '3')",
    );
    let events = collect_until(&bus, Duration::from_secs(10), |events| events.len() >= 3);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(names, ["pg.later", "pg.with%20\"quotes\"", "pg.Case"]);
    handle
        .block_on(listener.unlisten(["later", "never-listened"]).unwrap())
        .unwrap();
    assert_eq!(listener.channels(), ["with \"quotes\"", "Case"]);
    pg.execute("SELECT pg_notify('later', 'gone'); SELECT pg_notify('Case', 'still')");
    let events = collect_until(&bus, Duration::from_secs(10), |events| !events.is_empty());
    assert_eq!(payload_str(&events[0], "payload"), "still");
    assert!(listener.listen([""]).is_err());
    stop(&listener);
    let after = handle.block_on(listener.listen(["x"]).unwrap());
    assert_eq!(after, Err(ListenError::Stopped));
}

#[test]
fn connection_failures_name_the_host_and_never_the_password() {
    let pg = cluster_or_skip!();
    let bus = bus_with(10, 10);
    let failure = |url: String| -> tasker_channels_core::pg::PgError {
        let (_listener, startup) =
            Listener::start(&bus, ListenerOptions::new(url, ["x"])).expect("the URL parses");
        match fork::runtime_handle().block_on(startup) {
            Err(ListenError::Pg(error)) => error,
            other => panic!("{other:?}"),
        }
    };
    let refused = failure("host=/nonexistent/socket/dir user=postgres".into());
    assert_eq!(refused.kind, FailureKind::Refused);
    assert!(
        refused.to_string().contains("/nonexistent/socket/dir"),
        "{refused}"
    );

    let wrong_password = failure(format!(
        "{} password='wrong s3cret'",
        pg.url_for("postgres", "needs_password")
    ));
    assert_eq!(wrong_password.kind, FailureKind::Authentication);
    assert_eq!(wrong_password.code.as_deref(), Some("28P01"));
    let message = wrong_password.to_string();
    assert!(
        message.contains(&pg.socket_dir.display().to_string()),
        "{message}"
    );
    assert!(message.contains("needs_password"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");

    let no_password = failure(pg.url_for("postgres", "needs_password"));
    assert_eq!(
        no_password.kind,
        FailureKind::Authentication,
        "{no_password}"
    );

    let unknown_role = failure(pg.url_for("postgres", "nobody_here"));
    assert_eq!(unknown_role.kind, FailureKind::Authentication);
    assert_eq!(unknown_role.code.as_deref(), Some("28000"));

    let unknown_db = failure(pg.url_for("no_such_db", "postgres"));
    assert_eq!(unknown_db.code.as_deref(), Some("3D000"));
    assert!(
        unknown_db.to_string().contains("no_such_db"),
        "{unknown_db}"
    );

    let right = start(
        &bus,
        ListenerOptions::new(
            format!(
                "{} password='correct horse'",
                pg.url_for("postgres", "needs_password")
            ),
            ["x"],
        ),
    );
    assert!(right.is_connected());
    assert!(!right.target().contains("horse"));
    stop(&right);
}

#[test]
fn a_terminated_backend_is_reconnected_and_relistened_with_both_events() {
    let pg = cluster_or_skip!();
    let bus = bus_with(100, 100);
    let mut options = ListenerOptions::new(pg.url(), ["terminated", "pgmq.q_x.INSERT"]);
    options.reconnect_first_delay = Duration::from_millis(20);
    let listener = start(&bus, options);
    pg.execute("SELECT pg_notify('terminated', 'before')");
    let before = collect_until(&bus, Duration::from_secs(10), |events| !events.is_empty());
    assert_eq!(payload_str(&before[0], "payload"), "before");
    let pid = listener.stats().backend_pid.unwrap();
    pg.execute(&format!("SELECT pg_terminate_backend({pid})"));
    let events = collect_until(&bus, Duration::from_secs(20), |events| {
        events.iter().any(|e| &*e.name == "listener.reconnected")
    });
    let names: Vec<&str> = events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(names, ["listener.disconnected", "listener.reconnected"]);
    assert_eq!(payload_str(&events[0], "code"), "57P01");
    assert!(matches!(
        events[1].payload.get("channels"),
        Some(Payload::Array(channels)) if channels.len() == 2
    ));
    // Listening again on both channels, on a new backend.
    pg.execute("SELECT pg_notify('terminated', 'after'); NOTIFY \"pgmq.q_x.INSERT\"");
    let after = collect_until(&bus, Duration::from_secs(10), |events| events.len() >= 2);
    assert_eq!(payload_str(&after[0], "payload"), "after");
    assert_eq!(&*after[1].name, "pg.pgmq.q_x.INSERT");
    let stats = listener.stats();
    assert_eq!((stats.disconnects, stats.reconnects), (1, 1));
    assert_ne!(stats.backend_pid, Some(pid));
    stop(&listener);
}

#[test]
fn a_server_restart_mid_stream_is_survived() {
    let Some(pg) = Cluster::start() else {
        eprintln!("note: PostgreSQL binaries not found; skipping the restart test");
        return;
    };
    let bus = bus_with(2000, 2000);
    let mut options = ListenerOptions::new(pg.url(), ["restart"]);
    options.reconnect_first_delay = Duration::from_millis(20);
    options.reconnect_max_delay = Duration::from_millis(200);
    let listener = start(&bus, options);
    pg.execute("SELECT pg_notify('restart', 'n' || g) FROM generate_series(1, 1000) g");
    // Only what the listener has read survives: the server keeps nothing for it once its
    // backend is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener.stats().received < 1000 {
        assert!(Instant::now() < deadline, "{:?}", listener.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.restart();
    let events = collect_until(&bus, Duration::from_secs(30), |events| {
        events.iter().any(|e| &*e.name == "listener.reconnected")
    });
    // Everything sent before the restart was committed and read before the disconnect.
    let before: Vec<_> = events.iter().filter(|e| &*e.name == "pg.restart").collect();
    assert_eq!(before.len(), 1000);
    let disconnect = events
        .iter()
        .position(|e| &*e.name == "listener.disconnected")
        .unwrap();
    assert_eq!(disconnect, 1000, "the disconnect comes after what was read");
    pg.execute("SELECT pg_notify('restart', 'after')");
    let after = collect_until(&bus, Duration::from_secs(10), |events| !events.is_empty());
    assert_eq!(payload_str(&after[0], "payload"), "after");
    stop(&listener);
    pg.stop();
}

#[test]
fn an_invalid_utf8_payload_is_counted_and_the_listener_recovers() {
    let pg = cluster_or_skip!();
    let bus = bus_with(100, 100);
    let url = pg.url_for("rawbytes", "postgres");
    let mut options = ListenerOptions::new(url.clone(), ["raw"]);
    options.reconnect_first_delay = Duration::from_millis(20);
    let listener = start(&bus, options);
    pg.query_on(
        &url,
        "SELECT pg_notify('raw', 'fine'); SELECT pg_notify('raw', convert_from('\\xff41'::bytea, 'SQL_ASCII'))",
    );
    let events = collect_until(&bus, Duration::from_secs(20), |events| {
        events.iter().any(|e| &*e.name == "listener.reconnected")
    });
    assert_eq!(payload_str(&events[0], "payload"), "fine");
    assert_eq!(&*events[1].name, "listener.disconnected");
    // The server will not hand our UTF-8 session bytes it cannot convert: it ends the
    // session with SQLSTATE 22021, and the listener counts it and reconnects.
    assert_eq!(payload_str(&events[1], "code"), "22021");
    assert_eq!(listener.stats().undecodable, 1);
    pg.query_on(&url, "SELECT pg_notify('raw', 'later')");
    let after = collect_until(&bus, Duration::from_secs(10), |events| !events.is_empty());
    assert_eq!(payload_str(&after[0], "payload"), "later");
    stop(&listener);
}

#[test]
fn stopping_closes_every_connection_it_opened() {
    let pg = cluster_or_skip!();
    let bus = bus_with(10, 10);
    let mut options = ListenerOptions::new(pg.url(), ["closing"]);
    options.queue_sample_interval = Duration::from_millis(20);
    let listener = start(&bus, options);
    let id = listener.id();
    let open = || {
        pg.query(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name IN \
             ('tasker_channels listener {id}', 'tasker_channels queue sampler {id}')"
        ))[0]
            .clone()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener.stats().queue_samples == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open(), "2", "the listening and the sampling connection");
    stop(&listener);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open() != "0" {
        assert!(Instant::now() < deadline, "{} connections left", open());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn forwarded_events_arrive_as_remote_events_with_their_payload_intact() {
    let pg = cluster_or_skip!();
    let bus = bus_with(100, 100);
    let listener = start(&bus, ListenerOptions::new(pg.url(), ["forwarded"]));
    let forwarder = start_forwarder(pg, &bus, "forwarded");
    let payload = Payload::Hash(vec![
        (Key::Symbol("step_id".into()), Payload::Int(7)),
        (
            Key::String("label".into()),
            Payload::Symbol("urgent".into()),
        ),
        (Key::Symbol("ratio".into()), Payload::Float(1.0)),
    ]);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for n in 0..10u64 {
        let text = envelope::encode("step.completed", n, EventSource::Ruby, at, &payload).unwrap();
        assert!(queue_envelope(&forwarder, text));
    }
    let events = collect_until(&bus, Duration::from_secs(10), |events| events.len() >= 10);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(&*event.name, "step.completed");
        assert_eq!(event.source, EventSource::Remote);
        assert_eq!(event.published_at, at);
        let (Payload::Hash(received), Payload::Hash(sent)) = (&*event.payload, &payload) else {
            panic!("{:?}", event.payload)
        };
        assert_eq!(
            received[..sent.len()],
            sent[..],
            "key kinds, values and order"
        );
        assert_eq!(received.len(), sent.len() + 1);
        let origin = event.payload.get("tasker_origin").unwrap();
        assert_eq!(
            origin.get("pid"),
            Some(&Payload::Int(i64::from(std::process::id())))
        );
        assert_eq!(origin.get("id"), Some(&Payload::Int(n as i64)));
        assert_eq!(origin.get("source"), Some(&Payload::Symbol("ruby".into())));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while forwarder.stats().sent < 10 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(listener.stats().remote_events, 10);
    forwarder.close();
    fork::runtime_handle().block_on(forwarder.stopped());
    assert_eq!(forwarder.stats().lost, 0);
    stop(&listener);
}

#[test]
fn a_payload_at_the_notify_limit_goes_through_and_one_byte_more_is_refused_early() {
    let pg = cluster_or_skip!();
    let bus = bus_with(10, 10);
    let listener = start(&bus, ListenerOptions::new(pg.url(), ["limit"]));
    let forwarder = start_forwarder(pg, &bus, "limit");
    // Find the largest blob the worst-case check accepts; it must really go through.
    let blob = |len| Payload::symbol_hash([("blob", Payload::String("x".repeat(len)))]);
    let mut len = 7_000;
    while envelope::check_forwardable("big", &blob(len + 1)).is_ok() {
        len += 1;
    }
    assert!(envelope::check_forwardable("big", &blob(len + 1)).is_err());
    let text =
        envelope::encode("big", 1, EventSource::Ruby, SystemTime::now(), &blob(len)).unwrap();
    assert!(text.len() <= envelope::MAX_NOTIFY_PAYLOAD_BYTES);
    assert!(queue_envelope(&forwarder, text));
    let events = collect_until(&bus, Duration::from_secs(10), |events| !events.is_empty());
    assert_eq!(&*events[0].name, "big");
    assert_eq!(forwarder.stats().lost, 0);
    stop(&listener);
}

#[test]
fn shutdown_drains_the_relay_after_the_listeners_stop() {
    let pg = cluster_or_skip!();
    let bus = bus_with(100, 100);
    let listener = start(&bus, ListenerOptions::new(pg.url(), ["draining"]));
    pg.execute("SELECT pg_notify('draining', g::text) FROM generate_series(1, 150) g");
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener.stats().events < 150 {
        assert!(Instant::now() < deadline, "{:?}", listener.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop(&listener);
    let state = relay::close(&bus).expect("a relay runs");
    let consumer = {
        let bus = Arc::clone(&bus);
        std::thread::spawn(move || collect_until(&bus, Duration::from_secs(10), |e| e.len() >= 150))
    };
    fork::runtime_handle().block_on(state.finished());
    assert_eq!(state.undelivered(), 0);
    assert_eq!(consumer.join().unwrap().len(), 150);
    let refused = Listener::start(&bus, ListenerOptions::new(pg.url(), ["x"]));
    assert!(matches!(refused, Err(ListenError::Closed)));
}

/// More notifications readable at once than the listener handles per turn, with room to
/// take them all: none may be dropped between turns.
#[test]
fn long_readable_bursts_lose_nothing_between_turns() {
    let pg = cluster_or_skip!();
    let bus = bus_with(10_000, 1_000);
    let listener = start(&bus, ListenerOptions::new(pg.url(), ["long_burst"]));
    const N: usize = 20_000;
    pg.execute(&format!(
        "SELECT pg_notify('long_burst', 'n' || g) FROM generate_series(1, {N}) g"
    ));
    let events = collect_until(&bus, Duration::from_secs(60), |events| events.len() >= N);
    let distinct: HashSet<&str> = events.iter().map(|e| payload_str(e, "payload")).collect();
    assert_eq!(distinct.len(), N);
    assert_eq!(listener.stats().received, N as u64);
    stop(&listener);
}
