//! Pinned npm bundles installed into the per-user cache.
//!
//! A bundle is a `package.json` + `package-lock.json` (and a few extra files, such as a script
//! that must sit beside `node_modules`), all compiled into the caller's binary. It is installed
//! with `npm ci --ignore-scripts` into `<cache>/tools/<name>-<hash of its files>`, verified, and
//! only then marked complete; changing any file changes the directory, so stale installs are
//! never reused. Concurrent installs (parallel tests, CI) are serialised by a lock file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use alloy::primitives::keccak256;

use super::{ProvisionLock, ToolError, cache_dir};

const COMPLETE_MARKER: &str = ".complete";

/// A file written into the bundle directory beside `node_modules`.
#[derive(Debug, Clone, Copy)]
pub struct BundleFile {
    /// File name inside the bundle directory.
    pub name: &'static str,
    /// Its contents.
    pub contents: &'static str,
    /// Whether to mark it executable.
    pub executable: bool,
}

/// A pinned set of npm packages.
#[derive(Debug, Clone, Copy)]
pub struct NpmBundle {
    /// Directory name prefix, e.g. `foundry-1.7.1-solc-0.8.30`.
    pub name: &'static str,
    /// The `package.json`.
    pub package_json: &'static str,
    /// The `package-lock.json` (with integrity hashes).
    pub package_lock: &'static str,
    /// Extra files.
    pub files: &'static [BundleFile],
}

impl NpmBundle {
    /// Where this bundle lives (installed or not).
    pub fn root(&self) -> PathBuf {
        let mut pinned = String::from(self.package_json);
        pinned.push_str(self.package_lock);
        for file in self.files {
            pinned.push_str(file.name);
            pinned.push_str(file.contents);
        }
        let hash = keccak256(pinned.as_bytes()).to_string();
        cache_dir()
            .join("tools")
            .join(format!("{}-{}", self.name, &hash[2..14]))
    }

    /// Returns the installed bundle's directory, installing it first if needed (progress on
    /// stderr). `verify` runs on a fresh install before it is accepted.
    pub fn ensure(
        &self,
        verify: impl Fn(&Path) -> Result<(), ToolError>,
    ) -> Result<PathBuf, ToolError> {
        let root = self.root();
        if root.join(COMPLETE_MARKER).exists() {
            return Ok(root);
        }
        let parent = root.parent().unwrap_or(&root).to_owned();
        let _lock = ProvisionLock::acquire(&parent)?;
        if !root.join(COMPLETE_MARKER).exists() {
            eprintln!(
                "m2m: installing {} from npm into {} (once per machine)",
                self.name,
                root.display()
            );
            self.install(&root, &verify)?;
            eprintln!("m2m: {} ready", self.name);
        }
        Ok(root)
    }

    fn install(
        &self,
        root: &Path,
        verify: &dyn Fn(&Path) -> Result<(), ToolError>,
    ) -> Result<(), ToolError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ToolError::Io { path, source }
        };
        if root.exists() {
            fs::remove_dir_all(root).map_err(io(root))?;
        }
        fs::create_dir_all(root).map_err(io(root))?;
        fs::write(root.join("package.json"), self.package_json).map_err(io(root))?;
        fs::write(root.join("package-lock.json"), self.package_lock).map_err(io(root))?;

        let mut npm = Command::new("npm");
        npm.current_dir(root).args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]);
        match npm.output() {
            Err(source) => {
                return Err(ToolError::Missing {
                    program: "npm",
                    hint: "install Node.js 20+ and npm (Debian: `apt-get install nodejs npm`)",
                    source,
                });
            }
            Ok(output) if !output.status.success() => {
                return Err(ToolError::CommandFailed {
                    command: format!("npm ci in {}", root.display()),
                    detail: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
            Ok(_) => {}
        }
        for file in self.files {
            let path = root.join(file.name);
            fs::write(&path, file.contents).map_err(io(&path))?;
            if file.executable {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io(&path))?;
            }
        }
        verify(root)?;
        // Written last: an interrupted install is redone, never half-used.
        fs::write(root.join(COMPLETE_MARKER), self.name).map_err(io(root))
    }
}
