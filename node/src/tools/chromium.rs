//! Headless Chromium behind `chromedriver` on a free loopback port, for the tests that look at
//! the dashboard and the simulator's page in a real browser.
//!
//! Both come from Debian (`chromium`, `chromium-driver`), installed when missing. chromedriver
//! is started as the leader of its own process group, so the browsers it starts are stopped with
//! it: by the handle's `Drop`, or by the reaper if this process dies first.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ReapOnExit, ToolError, free_port};

const PURPOSE: &str = "browser tests (headless Chromium)";
const PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

/// A running chromedriver. Dropping it stops chromedriver and every browser it started.
#[derive(Debug)]
pub struct ChromeDriverHandle {
    child: Child,
    url: String,
    browser: PathBuf,
    /// chromedriver's log (`chromedriver.log`), read when it fails to start.
    log_dir: tempfile::TempDir,
    // After `child` has been killed and waited for (fields drop after `Drop::drop`).
    _reaper: ReapOnExit,
}

impl ChromeDriverHandle {
    /// The WebDriver endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A directory that lives as long as the driver (for the browser's profile).
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.log_dir.path()
    }

    /// The Chromium binary, for the session's `goog:chromeOptions.binary`.
    pub fn browser(&self) -> &std::path::Path {
        &self.browser
    }
}

impl Drop for ChromeDriverHandle {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browsers it spawned.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(program: &str) -> Option<PathBuf> {
    super::on_path(program, &[])
}

/// chromedriver and Chromium, installed from Debian when either is missing.
fn ensure() -> Result<(PathBuf, PathBuf), ToolError> {
    let found = || Some((find("chromedriver")?, find("chromium")?));
    if let Some(pair) = found() {
        return Ok(pair);
    }
    super::ensure_packages(PURPOSE, &PACKAGES)?;
    found().ok_or(ToolError::MissingPackages {
        purpose: PURPOSE,
        packages: PACKAGES.join(" "),
    })
}

/// Starts chromedriver on a free loopback port and waits until it is ready for sessions.
pub async fn start_chromedriver() -> Result<ChromeDriverHandle, ToolError> {
    let (driver, browser) =
        tokio::task::spawn_blocking(ensure)
            .await
            .map_err(|e| ToolError::Start {
                tool: "chromedriver",
                detail: format!("provisioning task: {e}"),
            })??;
    let port = free_port()?;
    let log_dir = tempfile::tempdir().map_err(|source| ToolError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let log = log_dir.path().join("chromedriver.log");
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        // Loopback only (its default); its log goes to a file, not to our output.
        .arg("--allowed-ips=127.0.0.1")
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| ToolError::Start {
            tool: "chromedriver",
            detail: format!("{}: {e}", driver.display()),
        })?;
    let reaper = ReapOnExit::register(child.id());
    let mut handle = ChromeDriverHandle {
        child,
        url: format!("http://127.0.0.1:{port}"),
        browser,
        log_dir,
        _reaper: reaper,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = handle.child.try_wait() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(ToolError::Start {
                tool: "chromedriver",
                detail: format!("exited with {status}: {}", super::last_lines(&said, 15)),
            });
        }
        let status = client.get(format!("{}/status", handle.url)).send().await;
        if let Ok(response) = status
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body["value"]["ready"] == true
        {
            return Ok(handle);
        }
        if Instant::now() > deadline {
            return Err(ToolError::Start {
                tool: "chromedriver",
                detail: "not ready within 30 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
