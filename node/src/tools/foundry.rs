//! anvil, forge and cast 1.7.1 and solc (solc-js behind a `solc`-compatible shim), from npm.
//!
//! The npm manifest and lock are compiled into the binary, so any `m2m` build provisions exactly
//! the versions it was tested with. The install directory name carries a hash of those inputs:
//! changing a pin provisions a fresh directory instead of mutating a cached one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use alloy::primitives::keccak256;

use super::{ProvisionLock, ToolError, cache_dir, run_checked};

/// Pinned foundry version (anvil, forge, cast).
pub const FOUNDRY_VERSION: &str = "1.7.1";
/// Pinned Solidity compiler version (solc-js).
pub const SOLC_VERSION: &str = "0.8.30";

const PACKAGE_JSON: &str = include_str!("../../../tools/npm/package.json");
const PACKAGE_LOCK: &str = include_str!("../../../tools/npm/package-lock.json");
const SOLC_SHIM: &str = include_str!("../../../tools/solc-shim.js");
const COMPLETE_MARKER: &str = ".complete";

/// Paths of a provisioned foundry toolchain.
#[derive(Debug, Clone)]
pub struct Foundry {
    /// Install root.
    pub root: PathBuf,
    /// The anvil binary.
    pub anvil: PathBuf,
    /// The forge binary.
    pub forge: PathBuf,
    /// The cast binary.
    pub cast: PathBuf,
    /// The `solc`-compatible shim over solc-js; point forge at it (`FOUNDRY_SOLC`).
    pub solc: PathBuf,
}

impl Foundry {
    /// Returns the cached toolchain, provisioning it first if needed (progress on stderr).
    pub fn ensure() -> Result<Self, ToolError> {
        let root = install_root();
        let foundry = Self::at(&root);
        if root.join(COMPLETE_MARKER).exists() {
            return Ok(foundry);
        }
        let parent = root.parent().unwrap_or(&root).to_owned();
        let _lock = ProvisionLock::acquire(&parent)?;
        if !root.join(COMPLETE_MARKER).exists() {
            provision(&root)?;
        }
        Ok(foundry)
    }

    fn at(root: &Path) -> Self {
        let bin = |package: &str, name: &str| {
            root.join("node_modules/@foundry-rs")
                .join(package)
                .join("bin")
                .join(name)
        };
        Self {
            root: root.to_owned(),
            anvil: bin("anvil-linux-amd64", "anvil"),
            forge: bin("forge-linux-amd64", "forge"),
            cast: bin("cast-linux-amd64", "cast"),
            solc: root.join("solc"),
        }
    }

    /// Checks every tool answers with its pinned version.
    pub fn verify(&self) -> Result<(), ToolError> {
        for (tool, path, expected) in [
            ("anvil", &self.anvil, FOUNDRY_VERSION),
            ("forge", &self.forge, FOUNDRY_VERSION),
            ("cast", &self.cast, FOUNDRY_VERSION),
            ("solc", &self.solc, SOLC_VERSION),
        ] {
            let printed = run_checked(Command::new(path).arg("--version"))?;
            if !printed.contains(expected) {
                return Err(ToolError::WrongVersion {
                    tool,
                    path: path.clone(),
                    found: printed.trim().into(),
                    expected,
                });
            }
        }
        Ok(())
    }
}

/// `<cache>/tools/foundry-<version>-<hash of pins>`.
fn install_root() -> PathBuf {
    let pins = keccak256([PACKAGE_JSON, PACKAGE_LOCK, SOLC_SHIM].concat());
    cache_dir().join("tools").join(format!(
        "foundry-{FOUNDRY_VERSION}-solc-{SOLC_VERSION}-{}",
        &pins.to_string()[2..14]
    ))
}

fn provision(root: &Path) -> Result<(), ToolError> {
    eprintln!(
        "m2m: provisioning anvil/forge/cast {FOUNDRY_VERSION} and solc {SOLC_VERSION} from npm into {} (once per machine)",
        root.display()
    );
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ToolError::Io { path, source }
    };
    let staging = root.with_extension("partial");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io(&staging))?;
    fs::write(staging.join("package.json"), PACKAGE_JSON).map_err(io(&staging))?;
    fs::write(staging.join("package-lock.json"), PACKAGE_LOCK).map_err(io(&staging))?;

    let mut npm = Command::new("npm");
    npm.current_dir(&staging).args([
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
                command: format!("npm ci in {}", staging.display()),
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(_) => {}
    }
    // The shim must sit beside node_modules so `require('solc')` resolves to the pinned package.
    let shim = staging.join("solc");
    fs::write(&shim, SOLC_SHIM).map_err(io(&shim))?;
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).map_err(io(&shim))?;

    Foundry::at(&staging).verify()?;
    fs::write(
        staging.join(super::foundry::COMPLETE_MARKER),
        FOUNDRY_VERSION,
    )
    .map_err(io(&staging))?;
    if root.exists() {
        fs::remove_dir_all(root).map_err(io(root))?;
    }
    fs::rename(&staging, root).map_err(io(root))?;
    eprintln!("m2m: local tools ready");
    Ok(())
}
