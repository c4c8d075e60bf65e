//! A regtest `bitcoind` on free loopback ports with a fresh data directory, stopped when its
//! handle drops (like [`super::start_anvil`]).
//!
//! The binary comes from [`super::ensure_bitcoind`] (`BITCOIND_EXE`, `PATH`, or the per-user
//! build made on first use). The node is registered with the reaper, so it also dies when this
//! process is killed. Its RPC is reached through [`crate::btc::BitcoinRpc`] with cookie
//! authentication.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::btc::{BitcoinRpc, RpcAuth, RpcError};

use super::{ReapOnExit, ToolError, free_port};

/// The Bitcoin Core source a missing bitcoind is built from.
pub const BITCOIND_SOURCE: &str = "libbitcoinkernel-sys 0.4.1";

/// A running regtest node. Dropping it kills the process and removes its data directory.
#[derive(Debug)]
pub struct BitcoindHandle {
    child: Child,
    rpc: BitcoinRpc,
    _data_dir: tempfile::TempDir,
    // After `child` has been killed and waited for (fields drop after `Drop::drop`).
    _reaper: ReapOnExit,
}

impl Drop for BitcoindHandle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bitcoind -regtest` on loopback and waits until its RPC answers; builds bitcoind
/// first (once per machine, many minutes) if it is nowhere to be found.
pub async fn start_bitcoind() -> Result<BitcoindHandle, ToolError> {
    let exe = tokio::task::spawn_blocking(super::ensure_bitcoind)
        .await
        .map_err(|e| ToolError::Start {
            tool: "bitcoind",
            detail: format!("provisioning task: {e}"),
        })??;
    let data_dir = tempfile::tempdir().map_err(|source| ToolError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let (rpc_port, p2p_port) = (free_port()?, free_port()?);
    let child = Command::new(&exe)
        .arg("-regtest")
        .arg(format!("-datadir={}", data_dir.path().display()))
        .arg(format!("-rpcport={rpc_port}"))
        .arg(format!("-port={p2p_port}"))
        // No P2P listening (tests need none); RPC on loopback only.
        .args(["-listen=0", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1"])
        .args(["-server=1", "-txindex=1", "-printtoconsole=0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ToolError::Start {
            tool: "bitcoind",
            detail: format!("{}: {e}", exe.display()),
        })?;
    let reaper = ReapOnExit::register(child.id());
    let mut node = BitcoindHandle {
        child,
        _reaper: reaper,
        rpc: BitcoinRpc::new(
            format!("http://127.0.0.1:{rpc_port}/"),
            RpcAuth::Cookie(data_dir.path().join("regtest/.cookie")),
        ),
        _data_dir: data_dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            let mut said = String::new();
            if let Some(mut stderr) = node.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
            }
            return Err(ToolError::Start {
                tool: "bitcoind",
                detail: format!("exited with {status}: {}", said.trim()),
            });
        }
        if node.call("getblockchaininfo", json!([])).await.is_ok() {
            return Ok(node);
        }
        if Instant::now() > deadline {
            return Err(ToolError::Start {
                tool: "bitcoind",
                detail: "RPC did not answer within 60 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl BitcoindHandle {
    /// The node's RPC endpoint.
    pub fn rpc(&self) -> &BitcoinRpc {
        &self.rpc
    }

    /// The node's cookie file (what `m2m btc --cookie` takes).
    pub fn cookie_path(&self) -> PathBuf {
        self._data_dir.path().join("regtest/.cookie")
    }

    /// The JSON-RPC endpoint.
    pub fn rpc_url(&self) -> &str {
        self.rpc.url()
    }

    /// Calls an RPC method; the `result`, or the node's error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.rpc.call(method, params).await
    }
}
