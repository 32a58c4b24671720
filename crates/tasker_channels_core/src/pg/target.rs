//! Where a connection goes and why it failed, in words that name the server but never the
//! password.
//!
//! Owns parsing a database URL into a connection config, describing that target for
//! messages, opening connections (TCP or Unix socket, no TLS), and turning tokio-postgres
//! errors into [`PgError`]s that carry the SQLSTATE (`DbError::code()`; the library's own
//! Display of a server error says only "db error"). It must never put a password, or a URL
//! that may hold one, into an error, a log line or an event.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::DbError;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

/// How long opening a connection may take when the URL sets no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection as tokio-postgres hands it over: the client for queries, the connection
/// that must be polled for anything to happen.
pub type PgConnection = Connection<Socket, NoTlsStream>;

/// What kind of failure a [`PgError`] is, for callers that react differently (Ruby maps it
/// to `Tasker::ConnectionError#reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The URL could not be parsed, or names no host.
    InvalidUrl,
    /// Nothing accepts connections there (refused, or no such socket file).
    Refused,
    /// The server refused the credentials (SQLSTATE class 28) or asked for a password the
    /// URL does not have.
    Authentication,
    /// Opening the connection took longer than its connect timeout.
    Timeout,
    /// The server answered with an error (the SQLSTATE says which).
    Server,
    /// The connection broke (I/O error, closed, or a message the client could not parse).
    Connection,
}

impl FailureKind {
    /// The name Ruby sees, e.g. `auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidUrl => "invalid_url",
            FailureKind::Refused => "refused",
            FailureKind::Authentication => "authentication",
            FailureKind::Timeout => "timeout",
            FailureKind::Server => "server",
            FailureKind::Connection => "connection",
        }
    }
}

/// A PostgreSQL failure with the target it concerns and, for server errors, the SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// Which way it failed.
    pub kind: FailureKind,
    /// The server as [`Target::describe`] names it (or the redacted URL when it did not parse).
    pub target: String,
    /// The host (or socket directory) alone, for error attributes.
    pub host: Option<String>,
    /// SQLSTATE for server errors (`28P01`, `57P01`, …).
    pub code: Option<String>,
    /// What went wrong, without the target.
    pub reason: String,
}

impl PgError {
    /// True for errors that a retry may cure (the server restarting, a dropped connection);
    /// false for ones the user must fix (URL, credentials, unknown database).
    pub fn is_transient(&self) -> bool {
        match self.kind {
            FailureKind::InvalidUrl | FailureKind::Authentication => false,
            FailureKind::Refused | FailureKind::Timeout | FailureKind::Connection => true,
            // 57P03 cannot_connect_now (starting up / shutting down), 57P01 admin_shutdown,
            // 53300 too_many_connections, and class 08 connection exceptions come and go.
            FailureKind::Server => self.code.as_deref().is_some_and(|code| {
                code.starts_with("57P") || code.starts_with("08") || code == "53300"
            }),
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::InvalidUrl => {
                write!(f, "invalid PostgreSQL URL {}: {}", self.target, self.reason)
            }
            FailureKind::Refused => write!(
                f,
                "could not connect to PostgreSQL at {}: {} (is the server running there?)",
                self.target, self.reason
            ),
            FailureKind::Authentication => write!(
                f,
                "PostgreSQL at {} refused the credentials: {}",
                self.target, self.reason
            ),
            FailureKind::Timeout => write!(
                f,
                "connecting to PostgreSQL at {} timed out: {}",
                self.target, self.reason
            ),
            FailureKind::Server | FailureKind::Connection => {
                write!(f, "PostgreSQL at {}: {}", self.target, self.reason)
            }
        }
    }
}

impl std::error::Error for PgError {}

/// A parsed database URL: where to connect, and how to say so without the password.
#[derive(Clone)]
pub struct Target {
    config: Config,
    description: String,
    host: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Config's own Debug redacts the password, but the description says all that matters.
        f.debug_tuple("Target").field(&self.description).finish()
    }
}

