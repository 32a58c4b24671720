//! Log output for the crate's `tracing` events (docs/design.md §6).
//!
//! Owns installing a stderr subscriber filtered by `TASKER_LOG` (default `warn`). It must
//! never panic, never replace a subscriber the host application already installed, and
//! never install twice.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The variable holding the log filter, e.g. `TASKER_LOG=info` or
/// `TASKER_LOG=tasker_channels_core=debug`.
pub const LOG_ENV: &str = "TASKER_LOG";

const DEFAULT_FILTER: &str = "warn";

/// Installs the stderr subscriber once per process. Returns whether this process's
/// subscriber is ours: `false` when the host had already set a global one (which is then
/// left in place). Safe to call any number of times from any thread.
pub fn init_logging() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(install)
}

fn install() -> bool {
    let (filter, rejected) = match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(DEFAULT_FILTER), Some((spec, error))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .is_ok();
    if let Some((spec, error)) = rejected {
        // Said once, after install, so the bad value is visible rather than silently ignored.
        tracing::warn!(%spec, %error, "{LOG_ENV} is not a valid filter; using \"{DEFAULT_FILTER}\"");
    }
    installed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_calls_agree_and_never_panic() {
        let first = init_logging();
        for _ in 0..3 {
            assert_eq!(init_logging(), first);
        }
        let from_threads: Vec<bool> = (0..4)
            .map(|_| std::thread::spawn(init_logging))
            .map(|handle| handle.join().unwrap())
            .collect();
        assert!(from_threads.iter().all(|&installed| installed == first));
    }
}
