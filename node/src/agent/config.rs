//! `agent.toml`: everything one device runs, declared in one file — what it sells on which leg,
//! which chains it talks to, and what it buys how often. Unknown keys and bad values are refused
//! with the field's name; every section is optional, so an agent can be a pure seller, a pure
//! buyer, or both.
//!
//! ```toml
//! [sell.evm]                  # the keys of seller.toml: x402 on an EVM chain
//! rpc_url = "http://127.0.0.1:8545"
//! network = "eip155:31337"
//! [[sell.evm.route]]
//! path = "/temperature"
//! price = "1000"
//! asset = "0x…"
//!
//! [bitcoind]                  # for the Bitcoin and Lightning legs
//! url = "http://127.0.0.1:18443/"
//! cookie = "/var/lib/bitcoind/regtest/.cookie"
//!
//! [lightning]                 # the embedded node (build feature `lightning`)
//! listen = "127.0.0.1:9735"
//!
//! [sell.btc]                  # readings priced in satoshi: btc-channel, and L402 when l402 = true
//! listen = "127.0.0.1:8403"
//! l402 = true
//! [[sell.btc.route]]
//! path = "/temperature"
//! price_sat = 25
//! [sell.btc.route.sensor]     # a real sensor (default: simulated temperature)
//! source = "file"             # file | command | http | simulated
//! path = "/sys/class/thermal/thermal_zone0/temp"
//! scale = 0.001
//!
//! [mqtt]                      # a broker (crate::mqtt::config): priced topics
//! host = "broker.local"
//! ca_file = "/etc/m2m/broker-ca.pem"
//! user = "device-17"
//! password_file = "/etc/m2m/mqtt-password"
//! [sell.mqtt]                 # sell.evm's routes as topics too, one sealed reading each 10 s
//! lightning_msat = 25000      # also sell each key for this over [lightning] (hold invoices)
//!
//! [[buy]]                     # a paid fetch every `every_secs` (url = "mqtt:<topic>": the
//!                             # newest reading on a priced topic, pay = evm or l402)
//! url = "http://seller.local:8402/temperature"
//! pay = "evm"                 # evm | btc | l402
//! every_secs = 10
//! max_price = 1000            # per reading: token units (evm), sat (btc, l402)
//!
//! [gateway]                   # connectivity by the minute (gateway.toml's keys); with
//! rpc_url = "http://127.0.0.1:8545"   # [sell.evm] on the same chain, one seller takes both
//! network = "eip155:31337"
//! asset = "0x…"
//! price_per_minute = 60000
//!
//! [[connect]]                 # buy connectivity: a metered session and a local CONNECT proxy
//! gateway = "http://hotspot.local:8118"
//! listen = "127.0.0.1:8119"
//!
//! [budget.evm]                # caps every buyer of the leg spends within (also btc, lightning)
//! per_request = 1000          # token units (evm), sat (btc, lightning)
//! per_payee_per_hour = 100000
//! per_day = 1000000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::budget::BudgetCaps;
use crate::events::Leg;
use crate::seller::SellerConfig;
use crate::seller::config::{ConfigError, invalid, load_file, parse_toml};
use crate::seller::sources::SensorConfig;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// What the device sells.
    #[serde(default)]
    pub sell: SellConfig,
    /// The bitcoind node of the Bitcoin and Lightning legs.
    pub bitcoind: Option<BitcoindConfig>,
    /// The embedded Lightning node.
    pub lightning: Option<LightningConfig>,
    /// Periodic paid fetches.
    #[serde(default, rename = "buy")]
    pub buys: Vec<BuyConfig>,
    /// Spending caps per leg (a leg without them pays within `max_price` alone).
    #[serde(default)]
    pub budget: BudgetConfig,
    /// Connectivity sold by the minute.
    pub gateway: Option<crate::gateway::GatewayConfig>,
    /// Connectivity bought by the minute, one session per entry.
    #[serde(default, rename = "connect")]
    pub connects: Vec<ConnectConfig>,
    /// The EVM chain, for a device that buys there without selling (balances).
    pub evm: Option<EvmConfig>,
    /// `[pins]`: TLS pins of sellers reached other than by a `[[buy]]` (`m2m get` through the
    /// agent): `"https://host:port" = "sha256//…"`.
    #[serde(default)]
    pub pins: std::collections::BTreeMap<String, crate::tls::Pin>,
    /// `[metrics]`: serve Prometheus metrics (`GET /metrics`).
    pub metrics: Option<MetricsConfig>,
    /// The MQTT broker (for `[sell.mqtt]` and `mqtt:` buys).
    pub mqtt: Option<crate::mqtt::config::BrokerConfig>,
}

