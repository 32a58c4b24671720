//! A throwaway PostgreSQL cluster for the tests: initdb into a temp dir, started on a Unix
//! socket only (no TCP), fsync off, stopped and removed when the test process exits.
//!
//! Binaries come from `TASKER_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`. When there
//! are none, [`Cluster::shared`] returns `None` and the caller skips with a printed note
//! (`bin/setup` installs them). As root, the server runs as the `postgres` user, which
//! owns the cluster's directories.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    pub socket_dir: PathBuf,
    data: PathBuf,
}

static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
static STARTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn stop_all_at_exit() {
    let roots = STARTED
        .lock()
        .map(|roots| roots.clone())
        .unwrap_or_default();
    for root in roots {
        if let Some(bin) = find_bin() {
            let _ = run_as_owner(
                Command::new(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(root.join("data"))
                    .args(["-m", "immediate", "-w", "stop"]),
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TASKER_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `command` as the cluster owner (postgres when we are root), with no inherited file
/// descriptors beyond stdio: a server that inherits the test harness's pipes or lock files
/// keeps them open and makes the next start (or the harness) wait.
fn run_as_owner(command: &mut Command) -> std::io::Result<std::process::Output> {
    let mut command = if is_root() {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let mut wrapped = Command::new("runuser");
        wrapped
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        wrapped
    } else {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let mut plain = Command::new(program);
        plain.args(args);
        plain
    };
    command.stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            for fd in 3..1024 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    command.output()
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {path:?}");
    }
}

impl Cluster {
    /// The cluster every test in this process shares (started on first use).
    pub fn shared() -> Option<&'static Cluster> {
        SHARED
            .get_or_init(|| {
                let cluster = Cluster::start();
                if cluster.is_none() {
                    eprintln!(
                        "note: PostgreSQL binaries not found (set TASKER_PG_BIN or run bin/setup); \
                         skipping the PostgreSQL tests"
                    );
                }
                cluster
            })
            .as_ref()
    }

    /// A cluster of its own, for tests that restart the server. Stopped at exit.
    pub fn start() -> Option<Cluster> {
        let bin = find_bin()?;
        // Kept, not removed on drop: the exit hook stops the server first, then removes it.
        let root = tempfile::Builder::new()
            .prefix("tasker_pg_")
            .tempdir()
            .expect("create cluster dir")
            .keep();
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&data).expect("create data dir");
        std::fs::create_dir_all(&socket_dir).expect("create socket dir");
        chown_to_postgres(&root);
        let cluster = Cluster {
            root,
            bin,
            socket_dir,
            data,
        };
        let initdb = run_as_owner(
            Command::new(cluster.bin.join("initdb"))
                .arg("-D")
                .arg(&cluster.data)
                .args(["-A", "trust", "-E", "UTF8", "--no-sync", "-U", "postgres"]),
        )
        .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        // A role that must give a password, for the authentication tests.
        let hba = cluster.data.join("pg_hba.conf");
        let original = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("local all needs_password scram-sha-256\n{original}"),
        )
        .expect("write pg_hba.conf");
        {
            let mut roots = STARTED.lock().unwrap();
            if roots.is_empty() {
                // SAFETY: registers a plain extern "C" function.
                unsafe { libc::atexit(stop_all_at_exit) };
            }
            roots.push(cluster.root.clone());
        }
        cluster.pg_ctl_start();
        cluster.execute("CREATE ROLE needs_password LOGIN PASSWORD 'correct horse'");
        cluster.execute(
            "CREATE DATABASE rawbytes ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        );
        Some(cluster)
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c max_connections=200",
            self.socket_dir.display()
        );
        let start = run_as_owner(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.root.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
        )
        .expect("run pg_ctl start");
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&start.stdout),
            String::from_utf8_lossy(&start.stderr)
        );
    }

    fn pg_ctl_stop(&self) {
        let _ = run_as_owner(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]),
        );
    }

    /// Stops the server (fast: every connection is told and closed), then starts it again.
    pub fn restart(&self) {
        self.pg_ctl_stop();
        self.pg_ctl_start();
    }

    pub fn stop(&self) {
        self.pg_ctl_stop();
    }

    pub fn resume(&self) {
        self.pg_ctl_start();
    }

    /// A URL for `database` as `user` over the Unix socket.
    pub fn url_for(&self, database: &str, user: &str) -> String {
        format!(
            "host={} user={user} dbname={database}",
            self.socket_dir.display()
        )
    }

    pub fn url(&self) -> String {
        self.url_for("postgres", "postgres")
    }

    /// Runs SQL (simple query protocol) and returns the first column of every row.
    pub fn query(&self, sql: &str) -> Vec<Option<String>> {
        self.query_on(&self.url(), sql)
    }

    pub fn query_on(&self, url: &str, sql: &str) -> Vec<Option<String>> {
        let handle = tasker_channels_core::fork::runtime_handle();
        let url = url.to_owned();
        let sql = sql.to_owned();
        handle.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|error| panic!("connect for a test query: {error:?}"));
            let driver = tokio::spawn(connection);
            let rows = simple(&client, &sql).await;
            drop(client);
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
            rows
        })
    }

    pub fn execute(&self, sql: &str) {
        self.query(sql);
    }
}

pub async fn simple(client: &Client, sql: &str) -> Vec<Option<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error:?}"))
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect()
}
