//! Which files make up a configuration, in which order, and how they combine (docs/design.md §3):
//! the shipped base; then either the shipped environment override, or a config dir's
//! `base/` and `environments/<env>/` files. A later layer replaces scalars and merges tables,
//! and every leaf remembers the layer that set it.
//!
//! It must never judge values (validation does) nor supply a value of its own: the shipped
//! base, compiled in here, is the only source of defaults.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config::problems::ConfigProblem;
use crate::config::LoadOptions;

/// The process environment variable naming the environment when the caller does not.
pub const ENVIRONMENT_VAR: &str = "TASKER_ENV";
/// The process environment variable naming the config dir when the caller does not.
pub const CONFIG_DIR_VAR: &str = "TASKER_CONFIG_DIR";
/// The environment when neither the argument nor `TASKER_ENV` names one (docs/design.md §3).
pub(crate) const FALLBACK_ENVIRONMENT: &str = "development";
/// How the compiled-in files are named when the caller gives no label.
pub(crate) const DEFAULT_SHIPPED_LABEL: &str = "config/tasker";
const FILE_NAME: &str = "mpsc_channels.toml";

/// The configuration files shipped with the gem, as compiled in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shipped {
    pub base: &'static str,
    /// `(environment, contents)`, sorted by name.
    pub environments: &'static [(&'static str, &'static str)],
}

pub(crate) const SHIPPED: Shipped = Shipped {
    base: include_str!("../../../../config/tasker/base/mpsc_channels.toml"),
    environments: &[
        (
            "development",
            include_str!("../../../../config/tasker/environments/development/mpsc_channels.toml"),
        ),
        (
            "production",
            include_str!("../../../../config/tasker/environments/production/mpsc_channels.toml"),
        ),
        (
            "test",
            include_str!("../../../../config/tasker/environments/test/mpsc_channels.toml"),
        ),
    ],
};

impl Shipped {
    fn environment(&self, name: &str) -> Option<&'static str> {
        self.environments
            .iter()
            .find(|(env, _)| *env == name)
            .map(|(_, contents)| *contents)
    }
}

/// Where a resolved setting came from; named in messages so the user knows what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Argument,
    EnvVar(&'static str),
    Fallback,
}

impl Origin {
    fn describe(self, argument: &str) -> String {
        match self {
            Origin::Argument => format!("(from the `{argument}` argument)"),
            Origin::EnvVar(var) => format!("(from {var})"),
            Origin::Fallback => "(the default)".to_owned(),
        }
    }
}

/// The environment and config dir a load uses, after arguments and environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub environment: String,
    pub environment_origin: Origin,
    pub config_dir: Option<(PathBuf, Origin)>,
}

/// Resolves `options` against `env` (a lookup of process environment variables, passed in
/// so tests need not mutate the process environment). An empty variable counts as unset.
pub(crate) fn resolve(options: &LoadOptions, env: impl Fn(&str) -> Option<String>) -> Resolved {
    let from_env = |var: &'static str| env(var).filter(|value| !value.is_empty());
    let (environment, environment_origin) = match &options.environment {
        Some(name) => (name.clone(), Origin::Argument),
        None => match from_env(ENVIRONMENT_VAR) {
            Some(name) => (name, Origin::EnvVar(ENVIRONMENT_VAR)),
            None => (FALLBACK_ENVIRONMENT.to_owned(), Origin::Fallback),
        },
    };
    let config_dir = match &options.config_dir {
        Some(dir) => Some((dir.clone(), Origin::Argument)),
        None => {
            from_env(CONFIG_DIR_VAR).map(|dir| (PathBuf::from(dir), Origin::EnvVar(CONFIG_DIR_VAR)))
        }
    };
    Resolved {
        environment,
        environment_origin,
        config_dir,
    }
}

/// One file to merge: its display name (used for layers, provenance and problems) and bytes.
#[derive(Debug, Clone)]
pub(crate) struct LayerFile {
    pub name: String,
    pub contents: Cow<'static, [u8]>,
}

