//! The Lightning leg of a run: a regtest bitcoind, a hub node (the users' wallet and the
//! devices' channel partner), buyer devices topped up over Lightning through the unified BIP-21
//! request each shows, and seller devices selling readings over L402, paid through the hub.
//!
//! The hub opens one private channel to every device and forwards into them (LDK does that only
//! for an LSP-like node: `LnConfig::forward_to_private_channels`), so sellers' invoices carry
//! route hints through the hub and no gossip is needed. Each buyer shows a top-up request; its
//! owner's wallet (the hub) reads the invoice from it and pays. Buyers fetch readings at a
//! Poisson rate, each paid by an L402 invoice routed buyer → hub → seller. The check, to the millisatoshi: every seller received exactly its served
//! readings × price; buyers sent exactly what sellers received; each buyer's balance is its
//! top-up less what it sent and the hub's routing fees.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimError;

/// The `[lightning]` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LightningLeg {
    /// Sellers selling readings over L402 (0: no Lightning leg).
    pub sellers: usize,
    /// Buyers paying them.
    pub buyers: usize,
    /// Price per reading, satoshi.
    pub price_sat: u64,
    /// Average readings per buyer per second.
    pub readings_per_sec: f64,
    /// Capacity of each hub → device channel, satoshi.
    pub channel_sat: u64,
    /// What each buyer's owner tops it up with over Lightning, satoshi.
    pub top_up_sat: u64,
}

impl Default for LightningLeg {
    fn default() -> Self {
        Self {
            sellers: 0,
            buyers: 0,
            price_sat: 10,
            readings_per_sec: 4.0,
            channel_sat: 1_000_000,
            top_up_sat: 100_000,
        }
    }
}

impl LightningLeg {
    /// Checks the section; `Err` names what is wrong.
    pub fn check(&self) -> Result<(), &'static str> {
        if (self.sellers > 0) != (self.buyers > 0) {
            return Err("lightning: sellers and buyers both, or neither");
        }
        // A device's side of a channel must stay above its reserve (1 % of the capacity).
        if self.sellers > 0
            && (self.price_sat == 0
                || self.top_up_sat <= self.price_sat + self.channel_sat / 100
                || self.top_up_sat >= self.channel_sat
                || !self.readings_per_sec.is_finite()
                || self.readings_per_sec <= 0.0)
        {
            return Err(
                "lightning: price + 1 % of the channel < top-up < channel, and a positive rate",
            );
        }
        Ok(())
    }
}

/// What the Lightning leg did, and whether it balanced.
#[derive(Debug, Clone, Serialize)]
pub struct LightningFigures {
    /// Nodes: the hub, sellers and buyers.
    pub nodes: usize,
    /// Top-ups paid over Lightning (one per buyer).
    pub top_ups: usize,
    /// Readings paid over L402.
    pub paid: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Paid readings per second over the paying phase.
    pub paid_per_sec: f64,
    /// Latency of paid requests, milliseconds (p50, p99): 402, payment, paid request.
    pub latency_ms: (f64, f64),
    /// Msat sellers received.
    pub sellers_received_msat: u64,
    /// Routing fees buyers paid the hub, msat.
    pub routing_fees_msat: u64,
    /// What the first failed request said.
    pub first_failure: Option<String>,
    /// Conservation violations (empty: every millisatoshi accounted for).
    pub violations: Vec<String>,
    /// Where every millisatoshi topped up ended.
    pub ledger: crate::events::Ledger,
    /// Each paid reading (for the report's plots).
    #[serde(skip)]
    pub timeline: crate::events::Timeline,
}

/// Runs the leg for `duration` (its paying phase). `None` if the scenario has no Lightning leg.
#[cfg(feature = "lightning")]
pub async fn run_leg(
    leg: LightningLeg,
    duration: Duration,
    seed: u64,
    dir: std::path::PathBuf,
) -> Result<Option<LightningFigures>, SimError> {
    if leg.sellers == 0 || leg.buyers == 0 {
        return Ok(None);
    }
    with_lightning::run(leg, duration, seed, dir)
        .await
        .map(Some)
}

/// Without the `lightning` feature a scenario with a Lightning leg cannot run.
#[cfg(not(feature = "lightning"))]
pub async fn run_leg(
    leg: LightningLeg,
    _duration: Duration,
    _seed: u64,
    _dir: std::path::PathBuf,
) -> Result<Option<LightningFigures>, SimError> {
    if leg.sellers == 0 || leg.buyers == 0 {
        return Ok(None);
    }
    Err(SimError::Setup(
        "the scenario has a [lightning] leg; this build has no Lightning (feature `lightning`)"
            .into(),
    ))
}

#[cfg(feature = "lightning")]
#[path = "lightning_leg.rs"]
mod with_lightning;
