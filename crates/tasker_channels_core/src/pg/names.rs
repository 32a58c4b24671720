//! PostgreSQL channel names: validation, quoting for LISTEN, and the event names they map to.
//!
//! Owns what a channel name may be (what PostgreSQL keeps without truncating), how it is
//! quoted in `LISTEN`/`UNLISTEN`, and the reversible mapping from a channel to the event
//! name subscribers select with. It must never talk to a server.

use std::fmt;

use crate::event::{validate_name, MAX_NAME_BYTES};

/// PostgreSQL truncates identifiers to `NAMEDATALEN - 1` bytes; a longer channel name would
/// silently listen on a different (truncated) channel, so it is refused instead.
pub const MAX_CHANNEL_BYTES: usize = 63;

/// Every event made from a notification is named `pg.<channel>`.
pub const EVENT_PREFIX: &str = "pg";

/// A channel name that cannot be listened on as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PostgreSQL channel name {name:?}: {reason}")]
pub struct InvalidChannel {
    /// The refused name.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A PostgreSQL channel name, checked to be one the server keeps exactly as written.
///
/// Channel names are case-sensitive here: `LISTEN` is always sent quoted, so `Orders` listens
/// on `Orders`, as `pg_notify('Orders', …)` sends. (An unquoted `NOTIFY Orders` in SQL folds
/// to `orders`.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PgChannel(String);

impl PgChannel {
    /// Checks `name`: not empty, at most [`MAX_CHANNEL_BYTES`] bytes, no NUL byte.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidChannel> {
        let name = name.into();
        let refuse = |reason| {
            Err(InvalidChannel {
                name: name.chars().take(80).collect(),
                reason,
            })
        };
        if name.is_empty() {
            return refuse("it is empty");
        }
        if name.len() > MAX_CHANNEL_BYTES {
            return refuse(
                "it is longer than 63 bytes, and PostgreSQL would truncate it to a different channel",
            );
        }
        if name.contains('\0') {
            return refuse("it contains a NUL byte");
        }
        Ok(PgChannel(name))
    }

