//! Conversion between Ruby values and core `Payload`s.
//!
//! Owns the payload rules of the Ruby API: which Ruby values are plain data (nil, true,
//! false, Integer, Float, String, Symbol, Time, Array, Hash), the error class and path
//! (`payload[:user][0]`) for anything else, the depth and cycle limits, and building
//! deep-frozen Ruby values on delivery. It must only run on a Ruby thread holding the GVL, and
//! must never keep a Ruby object beyond the call.

use crate::gvl_cell::GvlCell;
use magnus::rb_sys::AsRawValue;
use magnus::{
    prelude::*, value::ReprValue, Error, Float, Integer, RArray, RHash, RString, Ruby, Symbol,
    Time, Value,
};
use tasker_channels_core::payload::MAX_DEPTH;
use tasker_channels_core::{Key, Payload, Timestamp, UtcOffset};

/// What went wrong converting a payload, with where it went wrong.
struct Problem {
    kind: ProblemKind,
    /// Path segments from the root, innermost last (`[:user]`, `[0]`).
    path: Vec<String>,
    detail: String,
}

enum ProblemKind {
    Type,
    Range,
    Argument,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            path: Vec::new(),
            detail: detail.into(),
        }
    }

    fn under(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    fn into_error(self, ruby: &Ruby, root: &str) -> Error {
        let path: String = self.path.iter().rev().map(String::as_str).collect();
        let message = format!("{root}{path} {}", self.detail);
        let class = match self.kind {
            ProblemKind::Type => ruby.exception_type_error(),
            ProblemKind::Range => ruby.exception_range_error(),
            ProblemKind::Argument => ruby.exception_arg_error(),
        };
        Error::new(class, message)
    }
}

/// Converts a Ruby value to a `Payload`. `root` names the argument in messages (`payload`).
pub fn from_ruby(ruby: &Ruby, value: Value, root: &str) -> Result<Payload, Error> {
    let mut open_containers = Vec::new();
    convert(ruby, value, 0, &mut open_containers).map_err(|problem| problem.into_error(ruby, root))
}

