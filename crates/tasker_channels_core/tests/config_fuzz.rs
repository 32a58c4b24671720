//! A bounded, stable-toolchain cousin of the `config_load` cargo-fuzz target: generates
//! TOML-ish override files from valid keys, near-miss keys, wrong types, out-of-range numbers,
//! broken syntax and random bytes, and checks that `Config::load` never panics, that a config
//! that loads is sane, and that every reported problem names a file and says something.
//!
//! It runs in `cargo test` in a few seconds; the open-ended search lives in
//! `crates/tasker_channels_core/fuzz/` (see docs/reliability.md).

use std::fs;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use tasker_channels_core::config::schema::{CHANNELS, POLICY_TABLE};
use tasker_channels_core::{Config, ConfigErrors, LoadOptions};
use tempfile::TempDir;

/// A config dir holding `files` (path relative to it, contents), removed on drop.
fn config_dir_with(files: &[(&str, &[u8])]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tasker_config_fuzz_")
        .tempdir()
        .expect("create config dir");
    for (relative, contents) in files {
        let path = dir.path().join(relative);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("create folders");
        fs::write(path, contents).expect("write override file");
    }
    dir
}

/// Every table the schema knows, below `mpsc_channels`.
static TABLES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    CHANNELS
        .iter()
        .map(|schema| schema.name)
        .chain([POLICY_TABLE])
        .collect()
});

/// The override file of the `test` environment.
const ENVIRONMENT_FILE: &str = "environments/test/mpsc_channels.toml";

/// Tables that are almost right: typos, a missing or doubled prefix, an extra or missing
/// segment, wrong case, array-of-tables syntax.
const NEAR_MISS_TABLES: &[&str] = &[
    "[task_readiness.event_channel]",
    "[shared.ffi]",
    "[mpsc_channel.shared.ffi]",
    "[mpsc_channels.mpsc_channels.shared.ffi]",
    "[mpsc_channels.shared.fii]",
    "[mpsc_channels.shared]",
    "[mpsc_channels]",
    "[mpsc_channels.shared.ffi.extra]",
    "[mpsc_channels.Shared.FFI]",
    "[[mpsc_channels.shared.ffi]]",
    "[mpsc_channels.\"shared.ffi\"]",
    "[mpsc_channels.shared.ffi",
    "[]",
];

const KEYS: &[&str] = &[
    "command_buffer_size",
    "pgmq_event_buffer_size",
    "buffer_size",
    "broadcast_buffer_size",
    "event_queue_buffer_size",
    "ruby_event_buffer_size",
    "overflow",
    "send_timeout_ms",
    "log_warning_threshold",
    "drop_policy",
];

const NEAR_MISS_KEYS: &[&str] = &[
    "ruby_event_buffer_sise",
    "buffersize",
    "Buffer_Size",
    "overflow_policy",
    "send_timeout",
    "send_timeout_msec",
    "drop-policy",
    "\"overflow\"",
    "log_warning_treshold",
    "mpsc_channels",
    "shared.ffi.ruby_event_buffer_size",
    "a.b.c.d.e.f",
    "",
];

const VALUES: &[&str] = &[
    "1",
    "8",
    "1000",
    "16777216",
    "16777217",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "0x10",
    "1_000",
    "0.8",
    "1.0",
    "1",
    "0.0",
    "-0.5",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "\"block\"",
    "\"drop\"",
    "\"drop_oldest\"",
    "\"error\"",
    "\"Drop\"",
    "\"dorp\"",
    "\"\"",
    "'block'",
    "\"\"\"block\"\"\"",
    "true",
    "false",
    "[]",
    "[1, 2]",
    "[[[[[[1]]]]]]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "\"\\u00e9\"",
    "\"\\uD800\"",
    "",
    "= 1",
];

/// Path segments, valid or not, for dotted keys and table headers of any depth.
const SEGMENTS: &[&str] = &[
    "mpsc_channels",
    "shared",
    "ffi",
    "overflow_policy",
    "drop_policy",
    "log_warning_threshold",
    "notice_interval_ms",
    "ruby_event_buffer_size",
    "overflow",
    "send_timeout_ms",
    "task_readiness",
    "event_channel",
    "buffer_size",
    "x",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(list).prop_map(str::to_owned)
}

/// A dotted path of one to four segments.
fn dotted_path() -> impl Strategy<Value = String> {
    prop::collection::vec(pick(SEGMENTS), 1..5).prop_map(|segments| segments.join("."))
}

