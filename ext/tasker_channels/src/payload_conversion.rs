//! Conversion between Ruby values and core `Payload`s.
//!
//! Owns the payload rules of the Ruby API: which Ruby values are plain data, the error class
//! and path (`payload[:user][0]`) for anything else, the depth and cycle limits, and building
//! deep-frozen Ruby values on delivery. It must only run on a Ruby thread holding the GVL, and
//! must never keep a Ruby object beyond the call.

use magnus::rb_sys::AsRawValue;
use magnus::{
    r_hash::ForEach, value::ReprValue, Error, Float, Integer, RArray, RHash, RString, Ruby, Symbol,
    Value,
};
use tasker_channels_core::payload::{Key, Payload, MAX_DEPTH};

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
    if value.is_kind_of(ruby.class_true_class()) {
        return Ok(Payload::Bool(true));
    }
    if value.is_kind_of(ruby.class_false_class()) {
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
        return string.to_string().map(Payload::String).map_err(|_| {
            Problem::new(
                ProblemKind::Argument,
                "is a String that is not valid UTF-8 (payload strings must be UTF-8 text)",
            )
        });
    }
    if let Some(symbol) = Symbol::from_value(value) {
        return symbol
            .name()
            .map(|name| Payload::Symbol(name.into_owned()))
            .map_err(|_| {
                Problem::new(ProblemKind::Argument, "is a Symbol that is not valid UTF-8")
            });
    }
    let array = RArray::from_value(value);
    let hash = RHash::from_value(value);
    if array.is_none() && hash.is_none() {
        let class = unsafe { value.classname() }.into_owned();
        return Err(Problem::new(
            ProblemKind::Type,
            format!("is a {class}; payloads carry only nil, true, false, Integer, Float, String, Symbol, Array and Hash"),
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
    let mut entries = Vec::with_capacity(hash.len());
    let mut problem = None;
    let walked = hash.foreach(|key: Value, value: Value| {
        let converted = convert_key(key).and_then(|key| {
            convert(ruby, value, depth + 1, open_containers)
                .map(|value| (key.clone(), value))
                .map_err(|p| p.under(format!("[{key}]")))
        });
        match converted {
            Ok(entry) => {
                entries.push(entry);
                Ok(ForEach::Continue)
            }
            Err(p) => {
                problem = Some(p);
                Ok(ForEach::Stop)
            }
        }
    });
    if let Some(problem) = problem {
        return Err(problem);
    }
    walked.map_err(|e| Problem::new(ProblemKind::Argument, format!("could not be read: {e}")))?;
    Ok(Payload::Hash(entries))
}

fn convert_key(key: Value) -> Result<Key, Problem> {
    if let Some(symbol) = Symbol::from_value(key) {
        return symbol
            .name()
            .map(|name| Key::Symbol(name.into_owned()))
            .map_err(|_| {
                Problem::new(
                    ProblemKind::Argument,
                    "has a Symbol key that is not valid UTF-8",
                )
            });
    }
    if let Some(string) = RString::from_value(key) {
        return string.to_string().map(Key::String).map_err(|_| {
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

/// Builds a deep-frozen Ruby value from a payload.
pub fn to_ruby(ruby: &Ruby, payload: &Payload) -> Value {
    match payload {
        Payload::Nil => ruby.qnil().as_value(),
        Payload::Bool(true) => ruby.qtrue().as_value(),
        Payload::Bool(false) => ruby.qfalse().as_value(),
        Payload::Int(i) => ruby.integer_from_i64(*i).as_value(),
        Payload::Float(f) => ruby.float_from_f64(*f).as_value(),
        Payload::String(s) => frozen_string(ruby, s).as_value(),
        Payload::Symbol(s) => ruby.to_symbol(s).as_value(),
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
            let hash = ruby.hash_new();
            for (key, value) in entries {
                let key = match key {
                    Key::Symbol(name) => ruby.to_symbol(name).as_value(),
                    Key::String(name) => frozen_string(ruby, name).as_value(),
                };
                let _ = hash.aset(key, to_ruby(ruby, value));
            }
            hash.freeze();
            hash.as_value()
        }
    }
}

fn frozen_string(ruby: &Ruby, s: &str) -> RString {
    let string = ruby.str_new(s);
    string.freeze();
    string
}
