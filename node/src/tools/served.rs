//! Servers the tools start (mosquitto, prosody): spawned with their output discarded (they log
//! to a file of their own), registered with the reaper, ready once their port accepts TCP, and
//! stopped with SIGTERM (so they save their state) before SIGKILL.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ReapOnExit, ToolError};

/// How long a server may take to listen, or to stop on SIGTERM.
const START_WITHIN: Duration = Duration::from_secs(20);
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// A running server process.
pub(super) type Served = (Child, ReapOnExit);

/// Spawns `command` as `tool` and waits until 127.0.0.1:`port` accepts connections; if it
/// exits first, the error quotes the end of `log()`.
pub(super) async fn spawn_listening(
    tool: &'static str,
    command: &mut Command,
    port: u16,
    log: impl Fn() -> String,
) -> Result<Served, ToolError> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ToolError::Start {
            tool,
            detail: format!("{}: {e}", command.get_program().to_string_lossy()),
        })?;
    let reaper = ReapOnExit::register(child.id());
    let mut served = (child, reaper);
    let deadline = Instant::now() + START_WITHIN;
    loop {
        if let Ok(Some(status)) = served.0.try_wait() {
            return Err(ToolError::Start {
                tool,
                detail: format!("exited with {status}: {}", super::last_lines(&log(), 15)),
            });
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(served);
        }
        if Instant::now() > deadline {
            stop(Some(served));
            return Err(ToolError::Start {
                tool,
                detail: format!("not listening within {START_WITHIN:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a server: SIGTERM, then SIGKILL if it has not exited within a few seconds.
pub(super) fn stop(served: Option<Served>) {
    let Some((mut child, _reaper)) = served else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_WITHIN;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A server with its own directory (configuration, state, log), on one loopback port: started
/// by [`Server::launch`], stopped by [`Server::stop`] or when dropped (its files go with it).
#[derive(Debug)]
pub(super) struct Server {
    tool: &'static str,
    exe: PathBuf,
    args: Vec<OsString>,
    port: u16,
    log_name: &'static str,
    dir: tempfile::TempDir,
    child: Option<Served>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// A server `tool` run as `exe args…` in `dir`, listening on `port`, logging to
    /// `dir/log_name`; not started yet.
    pub(super) fn new(
        tool: &'static str,
        exe: PathBuf,
        args: Vec<OsString>,
        port: u16,
        dir: tempfile::TempDir,
        log_name: &'static str,
    ) -> Self {
        Self {
            tool,
            exe,
            args,
            port,
            log_name,
            dir,
            child: None,
        }
    }

    /// Its port on 127.0.0.1.
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// A file of its directory.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its log so far.
    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.path(self.log_name)).unwrap_or_default()
    }

    /// Starts it and waits until it listens.
    pub(super) async fn launch(&mut self) -> Result<(), ToolError> {
        let mut command = Command::new(&self.exe);
        command.args(&self.args);
        let served = spawn_listening(self.tool, &mut command, self.port, || self.log()).await?;
        self.child = Some(served);
        Ok(())
    }

    /// Stops it (SIGTERM, so it saves its state).
    pub(super) fn stop(&mut self) {
        stop(self.child.take());
    }
}
