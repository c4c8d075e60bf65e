//! bitcoind's JSON-RPC, as the agent uses it: blocks for the wallet, the UTXO set for channel
//! funding checks, and broadcasting.
//!
//! Written over reqwest rather than taken from an RPC crate: the Bitcoin Core RPC crates pull in
//! their own `bitcoin` versions and a blocking HTTP stack, for what is one POST per call and a
//! handful of methods. Raw blocks and transactions are decoded with `bitcoin`'s consensus code.

use std::path::PathBuf;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{Amount, Block, BlockHash, OutPoint, ScriptBuf, Transaction, Txid};
use serde_json::{Value, json};

/// An RPC call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No answer (node down, wrong port).
    #[error("bitcoind {method}: {source}")]
    Transport {
        /// The method called.
        method: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The cookie file could not be read.
    #[error("bitcoind cookie {path}: {source}")]
    Cookie {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The node answered with an error (e.g. a rejected transaction).
    #[error("bitcoind {method}: {message} (code {code})")]
    Node {
        /// The method called.
        method: String,
        /// Bitcoin Core's error code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("bitcoind {method}: unexpected answer: {detail}")]
    Shape {
        /// The method called.
        method: String,
        /// What was wrong.
        detail: String,
    },
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum RpcAuth {
    /// Bitcoin Core's cookie file (re-read on every call: it changes when the node restarts).
    Cookie(PathBuf),
    /// `rpcuser` / `rpcpassword`.
    UserPass(String, String),
}

/// A bitcoind JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct BitcoinRpc {
    url: String,
    auth: RpcAuth,
    http: reqwest::Client,
}

/// An unspent output as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutInfo {
    /// Its value.
    pub value: Amount,
    /// Its script.
    pub script_pubkey: ScriptBuf,
    /// Confirmations (0: in the mempool).
    pub confirmations: u32,
}

impl BitcoinRpc {
    /// An endpoint (`http://127.0.0.1:18443/`) with its authentication.
    pub fn new(url: impl Into<String>, auth: RpcAuth) -> Self {
        Self {
            url: url.into(),
            auth,
            // A node busy validating answers slowly, but a node that never answers must not
            // hold a watcher or a payment for ever.
            http: crate::http_client::client_with(std::time::Duration::from_secs(60), 8),
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The user and password to authenticate with (read from the cookie file if that is how).
    pub fn credentials(&self) -> Result<(String, String), RpcError> {
        match &self.auth {
            RpcAuth::UserPass(user, password) => Ok((user.clone(), password.clone())),
            RpcAuth::Cookie(path) => {
                let cookie = std::fs::read_to_string(path).map_err(|source| RpcError::Cookie {
                    path: path.clone(),
                    source,
                })?;
                let (user, password) = cookie.trim().split_once(':').ok_or_else(|| {
                    shape(
                        "cookie",
                        format!("malformed cookie file {}", path.display()),
                    )
                })?;
                Ok((user.to_owned(), password.to_owned()))
            }
        }
    }

    /// The endpoint's host and port.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let url = reqwest::Url::parse(&self.url).ok()?;
        Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
    }

    /// Calls `method`; the `result`, or the node's error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let (user, password) = self.credentials()?;
        let transport = |source| RpcError::Transport {
            method: method.to_owned(),
            source,
        };
        let response: Value = self
            .http
            .post(&self.url)
            .basic_auth(user, Some(password))
            .json(&json!({ "jsonrpc": "1.0", "id": 1, "method": method, "params": params }))
            .send()
            .await
            .map_err(transport)?
            .json()
            .await
            .map_err(transport)?;
        match &response["error"] {
            Value::Null => Ok(response["result"].clone()),
            error => Err(RpcError::Node {
                method: method.to_owned(),
                code: error["code"].as_i64().unwrap_or_default(),
                message: error["message"].as_str().unwrap_or("?").to_owned(),
            }),
        }
    }

    /// The CAIP-2 network id: `bip122:` and the first 32 hex characters of the genesis hash.
    pub async fn caip2(&self) -> Result<String, RpcError> {
        let genesis = self.block_hash(0).await?;
        Ok(format!("bip122:{}", &genesis.to_string()[..32]))
    }

    /// The height of the best chain.
    pub async fn block_count(&self) -> Result<u32, RpcError> {
        let value = self.call("getblockcount", json!([])).await?;
        as_u32("getblockcount", &value)
    }

    /// The hash of the best-chain block at `height`.
    pub async fn block_hash(&self, height: u32) -> Result<BlockHash, RpcError> {
        let value = self.call("getblockhash", json!([height])).await?;
        parse("getblockhash", &value)
    }

    /// A block, decoded.
    pub async fn block(&self, hash: &BlockHash) -> Result<Block, RpcError> {
        let value = self.call("getblock", json!([hash.to_string(), 0])).await?;
        decode("getblock", &value)
    }

    /// The transactions in the mempool, decoded.
    pub async fn mempool(&self) -> Result<Vec<Transaction>, RpcError> {
        let ids = self.call("getrawmempool", json!([])).await?;
        let ids = ids
            .as_array()
            .ok_or_else(|| shape("getrawmempool", "not an array".into()))?;
        let mut txs = Vec::with_capacity(ids.len());
        for id in ids {
            match self.call("getrawtransaction", json!([id, 0])).await {
                Ok(hex) => txs.push(decode("getrawtransaction", &hex)?),
                // Mined or evicted between the two calls: the next sync sees where it went.
                Err(RpcError::Node { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Ok(txs)
    }

    /// A transaction by id (the node keeps a transaction index, or it is in the mempool).
    pub async fn transaction(&self, txid: &Txid) -> Result<Transaction, RpcError> {
        let value = self
            .call("getrawtransaction", json!([txid.to_string(), 0]))
            .await?;
        decode("getrawtransaction", &value)
    }

    /// Broadcasts a transaction; the node's policy and consensus checks answer.
    pub async fn broadcast(&self, tx: &Transaction) -> Result<Txid, RpcError> {
        let value = self
            .call("sendrawtransaction", json!([serialize_hex(tx)]))
            .await?;
        parse("sendrawtransaction", &value)
    }

    /// An unspent output, counting the mempool's spends and outputs; `None` if spent or unknown.
    pub async fn tx_out(&self, outpoint: &OutPoint) -> Result<Option<TxOutInfo>, RpcError> {
        let value = self
            .call(
                "gettxout",
                json!([outpoint.txid.to_string(), outpoint.vout, true]),
            )
            .await?;
        if value.is_null() {
            return Ok(None);
        }
        let method = "gettxout";
        let btc = value["value"]
            .as_f64()
            .ok_or_else(|| shape(method, "no value".into()))?;
        let value_sat = Amount::from_btc(btc).map_err(|e| shape(method, e.to_string()))?;
        let script_hex = value["scriptPubKey"]["hex"]
            .as_str()
            .ok_or_else(|| shape(method, "no scriptPubKey".into()))?;
        let script_pubkey =
            ScriptBuf::from_hex(script_hex).map_err(|e| shape(method, e.to_string()))?;
        Ok(Some(TxOutInfo {
            value: value_sat,
            script_pubkey,
            confirmations: as_u32(method, &value["confirmations"])?,
        }))
    }

    /// Regtest only: mines `blocks` blocks paying `address`.
    pub async fn mine_to(&self, blocks: u32, address: &str) -> Result<Vec<BlockHash>, RpcError> {
        let value = self
            .call("generatetoaddress", json!([blocks, address]))
            .await?;
        serde_json::from_value(value).map_err(|e| shape("generatetoaddress", e.to_string()))
    }
}

fn shape(method: &str, detail: String) -> RpcError {
    RpcError::Shape {
        method: method.to_owned(),
        detail,
    }
}

fn as_u32(method: &str, value: &Value) -> Result<u32, RpcError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| shape(method, format!("{value} is not a u32")))
}

fn parse<T: std::str::FromStr>(method: &str, value: &Value) -> Result<T, RpcError>
where
    T::Err: std::fmt::Display,
{
    value
        .as_str()
        .ok_or_else(|| shape(method, "not a string".into()))?
        .parse()
        .map_err(|e: T::Err| shape(method, e.to_string()))
}

fn decode<T: bitcoin::consensus::Decodable>(method: &str, value: &Value) -> Result<T, RpcError> {
    let hex = value
        .as_str()
        .ok_or_else(|| shape(method, "not hex".into()))?;
    deserialize_hex(hex).map_err(|e| shape(method, e.to_string()))
}
