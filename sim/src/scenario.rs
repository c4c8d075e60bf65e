//! Scenario files (TOML): how many devices of each kind, prices, rates, duration and faults.
//!
//! ```toml
//! name = "quick"
//! duration_secs = 40
//! seed = 7
//! [sellers]
//! count = 3
//! price = "1000"
//! [buyers]
//! count = 20
//! readings_per_sec = 4.0
//! [faults]
//! seller_restart_every_secs = 12
//! lost_response_rate = 0.02
//! ```

use serde::Deserialize;

/// The built-in scenario run by `m2m sim` and `m2m sim quick`: about a minute, every fault on.
pub const QUICK: &str = include_str!("../scenarios/quick.toml");

/// Devices that sell readings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sellers {
    /// How many.
    pub count: usize,
    /// Price per reading (atomic units of the test token, 6 decimals).
    pub price: u128,
    /// Claim a channel once this much is unclaimed (atomic units).
    pub claim_threshold: u128,
}

impl Default for Sellers {
    fn default() -> Self {
        Self {
            count: 2,
            price: 1_000,
            claim_threshold: 200_000,
        }
    }
}

/// Devices that buy readings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Buyers {
    /// How many.
    pub count: usize,
    /// Average readings each buyer fetches per second (exponential gaps).
    pub readings_per_sec: f64,
    /// Sellers each buyer deals with (a fixed random subset; 0 = all). Devices have a few
    /// regular suppliers, and each one costs a channel opening on chain.
    pub sellers_per_buyer: usize,
    /// Share of readings paid with `exact` (an on-chain transfer each) instead of a voucher.
    pub exact_share: f64,
    /// A new channel holds this many readings' worth.
    pub deposit_readings: u32,
    /// Test tokens a device owner tops each buyer up with (atomic units).
    pub top_up: u128,
    /// Per-peer hourly cap of each buyer's budget (atomic units).
    pub budget_per_peer_per_hour: u128,
}

impl Default for Buyers {
    fn default() -> Self {
        Self {
            count: 4,
            readings_per_sec: 2.0,
            sellers_per_buyer: 0,
            exact_share: 0.0,
            deposit_readings: 50,
            top_up: 50_000_000,
            budget_per_peer_per_hour: 10_000_000,
        }
    }
}

/// Connectivity hotspots and the devices roaming between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateways {
    /// Hotspots (0 = none).
    pub count: usize,
    /// Price of a minute (atomic units; × 1 s / 60 must be whole).
    pub price_per_minute: u128,
    /// Ticks per voucher (K).
    pub ticks_per_voucher: u32,
    /// Roaming clients.
    pub clients: usize,
    /// How long a client stays at one hotspot before payments stop and it moves on.
    pub session_secs: u64,
}

impl Default for Gateways {
    fn default() -> Self {
        Self {
            count: 0,
            price_per_minute: 60_000,
            ticks_per_voucher: 5,
            clients: 0,
            session_secs: 8,
        }
    }
}

/// Faults to inject.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Stop a random seller and restart it from its store this often (0 = never).
    pub seller_restart_every_secs: u64,
    /// How long a stopped seller stays down.
    pub seller_down_ms: u64,
    /// Share of connections whose response is dropped after the seller processed the request.
    pub lost_response_rate: f64,
    /// Delay added to every connection through the fault proxy (milliseconds).
    pub delay_ms: u64,
    /// Sellers that report charging more than the price (buyers must block them).
    pub overcharging_sellers: usize,
    /// Buyers that send forged and replayed vouchers (sellers must refuse them).
    pub forging_buyers: usize,
    /// Buyers that start a timed withdrawal halfway (sellers must claim at once).
    pub withdrawing_buyers: usize,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seller_restart_every_secs: 0,
            seller_down_ms: 500,
            lost_response_rate: 0.0,
            delay_ms: 0,
            overcharging_sellers: 0,
            forging_buyers: 0,
            withdrawing_buyers: 0,
        }
    }
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// Length of the paying phase.
    pub duration_secs: u64,
    /// Seed of every random choice (which seller, gaps, faults).
    #[serde(default)]
    pub seed: u64,
    /// Sellers.
    #[serde(default)]
    pub sellers: Sellers,
    /// Buyers.
    #[serde(default)]
    pub buyers: Buyers,
    /// Faults.
    #[serde(default)]
    pub faults: Faults,
    /// Hotspots and roaming clients.
    #[serde(default)]
    pub gateways: Gateways,
    /// The Bitcoin-priced leg (regtest, Taproot channels).
    #[serde(default)]
    pub bitcoin: crate::bitcoin::BitcoinLeg,
    /// The Lightning leg (regtest, ldk-node, L402).
    #[serde(default)]
    pub lightning: crate::lightning::LightningLeg,
    /// The MQTT leg (mosquitto, priced topics, anvil).
    #[serde(default)]
    pub mqtt: crate::mqtt_leg::MqttLeg,
}

/// A scenario is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML for this schema.
    #[error("scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("scenario: {0}")]
    Invalid(String),
    /// The file could not be read.
    #[error("reading scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// `quick`, or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if name_or_path == "quick" {
            return Self::parse(QUICK);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|source| ScenarioError::Read {
            path: name_or_path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |why: &str| Err(ScenarioError::Invalid(why.to_owned()));
        if self.sellers.count == 0 || self.buyers.count == 0 {
            return invalid("at least one seller and one buyer");
        }
        if self.faults.overcharging_sellers >= self.sellers.count {
            return invalid("faults.overcharging_sellers must leave an honest seller");
        }
        if self.faults.forging_buyers + self.faults.withdrawing_buyers > self.buyers.count {
            return invalid("more faulty buyers than buyers");
        }
        if self.gateways.count > 0
            && (self.gateways.clients == 0 || self.gateways.session_secs == 0)
        {
            return invalid("gateways need clients and a positive session_secs");
        }
        let btc = &self.bitcoin;
        if (btc.sellers > 0) != (btc.buyers > 0) {
            return invalid("bitcoin: sellers and buyers both, or neither");
        }
        if btc.sellers > 0
            && (btc.price_sat == 0
                || btc.capacity_sat <= btc.price_sat
                || btc.top_up_sat <= btc.capacity_sat
                || !btc.readings_per_sec.is_finite()
                || btc.readings_per_sec <= 0.0)
        {
            return invalid("bitcoin: price < capacity < top-up, and a positive rate");
        }
        if let Err(reason) = self.lightning.check() {
            return invalid(reason);
        }
        if self.sellers.price == 0 || self.duration_secs == 0 {
            return invalid("price and duration must be positive");
        }
        if !(0.0..=1.0).contains(&self.buyers.exact_share)
            || !(0.0..=1.0).contains(&self.faults.lost_response_rate)
            || !self.buyers.readings_per_sec.is_finite()
            || self.buyers.readings_per_sec <= 0.0
        {
            return invalid("rates and shares out of range");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_scenario_parses() {
        let quick = Scenario::load("quick").unwrap();
        assert_eq!(quick.name, "quick");
        assert!(quick.faults.seller_restart_every_secs > 0);
    }

    #[test]
    fn bad_scenarios_are_refused() {
        assert!(
            Scenario::parse("name = \"x\"\nduration_secs = 5\n[sellers]\ncount = 0\n").is_err()
        );
        assert!(Scenario::parse("name = \"x\"\nduration_secs = 5\ntypo = 1\n").is_err());
        let overcharge = "name = \"x\"\nduration_secs = 5\n[sellers]\ncount = 1\n[faults]\novercharging_sellers = 1\n";
        assert!(Scenario::parse(overcharge).is_err());
    }
}