    /// The channel name as PostgreSQL knows it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier: `"pgmq.q_orders.INSERT"`, with `"` doubled.
    pub fn quoted(&self) -> String {
        let mut quoted = String::with_capacity(self.0.len() + 2);
        quoted.push('"');
        for c in self.0.chars() {
            if c == '"' {
                quoted.push('"');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    }

    /// The event name notifications on this channel are delivered under (see
    /// [`event_name_for`]).
    pub fn event_name(&self) -> String {
        event_name_for(&self.0)
    }
}

impl fmt::Display for PgChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The event name for notifications on `channel`: `pg.` followed by the channel, with every
/// character an event name cannot hold percent-encoded as its UTF-8 bytes (`%2A` for `*`,
/// `%20` for a space, `%25` for `%` itself). A dot stays a segment separator, so
/// `pgmq.q_orders.INSERT` becomes `pg.pgmq.q_orders.INSERT` and the pattern
/// `pg.pgmq.*.INSERT` selects every pgmq queue; a dot that would leave an empty segment (at
/// either end, or next to another dot) is encoded as `%2E`. The mapping is reversible:
/// [`channel_for_event_name`] undoes it.
///
/// Any string is accepted (names from the server are not re-validated); the result is always
/// a valid event name for channels up to [`MAX_CHANNEL_BYTES`].
pub fn event_name_for(channel: &str) -> String {
    let mut name = String::with_capacity(EVENT_PREFIX.len() + 1 + channel.len());
    name.push_str(EVENT_PREFIX);
    name.push('.');
    let chars: Vec<char> = channel.chars().collect();
    if chars.is_empty() {
        // Not a channel PostgreSQL sends, but the result must still be a valid name.
        name.push_str("%00");
        return name;
    }
    for (i, &c) in chars.iter().enumerate() {
        let keep = match c {
            '.' => {
                let inner = i > 0 && i + 1 < chars.len();
                inner && chars[i - 1] != '.' && chars[i + 1] != '.'
            }
            '%' | '*' => false,
            c => !(c.is_whitespace() || c.is_control()),
        };
        if keep {
            name.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    debug_assert!(
        name.len() > MAX_NAME_BYTES || validate_name(&name).is_ok(),
        "{name}"
    );
    name
}

/// The channel an event name made by [`event_name_for`] came from, or `None` when the name
/// is not of that form.
pub fn channel_for_event_name(name: &str) -> Option<String> {
    let encoded = name.strip_prefix(EVENT_PREFIX)?.strip_prefix('.')?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    let channel = String::from_utf8(bytes).ok()?;
    (channel != "\0").then_some(channel)
}

/// Checks and de-duplicates a list of channel names, keeping the first occurrence's order.
pub fn channel_list<I, S>(names: I) -> Result<Vec<PgChannel>, InvalidChannel>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut channels: Vec<PgChannel> = Vec::new();
    for name in names {
        let channel = PgChannel::new(name)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// `LISTEN "a"; LISTEN "b"` (or `UNLISTEN`) for one simple-query round trip.
pub fn statements(verb: &str, channels: &[PgChannel]) -> String {
    channels
        .iter()
        .map(|channel| format!("{verb} {}", channel.quoted()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasker_channel_names_map_to_selectable_event_names() {
        let cases = [
            ("pgmq.q_orders.INSERT", "pg.pgmq.q_orders.INSERT"),
            ("pgmq_message_ready", "pg.pgmq_message_ready"),
            (
                "pgmq_message_ready.fulfillment",
                "pg.pgmq_message_ready.fulfillment",
            ),
            ("Orders", "pg.Orders"),
            ("a b", "pg.a%20b"),
            ("all*", "pg.all%2A"),
            ("50%", "pg.50%25"),
            (".lead", "pg.%2Elead"),
            ("trail.", "pg.trail%2E"),
            ("a..b", "pg.a%2E%2Eb"),
            ("tab\there", "pg.tab%09here"),
            ("nbsp\u{a0}x", "pg.nbsp%C2%A0x"),
            ("ünïcode", "pg.ünïcode"),
            ("\"quoted\"", "pg.\"quoted\""),
        ];
        for (channel, event) in cases {
            let mapped = event_name_for(channel);
            assert_eq!(mapped, event, "{channel:?}");
            assert_eq!(validate_name(&mapped), Ok(()), "{mapped}");
            assert_eq!(
                channel_for_event_name(&mapped).as_deref(),
                Some(channel),
                "{mapped}"
            );
        }
    }

    #[test]
    fn the_longest_worst_case_channel_still_makes_a_valid_event_name() {
        let channel = "*".repeat(MAX_CHANNEL_BYTES);
        let name = event_name_for(&channel);
        assert_eq!(validate_name(&name), Ok(()));
        assert_eq!(channel_for_event_name(&name), Some(channel));
        let dots = ".".repeat(MAX_CHANNEL_BYTES);
        assert_eq!(validate_name(&event_name_for(&dots)), Ok(()));
    }

    #[test]
    fn every_short_channel_round_trips() {
        let alphabet = ['a', '.', '*', '%', ' ', 'é'];
        let mut names = vec![String::new()];
        for _ in 0..4 {
            names = names
                .iter()
                .flat_map(|prefix| {
                    alphabet.iter().map(move |c| {
                        let mut next = prefix.clone();
                        next.push(*c);
                        next
                    })
                })
                .collect();
            for channel in &names {
                let name = event_name_for(channel);
                assert_eq!(validate_name(&name), Ok(()), "{channel:?} -> {name}");
                assert_eq!(channel_for_event_name(&name).as_ref(), Some(channel));
            }
        }
    }

    #[test]
    fn quoting_doubles_quotes() {
        let channel = PgChannel::new("pgmq.q_orders.INSERT").unwrap();
        assert_eq!(channel.quoted(), "\"pgmq.q_orders.INSERT\"");
        assert_eq!(PgChannel::new("a\"b").unwrap().quoted(), "\"a\"\"b\"");
        assert_eq!(
            statements("LISTEN", &channel_list(["a", "b.c", "a"]).unwrap()),
            "LISTEN \"a\"; LISTEN \"b.c\""
        );
    }

    #[test]
    fn refuses_what_postgresql_would_not_keep() {
        assert_eq!(PgChannel::new("").unwrap_err().reason, "it is empty");
        assert!(PgChannel::new("x".repeat(64))
            .unwrap_err()
            .reason
            .contains("longer than 63 bytes"));
        assert!(PgChannel::new("x".repeat(63)).is_ok());
        // 32 two-byte characters are 64 bytes.
        assert!(PgChannel::new("é".repeat(32)).is_err());
        assert_eq!(
            PgChannel::new("a\0b").unwrap_err().reason,
            "it contains a NUL byte"
        );
        let message = channel_list(["ok", ""]).unwrap_err().to_string();
        assert_eq!(message, "invalid PostgreSQL channel name \"\": it is empty");
    }

    #[test]
    fn names_not_made_here_have_no_channel() {
        assert_eq!(channel_for_event_name("step.completed"), None);
        assert_eq!(channel_for_event_name("pg"), None);
        assert_eq!(channel_for_event_name("pg.bad%zz"), None);
        assert_eq!(channel_for_event_name("pg.cut%2"), None);
    }
}