impl Target {
    /// Parses a `postgresql://` URL or a `key=value` connection string. A Unix socket is
    /// named by a directory host: `postgresql:///db?host=/run/postgresql` or
    /// `host=/run/postgresql dbname=db`. `PG*` environment variables are not read.
    pub fn parse(url: &str) -> Result<Self, PgError> {
        let invalid = |reason: String| PgError {
            kind: FailureKind::InvalidUrl,
            target: redact_url(url),
            host: None,
            code: None,
            reason,
        };
        if url.trim().is_empty() {
            return Err(invalid(
                "it is empty (pass a URL or set DATABASE_URL)".to_owned(),
            ));
        }
        let mut config = Config::from_str(url).map_err(|error| invalid(describe_error(&error)))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(invalid(
                "it names no host; for a Unix socket give its directory, e.g. \
                 postgresql:///postgres?host=/var/run/postgresql"
                    .to_owned(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let host = hosts(&config);
        let description = describe(&config, &host);
        Ok(Target {
            config,
            description,
            host,
        })
    }

    /// `host /tmp/pg port 5432 database "app" user "worker"`: everything but the password.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The host, or socket directory, connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The same target with another `application_name` (shown in `pg_stat_activity`).
    pub fn with_application_name(&self, name: &str) -> Self {
        let mut copy = self.clone();
        if self.config.get_application_name().is_none() {
            copy.config.application_name(name);
        }
        copy
    }

    /// Opens a connection. The caller must poll the returned connection for the client to
    /// make progress.
    pub async fn connect(&self) -> Result<(Client, PgConnection), PgError> {
        self.config
            .connect(NoTls)
            .await
            .map_err(|error| self.error(&error))
    }

    /// Turns a tokio-postgres error about this target into a [`PgError`].
    pub fn error(&self, error: &tokio_postgres::Error) -> PgError {
        let (kind, code, reason) = classify(error);
        PgError {
            kind,
            target: self.description.clone(),
            host: Some(self.host.clone()),
            code,
            reason,
        }
    }

    /// A failure of this target that did not come from tokio-postgres.
    pub fn failure(&self, kind: FailureKind, reason: impl Into<String>) -> PgError {
        PgError {
            kind,
            target: self.description.clone(),
            host: Some(self.host.clone()),
            code: None,
            reason: reason.into(),
        }
    }
}

fn hosts(config: &Config) -> String {
    let mut names: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if names.is_empty() {
        names = config
            .get_hostaddrs()
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    names.join(",")
}

fn describe(config: &Config, host: &str) -> String {
    let mut text = format!("host {host}");
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let ports = if ports.is_empty() {
        "5432".to_owned()
    } else {
        ports.join(",")
    };
    text.push_str(" port ");
    text.push_str(&ports);
    if let Some(dbname) = config.get_dbname() {
        text.push_str(&format!(" database {dbname:?}"));
    }
    if let Some(user) = config.get_user() {
        text.push_str(&format!(" user {user:?}"));
    }
    text
}

/// The URL with any password replaced by `***`, for messages about a URL that did not parse.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    if let Some(scheme_end) = url.find("://") {
        let (scheme, rest) = url.split_at(scheme_end + 3);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (userinfo, hostpart) = authority.split_at(at);
                match userinfo.find(':') {
                    Some(colon) => format!("{}:***{hostpart}", &userinfo[..colon]),
                    None => authority.to_owned(),
                }
            }
            None => authority.to_owned(),
        };
        let tail = redact_password_pairs(tail, '&');
        return format!("{scheme}{authority}{tail}");
    }
    redact_password_pairs(url, ' ')
}

/// Replaces the value of every `password=` pair (query string or key=value form).
fn redact_password_pairs(text: &str, separator: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = find_password_key(rest) {
        out.push_str(&rest[..found]);
        out.push_str("password=***");
        let value = &rest[found + "password=".len()..];
        let value_end = if let Some(quoted) = value.strip_prefix('\'') {
            // key='quoted value' with \' escapes
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = Some(i + 2);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            end.unwrap_or(value.len())
        } else {
            value
                .find(|c: char| c == separator || c.is_whitespace() || c == '&')
                .unwrap_or(value.len())
        };
        rest = &value[value_end..];
    }
    out.push_str(rest);
    out
}

fn find_password_key(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = text[from..].find("password") {
        let start = from + offset;
        let before_ok = start == 0
            || text[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c == '?' || c == '&' || c.is_whitespace());
        let after = text[start + "password".len()..].trim_start();
        if before_ok && after.starts_with('=') {
            // Normalise `password = x` to the pair form the caller replaces.
            let equals = text[start..].find('=').unwrap_or(0);
            if equals == "password".len() {
                return Some(start);
            }
        }
        from = start + "password".len();
    }
    None
}

