//! Subscription patterns: which event names a subscription selects.
//!
//! Owns the pattern language — an exact name, or a glob where `*` stands for exactly one
//! dot-separated segment and `**` for one or more — its validation, and matching a name
//! against it. It must never know who subscribed or what a match leads to.

use std::fmt;

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Selects one name, compared as a string.
    Exact(String),
    /// Selects names segment by segment.
    Glob(Vec<Segment>),
}

/// One dot-separated piece of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A segment that must equal this text.
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: one or more segments.
    Many,
}

/// Why a pattern was refused; the message says how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPattern {
    /// The refused pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pattern.is_empty() {
            write!(f, "subscription pattern must not be empty")
        } else {
            write!(f, "subscription pattern {:?} {}", self.pattern, self.reason)
        }
    }
}

impl std::error::Error for InvalidPattern {}

impl Pattern {
    /// Parses `pattern`: without `*` it is an exact name, otherwise a glob whose `*` and
    /// `**` must each be a whole segment.
    pub fn parse(pattern: &str) -> Result<Self, InvalidPattern> {
        let refuse = |reason| {
            Err(InvalidPattern {
                pattern: pattern.to_owned(),
                reason,
            })
        };
        if pattern.is_empty() {
            return refuse("");
        }
        let mut segments = Vec::new();
        for segment in pattern.split('.') {
            segments.push(match segment {
                "" => return refuse("has an empty segment"),
                "*" => Segment::One,
                "**" => Segment::Many,
                literal if literal.contains('*') => {
                    return refuse("uses `*` inside a segment: `*` and `**` must be whole segments (\"a.*\", \"a.**\")")
                }
                literal => Segment::Literal(literal.to_owned()),
            });
        }
        if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
            Ok(Pattern::Exact(pattern.to_owned()))
        } else {
            Ok(Pattern::Glob(segments))
        }
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Glob(segments) => {
                let parts: Vec<&str> = name.split('.').collect();
                glob_matches(segments, &parts)
            }
        }
    }
}

fn glob_matches(pattern: &[Segment], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((Segment::Many, rest)) => {
            // One or more segments: try every split, shortest first. Names are at most 255
            // bytes, so the backtracking stays small.
            (1..=name.len()).any(|taken| glob_matches(rest, &name[taken..]))
        }
        Some((segment, rest)) => match name.split_first() {
            None => false,
            Some((part, name_rest)) => {
                let fits = match segment {
                    Segment::One => true,
                    Segment::Literal(literal) => literal == part,
                    Segment::Many => unreachable!("handled above"),
                };
                fits && glob_matches(rest, name_rest)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn exact_names_compare_as_strings() {
        assert_eq!(
            Pattern::parse("step.completed").unwrap(),
            Pattern::Exact("step.completed".into())
        );
        assert!(matches("step.completed", "step.completed"));
        assert!(!matches("step.completed", "step.completed.late"));
        assert!(!matches("step", "step.completed"));
    }

    #[test]
    fn a_star_is_exactly_one_segment() {
        assert!(matches("step.*", "step.completed"));
        assert!(!matches("step.*", "step"));
        assert!(!matches("step.*", "step.completed.late"));
        assert!(matches("*.completed", "task.completed"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.c"));
    }

    #[test]
    fn a_double_star_is_one_or_more_segments() {
        assert!(matches("**", "a"));
        assert!(matches("**", "a.b.c"));
        assert!(matches("step.**", "step.a.b"));
        assert!(!matches("step.**", "step"));
        assert!(matches("a.**.z", "a.b.c.z"));
        assert!(!matches("a.**.z", "a.z"));
        assert!(matches("**.done", "x.y.done"));
        assert!(!matches("**.done", "done"));
    }

    #[test]
    fn malformed_patterns_say_what_to_write() {
        let empty = Pattern::parse("").unwrap_err();
        assert_eq!(empty.to_string(), "subscription pattern must not be empty");
        let gap = Pattern::parse("a..b").unwrap_err();
        assert!(gap.to_string().contains("empty segment"), "{gap}");
        let partial = Pattern::parse("step.comp*").unwrap_err();
        assert!(partial.to_string().contains("whole segments"), "{partial}");
        assert!(Pattern::parse("a.").is_err());
    }
}
