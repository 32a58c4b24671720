//! Test support: throwaway directories for config-dir layers.
//!
//! It must never be compiled outside tests nor touch anything but its own directory.

use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(tempfile::TempDir);

impl TempDir {
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tasker_channels_config_")
            .tempdir()
            .expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// The path of `relative` inside, its parent folders created.
    fn with_parent(&self, relative: &str) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        path
    }

    /// Writes `contents` at `relative`, creating parent folders.
    pub(crate) fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.with_parent(relative);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    /// Makes a FIFO (named pipe) at `relative`, creating parent folders.
    #[cfg(unix)]
    pub(crate) fn mkfifo(&self, relative: &str) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let path = self.with_parent(relative);
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
        // SAFETY: a valid, NUL-terminated path that lives for the call.
        let status = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(
            status,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        path
    }

    /// Makes a symbolic link at `relative` pointing at `target`, creating parent folders.
    #[cfg(unix)]
    pub(crate) fn symlink(&self, relative: &str, target: &Path) -> PathBuf {
        let path = self.with_parent(relative);
        std::os::unix::fs::symlink(target, &path).expect("create symlink");
        path
    }

    pub(crate) fn mkdir(&self, relative: &str) -> PathBuf {
        let path = self.path().join(relative);
        std::fs::create_dir_all(&path).expect("create dir");
        path
    }
}
