//! What the device holds, leg by leg: ETH and tokens at its EVM address, coins in its Bitcoin
//! wallet, and its Lightning node's on-chain and channel funds. `m2m balance` prints these (from
//! the running agent, which knows every endpoint, or for EVM alone from command-line options).
//! Amounts are decimal strings in each leg's base unit (wei and token atomic units, satoshi).

use alloy::primitives::Address;
use alloy::providers::Provider;
use serde_json::{Value, json};

use crate::btc::{BtcWallet, WalletError};
use crate::evm::{ChainError, SettlementClient, SharedSigner};

/// Where the EVM leg's balances are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmEndpoint {
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The settlement contract (for the chain client; balances do not depend on it).
    pub settlement: Address,
    /// The tokens to show.
    pub tokens: Vec<Address>,
}

/// A balance could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// The EVM chain failed.
    #[error("EVM balance")]
    Chain(#[source] Box<ChainError>),
    /// Reading the ETH balance failed.
    #[error("EVM balance: reading ETH")]
    Rpc(#[source] alloy::transports::TransportError),
    /// The Bitcoin wallet could not sync.
    #[error("Bitcoin balance")]
    Wallet(#[source] WalletError),
}

/// ETH and each token of `endpoint` held by `signer`'s address.
pub async fn evm(endpoint: &EvmEndpoint, signer: SharedSigner) -> Result<Value, BalanceError> {
    let chain = |e| BalanceError::Chain(Box::new(e));
    let address = signer.evm_address();
    let client = SettlementClient::connect(&endpoint.rpc_url, signer, endpoint.settlement)
        .await
        .map_err(chain)?;
    let wei = client
        .provider()
        .get_balance(address)
        .await
        .map_err(BalanceError::Rpc)?;
    let mut tokens = Vec::new();
    let mut seen = Vec::new();
    for token in &endpoint.tokens {
        if seen.contains(token) {
            continue;
        }
        seen.push(*token);
        let balance = client.token_balance(*token, address).await.map_err(chain)?;
        tokens.push(json!({ "token": format!("{token:#x}"), "balance": balance.to_string() }));
    }
    Ok(json!({
        "address": format!("{address:#x}"),
        "chainId": client.chain_id(),
        "wei": wei.to_string(),
        "tokens": tokens,
    }))
}

/// The Bitcoin wallet's coins, after a sync.
pub async fn bitcoin(wallet: &BtcWallet) -> Result<Value, BalanceError> {
    wallet.sync().await.map_err(BalanceError::Wallet)?;
    let balance = wallet.balance().await;
    Ok(json!({
        "address": wallet.receive_address().await.to_string(),
        "confirmedSats": balance.confirmed.to_sat().to_string(),
        "pendingSats": (balance.trusted_pending + balance.untrusted_pending).to_sat().to_string(),
        "immatureSats": balance.immature.to_sat().to_string(),
    }))
}

/// The Lightning node's on-chain wallet and what it can spend in channels.
#[cfg(feature = "lightning")]
pub fn lightning(ln: &crate::ln::LnNode) -> Value {
    let (onchain, channels) = ln.balances();
    json!({
        "nodeId": ln.node_id().to_string(),
        "onchainSats": onchain.to_sat().to_string(),
        "channelSats": channels.to_sat().to_string(),
    })
}
