//! How configuration problems are reported: one [`ConfigProblem`] per mistake, with the file,
//! dotted key and position that locate it, gathered into one [`ConfigErrors`].
//!
//! It must never decide what is a problem (validation and layering do) nor drop one: a user
//! fixes every mistake from a single report.

use std::fmt;

/// One mistake in the configuration, located as precisely as known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The layer file (display name or path), or the directory, the problem is in.
    pub file: String,
    /// Dotted key without the `mpsc_channels.` prefix when the key is under it.
    pub key: Option<String>,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, counted in characters.
    pub column: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with no key and no position, e.g. a missing directory.
    pub fn in_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            file: file.into(),
            key: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Locates the problem at byte `offset` of `text` (the file's contents).
    pub(crate) fn at_offset(mut self, text: &str, offset: Option<usize>) -> Self {
        if let Some(offset) = offset {
            let (line, column) = line_and_column(text, offset);
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, in the order they were found.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "invalid channel configuration ({count} {noun}):")?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and character column of byte `offset`; offsets past the end or inside a
/// character are pulled back so a bad span can never panic.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_and_column(text, 12), (2, 6));
        assert_eq!(line_and_column(text, 8), (2, 2), "inside é");
        assert_eq!(line_and_column(text, 999), (3, 1));
    }

    #[test]
    fn display_omits_absent_parts() {
        let full = ConfigProblem::in_file("f.toml", "bad")
            .with_key("shared.ffi")
            .at_offset("x\nyz", Some(3));
        assert_eq!(full.to_string(), "f.toml:2:2: shared.ffi: bad");
        assert_eq!(
            ConfigProblem::in_file("dir", "missing").to_string(),
            "dir: missing"
        );
        let line_only = ConfigProblem {
            line: Some(4),
            ..ConfigProblem::in_file("f.toml", "bad")
        };
        assert_eq!(line_only.to_string(), "f.toml:4: bad");
    }

    #[test]
    fn errors_list_every_problem_under_a_counted_header() {
        let errors = ConfigErrors {
            problems: vec![
                ConfigProblem::in_file("a", "one"),
                ConfigProblem::in_file("b", "two"),
            ],
        };
        assert_eq!(
            errors.to_string(),
            "invalid channel configuration (2 problems):\n  a: one\n  b: two"
        );
        let single = ConfigErrors {
            problems: vec![ConfigProblem::in_file("a", "one")],
        };
        assert!(single
            .to_string()
            .starts_with("invalid channel configuration (1 problem):"));
    }
}