/// Kind, SQLSTATE and a reason for a tokio-postgres error. Server errors are spelled out from
/// their fields (severity, message, detail, hint): the error's own Display says "db error".
fn classify(error: &tokio_postgres::Error) -> (FailureKind, Option<String>, String) {
    if let Some(db) = error.as_db_error() {
        return classify_db(db);
    }
    let reason = describe_error(error);
    if let Some(io_error) = find_io_error(error) {
        let kind = match io_error.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => FailureKind::Refused,
            io::ErrorKind::TimedOut => FailureKind::Timeout,
            _ => FailureKind::Connection,
        };
        return (kind, None, reason);
    }
    let kind = if reason.starts_with("authentication error") || reason.contains("password missing")
    {
        FailureKind::Authentication
    } else if reason.starts_with("timeout") {
        FailureKind::Timeout
    } else if reason.starts_with("invalid connection string")
        || reason.starts_with("invalid configuration")
    {
        FailureKind::InvalidUrl
    } else {
        FailureKind::Connection
    };
    (kind, None, reason)
}

fn classify_db(db: &DbError) -> (FailureKind, Option<String>, String) {
    let code = db.code().code().to_owned();
    let kind = if code.starts_with("28") {
        FailureKind::Authentication
    } else {
        FailureKind::Server
    };
    let mut reason = format!("{} {code}: {}", db.severity(), db.message());
    if let Some(detail) = db.detail() {
        reason.push_str(&format!(" (detail: {detail})"));
    }
    if let Some(hint) = db.hint() {
        reason.push_str(&format!(" (hint: {hint})"));
    }
    (kind, Some(code), reason)
}

/// The error and its causes, joined: "error connecting to server: Connection refused (os
/// error 111)".
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

fn find_io_error(error: &tokio_postgres::Error) -> Option<&io::Error> {
    let mut cause = error.source();
    while let Some(inner) = cause {
        if let Some(io_error) = inner.downcast_ref::<io::Error>() {
            return Some(io_error);
        }
        cause = inner.source();
    }
    None
}

/// True when a connection ended because a notification was not valid UTF-8: possible only
/// in a `SQL_ASCII` database, whose server passes bytes through unchecked. tokio-postgres
/// decodes every notification as UTF-8 and ends the connection when it cannot.
pub fn is_invalid_utf8(error: &tokio_postgres::Error) -> bool {
    find_io_error(error).is_some_and(|io_error| {
        io_error.kind() == io::ErrorKind::InvalidInput
            && io_error
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<std::str::Utf8Error>().is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_target_without_the_password() {
        let target =
            Target::parse("postgresql://worker:s3cret@db.internal:6543/app?sslmode=disable")
                .unwrap();
        assert_eq!(
            target.describe(),
            "host db.internal port 6543 database \"app\" user \"worker\""
        );
        assert!(!format!("{target:?}").contains("s3cret"));
        let socket = Target::parse("postgresql:///postgres?host=/tmp/pg&user=postgres").unwrap();
        assert_eq!(
            socket.describe(),
            "host /tmp/pg port 5432 database \"postgres\" user \"postgres\""
        );
        let pairs = Target::parse("host=/tmp/pg dbname=x password=hunter2").unwrap();
        assert_eq!(pairs.host(), "/tmp/pg");
        assert!(!pairs.describe().contains("hunter2"));
    }

    #[test]
    fn bad_urls_are_refused_with_the_password_redacted() {
        let error = Target::parse("postgresql://worker:s3cret@db:notaport/app").unwrap_err();
        assert_eq!(error.kind, FailureKind::InvalidUrl);
        let message = error.to_string();
        assert!(message.contains("db:notaport"), "{message}");
        assert!(message.contains("worker:***@"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");

        let error = Target::parse("postgresql:///app").unwrap_err();
        assert!(error.to_string().contains("names no host"), "{error}");
        let error = Target::parse("  ").unwrap_err();
        assert!(error.to_string().contains("DATABASE_URL"), "{error}");
        let error = Target::parse("host=/tmp password='a b' bogus_key=1").unwrap_err();
        assert!(!error.to_string().contains("a b"), "{error}");
    }

    #[test]
    fn redaction_covers_every_place_a_password_can_be() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=pw&x=1",
                "postgres://h/db?user=u&password=***&x=1",
            ),
            ("host=h password=pw user=u", "host=h password=*** user=u"),
            (
                "host=h password='p w\\'x' user=u",
                "host=h password=*** user=u",
            ),
            ("host=h", "host=h"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn transient_failures_are_the_ones_a_retry_can_cure() {
        let error = |kind, code: Option<&str>| PgError {
            kind,
            target: "t".into(),
            host: None,
            code: code.map(str::to_owned),
            reason: "r".into(),
        };
        assert!(error(FailureKind::Refused, None).is_transient());
        assert!(error(FailureKind::Server, Some("57P03")).is_transient());
        assert!(error(FailureKind::Server, Some("57P01")).is_transient());
        assert!(!error(FailureKind::Server, Some("3D000")).is_transient());
        assert!(!error(FailureKind::Authentication, Some("28P01")).is_transient());
    }
}
