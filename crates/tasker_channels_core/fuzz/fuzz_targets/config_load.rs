//! Fuzzes layered config loading: the input becomes the override files of a config dir and
//! `Config::load` must answer with a config or a list of located problems, never a panic.
//!
//! Input layout: everything before the first NUL byte is `<dir>/base/mpsc_channels.toml`,
//! everything after it `<dir>/environments/test/mpsc_channels.toml`; without a NUL the whole
//! input is the environment file and there is no base file.

#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tasker_channels_core::{Config, LoadOptions};

const BASE_FILE: &str = "base/mpsc_channels.toml";
const ENV_FILE: &str = "environments/test/mpsc_channels.toml";

/// One config dir per fuzzing process, rewritten for every input.
fn config_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tasker_config_fuzz_{}", std::process::id()));
        fs::create_dir_all(dir.join("base")).expect("create base dir");
        fs::create_dir_all(dir.join("environments/test")).expect("create environment dir");
        dir
    })
}

fn put(dir: &Path, relative: &str, contents: Option<&[u8]>) {
    let path = dir.join(relative);
    match contents {
        Some(bytes) => fs::write(&path, bytes).expect("write override file"),
        None => {
            let _ = fs::remove_file(&path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = config_dir();
    let (base, env) = match data.iter().position(|&byte| byte == 0) {
        Some(split) => (Some(&data[..split]), &data[split + 1..]),
        None => (None, data),
    };
    put(dir, BASE_FILE, base);
    put(dir, ENV_FILE, Some(env));

    let options = LoadOptions {
        environment: Some("test".into()),
        config_dir: Some(dir.to_path_buf()),
        shipped_dir_label: None,
    };
    match Config::load(&options) {
        Ok(config) => {
            // A config that loads is fully valid: every channel is bounded and sane.
            assert_eq!(config.channels().len(), 7);
            for channel in config.channels() {
                assert!((1..=16_777_216).contains(&channel.capacity), "{channel:?}");
            }
            let threshold = config.log_warning_threshold();
            assert!(threshold > 0.0 && threshold <= 1.0, "threshold {threshold}");
        }
        Err(errors) => {
            assert!(!errors.problems.is_empty(), "an error without problems");
            for problem in &errors.problems {
                assert!(
                    !problem.file.is_empty(),
                    "a problem without a file: {problem:?}"
                );
                assert!(
                    !problem.message.is_empty(),
                    "a problem without a message: {problem:?}"
                );
            }
            assert!(!errors.to_string().is_empty());
        }
    }
});