/// The files to merge, lowest first, and the problems found while choosing them.
#[derive(Debug)]
pub(crate) struct LayerPlan {
    pub files: Vec<LayerFile>,
    pub problems: Vec<ConfigProblem>,
}

/// Chooses and reads the layer files for `resolved`. `label` names the compiled-in files.
pub(crate) fn plan_layers(resolved: &Resolved, shipped: &Shipped, label: &str) -> LayerPlan {
    let label = Path::new(label);
    let mut plan = LayerPlan {
        files: vec![LayerFile {
            name: display(&label.join("base").join(FILE_NAME)),
            contents: Cow::Borrowed(shipped.base.as_bytes()),
        }],
        problems: Vec::new(),
    };
    let environment = resolved.environment.as_str();
    let environment_is_usable = usable_environment_name(environment);
    if !environment_is_usable {
        let folder = match &resolved.config_dir {
            Some((dir, _)) => dir.join("environments"),
            None => label.join("environments"),
        };
        plan.problems.push(ConfigProblem::in_file(
            display(&folder),
            format!(
                "environment name {environment:?} {} cannot name a folder; use letters, \
                 digits, `_`, `-` or `.` (not leading)",
                resolved.environment_origin.describe("environment")
            ),
        ));
    }

    let Some((dir, dir_origin)) = &resolved.config_dir else {
        match shipped.environment(environment) {
            Some(contents) => plan.files.push(LayerFile {
                name: display(&label.join("environments").join(environment).join(FILE_NAME)),
                contents: Cow::Borrowed(contents.as_bytes()),
            }),
            None if environment_is_usable => plan.problems.push(ConfigProblem::in_file(
                display(&label.join("environments")),
                format!(
                    "unknown environment {environment:?} {}: there is no shipped override for it \
                     (known environments: {}); use one of those, or pass a config dir with an \
                     environments/{environment} folder",
                    resolved.environment_origin.describe("environment"),
                    known_environments(shipped, None).join(", ")
                ),
            )),
            None => {}
        }
        return plan;
    };

    let dir_exists = dir.is_dir();
    if !dir_exists {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        plan.problems.push(ConfigProblem::in_file(
            display(dir),
            format!(
                "config dir {} {what}; pass an existing directory (holding base/ and \
                 environments/<env>/ {FILE_NAME} files) or unset it to use the shipped files",
                dir_origin.describe("config_dir")
            ),
        ));
    }
    let environments_dir = dir.join("environments");
    if environment_is_usable
        && shipped.environment(environment).is_none()
        && !environments_dir.join(environment).is_dir()
    {
        plan.problems.push(ConfigProblem::in_file(
            display(&environments_dir),
            format!(
                "unknown environment {environment:?} {}: there is no shipped override and no \
                 {} folder (known environments: {}); use one of those or create the folder",
                resolved.environment_origin.describe("environment"),
                display(&environments_dir.join(environment)),
                known_environments(shipped, Some(&environments_dir)).join(", ")
            ),
        ));
    }
    if dir_exists {
        read_optional(&mut plan, &dir.join("base").join(FILE_NAME));
        if environment_is_usable {
            read_optional(
                &mut plan,
                &environments_dir.join(environment).join(FILE_NAME),
            );
        }
    }
    plan
}

/// Environment names become folder names, so anything that could climb out of
/// `environments/` or be empty is refused.
fn usable_environment_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The shipped environments plus the folders under `environments_dir`, sorted, once each.
fn known_environments(shipped: &Shipped, environments_dir: Option<&Path>) -> Vec<String> {
    let mut known: Vec<String> = shipped
        .environments
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    if let Some(entries) = environments_dir.and_then(|dir| std::fs::read_dir(dir).ok()) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                known.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    known.sort();
    known.dedup();
    known
}

/// The most a layer file may hold. A channel configuration is a few kilobytes; the cap keeps
/// a wrong path (a log, a disk image) from being read whole, which Ruby would wait for.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

fn read_optional(plan: &mut LayerPlan, path: &Path) {
    match read_layer_file(path) {
        Ok(Some(bytes)) => plan.files.push(LayerFile {
            name: display(path),
            contents: Cow::Owned(bytes),
        }),
        Ok(None) => {}
        Err(message) => plan
            .problems
            .push(ConfigProblem::in_file(display(path), message)),
    }
}

