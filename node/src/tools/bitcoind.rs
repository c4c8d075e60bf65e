//! A regtest `bitcoind` on free loopback ports with a fresh data directory, stopped when its
//! handle drops (like [`super::start_anvil`]).
//!
//! The binary comes from `BITCOIND_EXE`, `bitcoind` on `PATH`, or the per-user build that
//! `scripts/bitcoind` makes once from the Bitcoin Core source vendored in the crates.io package
//! `libbitcoinkernel-sys` 0.4.1. The JSON-RPC client is a few lines over reqwest (cookie
//! authentication, one generic `call`): the RPC crates for Bitcoin Core pull in their own
//! versions of `bitcoin` and a blocking HTTP stack for what is one POST.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ToolError;

/// The Bitcoin Core source the build comes from.
pub const BITCOIND_SOURCE: &str = "libbitcoinkernel-sys 0.4.1";

/// Where `bitcoind` is: `BITCOIND_EXE`, `PATH`, or the cached build of `scripts/bitcoind`.
pub fn locate_bitcoind() -> Result<PathBuf, ToolError> {
    if let Some(exe) = std::env::var_os("BITCOIND_EXE") {
        return Ok(PathBuf::from(exe));
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bitcoind"))
            .find(|candidate| candidate.is_file())
    }) {
        return Ok(found);
    }
    let cached = super::cache_dir().join("tools/bitcoind-kernel-sys-0.4.1/bin/bitcoind");
    if cached.is_file() {
        return Ok(cached);
    }
    Err(ToolError::Start {
        tool: "bitcoind",
        detail: format!(
            "not found: set BITCOIND_EXE, put bitcoind on PATH, or run scripts/bitcoind (builds it once from {BITCOIND_SOURCE}, about 20 minutes)"
        ),
    })
}

/// A running regtest node. Dropping it kills the process and removes its data directory.
#[derive(Debug)]
pub struct BitcoindHandle {
    child: Child,
    rpc_url: String,
    cookie: PathBuf,
    _data_dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for BitcoindHandle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, ToolError> {
    let io = |source| ToolError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    TcpListener::bind("127.0.0.1:0")
        .map_err(io)?
        .local_addr()
        .map(|a| a.port())
        .map_err(io)
}

/// Starts `bitcoind -regtest` on loopback and waits until its RPC answers.
pub async fn start_bitcoind() -> Result<BitcoindHandle, ToolError> {
    let exe = locate_bitcoind()?;
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
    let mut node = BitcoindHandle {
        child,
        rpc_url: format!("http://127.0.0.1:{rpc_port}/"),
        cookie: data_dir.path().join("regtest/.cookie"),
        _data_dir: data_dir,
        http: reqwest::Client::new(),
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
    /// The JSON-RPC endpoint.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// Calls an RPC method (cookie authentication); the `result`, or the node's error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ToolError> {
        let failed = |detail: String| ToolError::Start {
            tool: "bitcoind",
            detail: format!("{method}: {detail}"),
        };
        let cookie =
            std::fs::read_to_string(&self.cookie).map_err(|e| failed(format!("cookie: {e}")))?;
        let (user, password) = cookie
            .trim()
            .split_once(':')
            .ok_or_else(|| failed("malformed cookie".into()))?;
        let response: Value = self
            .http
            .post(&self.rpc_url)
            .basic_auth(user, Some(password))
            .json(&json!({ "jsonrpc": "1.0", "id": 1, "method": method, "params": params }))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?
            .json()
            .await
            .map_err(|e| failed(e.to_string()))?;
        match &response["error"] {
            Value::Null => Ok(response["result"].clone()),
            error => Err(failed(error.to_string())),
        }
    }
}
