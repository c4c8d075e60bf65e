//! `m2m-node`: the agent shell around the sans-IO core.
//!
//! - [`agent`]: the device agent — one front door (`Agent::builder()`) over every leg.
//! - [`balances`]: what the device holds on each leg.
//! - [`datadir`]: the device's data directory, held under an exclusive lock.
//! - [`btc`]: bitcoind RPC, the on-chain wallet, Taproot script channels.
//! - [`tools`]: locating and provisioning the local chains and compilers (anvil, forge, cast,
//!   solc-js, bitcoind), pinned and cached per user.
//! - [`store`]: the channel store on redb, with group commit.
//! - [`sessions`]: payer and payee channels bound to the store (persist before release/serve),
//!   for synchronous callers.
//! - [`channel_crypto`]: voucher signing (device wallet) and checking (libsecp256k1).
//! - [`x402`]: x402 v2 messages, batch-settlement and exact payloads, header codec, error codes.
//! - [`events`]: typed agent events (payments received and sent, claims) on a broadcast bus.
//! - [`evm`]: the device wallet as a transaction signer; the settlement and token contracts.
//! - [`seller`]: `m2m serve` — priced readings behind HTTP 402.
//! - [`budget`]: spending caps per leg and payee, persisted so a restart keeps the same windows.
//! - [`buyer`]: `m2m get` — pays 402s by itself, inside a budget.
//! - [`gateway`]: `m2m gateway` / `m2m connect` — connectivity sold by the minute.
//! - [`ledger`]: every channel of the device (each leg, either side), read from the store.
//! - [`metrics`]: the agent's Prometheus metrics (OpenMetrics text, `GET /metrics`).
//! - [`mqtt`]: the device as an MQTT 5 client over TLS (priced topics, issue 17).
//! - [`xmpp`]: the device and its owner as XMPP clients over TLS (owner mode, issue 18).
//! - [`l402_wire`]: L402 macaroons and headers (pure; the issuer and client are in `ln`).
//! - `ln` (feature `lightning`): the embedded ldk-node.
//! - [`shutdown`]: SIGINT and SIGTERM, handled alike by every long-running command.
//! - [`tls`]: the device's TLS identity (derived from the seed), server TLS, buyers' pins.
//! - [`http_client`]: the HTTP clients of every outgoing call (connect and response timeouts).
//! - [`cli`]: the `m2m` command line.
//!
//! This is the only crate with a runtime and IO; the channel logic lives in `m2m-core`.

pub mod agent;
pub mod balances;
pub mod btc;
pub mod budget;
pub mod buyer;
pub mod channel_crypto;
pub mod cli;
pub mod datadir;
pub mod events;
pub mod evm;
pub mod gateway;
pub mod http_client;
pub mod l402_wire;
pub mod ledger;
#[cfg(feature = "lightning")]
pub mod ln;
pub mod metrics;
pub mod mqtt;
pub mod seller;
pub mod sessions;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod tools;
pub mod x402;
pub mod xmpp;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
