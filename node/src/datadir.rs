//! The data directory: where a device keeps its keystore and (later) its channel store.
//!
//! One process at a time: two agents on one store could both sign or both claim, which loses
//! money. [`DataDir::open`] takes an exclusive OS lock on `<dir>/LOCK` for as long as the value
//! lives; a second process gets [`DataDirError::InUse`] with the holder's pid.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the encrypted keystore inside a data directory.
pub const KEYSTORE_FILE: &str = "wallet.keystore";
const LOCK_FILE: &str = "LOCK";

/// The data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error("data directory {path} is in use by another m2m process{}; stop it first", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The pid the holder wrote into the lock file, if readable.
        pid: Option<u32>,
    },
    /// Creating, locking or reading failed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// An opened, exclusively locked data directory. The lock is released on drop.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Opens (creating with mode 0700 if needed) and locks the directory at `path`.
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        let io = |source| DataDirError::Io {
            path: path.to_owned(),
            source,
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(path).map_err(io)?;
        #[cfg(unix)]
        if fs::metadata(path).map_err(io)?.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "data directory is reachable by other users; consider `chmod 700`");
        }

        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = lock.read_to_string(&mut text);
                return Err(DataDirError::InUse {
                    path: path.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // Record our pid so a refused second process can say who holds the directory.
        lock.set_len(0).map_err(io)?;
        lock.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the keystore lives.
    pub fn keystore_path(&self) -> PathBuf {
        self.path.join(KEYSTORE_FILE)
    }
}

/// The default data directory: `$XDG_DATA_HOME/m2m`, else `~/.local/share/m2m`, else `./m2m-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("m2m");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/m2m"),
        None => PathBuf::from("m2m-data"),
    }
}

/// Replaces `path` with `bytes` durably: written beside it, synced, renamed over it, and the
/// directory synced, so a crash leaves the old content or the new, never a torn file.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staging = path.with_extension("new");
    let mut file = File::create(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&staging, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device");
        let first = DataDir::open(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let err = DataDir::open(&path).unwrap_err();
        assert!(
            matches!(err, DataDirError::InUse { pid: Some(pid), .. } if pid == std::process::id()),
            "{err}"
        );
        assert!(err.to_string().contains("in use by another m2m process"));
        drop(first);
        DataDir::open(&path).unwrap();
    }
}
