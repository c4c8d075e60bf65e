//! anvil, forge and cast 1.7.1 and solc (solc-js behind a `solc`-compatible shim), from npm.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::npm::{BundleFile, NpmBundle};
use super::{ToolError, run_checked};

/// Pinned foundry version (anvil, forge, cast).
pub const FOUNDRY_VERSION: &str = "1.7.1";
/// Pinned Solidity compiler version (solc-js).
pub const SOLC_VERSION: &str = "0.8.30";

/// The npm packages and the solc shim; the shim must sit beside `node_modules` so that
/// `require('solc')` resolves to the pinned package.
const BUNDLE: NpmBundle = NpmBundle {
    name: "foundry-1.7.1-solc-0.8.30",
    package_json: include_str!("../../../tools/npm/package.json"),
    package_lock: include_str!("../../../tools/npm/package-lock.json"),
    files: &[BundleFile {
        name: "solc",
        contents: include_str!("../../../tools/solc-shim.js"),
        executable: true,
    }],
};

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
        let root = BUNDLE.ensure(|root| Self::at(root).verify())?;
        Ok(Self::at(&root))
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
