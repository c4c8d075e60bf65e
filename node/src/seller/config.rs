//! `seller.toml`: where to listen, which chain, and the price list.
//!
//! ```toml
//! listen = "127.0.0.1:8402"
//! rpc_url = "http://127.0.0.1:8545"
//! network = "eip155:31337"
//!
//! [[route]]
//! path = "/temperature"
//! price = "1000"                 # atomic units of `asset` per reading
//! asset = "0x…"                  # an EIP-3009 token (USDC-like)
//! schemes = ["batch-settlement", "exact"]
//! sensor = "temperature"        # simulated; a table names a real source (see `sources`)
//! ```
//!
//! Every field but the routes has a default; [`SellerConfig::validate`] turns mistakes into
//! errors that name the field.

use std::net::SocketAddr;
use std::path::Path;

use alloy::primitives::Address;
use serde::Deserialize;

use super::sources::SensorConfig;

/// A payment scheme a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Scheme {
    /// x402 `exact`: one EIP-3009 transfer per request, settled on chain before serving.
    #[serde(rename = "exact")]
    Exact,
    /// x402 `batch-settlement`: vouchers on an escrow channel, claimed in batches.
    #[serde(rename = "batch-settlement")]
    BatchSettlement,
}

impl Scheme {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Exact => "exact",
            Scheme::BatchSettlement => crate::x402::batch::SCHEME,
        }
    }
}

/// One priced endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// URL path, e.g. `/temperature`.
    pub path: String,
    /// Price per reading in the asset's atomic units (decimal string).
    pub price: String,
    /// The token paid in.
    pub asset: Address,
    /// Accepted schemes, in the order offered.
    #[serde(default = "default_schemes")]
    pub schemes: Vec<Scheme>,
    /// Shown to buyers.
    #[serde(default)]
    pub description: Option<String>,
    /// Where readings come from: a simulated kind (`"temperature"`) or a source table.
    #[serde(default)]
    pub sensor: SensorConfig,
}

/// When the background task claims vouchers on chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimConfig {
    /// Claim a channel once this much (atomic units) is charged but unclaimed.
    pub threshold: String,
    /// Claim anything unclaimed at least this often (seconds).
    pub interval_secs: u64,
    /// How often to look at channels and at the chain's withdrawal events (seconds).
    pub check_secs: u64,
    /// Claim everything unclaimed on a clean shutdown.
    pub on_shutdown: bool,
}

impl Default for ClaimConfig {
    fn default() -> Self {
        Self {
            threshold: "1000000".into(),
            interval_secs: 3600,
            check_secs: 5,
            on_shutdown: true,
        }
    }
}

/// Protection against hostile or broken clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A client must send its request head within this time (milliseconds).
    pub header_read_timeout_ms: u64,
    /// Largest request head (bytes; hyper's minimum is 8192).
    pub max_header_bytes: usize,
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Sustained requests per second per client address.
    pub rate_per_client: u32,
    /// Burst allowance per client address.
    pub burst_per_client: u32,
    /// Concurrent connections served.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 5_000,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 64 * 1024,
            rate_per_client: 50_000,
            burst_per_client: 100_000,
            max_connections: 4_096,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerConfig {
    /// Listening address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS on the listener: `auto` (TLS unless loopback), `on`, `off` (loopback only) or
    /// `plaintext-beyond-loopback`.
    #[serde(default)]
    pub tls: crate::tls::TlsMode,
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// CAIP-2 network, `eip155:<chain id>`.
    pub network: String,
    /// Settlement contract (default: the x402 canonical address).
    #[serde(default = "default_settlement")]
    pub settlement: Address,
    /// EIP-3009 deposit collector (default: the x402 canonical address).
    #[serde(default = "default_collector")]
    pub erc3009_collector: Address,
    /// Who is paid (default: this device's EVM address).
    #[serde(default)]
    pub pay_to: Option<Address>,
    /// Timed-withdrawal delay asked of channels (seconds).
    #[serde(default = "default_withdraw_delay")]
    pub withdraw_delay_secs: u64,
    /// `maxTimeoutSeconds` announced to clients.
    #[serde(default = "default_timeout")]
    pub max_timeout_seconds: u64,
    /// Deposit hint: at least this many readings' worth per channel.
    #[serde(default = "default_min_deposit_readings")]
    pub min_deposit_readings: u32,
    /// Offer `/verify`, `/settle`, `/supported` to other sellers (off by default: `/settle`
    /// spends this device's gas). Needs `facilitator_api_keys_sha256`.
    #[serde(default)]
    pub facilitator: bool,
    /// SHA-256 (hex) of each API key a facilitator caller may present as
    /// `Authorization: Bearer <key>`; only hashes are kept, so the file holds no usable key.
    #[serde(default)]
    pub facilitator_api_keys_sha256: Vec<String>,
    /// Claiming.
    #[serde(default)]
    pub claim: ClaimConfig,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The price list.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8402))
}
fn default_settlement() -> Address {
    m2m_contracts::CANONICAL_SETTLEMENT
}
fn default_collector() -> Address {
    m2m_contracts::CANONICAL_ERC3009_COLLECTOR
}
fn default_withdraw_delay() -> u64 {
    m2m_contracts::MIN_WITHDRAW_DELAY_SECS
}
fn default_timeout() -> u64 {
    60
}
fn default_min_deposit_readings() -> u32 {
    100
}
fn default_schemes() -> Vec<Scheme> {
    vec![Scheme::BatchSettlement, Scheme::Exact]
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause (with line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// A value refused, naming its field.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads a TOML configuration file with `parse`, naming the file in a syntax error.
pub(crate) fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|error| match error {
        ConfigError::Parse { source, .. } => ConfigError::Parse {
            path: shown,
            source,
        },
        other => other,
    })
}

