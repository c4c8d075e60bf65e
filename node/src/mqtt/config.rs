//! The agent's MQTT settings: the broker it meets (`[mqtt]`) and how it sells on priced topics
//! (`[sell.mqtt]`, over the routes of `[sell.evm]`). A buyer's `[[buy]]` entry names a topic as
//! `url = "mqtt:building1/floor1/room1/temperature"`.
//!
//! ```toml
//! [mqtt]
//! host = "broker.local"            # checked against the broker's certificate
//! port = 8883
//! ca_file = "/etc/m2m/broker-ca.pem"
//! user = "device-17"
//! password_file = "/etc/m2m/mqtt-password"   # first line; keep it mode 0600
//!
//! [sell.mqtt]
//! publish_every_secs = 10          # one sealed reading per topic this often
//! encrypt = ["value"]              # any of name, unit, time, value
//! keys_on_sale = 256               # readings whose keys can still be bought
//! ticks_per_voucher = 10           # optional: tick streams, K readings by tick between vouchers
//! ```
//!
//! A `[[buy]]` entry on a topic pays with ticks where the topic offers them when it says
//! `ticks = true`.

use std::path::{Path, PathBuf};

use m2m_core::senml::Mask;
use serde::Deserialize;

use super::MqttEndpoint;

/// The `url` prefix of a `[[buy]]` entry that buys on a priced topic.
pub const TOPIC_URL_PREFIX: &str = "mqtt:";

/// `[mqtt]`: the broker and this device's account on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Host name or address (the broker's certificate must name it).
    pub host: String,
    /// TLS port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The CA certificate(s) the broker's chain to, PEM.
    pub ca_file: PathBuf,
    /// The account.
    pub user: String,
    /// A file whose first line is the password.
    pub password_file: PathBuf,
}

fn default_port() -> u16 {
    8883
}

/// A file of the broker settings could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {}", path.display())]
pub struct BrokerFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn read(path: &Path) -> Result<String, BrokerFileError> {
    std::fs::read_to_string(path).map_err(|source| BrokerFileError {
        path: path.to_owned(),
        source,
    })
}

impl BrokerConfig {
    /// The endpoint, with the CA and the password read from their files.
    pub fn endpoint(&self) -> Result<MqttEndpoint, BrokerFileError> {
        let password = read(&self.password_file)?;
        Ok(MqttEndpoint {
            host: self.host.clone(),
            port: self.port,
            ca_pem: read(&self.ca_file)?,
            user: self.user.clone(),
            password: password.lines().next().unwrap_or_default().to_owned(),
        })
    }
}

/// A field of a reading that `[sell.mqtt].encrypt` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// The SenML name.
    Name,
    /// The unit.
    Unit,
    /// The time.
    Time,
    /// The value.
    Value,
}

/// `[sell.mqtt]`: the EVM routes also sold as priced topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSellConfig {
    /// Seconds between readings on each topic.
    #[serde(default = "default_every")]
    pub publish_every_secs: u64,
    /// The encrypted fields (the rest travel in clear).
    #[serde(default = "default_encrypt")]
    pub encrypt: Vec<Field>,
    /// How many recent readings' keys stay on sale.
    #[serde(default = "default_keys")]
    pub keys_on_sale: usize,
    /// Offer tick streams: K readings paid by one hash-chain tick each between vouchers.
    #[serde(default)]
    pub ticks_per_voucher: Option<u32>,
    /// Also sell each key over the agent's Lightning node for this many msat (hold invoices).
    #[serde(default)]
    pub lightning_msat: Option<u64>,
}

fn default_every() -> u64 {
    10
}
fn default_encrypt() -> Vec<Field> {
    vec![Field::Value]
}
fn default_keys() -> usize {
    256
}

impl MqttSellConfig {
    /// The mask of [`MqttSellConfig::encrypt`].
    pub fn mask(&self) -> Mask {
        let has = |field| self.encrypt.contains(&field);
        Mask {
            name: has(Field::Name),
            unit: has(Field::Unit),
            time: has(Field::Time),
            value: has(Field::Value),
        }
    }
}
