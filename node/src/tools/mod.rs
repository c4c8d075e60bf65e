//! Local tools: the chains and compilers tests, the simulator and users run against.
//!
//! Everything is pinned by files in the repository (`tools/npm/package-lock.json`,
//! `tools/solc-shim.js`), installed from the package registries only, cached per user under
//! [`cache_dir`], and reused. A missing tool is provisioned, never skipped. Concurrent
//! provisioning (parallel tests, CI) is serialised by a lock file.

mod anvil;
mod bitcoind;
mod bitcoind_build;
mod chromium;
mod debian;
mod foundry;
mod mosquitto;
mod npm;
mod prosody;
mod reaper;
mod served;
mod test_ca;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub use anvil::{AnvilHandle, start_anvil, start_anvil_on};
pub use bitcoind::{BITCOIND_SOURCE, BitcoindHandle, start_bitcoind};
pub use bitcoind_build::{ensure_bitcoind, find_bitcoind};
pub use chromium::{ChromeDriverHandle, start_chromedriver};
pub use debian::{ensure_packages, promtool};
pub use foundry::{FOUNDRY_VERSION, Foundry, SOLC_VERSION};
pub use mosquitto::{MosquittoHandle, MqttAccount, mosquitto_sub, start_mosquitto};
pub use npm::{BundleFile, NpmBundle};
pub use prosody::{ProsodyHandle, XmppAccount, start_prosody};
pub use reaper::{GuardedChild, ReapOnExit};

/// A tool could not be located, provisioned or started.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Filesystem work in the cache failed.
    #[error("tool cache {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A required program (node, npm) is not installed.
    #[error(
        "`{program}` is needed to provision local tools but could not be run ({source}); {hint}"
    )]
    Missing {
        /// The program.
        program: &'static str,
        /// How to get it.
        hint: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A provisioning or checking command ran but failed.
    #[error("`{command}` failed: {detail}")]
    CommandFailed {
        /// What ran.
        command: String,
        /// Exit status and the tail of its output.
        detail: String,
    },
    /// A tool answered with a version other than the pinned one.
    #[error("{tool} at {path} reports {found:?}, expected version {expected}")]
    WrongVersion {
        /// The tool.
        tool: &'static str,
        /// Its path.
        path: PathBuf,
        /// What it printed.
        found: String,
        /// The pinned version.
        expected: &'static str,
    },
    /// Debian packages a tool needs are missing and we are not root to install them.
    #[error("{purpose} needs the Debian packages {packages}: `sudo apt-get install {packages}`")]
    MissingPackages {
        /// What needs them.
        purpose: &'static str,
        /// Space-separated package names.
        packages: String,
    },
    /// Starting a node failed.
    #[error("starting {tool}: {detail}")]
    Start {
        /// The tool.
        tool: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// The per-user cache: `$M2M_CACHE_DIR`, else `$XDG_CACHE_HOME/m2m`, else `~/.cache/m2m`.
pub fn cache_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = from_env("M2M_CACHE_DIR") {
        return dir;
    }
    if let Some(dir) = from_env("XDG_CACHE_HOME") {
        return dir.join("m2m");
    }
    match from_env("HOME") {
        Some(home) => home.join(".cache/m2m"),
        None => std::env::temp_dir().join("m2m-cache"),
    }
}

/// `program` in a directory of `PATH`, else in `extra` (Debian's sbin directories are not on
/// every user's `PATH`).
pub(crate) fn on_path(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A loopback port free at the time of asking (for a child told which port to listen on).
pub(crate) fn free_port() -> Result<u16, ToolError> {
    let io = |source| ToolError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(io)?
        .local_addr()
        .map(|a| a.port())
        .map_err(io)
}

/// Holds an exclusive lock on `<dir>/.lock` while a tool is provisioned; other processes wait.
pub(crate) struct ProvisionLock {
    _file: File,
}

impl ProvisionLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, ToolError> {
        let io = |source| ToolError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let file = File::create(dir.join(".lock")).map_err(io)?;
        file.lock().map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// Runs a command to completion; on failure reports its status and the end of its output.
pub(crate) fn run_checked(command: &mut std::process::Command) -> Result<String, ToolError> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| ToolError::CommandFailed {
        command: shown.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        let tail = last_lines(&String::from_utf8_lossy(&output.stderr), 15);
        return Err(ToolError::CommandFailed {
            command: shown,
            detail: format!("{}\n{tail}", output.status),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The last `count` lines of `text`, for error details.
pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