/// Parses TOML text as `T` (`what` names it in a syntax error).
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: what.into(),
        source: Box::new(source),
    })
}

impl SellerConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_file(path, Self::parse)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml(text, "seller config")?;
        config.validate()?;
        Ok(config)
    }

    /// Whether `key` is one of the facilitator's API keys. Comparing hashes needs no constant
    /// time: a timing difference tells at most a prefix of a hash, which reveals no key.
    pub fn facilitator_key_allowed(&self, key: &str) -> bool {
        use bitcoin::hashes::{Hash, sha256};
        let presented = sha256::Hash::hash(key.as_bytes()).to_string();
        self.facilitator_api_keys_sha256
            .iter()
            .any(|hash| hash.eq_ignore_ascii_case(&presented))
    }

    /// The chain id named by `network`.
    pub fn chain_id(&self) -> u64 {
        crate::evm::parse_eip155(&self.network).unwrap_or_default()
    }

    /// Checks every value; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if crate::evm::parse_eip155(&self.network).is_none() {
            return Err(invalid(
                "network",
                "expected a CAIP-2 eip155:<chain id> name",
            ));
        }
        let delay = self.withdraw_delay_secs;
        if !(m2m_contracts::MIN_WITHDRAW_DELAY_SECS..=m2m_contracts::MAX_WITHDRAW_DELAY_SECS)
            .contains(&delay)
        {
            return Err(invalid("withdraw_delay_secs", "must be 900..=2592000"));
        }
        if self.max_timeout_seconds == 0 {
            return Err(invalid("max_timeout_seconds", "must be positive"));
        }
        if self.routes.is_empty() {
            return Err(invalid("route", "at least one [[route]] is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, route) in self.routes.iter().enumerate() {
            let field = |name: &str| format!("route[{index}].{name}");
            if !route.path.starts_with('/') || route.path.contains(['?', '#', ' ']) {
                return Err(invalid(
                    field("path"),
                    "must be a plain path starting with /",
                ));
            }
            if RESERVED_PATHS.contains(&route.path.as_str()) {
                return Err(invalid(field("path"), "is reserved for the facilitator"));
            }
            if !seen.insert(route.path.as_str()) {
                return Err(invalid(field("path"), "appears twice"));
            }
            match route.price.parse::<u128>() {
                Ok(0) | Err(_) => {
                    return Err(invalid(
                        field("price"),
                        "must be a positive integer of atomic units",
                    ));
                }
                Ok(_) => {}
            }
            if route.asset == Address::ZERO {
                return Err(invalid(field("asset"), "must be a token address"));
            }
            if route.schemes.is_empty() {
                return Err(invalid(field("schemes"), "name at least one scheme"));
            }
        }
        for (index, hash) in self.facilitator_api_keys_sha256.iter().enumerate() {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("facilitator_api_keys_sha256[{index}]"),
                    "must be 64 hex digits (printf %s \"$KEY\" | sha256sum)",
                ));
            }
        }
        if self.facilitator && self.facilitator_api_keys_sha256.is_empty() {
            return Err(invalid(
                "facilitator_api_keys_sha256",
                "name at least one key hash: an open /settle lets anyone spend this device's gas",
            ));
        }
        threshold_units(&self.claim.threshold)
            .ok_or_else(|| invalid("claim.threshold", "must be an integer of atomic units"))?;
        if self.claim.check_secs == 0 {
            return Err(invalid("claim.check_secs", "must be positive"));
        }
        let limits = &self.limits;
        if limits.max_header_bytes < 8192 {
            return Err(invalid("limits.max_header_bytes", "must be at least 8192"));
        }
        if limits.rate_per_client == 0
            || limits.burst_per_client == 0
            || limits.max_connections == 0
        {
            return Err(invalid(
                "limits",
                "rates and connection counts must be positive",
            ));
        }
        Ok(())
    }
}

/// Paths the seller itself answers.
pub const RESERVED_PATHS: [&str; 4] = ["/", "/verify", "/settle", "/supported"];

/// The claim threshold in atomic units.
pub fn threshold_units(text: &str) -> Option<u128> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        rpc_url = "http://127.0.0.1:8545"
        network = "eip155:31337"
        [[route]]
        path = "/temperature"
        price = "1000"
        asset = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    "#;

    #[test]
    fn a_minimal_file_gets_defaults() {
        let config = SellerConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.listen.port(), 8402);
        assert_eq!(config.chain_id(), 31337);
        assert_eq!(config.routes[0].schemes, default_schemes());
        assert_eq!(config.settlement, m2m_contracts::CANONICAL_SETTLEMENT);
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (MINIMAL.replace("\"1000\"", "\"0\""), "route[0].price"),
            (MINIMAL.replace("\"1000\"", "\"ten\""), "route[0].price"),
            (
                MINIMAL.replace("/temperature", "temperature"),
                "route[0].path",
            ),
            (MINIMAL.replace("/temperature", "/verify"), "route[0].path"),
            (MINIMAL.replace("eip155:31337", "bitcoin"), "network"),
            (
                format!("withdraw_delay_secs = 5\n{MINIMAL}"),
                "withdraw_delay_secs",
            ),
        ];
        for (text, field) in cases {
            let error = SellerConfig::parse(&text).unwrap_err().to_string();
            assert!(
                error.starts_with(field) || error.contains(field),
                "{field}: {error}"
            );
        }
        let unknown = SellerConfig::parse(&format!("{MINIMAL}\nprcie = 3")).unwrap_err();
        assert!(unknown.to_string().contains("prcie"), "{unknown}");
    }
}
