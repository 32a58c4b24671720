//! Overflow policies: what a channel does when a sender finds it full.
//!
//! Owns the policy names and their parsing. It must never decide capacities or
//! perform sends itself: `channel` applies the policy, `config` chooses it.

use std::fmt;
use std::str::FromStr;

/// What happens to a send when the channel is at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverflowPolicy {
    /// The sender waits for room (up to the channel's send timeout, when set).
    Block,
    /// The new message is discarded and counted; the sender is told.
    Drop,
    /// The oldest queued message is discarded and counted to make room.
    DropOldest,
    /// The send fails at once with an error value.
    Error,
}

impl OverflowPolicy {
    /// Every policy, in the order they are documented.
    pub const ALL: [OverflowPolicy; 4] = [
        OverflowPolicy::Block,
        OverflowPolicy::Drop,
        OverflowPolicy::DropOldest,
        OverflowPolicy::Error,
    ];

    /// The name used in TOML files, stats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::Block => "block",
            OverflowPolicy::Drop => "drop",
            OverflowPolicy::DropOldest => "drop_oldest",
            OverflowPolicy::Error => "error",
        }
    }

    /// The valid names, quoted and comma-separated, for error messages.
    pub fn valid_names() -> String {
        Self::ALL
            .iter()
            .map(|p| format!("\"{}\"", p.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An overflow policy name that is not one of [`OverflowPolicy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown overflow policy \"{name}\" (valid: {valid})", valid = OverflowPolicy::valid_names())]
pub struct UnknownPolicy {
    /// The refused name.
    pub name: String,
}

impl FromStr for OverflowPolicy {
    type Err = UnknownPolicy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| UnknownPolicy {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for policy in OverflowPolicy::ALL {
            assert_eq!(policy.as_str().parse::<OverflowPolicy>(), Ok(policy));
        }
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let err = "dropp".parse::<OverflowPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown overflow policy \"dropp\" (valid: \"block\", \"drop\", \"drop_oldest\", \"error\")"
        );
    }
}