/// `[metrics]`: where the agent's metrics are scraped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listening address (default loopback: balances are nobody else's business).
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// TLS on the listener: `auto` (TLS unless loopback), `on`, `off` (loopback only) or
    /// `plaintext-beyond-loopback`.
    #[serde(default)]
    pub tls: crate::tls::TlsMode,
    /// Serve the dashboard (`/dashboard`, behind the token `m2m dashboard` prints) beside the
    /// metrics (default on).
    #[serde(default = "yes")]
    pub dashboard: bool,
}

fn yes() -> bool {
    true
}

/// `[evm]`: where the device's EVM balances are read when it runs no EVM seller or gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmConfig {
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The settlement contract (default: the canonical deployment).
    #[serde(default)]
    pub settlement: Option<alloy::primitives::Address>,
    /// Tokens to show beyond those of the routes and channels.
    #[serde(default)]
    pub tokens: Vec<alloy::primitives::Address>,
}

/// A metered session with a gateway, paid on the EVM leg.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// The gateway, `https://host:port` (or `http://` on loopback).
    pub gateway: String,
    /// The gateway's TLS pin (`sha256//…`, as its `m2m address` prints).
    #[serde(default)]
    pub pin: Option<crate::tls::Pin>,
    /// Where applications find the local CONNECT proxy.
    #[serde(default = "default_connect_listen")]
    pub listen: SocketAddr,
}

fn default_connect_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8119))
}

/// `[budget.evm]`, `[budget.btc]`, `[budget.lightning]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// EVM caps, in the token's atomic units.
    pub evm: Option<BudgetCaps>,
    /// Bitcoin channel caps, in satoshi.
    pub btc: Option<BudgetCaps>,
    /// Lightning caps, in satoshi.
    pub lightning: Option<BudgetCaps>,
}

impl BudgetConfig {
    /// Each capped leg and its caps.
    pub fn caps(&self) -> Vec<(Leg, BudgetCaps)> {
        [
            (Leg::Evm, self.evm),
            (Leg::Btc, self.btc),
            (Leg::Lightning, self.lightning),
        ]
        .into_iter()
        .filter_map(|(leg, caps)| Some((leg, caps?)))
        .collect()
    }
}

/// The sellers, one per leg.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellConfig {
    /// Readings over x402 on an EVM chain (`seller.toml`'s keys).
    pub evm: Option<SellerConfig>,
    /// Readings priced in satoshi.
    pub btc: Option<BtcSellConfig>,
    /// `[sell.evm]`'s routes also sold on priced MQTT topics.
    pub mqtt: Option<crate::mqtt::config::MqttSellConfig>,
}

/// Readings sold for satoshi over HTTP 402 (`btc-channel`), and over L402 if asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtcSellConfig {
    /// Listening address.
    #[serde(default = "default_btc_listen")]
    pub listen: SocketAddr,
    /// TLS on the listener: `auto` (TLS unless loopback), `on`, `off` (loopback only) or
    /// `plaintext-beyond-loopback`.
    #[serde(default)]
    pub tls: crate::tls::TlsMode,
    /// Confirmations a channel's funding needs before it is paid on.
    #[serde(default = "default_confirmations")]
    pub min_confirmations: u32,
    /// Also sell every route over L402 from the device's Lightning node.
    #[serde(default)]
    pub l402: bool,
    /// The price list.
    #[serde(rename = "route")]
    pub routes: Vec<BtcRouteConfig>,
    /// Server limits (as for `[sell.evm.limits]`).
    #[serde(default)]
    pub limits: crate::seller::config::LimitsConfig,
}

