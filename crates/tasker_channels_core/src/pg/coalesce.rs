//! The coalescing table: identical wake-ups merged while the way to the handlers is full.
//!
//! Owns the pending notifications of a coalescing listener, one entry per distinct
//! (channel, payload), in arrival order of each key's first notification, each with an exact
//! count. It is bounded by the number of distinct keys: when full, a notification with a new
//! key is handed back so the listener can stop reading (PostgreSQL then holds it), never
//! dropped. Memory follows occupancy: an emptied table gives its storage back. It must never
//! merge notifications that differ in channel or payload.

use std::collections::{HashMap, VecDeque};

/// One notification, or several identical ones merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The PostgreSQL channel the notification came on.
    pub channel: String,
    /// The notification's payload.
    pub payload: String,
    /// The server process that sent the first of them.
    pub backend_pid: i32,
    /// How many notifications this stands for (1 when nothing was merged).
    pub count: u64,
}

impl Pending {
    /// One notification, not yet merged with any other.
    pub(crate) fn new(channel: String, payload: String, backend_pid: i32) -> Self {
        Self {
            channel,
            payload,
            backend_pid,
            count: 1,
        }
    }
}

/// What [`CoalesceTable::merge`] did with a notification.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Merge {
    /// Counted into the pending entry with the same key.
    Merged,
    /// Became a new pending entry.
    Added,
    /// The table holds its limit of distinct keys: the notification is handed back.
    Full(Pending),
}

/// Pending notifications keyed by (channel, payload), bounded by distinct keys.
#[derive(Debug)]
pub(crate) struct CoalesceTable {
    limit: usize,
    /// Key → sequence number of its entry; `entries[seq - first_seq]` is the entry.
    index: HashMap<(String, String), u64>,
    entries: VecDeque<Pending>,
    first_seq: u64,
}

/// Storage kept by an emptied table; above it, the table gives memory back.
const RETAINED_ENTRIES: usize = 64;

impl CoalesceTable {
    /// A table that holds at most `limit` distinct keys (at least 1).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            index: HashMap::new(),
            entries: VecDeque::new(),
            first_seq: 0,
        }
    }

    /// The most distinct entries the table holds.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Distinct entries pending.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the table holds `limit` entries.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.limit
    }

    /// How many notifications the pending entries stand for.
    pub(crate) fn pending_notifications(&self) -> u64 {
        self.entries.iter().map(|entry| entry.count).sum()
    }

    /// Merges `note` (count added as is) into the entry with its key, or adds it.
    pub(crate) fn merge(&mut self, note: Pending) -> Merge {
        let key = (note.channel, note.payload);
        if let Some(&seq) = self.index.get(&key) {
            let position = (seq - self.first_seq) as usize;
            self.entries[position].count += note.count;
            return Merge::Merged;
        }
        let (channel, payload) = key;
        let note = Pending {
            channel,
            payload,
            ..note
        };
        if self.is_full() {
            return Merge::Full(note);
        }
        let seq = self.first_seq + self.entries.len() as u64;
        self.index
            .insert((note.channel.clone(), note.payload.clone()), seq);
        self.entries.push_back(note);
        Merge::Added
    }

    /// Takes the oldest pending entry; later notifications with its key start a new one.
    pub(crate) fn pop_front(&mut self) -> Option<Pending> {
        let entry = self.entries.pop_front()?;
        self.index
            .remove(&(entry.channel.clone(), entry.payload.clone()));
        self.first_seq += 1;
        if self.entries.is_empty() {
            self.first_seq = 0;
            if self.entries.capacity() > RETAINED_ENTRIES {
                self.entries.shrink_to(RETAINED_ENTRIES);
                self.index.shrink_to(RETAINED_ENTRIES);
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(channel: &str, payload: &str) -> Pending {
        Pending::new(channel.into(), payload.into(), 7)
    }

    #[test]
    fn identical_wake_ups_merge_with_exact_counts_in_first_arrival_order() {
        let mut table = CoalesceTable::new(8);
        for (channel, payload) in [
            ("q", "orders"),
            ("q", "billing"),
            ("q", "orders"),
            ("other", "orders"),
            ("q", "orders"),
        ] {
            assert_ne!(
                table.merge(note(channel, payload)),
                Merge::Full(note(channel, payload))
            );
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.pending_notifications(), 5);
        let drained: Vec<_> = std::iter::from_fn(|| table.pop_front())
            .map(|p| (p.channel, p.payload, p.count))
            .collect();
        assert_eq!(
            drained,
            [
                ("q".into(), "orders".into(), 3),
                ("q".into(), "billing".into(), 1),
                ("other".into(), "orders".into(), 1)
            ]
        );
    }

    #[test]
    fn a_key_taken_out_starts_a_new_entry() {
        let mut table = CoalesceTable::new(2);
        assert_eq!(table.merge(note("q", "a")), Merge::Added);
        assert_eq!(table.pop_front().unwrap().count, 1);
        assert_eq!(table.merge(note("q", "a")), Merge::Added);
        assert_eq!(table.merge(note("q", "a")), Merge::Merged);
        assert_eq!(table.pop_front().unwrap().count, 2);
        assert!(table.is_empty());
    }

    #[test]
    fn a_full_table_hands_new_keys_back_but_still_merges_known_ones() {
        let mut table = CoalesceTable::new(2);
        assert_eq!(table.merge(note("q", "a")), Merge::Added);
        assert_eq!(table.merge(note("q", "b")), Merge::Added);
        assert!(table.is_full());
        assert_eq!(table.merge(note("q", "c")), Merge::Full(note("q", "c")));
        assert_eq!(table.merge(note("q", "a")), Merge::Merged);
        assert_eq!(table.pending_notifications(), 3);
        table.pop_front();
        assert_eq!(table.merge(note("q", "c")), Merge::Added);
        let rest: Vec<_> = std::iter::from_fn(|| table.pop_front())
            .map(|p| p.payload)
            .collect();
        assert_eq!(rest, ["b", "c"]);
    }

    #[test]
    fn an_emptied_table_gives_its_memory_back() {
        let mut table = CoalesceTable::new(10_000);
        for n in 0..5_000 {
            table.merge(note("q", &n.to_string()));
        }
        while table.pop_front().is_some() {}
        assert!(table.entries.capacity() <= RETAINED_ENTRIES * 2);
        assert_eq!(table.limit(), 10_000);
    }
}
