//! The signals that stop a long-running command: Ctrl-C (SIGINT) and SIGTERM (what `kill`, a
//! service manager or a container runtime sends) are handled alike, as an orderly stop.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listens for SIGINT and SIGTERM from the moment it is made: make it before announcing that a
/// command is ready, so that a stop sent right after the announcement is not lost to the
/// default action (which would end the process without its orderly stop).
#[derive(Debug)]
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a tokio runtime with IO enabled.
    pub fn listen() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next stop signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Waits for SIGINT or SIGTERM (for callers with nothing to announce first). If the handlers
/// cannot be installed it waits forever rather than stopping at once.
pub async fn shutdown_signal() -> &'static str {
    match ShutdownSignals::listen() {
        Ok(mut signals) => signals.recv().await,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGINT/SIGTERM");
            std::future::pending().await
        }
    }
}
