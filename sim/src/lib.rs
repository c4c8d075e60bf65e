//! `m2m-sim`: runs a fleet of devices against a local chain and reports what happened.
//!
//! A run ([`run::run`]) starts anvil with the settlement contracts and a test token, creates the
//! devices of a [`scenario::Scenario`] (sellers with price lists, buyers with budgets, each with
//! its own wallet and store), tops the buyers up through EIP-681 requests their owner pays, and
//! lets the buyers fetch readings for the scenario's duration while faults are injected:
//! sellers restarted from their stores, responses lost after the seller persisted the payment,
//! an overcharging seller, a buyer sending forged and stale vouchers, a payer starting a timed
//! withdrawal. Then every seller claims, withdrawals complete, and [`check`] verifies
//! conservation of the token to the unit from the chain and the stores. [`report`] writes
//! `summary.md`, `summary.json`, SVG plots (`plots`: one series per leg, latency on a log axis,
//! where every unit ended) and `report.html` (`report_html`: all of it as one offline page).
//!
//! - [`scenario`]: the TOML scenario format and the built-in `quick` scenario.
//! - [`fleet`]: devices (restartable sellers, buyers).
//! - [`proxy`]: the fault-injecting TCP proxy in front of each seller.
//! - [`adversary`]: the overcharging seller and the forging buyer's attacks.
//! - [`events`]: per-request events and the figures derived from them.
//! - [`roaming`]: connectivity hotspots and roaming clients (pay per minute).
//! - [`bitcoin`]: the Bitcoin-priced leg (regtest bitcoind, Taproot channels, BIP-21 top-ups).
//! - [`lightning`]: the Lightning leg (a hub and devices on ldk-node, top-ups over Lightning,
//!   readings over L402; feature `lightning`).
//! - [`mqtt_leg`]: priced MQTT topics (mosquitto, sealed readings, keys bought by voucher, a
//!   broker restart, an unpaid subscriber).
//! - [`cli`]: `m2m sim`.

pub mod adversary;
pub mod bitcoin;
pub mod check;
pub mod cli;
pub mod events;
pub mod fleet;
pub mod lightning;
pub mod mqtt_leg;
mod plots;
pub mod proxy;
pub mod report;
mod report_html;
pub mod roaming;
pub mod run;
pub mod scenario;
mod summary;

use std::path::PathBuf;

/// A run could not be carried out (a failed check is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Starting the chain or a device failed.
    #[error("setup: {0}")]
    Setup(String),
    /// A JSON-RPC call failed.
    #[error("chain: {0}")]
    Rpc(#[source] alloy::transports::TransportError),
    /// A contract call failed.
    #[error("contract: {0}")]
    Contract(#[source] alloy::contract::Error),
    /// Writing the report failed.
    #[error("writing {0}: {1}")]
    Output(PathBuf, #[source] std::io::Error),
    /// Drawing a plot failed.
    #[error("plotting {0}: {1}")]
    Plot(PathBuf, String),
    /// SIGINT or SIGTERM stopped the run before its end.
    #[error("stopped by {0} before the end of the run")]
    Interrupted(&'static str),
    /// The scenario is unusable.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
}

/// Sends a transaction and waits until it is mined.
pub(crate) async fn confirm<P, D>(call: alloy::contract::CallBuilder<P, D>) -> Result<(), SimError>
where
    P: alloy::providers::Provider,
    D: alloy::contract::CallDecoder,
{
    call.send()
        .await
        .map_err(SimError::contract)?
        .get_receipt()
        .await
        .map_err(|e| SimError::Setup(e.to_string()))?;
    Ok(())
}

impl SimError {
    pub(crate) fn rpc(error: alloy::transports::TransportError) -> Self {
        SimError::Rpc(error)
    }

    pub(crate) fn contract(error: alloy::contract::Error) -> Self {
        SimError::Contract(error)
    }
}

/// Sorts latencies (ms) and returns their p50 and p99 (0 when there are none).
pub(crate) fn p50_p99(latencies: &mut [f64]) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (percentile(0.5), percentile(0.99))
}