/// Reads an optional layer file: `None` when nothing is there. Only a regular file is ever
/// opened: opening a FIFO waits for a writer (forever, and a Ruby caller waits with it), and
/// a directory, socket or device holds no configuration. A symbolic link that leads nowhere
/// is a mistake to report, not an absent file.
fn read_layer_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return match std::fs::symlink_metadata(path) {
                Ok(link) if link.file_type().is_symlink() => Err(dangling_link_message(path)),
                _ => Ok(None),
            };
        }
        Err(error) => return Err(unreadable_message(&error)),
    };
    check_regular(&metadata)?;
    let mut file = open_without_waiting(path).map_err(|error| unreadable_message(&error))?;
    // The path may have been swapped between the two looks; judge what was opened.
    let opened = file
        .metadata()
        .map_err(|error| unreadable_message(&error))?;
    check_regular(&opened)?;
    let mut bytes = Vec::with_capacity(opened.len().min(MAX_FILE_BYTES) as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut file, MAX_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(|error| unreadable_message(&error))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large_message());
    }
    Ok(Some(bytes))
}

fn check_regular(metadata: &std::fs::Metadata) -> Result<(), String> {
    if !metadata.is_file() {
        return Err(format!(
            "cannot read this file: it is {}, not a regular file; put a TOML file here or \
             remove it",
            describe_file_type(&metadata.file_type())
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large_message());
    }
    Ok(())
}

fn too_large_message() -> String {
    format!(
        "cannot read this file: it is larger than {} KiB, far more than any channel \
         configuration; check that this path names the right file",
        MAX_FILE_BYTES / 1024
    )
}

fn unreadable_message(error: &std::io::Error) -> String {
    format!("cannot read this file ({error}); make it a readable file or remove it")
}

fn dangling_link_message(path: &Path) -> String {
    let target = std::fs::read_link(path)
        .map(|target| format!(" to {}", target.display()))
        .unwrap_or_default();
    format!(
        "cannot read this file: it is a symbolic link{target}, which leads to nothing; \
         point it at a TOML file or remove it"
    )
}

/// Opens for reading without ever waiting: should a FIFO take the file's place after it was
/// checked, the open returns at once instead of waiting for a writer.
fn open_without_waiting(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

fn describe_file_type(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The merged values and, per leaf, the index of the layer that set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Merged {
    pub effective: toml::Table,
    pub sources: BTreeMap<String, usize>,
}

/// Merges `layers` lowest first: tables merge key by key, anything else replaces.
pub(crate) fn merge<'a>(layers: impl IntoIterator<Item = &'a toml::Table>) -> Merged {
    let mut merged = Merged::default();
    for (index, layer) in layers.into_iter().enumerate() {
        merge_into(&mut merged.effective, layer, "", index, &mut merged.sources);
    }
    merged
}

fn merge_into(
    target: &mut toml::Table,
    overlay: &toml::Table,
    prefix: &str,
    layer: usize,
    sources: &mut BTreeMap<String, usize>,
) {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (target.get_mut(key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge_into(existing, incoming, &path, layer, sources);
            }
            _ => {
                let nested = format!("{path}.");
                sources.retain(|leaf, _| *leaf != path && !leaf.starts_with(&nested));
                record_leaves(&path, value, layer, sources);
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

fn record_leaves(
    path: &str,
    value: &toml::Value,
    layer: usize,
    sources: &mut BTreeMap<String, usize>,
) {
    match value {
        toml::Value::Table(table) => {
            for (key, child) in table {
                record_leaves(&format!("{path}.{key}"), child, layer, sources);
            }
        }
        _ => {
            sources.insert(path.to_owned(), layer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::TempDir;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| {
            pairs
                .iter()
                .find(|(name, _)| *name == var)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    fn options(environment: Option<&str>, config_dir: Option<&str>) -> LoadOptions {
        LoadOptions {
            environment: environment.map(str::to_owned),
            config_dir: config_dir.map(PathBuf::from),
            shipped_dir_label: None,
        }
    }

    #[test]
    fn environment_argument_beats_variable_beats_fallback() {
        let env = env_of(&[(ENVIRONMENT_VAR, "test")]);
        let resolved = resolve(&options(Some("production"), None), &env);
        assert_eq!(resolved.environment, "production");
        assert_eq!(resolved.environment_origin, Origin::Argument);

        let resolved = resolve(&options(None, None), &env);
        assert_eq!(resolved.environment, "test");
        assert_eq!(resolved.environment_origin, Origin::EnvVar(ENVIRONMENT_VAR));

        let resolved = resolve(&options(None, None), env_of(&[]));
        assert_eq!(resolved.environment, "development");
        assert_eq!(resolved.environment_origin, Origin::Fallback);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let env = env_of(&[(ENVIRONMENT_VAR, ""), (CONFIG_DIR_VAR, "")]);
        let resolved = resolve(&options(None, None), env);
        assert_eq!(resolved.environment, "development");
        assert_eq!(resolved.config_dir, None);
    }

    #[test]
    fn config_dir_argument_beats_variable() {
        let env = env_of(&[(CONFIG_DIR_VAR, "/from/env")]);
        let resolved = resolve(&options(None, Some("/from/arg")), &env);
        assert_eq!(
            resolved.config_dir,
            Some((PathBuf::from("/from/arg"), Origin::Argument))
        );
        let resolved = resolve(&options(None, None), &env);
        assert_eq!(
            resolved.config_dir,
            Some((PathBuf::from("/from/env"), Origin::EnvVar(CONFIG_DIR_VAR)))
        );
        assert_eq!(resolve(&options(None, None), env_of(&[])).config_dir, None);
    }

    fn names(plan: &LayerPlan) -> Vec<String> {
        plan.files.iter().map(|f| f.name.clone()).collect()
    }

    #[test]
    fn without_config_dir_the_shipped_environment_follows_the_base() {
        let resolved = resolve(&options(Some("test"), None), env_of(&[]));
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
        assert_eq!(
            names(&plan),
            vec![
                display(Path::new("config/tasker/base/mpsc_channels.toml")),
                display(Path::new(
                    "config/tasker/environments/test/mpsc_channels.toml"
                )),
            ]
        );
        assert_eq!(
            plan.files[1].contents.as_ref(),
            SHIPPED.environments[2].1.as_bytes()
        );
    }

    #[test]
    fn config_dir_replaces_the_shipped_environment_and_its_files_are_optional() {
        let dir = TempDir::new();
        let resolved = resolve(
            &options(Some("production"), Some(dir.path().to_str().unwrap())),
            env_of(&[]),
        );
        let plan = plan_layers(&resolved, &SHIPPED, "/gem/config/tasker");
        assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
        assert_eq!(
            names(&plan),
            vec![display(Path::new(
                "/gem/config/tasker/base/mpsc_channels.toml"
            ))]
        );

        dir.write("environments/production/mpsc_channels.toml", "# env\n");
        let plan = plan_layers(&resolved, &SHIPPED, "/gem/config/tasker");
        assert_eq!(plan.files.len(), 2);
        assert_eq!(
            plan.files[1].name,
            display(
                &dir.path()
                    .join("environments/production/mpsc_channels.toml")
            )
        );

        dir.write("base/mpsc_channels.toml", "# dir base\n");
        let plan = plan_layers(&resolved, &SHIPPED, "/gem/config/tasker");
        assert_eq!(
            names(&plan)[1..],
            [
                display(&dir.path().join("base/mpsc_channels.toml")),
                display(
                    &dir.path()
                        .join("environments/production/mpsc_channels.toml")
                ),
            ]
        );
    }

    #[test]
    fn unknown_environment_lists_shipped_and_folder_environments() {
        let resolved = resolve(&options(Some("staging"), None), env_of(&[]));
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert_eq!(plan.problems.len(), 1);
        assert!(plan.problems[0]
            .message
            .contains("known environments: development, production, test"));

        let dir = TempDir::new();
        dir.mkdir("environments/qa");
        let resolved = resolve(
            &options(None, Some(dir.path().to_str().unwrap())),
            env_of(&[(ENVIRONMENT_VAR, "staging")]),
        );
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert_eq!(plan.problems.len(), 1, "{:#?}", plan.problems);
        let message = &plan.problems[0].message;
        assert!(message.contains("(from TASKER_ENV)"), "{message}");
        assert!(
            message.contains("known environments: development, production, qa, test"),
            "{message}"
        );
        assert_eq!(
            plan.problems[0].file,
            display(&dir.path().join("environments"))
        );
    }

    #[test]
    fn a_folder_under_the_config_dir_defines_an_environment() {
        let dir = TempDir::new();
        dir.mkdir("environments/staging");
        let resolved = resolve(
            &options(Some("staging"), Some(dir.path().to_str().unwrap())),
            env_of(&[]),
        );
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
        assert_eq!(plan.files.len(), 1, "an empty folder adds no layer");
    }

    #[test]
    fn missing_config_dir_is_reported_with_its_origin() {
        let dir = TempDir::new();
        let missing = dir.path().join("nope");
        let resolved = resolve(&options(None, None), |var: &str| {
            (var == CONFIG_DIR_VAR).then(|| missing.to_string_lossy().into_owned())
        });
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert_eq!(plan.problems.len(), 1, "{:#?}", plan.problems);
        assert_eq!(plan.problems[0].file, display(&missing));
        assert!(plan.problems[0]
            .message
            .contains("(from TASKER_CONFIG_DIR) does not exist"));

        dir.write("file", "");
        let resolved = resolve(
            &options(None, Some(dir.path().join("file").to_str().unwrap())),
            env_of(&[]),
        );
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert!(plan.problems[0].message.contains("is not a directory"));
    }

    #[test]
    fn unusable_environment_names_are_refused() {
        for name in ["", "../etc", "a/b", ".hidden", "a b"] {
            let resolved = resolve(&options(Some(name), None), env_of(&[]));
            let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
            assert_eq!(plan.problems.len(), 1, "{name}: {:#?}", plan.problems);
            assert!(plan.problems[0].message.contains("cannot name a folder"));
            assert_eq!(plan.files.len(), 1);
        }
        assert!(usable_environment_name("prod-eu.1_a"));
    }

    #[test]
    fn unreadable_layer_file_is_a_problem_not_a_skip() {
        let dir = TempDir::new();
        dir.mkdir("base/mpsc_channels.toml");
        let resolved = resolve(
            &options(Some("test"), Some(dir.path().to_str().unwrap())),
            env_of(&[]),
        );
        let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
        assert_eq!(plan.problems.len(), 1, "{:#?}", plan.problems);
        assert!(plan.problems[0].message.contains("cannot read this file"));
    }

    /// The problems of planning `dir`'s `test` layers, run on another thread so a loader
    /// that blocks on `fifo` fails the test instead of hanging it.
    fn plan_problems_without_waiting_on(dir: &TempDir, fifo: &Path) -> Vec<ConfigProblem> {
        let resolved = resolve(
            &options(Some("test"), Some(dir.path().to_str().unwrap())),
            env_of(&[]),
        );
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let plan = plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL);
            let _ = done.send(plan.problems);
        });
        match finished.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(problems) => problems,
            Err(_) => {
                // Be the writer the stuck reader waits for, so the test process can end.
                let _ = std::fs::OpenOptions::new().write(true).open(fifo);
                panic!("planning the layers blocked on the FIFO {}", fifo.display());
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_in_place_of_a_layer_file_is_refused_without_blocking() {
        for relative in [
            "base/mpsc_channels.toml",
            "environments/test/mpsc_channels.toml",
        ] {
            let dir = TempDir::new();
            let fifo = dir.mkfifo(relative);
            let problems = plan_problems_without_waiting_on(&dir, &fifo);
            assert_eq!(problems.len(), 1, "{relative}: {problems:#?}");
            assert_eq!(problems[0].file, display(&fifo));
            assert!(
                problems[0]
                    .message
                    .contains("it is a FIFO (named pipe), not a regular file; put a TOML file"),
                "{}",
                problems[0].message
            );
        }
    }

    fn test_plan(dir: &TempDir) -> LayerPlan {
        let resolved = resolve(
            &options(Some("test"), Some(dir.path().to_str().unwrap())),
            env_of(&[]),
        );
        plan_layers(&resolved, &SHIPPED, DEFAULT_SHIPPED_LABEL)
    }

    fn only_problem(plan: LayerPlan) -> ConfigProblem {
        assert_eq!(plan.problems.len(), 1, "{:#?}", plan.problems);
        plan.problems.into_iter().next().unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn sockets_devices_and_directories_are_refused_by_what_they_are() {
        let dir = TempDir::new();
        let path = dir.mkdir("environments/test").join(FILE_NAME);
        let _socket = std::os::unix::net::UnixListener::bind(&path).expect("bind socket");
        assert!(only_problem(test_plan(&dir))
            .message
            .contains("it is a socket, not a regular file"));

        let dir = TempDir::new();
        dir.symlink("base/mpsc_channels.toml", Path::new("/dev/null"));
        assert!(only_problem(test_plan(&dir))
            .message
            .contains("it is a character device, not a regular file"));

        let dir = TempDir::new();
        dir.mkdir("base/mpsc_channels.toml");
        let problem = only_problem(test_plan(&dir));
        assert_eq!(
            problem.message,
            "cannot read this file: it is a directory, not a regular file; put a TOML file \
             here or remove it"
        );
        assert_eq!(
            problem.file,
            display(&dir.path().join("base").join(FILE_NAME))
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_to_nothing_is_reported_and_a_symlink_to_a_file_is_followed() {
        let dir = TempDir::new();
        let missing = dir.path().join("gone.toml");
        let link = dir.symlink("environments/test/mpsc_channels.toml", &missing);
        let problem = only_problem(test_plan(&dir));
        assert_eq!(problem.file, display(&link));
        assert!(
            problem.message.contains(&format!(
                "it is a symbolic link to {}, which leads to nothing",
                missing.display()
            )),
            "{}",
            problem.message
        );

        dir.write("gone.toml", "# back\n");
        let plan = test_plan(&dir);
        assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
        assert_eq!(plan.files[1].name, display(&link));
        assert_eq!(plan.files[1].contents.as_ref(), b"# back\n");
    }

    #[test]
    fn a_layer_file_larger_than_any_configuration_is_refused_unread() {
        let dir = TempDir::new();
        let comment = format!("#{}\n", "x".repeat(MAX_FILE_BYTES as usize));
        dir.write("base/mpsc_channels.toml", comment);
        assert!(only_problem(test_plan(&dir))
            .message
            .contains("larger than 1024 KiB"));

        let just_fits = format!("#{}\n", "x".repeat(MAX_FILE_BYTES as usize - 2));
        dir.write("base/mpsc_channels.toml", just_fits);
        assert!(test_plan(&dir).problems.is_empty());
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn merge_replaces_scalars_and_merges_tables_recording_each_leaf() {
        let layers = [
            table("[a]\nx = 1\ny = 2\n[b]\nz = 3\n"),
            table("[a]\nx = 10\n"),
            table("[b]\nw = 4\n"),
        ];
        let merged = merge(&layers);
        assert_eq!(
            merged.effective,
            table("[a]\nx = 10\ny = 2\n[b]\nz = 3\nw = 4\n")
        );
        let sources: Vec<(&str, usize)> = merged
            .sources
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            sources,
            vec![("a.x", 1), ("a.y", 0), ("b.w", 2), ("b.z", 0)]
        );
    }

    #[test]
    fn a_scalar_replacing_a_table_forgets_the_table_leaves() {
        let merged = merge(&[table("[a]\nx = 1\n"), table("a = 5\n")]);
        assert_eq!(merged.effective, table("a = 5\n"));
        assert_eq!(merged.sources.len(), 1);
        assert_eq!(merged.sources.get("a"), Some(&1));
    }
}