fn convert(
    ruby: &Ruby,
    value: Value,
    depth: usize,
    open_containers: &mut Vec<Value>,
) -> Result<Payload, Problem> {
    if value.is_nil() {
        return Ok(Payload::Nil);
    }
    // Immediate comparisons: true and false are singletons.
    if value.as_raw() == ruby.qtrue().as_raw() {
        return Ok(Payload::Bool(true));
    }
    if value.as_raw() == ruby.qfalse().as_raw() {
        return Ok(Payload::Bool(false));
    }
    if let Some(integer) = Integer::from_value(value) {
        return integer.to_i64().map(Payload::Int).map_err(|_| {
            Problem::new(
                ProblemKind::Range,
                "is an Integer outside the 64-bit range payloads carry",
            )
        });
    }
    if let Some(float) = Float::from_value(value) {
        return Ok(Payload::Float(float.to_f64()));
    }
    if let Some(string) = RString::from_value(value) {
        return string_text(ruby, string)
            .map(Payload::String)
            .ok_or_else(|| {
                Problem::new(
                    ProblemKind::Argument,
                    "is a String that is not valid UTF-8 (payload strings must be UTF-8 text; \
                     encode binary data, e.g. as Base64)",
                )
            });
    }
    if let Some(symbol) = Symbol::from_value(value) {
        return symbol_text(ruby, symbol)
            .map(Payload::Symbol)
            .ok_or_else(|| {
                Problem::new(ProblemKind::Argument, "is a Symbol that is not valid UTF-8")
            });
    }
    let array = RArray::from_value(value);
    let hash = RHash::from_value(value);
    if array.is_none() && hash.is_none() {
        if let Some(time) = Time::from_value(value) {
            return time_payload(time);
        }
        let class = unsafe { value.classname() }.into_owned();
        return Err(Problem::new(
            ProblemKind::Type,
            format!("is a {class}; payloads carry only nil, true, false, Integer, Float, String, Symbol, Time, Array and Hash"),
        ));
    }
    if depth >= MAX_DEPTH {
        return Err(Problem::new(
            ProblemKind::Argument,
            format!("nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    if open_containers
        .iter()
        .any(|open| open.as_raw() == value.as_raw())
    {
        return Err(Problem::new(
            ProblemKind::Argument,
            "contains itself (a cycle); payloads must be trees",
        ));
    }
    open_containers.push(value);
    let converted = match (array, hash) {
        (Some(array), _) => convert_array(ruby, array, depth, open_containers),
        (_, Some(hash)) => convert_hash(ruby, hash, depth, open_containers),
        _ => unreachable!("checked above"),
    };
    open_containers.pop();
    converted
}

/// A Time as its instant to the nanosecond (finer fractions are dropped) and the offset it
/// is expressed in; see [`Timestamp`] for what is kept.
fn time_payload(time: Time) -> Result<Payload, Problem> {
    use magnus::rb_sys::FromRawValue;
    let out_of_range = || {
        Problem::new(
            ProblemKind::Range,
            "is a Time outside the range payloads carry (64-bit seconds from 1970)",
        )
    };
    let spec = time.timespec().map_err(|_| out_of_range())?;
    let nanoseconds = u32::try_from(spec.tv_nsec).map_err(|_| out_of_range())?;
    // Only a method tells UTC from "+00:00"; Times are rare enough in payloads to afford it.
    let offset = if time.funcall::<_, _, bool>("utc?", ()).unwrap_or(false) {
        UtcOffset::Utc
    } else {
        // SAFETY: GVL held; `time` is a Time, whose offset Ruby already knows.
        let east = unsafe { Value::from_raw(rb_sys::rb_time_utc_offset(time.as_raw())) };
        let seconds = Integer::from_value(east).and_then(|east| east.to_i32().ok());
        UtcOffset::Seconds(seconds.ok_or_else(|| {
            Problem::new(
                ProblemKind::Argument,
                format!("is a Time whose UTC offset ({east}) is not a whole number of seconds"),
            )
        })?)
    };
    Timestamp::new(spec.tv_sec, nanoseconds, offset)
        .map(Payload::Time)
        .map_err(|invalid| {
            Problem::new(
                ProblemKind::Argument,
                format!("is a Time that cannot travel: {invalid}"),
            )
        })
}

fn convert_array(
    ruby: &Ruby,
    array: RArray,
    depth: usize,
    open_containers: &mut Vec<Value>,
) -> Result<Payload, Problem> {
    let mut items = Vec::with_capacity(array.len());
    // Index-based so a handler mutating the array cannot invalidate an iterator.
    for index in 0..array.len() {
        let item: Value = array
            .entry(index as isize)
            .unwrap_or_else(|_| ruby.qnil().as_value());
        items.push(
            convert(ruby, item, depth + 1, open_containers)
                .map_err(|p| p.under(format!("[{index}]")))?,
        );
    }
    Ok(Payload::Array(items))
}

fn convert_hash(
    ruby: &Ruby,
    hash: RHash,
    depth: usize,
    open_containers: &mut Vec<Value>,
) -> Result<Payload, Problem> {
    let mut walk = HashWalk {
        ruby,
        depth,
        open_containers,
        entries: Vec::with_capacity(hash.len()),
        problem: None,
    };
    // A raw walk: magnus' `foreach` wraps every hash in `rb_protect`, which costs more than
    // converting a small payload. Nothing in the callback raises a Ruby exception (problems
    // are Rust values) and panics are caught before they reach Ruby's frames.
    // SAFETY: GVL held; `walk` outlives the call; the callback only reads the entries.
    unsafe {
        rb_sys::rb_hash_foreach(
            hash.as_raw(),
            Some(convert_hash_entry),
            &mut walk as *mut HashWalk as rb_sys::VALUE,
        );
    }
    if let Some(problem) = walk.problem {
        return Err(problem);
    }
    match first_repeated_key(&walk.entries) {
        Some(key) => Err(repeated_key_problem(hash, key)),
        None => Ok(Payload::Hash(walk.entries)),
    }
}

/// The first key that occurs twice among converted entries. A Ruby Hash can hold keys that
/// convert to the same text: equal Strings in a `compare_by_identity` Hash, or the same
/// text in two encodings. Delivered, they would silently collapse into one entry.
fn first_repeated_key(entries: &[(Key, Payload)]) -> Option<&Key> {
    // Payload hashes are mostly a handful of keys: comparing pairs beats hashing them.
    const SCAN_LIMIT: usize = 16;
    if entries.len() <= SCAN_LIMIT {
        return entries.iter().enumerate().find_map(|(index, (key, _))| {
            entries[..index]
                .iter()
                .any(|(earlier, _)| earlier == key)
                .then_some(key)
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    entries
        .iter()
        .map(|(key, _)| key)
        .find(|key| !seen.insert(*key))
}

fn repeated_key_problem(hash: RHash, key: &Key) -> Problem {
    // Only asked on this error path: a method call per hash would cost every payload.
    let by_identity = hash
        .funcall::<_, _, bool>("compare_by_identity?", ())
        .unwrap_or(false);
    let detail = if by_identity {
        format!(
            "has the key {key} twice (a compare_by_identity Hash); payload hashes compare \
             keys by value, so give each entry its own key"
        )
    } else {
        format!("has two keys that are both {key} as UTF-8 text; give each entry its own key")
    };
    Problem::new(ProblemKind::Argument, detail)
}

struct HashWalk<'a> {
    ruby: &'a Ruby,
    depth: usize,
    open_containers: &'a mut Vec<Value>,
    entries: Vec<(Key, Payload)>,
    problem: Option<Problem>,
}

unsafe extern "C" fn convert_hash_entry(
    key: rb_sys::VALUE,
    value: rb_sys::VALUE,
    walk: rb_sys::VALUE,
) -> std::os::raw::c_int {
    use magnus::rb_sys::FromRawValue;
    const CONTINUE: std::os::raw::c_int = 0; // ST_CONTINUE
    const STOP: std::os::raw::c_int = 1; // ST_STOP
    let walk = &mut *(walk as *mut HashWalk);
    let converted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let key = convert_key(walk.ruby, Value::from_raw(key))?;
        let converted = convert(
            walk.ruby,
            Value::from_raw(value),
            walk.depth + 1,
            walk.open_containers,
        );
        match converted {
            Ok(value) => Ok((key, value)),
            // The path is built only on failure: most payloads never need it.
            Err(p) => Err(p.under(format!("[{key}]"))),
        }
    }));
    match converted {
        Ok(Ok(entry)) => {
            walk.entries.push(entry);
            CONTINUE
        }
        Ok(Err(problem)) => {
            walk.problem = Some(problem);
            STOP
        }
        Err(_) => {
            walk.problem = Some(Problem::new(
                ProblemKind::Argument,
                "could not be converted (internal error)",
            ));
            STOP
        }
    }
}

fn convert_key(ruby: &Ruby, key: Value) -> Result<Key, Problem> {
    if let Some(symbol) = Symbol::from_value(key) {
        return symbol_text(ruby, symbol).map(Key::Symbol).ok_or_else(|| {
            Problem::new(
                ProblemKind::Argument,
                "has a Symbol key that is not valid UTF-8",
            )
        });
    }
    if let Some(string) = RString::from_value(key) {
        return string_text(ruby, string).map(Key::String).ok_or_else(|| {
            Problem::new(
                ProblemKind::Argument,
                "has a String key that is not valid UTF-8",
            )
        });
    }
    let class = unsafe { key.classname() }.into_owned();
    Err(Problem::new(
        ProblemKind::Type,
        format!("has a {class} key; hash keys must be Strings or Symbols"),
    ))
}

/// A Symbol's name as UTF-8 text, NUL bytes included: the name String itself, never the
/// C string a static Symbol's ID also has, which ends at the first NUL (`:"a\0b"` read as
/// `:a`). Reading it creates nothing and pins nothing.
fn symbol_text(ruby: &Ruby, symbol: Symbol) -> Option<String> {
    use magnus::rb_sys::FromRawValue;
    // SAFETY: GVL held; rb_sym2str returns the Symbol's own frozen name.
    let name = unsafe { Value::from_raw(rb_sys::rb_sym2str(symbol.as_raw())) };
    RString::from_value(name).and_then(|name| string_text(ruby, name))
}

/// A String's text as UTF-8: UTF-8 and US-ASCII Strings as they are, other encodings
/// transcoded, and binary (ASCII-8BIT) ones when their bytes are valid UTF-8, as sockets,
/// `File.binread` and ARGV under `LANG=C` hand them out (`Config.load` accepts those too).
fn string_text(ruby: &Ruby, string: RString) -> Option<String> {
    if string.enc_get() == ruby.ascii8bit_encindex() {
        // SAFETY: GVL held; the bytes are copied before any Ruby code runs.
        let bytes = unsafe { string.as_slice() };
        return std::str::from_utf8(bytes).ok().map(str::to_owned);
    }
    string.to_string().ok()
}

/// Builds a deep-frozen Ruby value from a payload.
pub fn to_ruby(ruby: &Ruby, payload: &Payload) -> Value {
    match payload {
        Payload::Nil => ruby.qnil().as_value(),
        Payload::Bool(true) => ruby.qtrue().as_value(),
        Payload::Bool(false) => ruby.qfalse().as_value(),
        Payload::Int(i) => ruby.integer_from_i64(*i).as_value(),
        Payload::Float(f) => ruby.float_from_f64(*f).as_value(),
        Payload::String(s) => frozen_string(s),
        Payload::Symbol(s) => utf8_symbol(s),
        Payload::Time(timestamp) => frozen_time(timestamp),
        Payload::Array(items) => {
            let array = ruby.ary_new_capa(items.len());
            for item in items {
                // Pushing onto a fresh, unfrozen array cannot fail.
                let _ = array.push(to_ruby(ruby, item));
            }
            array.freeze();
            array.as_value()
        }
        Payload::Hash(entries) => {
            use magnus::rb_sys::{AsRawValue, FromRawValue};
            let hash = ruby.hash_new();
            // Entries go in by bulk, as Ruby's own hash literals do: one table set-up and no
            // per-entry lookup of the insertion path, where `rb_hash_aset` costs ~300
            // instructions an entry. The pending pairs wait in a buffer on this stack frame,
            // where the GC sees them while converting the next value allocates.
            let mut pending = [rb_sys::Qnil as rb_sys::VALUE; PAIRS_PER_INSERT * 2];
            let mut filled = 0;
            for (key, value) in entries {
                let key = match key {
                    Key::Symbol(name) => utf8_symbol(name),
                    Key::String(name) => frozen_string(name),
                };
                pending[filled] = key.as_raw();
                pending[filled + 1] = to_ruby(ruby, value).as_raw();
                filled += 2;
                if filled == pending.len() {
                    bulk_insert(hash.as_raw(), &pending[..filled]);
                    filled = 0;
                }
            }
            bulk_insert(hash.as_raw(), &pending[..filled]);
            hash.freeze();
            // SAFETY: the Hash is live on this frame.
            unsafe { Value::from_raw(hash.as_raw()) }
        }
    }
}

/// How many entries a Hash receives per bulk insert: Ruby's small-table size, so a payload
/// of up to 8 keys goes in at once.
const PAIRS_PER_INSERT: usize = 8;

fn bulk_insert(hash: rb_sys::VALUE, pairs: &[rb_sys::VALUE]) {
    if pairs.is_empty() {
        return;
    }
    // SAFETY: GVL held; `hash` is a fresh, unfrozen Hash and `pairs` alternates String or
    // Symbol keys with values. Such keys hash and compare without calling a Ruby method,
    // so this cannot raise; a repeated key keeps its last value, as with `rb_hash_aset`.
    unsafe { rb_sys::rb_hash_bulk_insert(pairs.len() as _, pairs.as_ptr(), hash) };
}

/// The Symbol for UTF-8 text. Symbols made from payload data must stay collectable:
/// `rb_intern3` would make a static symbol, never freed (one per fresh key, forever), and
/// `rb_check_id` would pin an existing dynamic one the same way. So an existing Symbol is
/// looked up without creating or pinning anything, and a missing one is made dynamic, as
/// `String#to_sym` makes it, without a Ruby method call.
fn utf8_symbol(name: &str) -> Value {
    use magnus::rb_sys::FromRawValue;
    if let Some(known) = STATIC_SYMBOLS.with(|cache| cache.get(name)) {
        // SAFETY: a static Symbol is an immediate value, valid for the life of the process.
        return unsafe { Value::from_raw(known) };
    }
    let (ptr, len) = c_text(name);
    // SAFETY: GVL held; `ptr` points at `len` valid UTF-8 bytes that live for the call, so
    // neither call raises (they raise only for text broken in its encoding).
    unsafe {
        let utf8 = rb_sys::rb_utf8_encoding();
        let existing = rb_sys::rb_check_symbol_cstr(ptr, len, utf8);
        if existing != rb_sys::Qnil as rb_sys::VALUE {
            if rb_sys::STATIC_SYM_P(existing) {
                STATIC_SYMBOLS.with(|cache| cache.put(name, existing));
            }
            return Value::from_raw(existing);
        }
        Value::from_raw(rb_sys::rb_str_intern(rb_sys::rb_utf8_str_new(ptr, len)))
    }
}

/// Static Symbols already seen for payload keys and values: keys written as literals in
/// Ruby code are static, never freed or moved, so their VALUE can be kept; looking one up
/// here costs a hash and a comparison instead of the symbol table's lookup. Dynamic
/// (collectable) Symbols are never kept.
static STATIC_SYMBOLS: GvlCell<TextCache<rb_sys::VALUE>> = GvlCell::new(TextCache::new());

/// How many entries each of the text caches holds.
const CACHE_WAYS: usize = 128;

/// A direct-mapped, fixed-size cache from text to what it was converted to.
struct TextCache<V> {
    ways: [Option<(Box<str>, V)>; CACHE_WAYS],
}

impl<V: Copy> TextCache<V> {
    const fn new() -> Self {
        TextCache {
            ways: [const { None }; CACHE_WAYS],
        }
    }

    fn way(text: &str) -> usize {
        (crate::names::text_hash(text.as_bytes()) as usize) % CACHE_WAYS
    }

    fn get(&self, text: &str) -> Option<V> {
        self.get_at(Self::way(text), text)
    }

    /// [`get`](Self::get) when the caller already has `text`'s way.
    fn get_at(&self, way: usize, text: &str) -> Option<V> {
        match &self.ways[way] {
            Some((cached, value)) if &**cached == text => Some(*value),
            _ => None,
        }
    }

    fn put(&mut self, text: &str, value: V) {
        self.put_at(Self::way(text), text, value);
    }

    /// [`put`](Self::put) when the caller already has `text`'s way.
    fn put_at(&mut self, way: usize, text: &str, value: V) {
        self.ways[way] = Some((text.into(), value));
    }
}

/// Strings up to this many bytes are shared: payloads repeat their short values (statuses,
/// kinds, names) event after event. Longer text is mostly unique.
const SHARED_STRING_BYTES: usize = 32;

/// Short frozen Strings made for payloads, so a repeated value is found instead of
/// allocated (Ruby's own interning, `rb_enc_interned_str`, costs more than an allocation
/// here: it hashes the text with SipHash and updates its table). The cache knows which text
/// each way holds; the Strings themselves live in `SHARED_STRINGS`' Array at the same index,
/// which keeps them alive and lets compaction move them.
static SHARED_STRING_TEXT: GvlCell<TextCache<()>> = GvlCell::new(TextCache::new());

/// The Array behind `SHARED_STRING_TEXT`, made on first use and never freed.
static SHARED_STRINGS: GvlCell<rb_sys::VALUE> = GvlCell::new(0);

fn frozen_string(text: &str) -> Value {
    use magnus::rb_sys::FromRawValue;
    let (ptr, len) = c_text(text);
    let fresh = || {
        // SAFETY: GVL held; `ptr` points at `len` valid UTF-8 bytes that live for the call.
        unsafe { rb_sys::rb_obj_freeze(rb_sys::rb_utf8_str_new(ptr, len)) }
    };
    if text.len() > SHARED_STRING_BYTES {
        // SAFETY: a live, frozen String.
        return unsafe { Value::from_raw(fresh()) };
    }
    let way = TextCache::<()>::way(text);
    let strings = shared_strings();
    // SAFETY (both blocks): GVL held; `strings` is the live Array of CACHE_WAYS entries, and
    // an entry is a frozen String whenever the text cache holds its text.
    if SHARED_STRING_TEXT
        .with(|cache| cache.get_at(way, text))
        .is_some()
    {
        return unsafe { Value::from_raw(rb_sys::rb_ary_entry(strings, way as _)) };
    }
    let string = fresh();
    unsafe { rb_sys::rb_ary_store(strings, way as _, string) };
    SHARED_STRING_TEXT.with(|cache| cache.put_at(way, text, ()));
    unsafe { Value::from_raw(string) }
}

fn shared_strings() -> rb_sys::VALUE {
    let made = SHARED_STRINGS.with(|array| *array);
    if made != 0 {
        return made;
    }
    // SAFETY: GVL held. The Array is registered as a mark root (so it is marked, and pinned,
    // for the life of the process) before anything else can allocate.
    let array = unsafe {
        let array = rb_sys::rb_ary_new_capa(CACHE_WAYS as _);
        rb_sys::rb_gc_register_mark_object(array);
        rb_sys::rb_ary_store(
            array,
            CACHE_WAYS as std::os::raw::c_long - 1,
            rb_sys::Qnil as _,
        );
        array
    };
    SHARED_STRINGS.with(|slot| *slot = array);
    array
}

fn frozen_time(timestamp: &Timestamp) -> Value {
    use magnus::rb_sys::FromRawValue;
    /// What `rb_time_timespec_new` takes for "in UTC".
    const UTC: std::os::raw::c_int = std::os::raw::c_int::MAX - 1;
    let spec = rb_sys::timespec {
        tv_sec: timestamp.seconds() as _,
        tv_nsec: timestamp.nanoseconds() as _,
    };
    let offset = match timestamp.offset() {
        UtcOffset::Utc => UTC,
        UtcOffset::Seconds(east) => east,
    };
    // SAFETY: GVL held; a Timestamp's offset is within the ±86,400 s that
    // rb_time_timespec_new accepts, so it does not raise.
    unsafe {
        Value::from_raw(rb_sys::rb_obj_freeze(rb_sys::rb_time_timespec_new(
            &spec, offset,
        )))
    }
}

/// `text` as the (pointer, length) pair Ruby's C API takes. An empty Rust string's pointer is
/// dangling (0x1), and some of Ruby's functions read through the pointer even for length 0
/// (`rb_intern3` did, and crashed on `:""`), so empty text is passed as a real, static byte.
fn c_text(text: &str) -> (*const std::os::raw::c_char, std::os::raw::c_long) {
    static EMPTY: [u8; 1] = [0];
    let ptr = if text.is_empty() {
        EMPTY.as_ptr()
    } else {
        text.as_ptr()
    };
    // Ruby takes lengths as C longs, as its own Strings store them.
    (ptr.cast(), text.len() as std::os::raw::c_long)
}
