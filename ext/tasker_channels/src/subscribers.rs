//! Who wants which events: the subscription table the dispatch loop reads, and a small
//! cache of which subscriptions match a name.
//!
//! Owns each subscription's selector (a parsed pattern compared in Rust, or a Ruby Regexp),
//! its handler Proc and the shape the handler takes, in immutable generations swapped in
//! whole, so a dispatcher can call handlers while another thread subscribes. The runtime's
//! mark function pins every handler and Regexp of the current generation. It must never let
//! a handler of an older generation be called after a point where the GC may have run
//! (see [`Subscribers::is_current`]), and the cache must never grow with load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use magnus::{gc, prelude::*, value::Opaque, Error, Ruby, Value};
use tasker_channels_core::Pattern;

use crate::gvl_cell::GvlCell;

/// What a handler is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One parameter: a frozen `Event`, built at most once per event.
    Event,
    /// Two parameters: the name and the payload, nothing allocated.
    NameAndPayload,
}

impl Shape {
    /// Blocks with at least two required parameters take `(name, payload)`; everything
    /// else takes the Event.
    pub fn for_arity(arity: i64) -> Self {
        // Proc#arity: n required and no optional → n; otherwise -(required + 1).
        let required = if arity < 0 { -arity - 1 } else { arity };
        if required >= 2 {
            Shape::NameAndPayload
        } else {
            Shape::Event
        }
    }
}

pub enum Selector {
    Pattern(Pattern),
    Regexp(Opaque<Value>),
}

pub struct Entry {
    pub id: u64,
    pub selector: Selector,
    pub handler: Opaque<Value>,
    pub shape: Shape,
}

/// One generation of the table, in subscription order (ids increase).
pub struct List {
    pub generation: u64,
    pub entries: Vec<Entry>,
}

pub struct Subscribers {
    current: ArcSwap<List>,
    generation: AtomicU64,
    next_id: AtomicU64,
    cache: GvlCell<MatchCache>,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            current: ArcSwap::from_pointee(List {
                generation: 0,
                entries: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            cache: GvlCell::new(MatchCache::default()),
        }
    }
}

impl Subscribers {
    pub fn mark(&self, marker: &gc::Marker) {
        for entry in self.current.load().entries.iter() {
            marker.mark(entry.handler);
            if let Selector::Regexp(regexp) = &entry.selector {
                marker.mark(*regexp);
            }
        }
    }

    /// Adds a subscription; returns its id. Must be called with the GVL held.
    pub fn add(&self, selector: Selector, handler: Value, shape: Shape) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.replace(|entries| {
            entries.push(Entry {
                id,
                selector: match &selector {
                    Selector::Pattern(pattern) => Selector::Pattern(pattern.clone()),
                    Selector::Regexp(regexp) => Selector::Regexp(*regexp),
                },
                handler: handler.into(),
                shape,
            })
        });
        id
    }

    /// Removes the subscription `id`, and only it; false when it was not there.
    pub fn remove(&self, id: u64) -> bool {
        let mut removed = false;
        self.replace(|entries| {
            let before = entries.len();
            entries.retain(|entry| entry.id != id);
            removed = entries.len() != before;
        });
        removed
    }

    fn replace(&self, change: impl FnOnce(&mut Vec<Entry>)) {
        let old = self.current.load();
        let mut entries: Vec<Entry> = old
            .entries
            .iter()
            .map(|entry| Entry {
                id: entry.id,
                selector: match &entry.selector {
                    Selector::Pattern(pattern) => Selector::Pattern(pattern.clone()),
                    Selector::Regexp(regexp) => Selector::Regexp(*regexp),
                },
                handler: entry.handler,
                shape: entry.shape,
            })
            .collect();
        change(&mut entries);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        // No Ruby call between building the new generation and publishing it: the GC can't
        // run in between, so its handlers are always marked by the time they could move.
        self.current.store(Arc::new(List {
            generation,
            entries,
        }));
        self.generation.store(generation, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.current.load().entries.len()
    }

    /// The current generation.
    pub fn load(&self) -> Arc<List> {
        self.current.load_full()
    }

    /// Whether `list` is still the current generation. Its handlers are safe to call only
    /// then: an older generation's handlers are no longer marked.
    #[inline]
    pub fn is_current(&self, list: &List) -> bool {
        self.generation.load(Ordering::Acquire) == list.generation
    }

    /// Indices into `list.entries` of the subscriptions selecting `name` (a frozen UTF-8
    /// Ruby String), with an id above `after`.
    pub fn matching(
        &self,
        ruby: &Ruby,
        list: &List,
        name: Value,
        after: u64,
    ) -> Result<Arc<[u32]>, Error> {
        if after == 0 {
            // SAFETY: `name` is live on this frame and nothing here calls Ruby while the
            // borrowed text is in use.
            let hit = self
                .cache
                .with(|cache| cache.get(list.generation, unsafe { string_text(name) }));
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        // A miss: own the text, since matching a Regexp calls Ruby.
        // SAFETY: as above; the copy is made before any Ruby call.
        let text: String = unsafe { string_text(name) }.to_owned();
        let mut found = Vec::new();
        for (index, entry) in list.entries.iter().enumerate() {
            if entry.id <= after {
                continue;
            }
            let selected = match &entry.selector {
                Selector::Pattern(pattern) => pattern.matches(&text),
                Selector::Regexp(regexp) => {
                    let regexp = ruby.get_inner(*regexp);
                    regexp.funcall::<_, _, bool>("match?", (name,))?
                }
            };
            if selected {
                found.push(index as u32);
            }
        }
        let found: Arc<[u32]> = found.into();
        if after == 0 {
            let stored = Arc::clone(&found);
            self.cache
                .with(|cache| cache.put(list.generation, &text, stored));
        }
        Ok(found)
    }
}

/// The text of an event name String.
///
/// # Safety
/// GVL held; `name` is a live, frozen String whose bytes are valid UTF-8 (publish checked
/// them), and the result is not used across a call into Ruby.
unsafe fn string_text<'a>(name: Value) -> &'a str {
    std::str::from_utf8_unchecked(crate::names::string_bytes(name))
}

/// How many names the cache remembers: a direct-mapped table, so a worker with more distinct
/// names than this only recomputes some matches; it never grows.
const CACHE_WAYS: usize = 256;

struct CachedMatch {
    generation: u64,
    name: Box<str>,
    matches: Arc<[u32]>,
}

struct MatchCache {
    ways: Vec<Option<CachedMatch>>,
}

impl Default for MatchCache {
    fn default() -> Self {
        MatchCache {
            ways: (0..CACHE_WAYS).map(|_| None).collect(),
        }
    }
}

impl MatchCache {
    fn way(name: &str) -> usize {
        (crate::names::text_hash(name.as_bytes()) as usize) % CACHE_WAYS
    }

    fn get(&self, generation: u64, name: &str) -> Option<Arc<[u32]>> {
        match &self.ways[Self::way(name)] {
            Some(cached) if cached.generation == generation && &*cached.name == name => {
                Some(Arc::clone(&cached.matches))
            }
            _ => None,
        }
    }

    fn put(&mut self, generation: u64, name: &str, matches: Arc<[u32]>) {
        self.ways[Self::way(name)] = Some(CachedMatch {
            generation,
            name: name.into(),
            matches,
        });
    }
}
