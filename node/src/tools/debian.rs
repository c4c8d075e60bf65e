//! Debian packages the project's tools need (bitcoind's build dependencies, `prometheus` for
//! `promtool`): those missing are installed with apt when we run as root, else the error says
//! which to install. Off Debian (no `dpkg-query`) nothing is checked: the tool itself says what is
//! missing.

use std::process::{Command, Stdio};

use super::{ToolError, run_checked};

/// Makes sure `packages` are installed; `purpose` names what needs them in messages.
pub fn ensure_packages(purpose: &'static str, packages: &[&str]) -> Result<(), ToolError> {
    // `dpkg -s` also succeeds for a removed package whose configuration files remain.
    let installed = |package: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .stderr(Stdio::null())
            .output()
            .map(|out| out.stdout == b"install ok installed")
    };
    let missing = || -> Vec<&str> {
        packages
            .iter()
            .copied()
            // No dpkg-query at all: not Debian; the caller finds the tool missing and says so.
            .filter(|package| matches!(installed(package), Ok(false)))
            .collect()
    };
    if missing().is_empty() {
        return Ok(());
    }
    // One installer at a time (tests in parallel, several test processes): apt's own lock
    // would fail the second one instead of making it wait.
    let _lock = super::ProvisionLock::acquire(&super::cache_dir().join("debian"))?;
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = run_checked(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0");
    if !is_root {
        return Err(ToolError::MissingPackages {
            purpose,
            packages: missing.join(" "),
        });
    }
    eprintln!(
        "m2m: {purpose}: installing the Debian packages {}",
        missing.join(" ")
    );
    run_checked(Command::new("apt-get").args(["update", "-qq"]))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

/// `promtool` (Debian package `prometheus`), installed when missing; for linting metrics.
pub fn promtool() -> Result<std::path::PathBuf, ToolError> {
    let on_path = || super::on_path("promtool", &[]);
    if let Some(found) = on_path() {
        return Ok(found);
    }
    ensure_packages("linting metrics (promtool)", &["prometheus"])?;
    on_path().ok_or(ToolError::MissingPackages {
        purpose: "linting metrics (promtool)",
        packages: "prometheus".into(),
    })
}