/// One route priced in satoshi.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtcRouteConfig {
    /// The path, e.g. `/temperature`.
    pub path: String,
    /// Price per reading (sat).
    pub price_sat: u64,
    /// Where readings come from: a simulated kind (`"temperature"`) or a source table.
    #[serde(default)]
    pub sensor: SensorConfig,
}

/// How to reach bitcoind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoindConfig {
    /// JSON-RPC endpoint.
    pub url: String,
    /// Cookie file (the usual local authentication).
    pub cookie: Option<PathBuf>,
    /// RPC user, with the password in `password_file` (first line).
    pub user: Option<String>,
    /// File holding the RPC password.
    pub password_file: Option<PathBuf>,
    /// Fee rate of the device's transactions (sat/vB).
    #[serde(default = "default_fee_rate")]
    pub fee_rate_sat_vb: u64,
}

/// The embedded Lightning node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightningConfig {
    /// P2P listening address.
    #[serde(default = "default_ln_listen")]
    pub listen: SocketAddr,
    /// Node alias.
    #[serde(default)]
    pub alias: Option<String>,
    /// Node ids (hex) whose channels need no on-chain reserve here (a hub or LSP).
    #[serde(default)]
    pub trusted_peers: Vec<String>,
}

/// Which leg pays a buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuyLeg {
    /// x402 on an EVM chain (a channel, else `exact`).
    Evm,
    /// A Bitcoin Taproot channel (`btc-channel`).
    Btc,
    /// Lightning (L402).
    L402,
}

/// A paid fetch repeated for as long as the agent runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyConfig {
    /// The resource.
    pub url: String,
    /// The leg that pays.
    pub pay: BuyLeg,
    /// Seconds between fetches.
    #[serde(default = "default_every")]
    pub every_secs: u64,
    /// Highest price per reading: token units (evm), satoshi (btc, l402).
    pub max_price: u128,
    /// Largest single EVM deposit (token units).
    #[serde(default)]
    pub max_deposit: Option<u128>,
    /// Capacity of a new Bitcoin channel (sat).
    #[serde(default = "default_capacity")]
    pub capacity_sat: u64,
    /// The seller's TLS pin (`sha256//…`, as its `m2m address` prints); without one an https
    /// seller is checked against the system's roots.
    #[serde(default)]
    pub pin: Option<crate::tls::Pin>,
    /// On an `mqtt:` topic that offers tick streams: pay K readings in K with one hash-chain
    /// tick each, a voucher between (at most K readings on credit).
    #[serde(default)]
    pub ticks: bool,
}

fn default_btc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8403))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_ln_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9735))
}
fn default_confirmations() -> u32 {
    1
}
fn default_fee_rate() -> u64 {
    2
}
fn default_every() -> u64 {
    10
}
fn default_capacity() -> u64 {
    100_000
}

impl AgentConfig {
    /// Where EVM balances are read: `[evm]`, else the EVM seller's or the gateway's chain; the
    /// tokens of every section that names one.
    pub fn evm_endpoint(&self) -> Option<crate::balances::EvmEndpoint> {
        let seller = self.sell.evm.as_ref();
        let rpc_url = self
            .evm
            .as_ref()
            .map(|evm| evm.rpc_url.clone())
            .or_else(|| seller.map(|s| s.rpc_url.clone()))
            .or_else(|| self.gateway.as_ref().map(|g| g.rpc_url.clone()))?;
        let settlement = self
            .evm
            .as_ref()
            .and_then(|evm| evm.settlement)
            .or_else(|| seller.map(|s| s.settlement))
            .unwrap_or(m2m_contracts::CANONICAL_SETTLEMENT);
        let mut tokens: Vec<_> = self.evm.iter().flat_map(|evm| evm.tokens.clone()).collect();
        tokens.extend(
            seller
                .into_iter()
                .flat_map(|s| s.routes.iter().map(|r| r.asset)),
        );
        tokens.extend(self.gateway.iter().map(|g| g.asset));
        Some(crate::balances::EvmEndpoint {
            rpc_url,
            settlement,
            tokens,
        })
    }

