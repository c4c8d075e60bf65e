//! The node's everyday operations as the `m2m ln` commands and the agent's control socket both
//! run them, answering with the same JSON: info, a funding address, a channel open, an invoice,
//! a payment. One implementation, whether the command started the node itself or a running
//! agent holds it.

use std::net::SocketAddr;
use std::time::Duration;

use bitcoin::Amount;
use bitcoin::secp256k1::PublicKey;
use serde_json::{Value, json};

use super::{LnError, LnNode};

/// How long an open waits for its funding transaction to be negotiated and broadcast.
pub const FUNDING_WAIT: Duration = Duration::from_secs(60);
/// How long an invoice made here stays payable.
pub const INVOICE_EXPIRY_SECS: u32 = 3_600;

/// Node id, listening address, balances and channel counts (after a wallet sync).
pub async fn info(ln: &LnNode) -> Result<Value, LnError> {
    ln.sync().await?;
    let (onchain, lightning) = ln.balances();
    let channels = ln.channels();
    Ok(json!({
        "nodeId": ln.node_id().to_string(),
        "listen": ln.listen_address().to_string(),
        "onchainSats": onchain.to_sat(),
        "lightningSats": lightning.to_sat(),
        "channels": channels.len(),
        "usableChannels": channels.iter().filter(|c| c.is_usable).count(),
    }))
}

/// A new address of the node's on-chain wallet.
pub fn address(ln: &LnNode) -> Result<Value, LnError> {
    Ok(json!({ "address": ln.new_onchain_address()?.to_string() }))
}

/// Opens a channel of `sats` to `peer` (`NODE_ID@IP:PORT`), pushing `push_sats`, and waits
/// until its funding is broadcast.
pub async fn open(
    ln: &LnNode,
    peer: &str,
    sats: u64,
    push_sats: u64,
    announce: bool,
) -> Result<Value, LnError> {
    let (node, address) = parse_peer(peer)?;
    ln.sync().await?;
    let id = ln.open_channel(
        node,
        address,
        Amount::from_sat(sats),
        push_sats.saturating_mul(1_000),
        announce,
    )?;
    let funding = ln.wait_funding(id, FUNDING_WAIT).await?;
    Ok(json!({ "funding": funding.to_string(), "capacitySats": sats }))
}

/// An invoice for `amount_msat`.
pub fn invoice(ln: &LnNode, amount_msat: u64, description: &str) -> Result<Value, LnError> {
    let invoice = ln.invoice(amount_msat, description, INVOICE_EXPIRY_SECS)?;
    Ok(json!({ "invoice": invoice.to_string(), "amountMsat": amount_msat }))
}

/// Pays `invoice` and waits up to `timeout` for the outcome.
pub async fn pay(ln: &LnNode, invoice: &str, timeout: Duration) -> Result<Value, LnError> {
    let paid = ln.pay(invoice, timeout).await?;
    Ok(json!({
        "preimage": crate::x402::btc::hex(&paid.preimage),
        "feeMsat": paid.fee_msat,
    }))
}

/// Parses `NODE_ID@IP:PORT`.
pub fn parse_peer(text: &str) -> Result<(PublicKey, SocketAddr), LnError> {
    let usage = || LnError::Input(format!("peer {text:?} is not NODE_ID@IP:PORT"));
    let (id, address) = text.split_once('@').ok_or_else(usage)?;
    let id = id.parse().map_err(|_| usage())?;
    let address = address.parse().map_err(|_| usage())?;
    Ok((id, address))
}