/// One line of an override file.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => pick(&TABLES).prop_map(|table| format!("[mpsc_channels.{table}]").into_bytes()),
        1 => pick(NEAR_MISS_TABLES).prop_map(String::into_bytes),
        6 => (pick(KEYS), pick(VALUES)).prop_map(|(k, v)| format!("{k} = {v}").into_bytes()),
        2 => (pick(NEAR_MISS_KEYS), pick(VALUES)).prop_map(|(k, v)| format!("{k} = {v}").into_bytes()),
        1 => (pick(&TABLES), pick(KEYS), pick(VALUES))
            .prop_map(|(t, k, v)| format!("mpsc_channels.{t}.{k} = {v}").into_bytes()),
        1 => dotted_path().prop_map(|p| format!("[{p}]").into_bytes()),
        1 => dotted_path().prop_map(|p| format!("[[{p}]]").into_bytes()),
        1 => (dotted_path(), pick(VALUES)).prop_map(|(p, v)| format!("{p} = {v}").into_bytes()),
        1 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => Just(b"# a comment".to_vec()),
        1 => Just(Vec::new()),
    ]
}

/// A whole file: some lines, joined by LF or CRLF.
fn file() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(line(), 0..24), any::<bool>()).prop_map(|(lines, crlf)| {
        let separator: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        lines.join(separator)
    })
}

fn load(dir: &TempDir) -> Result<Config, ConfigErrors> {
    let options = LoadOptions {
        environment: Some("test".into()),
        config_dir: Some(dir.path().to_path_buf()),
        shipped_dir_label: None,
    };
    Config::load(&options)
}

/// What every outcome must satisfy.
fn check(outcome: Result<Config, ConfigErrors>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(config) => {
            prop_assert_eq!(config.channels().len(), 7);
            for channel in config.channels() {
                prop_assert!(
                    (1..=16_777_216).contains(&channel.capacity),
                    "{:?}",
                    channel
                );
            }
            let threshold = config.log_warning_threshold();
            prop_assert!(
                threshold > 0.0 && threshold <= 1.0,
                "threshold {}",
                threshold
            );
        }
        Err(errors) => {
            prop_assert!(!errors.problems.is_empty());
            for problem in &errors.problems {
                prop_assert!(!problem.file.is_empty(), "no file: {:?}", problem);
                prop_assert!(
                    !problem.message.trim().is_empty(),
                    "no message: {:?}",
                    problem
                );
            }
            prop_assert!(!errors.to_string().is_empty());
        }
    }
    Ok(())
}

/// 256 cases per property keeps `cargo test` to a few seconds even in a debug build;
/// `PROPTEST_CASES=20000 cargo test --release --test config_fuzz` searches longer.
fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // Regressions would land next to this file; the fixed cases below are the record.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_never_panic_the_loader(env in prop::collection::vec(any::<u8>(), 0..256)) {
        check(load(&config_dir_with(&[(ENVIRONMENT_FILE, &env)])))?;
    }

    #[test]
    fn an_environment_override_never_panics_the_loader(env in file()) {
        check(load(&config_dir_with(&[(ENVIRONMENT_FILE, &env)])))?;
    }

    #[test]
    fn base_and_environment_overrides_never_panic_the_loader(base in file(), env in file()) {
        let dir = config_dir_with(&[("base/mpsc_channels.toml", &base), (ENVIRONMENT_FILE, &env)]);
        check(load(&dir))?;
    }
}

/// Inputs worth keeping whatever the generator happens to produce.
#[test]
fn hand_picked_hostile_files_are_reported_not_panicked_on() {
    let deep_arrays = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_tables = format!("[{}]", vec!["a"; 2_000].join("."));
    let deep_inline = format!("x = {}1{}", "{a=".repeat(5_000), "}".repeat(5_000));
    let long_key = format!("[mpsc_channels.shared.ffi]\n{} = 1", "k".repeat(100_000));
    let many_tables: String = (0..2_000)
        .map(|n| format!("[mpsc_channels.shared.t{n}]\n"))
        .collect();
    let files: Vec<Vec<u8>> = vec![
        b"\xEF\xBB\xBF[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 8".to_vec(),
        b"[mpsc_channels.shared.ffi]\x00\nruby_event_buffer_size = 8".to_vec(),
        b"[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 8 # \xFF\xFE".to_vec(),
        b"\xFF\xFE[\x00m\x00".to_vec(),
        b"[mpsc_channels.shared.ffi]\r\nruby_event_buffer_size = 8\r".to_vec(),
        b"mpsc_channels = 5".to_vec(),
        b"mpsc_channels = []".to_vec(),
        b"[mpsc_channels]\nshared = \"ffi\"".to_vec(),
        b"[mpsc_channels.overflow_policy]\nlog_warning_threshold = 5e-324".to_vec(),
        b"[mpsc_channels.overflow_policy]\nlog_warning_threshold = -0.0".to_vec(),
        deep_arrays.into_bytes(),
        deep_tables.into_bytes(),
        deep_inline.into_bytes(),
        long_key.into_bytes(),
        many_tables.into_bytes(),
    ];
    for env in files {
        let dir = config_dir_with(&[(ENVIRONMENT_FILE, &env)]);
        if let Err(failure) = check(load(&dir)) {
            panic!("{failure} for {:?}", String::from_utf8_lossy(&env));
        }
    }
}