    /// The pins of every `[[buy]]` and `[[connect]]`, as one trust for the agent's buyers.
    pub fn trust(&self) -> Result<crate::tls::Trust, ConfigError> {
        let mut trust = crate::tls::Trust::default();
        let buys = self.buys.iter().enumerate();
        let buys = buys.map(|(i, b)| (format!("buy[{i}].pin"), &b.url, b.pin));
        let connects = self.connects.iter().enumerate();
        let connects = connects.map(|(i, c)| (format!("connect[{i}].pin"), &c.gateway, c.pin));
        let listed = self
            .pins
            .iter()
            .map(|(url, pin)| (format!("pins.{url:?}"), url, Some(*pin)));
        for (field, url, pin) in buys.chain(connects).chain(listed) {
            if let Some(pin) = pin {
                trust
                    .pin(url, pin)
                    .map_err(|e| invalid(field, e.to_string()))?;
            }
        }
        Ok(trust)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_file(path, Self::parse)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml(text, "agent config")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and the sections each one needs; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(evm) = &self.sell.evm {
            evm.validate().map_err(|error| match error {
                ConfigError::Invalid { field, reason } => {
                    invalid(format!("sell.evm.{field}"), reason)
                }
                other => other,
            })?;
        }
        if let Some(btc) = &self.sell.btc {
            if self.bitcoind.is_none() {
                return Err(invalid("sell.btc", "needs a [bitcoind] section"));
            }
            if btc.l402 && self.lightning.is_none() {
                return Err(invalid("sell.btc.l402", "needs a [lightning] section"));
            }
            if btc.routes.is_empty() {
                return Err(invalid("sell.btc.route", "at least one [[sell.btc.route]]"));
            }
            for (index, route) in btc.routes.iter().enumerate() {
                if !route.path.starts_with('/') || route.path.contains(['?', '#', ' ']) {
                    return Err(invalid(
                        format!("sell.btc.route[{index}].path"),
                        "must be a plain path starting with /",
                    ));
                }
                if route.price_sat == 0 {
                    return Err(invalid(
                        format!("sell.btc.route[{index}].price_sat"),
                        "must be positive",
                    ));
                }
            }
        }
        if let Some(bitcoind) = &self.bitcoind
            && bitcoind.cookie.is_none()
            && (bitcoind.user.is_none() || bitcoind.password_file.is_none())
        {
            return Err(invalid(
                "bitcoind",
                "say how to authenticate: cookie, or user and password_file",
            ));
        }
        if self.lightning.is_some() && self.bitcoind.is_none() {
            return Err(invalid(
                "lightning",
                "needs a [bitcoind] section (its chain source)",
            ));
        }
        if let Some(gateway) = &self.gateway {
            gateway
                .check()
                .map_err(|reason| invalid("gateway", reason))?;
            if let Some(evm) = &self.sell.evm
                && (evm.rpc_url != gateway.rpc_url || evm.network != gateway.network)
            {
                return Err(invalid(
                    "gateway",
                    "rpc_url and network must be sell.evm's (one seller takes both)",
                ));
            }
        }
        for (index, connect) in self.connects.iter().enumerate() {
            if !(connect.gateway.starts_with("http://") || connect.gateway.starts_with("https://"))
            {
                return Err(invalid(
                    format!("connect[{index}].gateway"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        self.trust()?;
        for (leg, caps) in self.budget.caps() {
            if let Err(field) = caps.check() {
                let leg = crate::budget::leg_name(leg);
                return Err(invalid(format!("budget.{leg}.{field}"), "must be positive"));
            }
        }
        if let Some(mqtt) = &self.sell.mqtt {
            if self.sell.evm.is_none() {
                return Err(invalid(
                    "sell.mqtt",
                    "needs [sell.evm] (its routes are the topics)",
                ));
            }
            if self.mqtt.is_none() {
                return Err(invalid("sell.mqtt", "needs an [mqtt] section (the broker)"));
            }
            if mqtt.publish_every_secs == 0
                || mqtt.keys_on_sale == 0
                || mqtt.ticks_per_voucher == Some(0)
                || mqtt.lightning_msat == Some(0)
            {
                return Err(invalid(
                    "sell.mqtt",
                    "publish_every_secs, keys_on_sale, ticks_per_voucher and lightning_msat must be positive",
                ));
            }
            if mqtt.lightning_msat.is_some() && self.lightning.is_none() {
                return Err(invalid(
                    "sell.mqtt.lightning_msat",
                    "needs a [lightning] node",
                ));
            }
        }
        for (index, buy) in self.buys.iter().enumerate() {
            let field = |name: &str| format!("buy[{index}].{name}");
            if let Some(topic) = buy.url.strip_prefix(crate::mqtt::config::TOPIC_URL_PREFIX) {
                if self.mqtt.is_none() {
                    return Err(invalid(
                        field("url"),
                        "an mqtt: topic needs an [mqtt] section",
                    ));
                }
                if buy.pay == BuyLeg::Btc {
                    return Err(invalid(
                        field("pay"),
                        "priced topics are paid on the evm leg or over lightning (l402)",
                    ));
                }
                if buy.pay == BuyLeg::L402 && (buy.ticks || self.lightning.is_none()) {
                    return Err(invalid(
                        field("pay"),
                        "l402 on a topic needs a [lightning] node, and pays no ticks",
                    ));
                }
                if topic.is_empty() || topic.contains(['+', '#']) || topic.starts_with('/') {
                    return Err(invalid(field("url"), "mqtt: needs one topic, no wildcards"));
                }
            } else if buy.ticks {
                return Err(invalid(field("ticks"), "ticks are for mqtt: topics"));
            } else if !(buy.url.starts_with("http://") || buy.url.starts_with("https://")) {
                return Err(invalid(
                    field("url"),
                    "must be an http:// or https:// URL, or mqtt:<topic>",
                ));
            }
            if buy.every_secs == 0 {
                return Err(invalid(field("every_secs"), "must be positive"));
            }
            if buy.max_price == 0 {
                return Err(invalid(field("max_price"), "must be positive"));
            }
            match buy.pay {
                BuyLeg::Btc if self.bitcoind.is_none() => {
                    return Err(invalid(field("pay"), "btc needs a [bitcoind] section"));
                }
                BuyLeg::L402 if self.lightning.is_none() => {
                    return Err(invalid(field("pay"), "l402 needs a [lightning] section"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        AgentConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_file_is_an_idle_agent() {
        let config = AgentConfig::parse("").unwrap();
        assert!(config.sell.evm.is_none() && config.buys.is_empty());
    }

    #[test]
    fn pins_are_checked_where_they_are_written() {
        let pin_a = crate::tls::Pin([1; 32]).to_string();
        let pin_b = crate::tls::Pin([2; 32]).to_string();
        let buy = |url: &str, pin: &str| {
            format!("[[buy]]\nurl = \"{url}\"\npay = \"evm\"\nmax_price = 1\npin = \"{pin}\"\n")
        };
        let one = buy("https://10.0.0.5:8402/t", &pin_a);
        let config = AgentConfig::parse(&format!(
            "{one}[pins]\n\"https://10.0.0.5:9\" = \"{pin_a}\"\n"
        ));
        assert!(config.unwrap().trust().is_ok());
        let clash = format!("{one}{}", buy("https://10.0.0.5:1/", &pin_b));
        assert!(
            error_of(&clash).contains("buy[1].pin"),
            "{}",
            error_of(&clash)
        );
        assert!(error_of(&buy("http://10.0.0.5/", &pin_a)).contains("https"));
        assert!(error_of(&buy("https://10.0.0.5/", "sha256//short")).contains("pin"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_field() {
        assert!(error_of("[sell]\nsolana = 1\n").contains("solana"));
        assert!(error_of("colour = \"red\"\n").contains("colour"));
        let buy = "[[buy]]\nurl = \"http://x/t\"\npay = \"evm\"\nmax_price = 0\n";
        assert!(error_of(buy).contains("buy[0].max_price"));
        let buy = "[[buy]]\nurl = \"ftp://x/t\"\npay = \"evm\"\nmax_price = 5\n";
        assert!(error_of(buy).contains("buy[0].url"));
        let buy = "[[buy]]\nurl = \"http://x/t\"\npay = \"zcash\"\nmax_price = 5\n";
        assert!(error_of(buy).contains("zcash"));
        let budget = "[budget.btc]\nper_request = 5\nper_payee_per_hour = 0\nper_day = 9\n";
        assert!(error_of(budget).contains("budget.btc.per_payee_per_hour"));
        assert!(error_of("[budget.btc]\nper_request = 5\n").contains("per_payee_per_hour"));
        assert!(error_of("[budget.solana]\n").contains("solana"));
        let both = "[budget.evm]\nper_request = 1\nper_payee_per_hour = 2\nper_day = 3\n\
                    [budget.lightning]\nper_request = 4\nper_payee_per_hour = 5\nper_day = 6\n";
        let caps = AgentConfig::parse(both).unwrap().budget.caps();
        assert_eq!(
            caps.iter().map(|(leg, _)| *leg).collect::<Vec<_>>(),
            [Leg::Evm, Leg::Lightning]
        );
    }

    #[test]
    fn legs_need_their_chains() {
        let btc = "[sell.btc]\n[[sell.btc.route]]\npath = \"/t\"\nprice_sat = 5\n";
        assert!(error_of(btc).contains("sell.btc: needs a [bitcoind]"));
        let l402 = "[[buy]]\nurl = \"http://x/t\"\npay = \"l402\"\nmax_price = 5\n";
        assert!(error_of(l402).contains("l402 needs a [lightning]"));
        let bitcoind = "[bitcoind]\nurl = \"http://127.0.0.1:18443/\"\n";
        assert!(error_of(bitcoind).contains("cookie, or user and password_file"));
    }

    #[test]
    fn the_evm_seller_is_checked_with_its_own_rules() {
        let evm = "[sell.evm]\nrpc_url = \"http://127.0.0.1:8545\"\nnetwork = \"eip155:31337\"\n";
        assert!(error_of(evm).contains("route"), "{}", error_of(evm));
        let full = format!(
            "{evm}[[sell.evm.route]]\npath = \"/t\"\nprice = \"0\"\nasset = \"0x0000000000000000000000000000000000000001\"\n"
        );
        assert!(error_of(&full).contains("sell.evm.route[0].price"));
    }

    #[test]
    fn priced_topics_need_their_broker_and_seller() {
        assert!(error_of("[sell.mqtt]\n").contains("needs [sell.evm]"));
        let broker =
            "[mqtt]\nhost = \"b\"\nca_file = \"/ca\"\nuser = \"u\"\npassword_file = \"/p\"\n";
        let buy = |url: &str, pay: &str| {
            format!("[[buy]]\nurl = \"{url}\"\npay = \"{pay}\"\nmax_price = 5\n")
        };
        assert!(error_of(&buy("mqtt:a/b", "evm")).contains("needs an [mqtt] section"));
        assert!(error_of(&format!("{broker}{}", buy("mqtt:a/#", "evm"))).contains("no wildcards"));
        assert!(error_of(&format!("{broker}{}", buy("mqtt:a/b", "btc"))).contains("evm leg"));
        assert!(
            error_of(&format!("{broker}{}", buy("mqtt:a/b", "l402"))).contains("[lightning] node")
        );
        let config = AgentConfig::parse(&format!("{broker}{}", buy("mqtt:a/b", "evm"))).unwrap();
        assert_eq!(config.mqtt.unwrap().port, 8883);
        assert!(
            error_of(&format!("{broker}[sell.mqtt]\nencrypt = [\"price\"]\n")).contains("price")
        );
        let http_ticks = format!("{}ticks = true\n", buy("http://x/t", "evm"));
        assert!(error_of(&http_ticks).contains("ticks are for mqtt"));
    }
}
