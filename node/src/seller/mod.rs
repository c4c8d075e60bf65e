//! The seller: priced sensor endpoints behind HTTP 402 (x402 v2), `m2m serve`.
//!
//! - [`config`]: `seller.toml` (price list, chain, limits).
//! - [`sensor`]: the reading-source trait, the simulated sensor and SenML bodies.
//! - [`sources`]: real sensors per route (file, command, HTTP upstream), sampled in the background.
//! - `accept`: one payment for one reading, whatever carried it (HTTP, MQTT): offer check,
//!   then the scheme.
//! - `batch`: the `batch-settlement` scheme — vouchers checked locally, persisted before serving,
//!   deposits relayed on chain, corrective 402s.
//! - `exact`: the `exact` scheme — one EIP-3009 transfer per reading, settled on chain by the
//!   seller itself before serving.
//! - `claimer`: claims and settles vouchers in batches, and at once when a payer starts a timed
//!   withdrawal.
//! - `http`: the axum router, facilitator endpoints and hardening (limits, timeouts, rate limit).

mod accept;
pub(crate) mod batch;
mod claimer;
pub mod config;
mod exact;
mod facilitator;
pub(crate) mod http;
mod limits;
pub mod sensor;
pub mod sources;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256};
use m2m_contracts::bindings::ChannelConfig;
use m2m_core::payee::{ClaimPolicy, PayeeChannel};
use m2m_core::{Asset, ChannelId, ChannelTerms, EvmAddress};
use serde_json::json;

use crate::channel_crypto::Secp256k1Verifier;
use crate::events::EventLink;
use crate::evm::{ChainError, SettlementClient, SharedSigner, TokenInfo};
use crate::store::{ChannelStore, StoreError};
use crate::x402::types::{PaymentRequired, PaymentRequirements, ResourceInfo, X402_VERSION};
pub use config::{Scheme, SellerConfig};
pub use http::{ServerHandle, serve, serve_router, serve_router_timed};
use sensor::{SensorError, SensorSource};

/// The seller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SellerError {
    /// The chain is unreachable or refused a read.
    #[error(transparent)]
    Chain(Box<ChainError>),
    /// The channel store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A saved channel could not be restored.
    #[error("restoring channel {id}: {reason}")]
    Restore {
        /// The channel.
        id: B256,
        /// Why.
        reason: String,
    },
    /// The configuration does not fit the chain.
    #[error("{0}")]
    Config(String),
    /// Listening failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<ChainError> for SellerError {
    fn from(error: ChainError) -> Self {
        SellerError::Chain(Box::new(error))
    }
}

/// A priced route, parsed.
#[derive(Debug, Clone)]
pub struct Route {
    /// The configuration.
    pub config: config::RouteConfig,
    /// Price per reading, atomic units.
    pub price: u128,
    /// What it accepts (built once: checksummed addresses cost a keccak each).
    offers: Vec<PaymentRequirements>,
    /// Where its readings come from.
    source: Arc<dyn SensorSource>,
}

/// One channel the seller is paid on: its on-chain config and the payee state machine.
#[derive(Debug)]
pub(crate) struct SellerChannel {
    pub(crate) config: ChannelConfig,
    pub(crate) payee: PayeeChannel,
}

/// One channel as the seller holds it (for audits and the simulator's conservation check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSummary {
    /// Channel id.
    pub id: B256,
    /// Payer.
    pub payer: Address,
    /// Token.
    pub token: Address,
    /// Deposit as last seen on chain.
    pub deposit: u128,
    /// Total charged for readings served.
    pub charged: u128,
    /// Total claimed on chain, as last seen.
    pub claimed: u128,
}

/// Running totals, for logs and the simulator.
#[derive(Debug, Default)]
pub struct SellerStats {
    /// Readings served against a voucher.
    pub batch_paid: AtomicU64,
    /// Readings served against an on-chain `exact` transfer.
    pub exact_paid: AtomicU64,
    /// Payments refused (402 with an error code).
    pub refused: AtomicU64,
    /// Claim transactions sent.
    pub claims: AtomicU64,
}

/// The seller's state, shared by every request.
pub struct Seller {
    config: SellerConfig,
    routes: HashMap<String, Route>,
    chain: SettlementClient,
    store: ChannelStore,
    verifier: Secp256k1Verifier,
    receiver: Address,
    receiver_authorizer: Address,
    tokens: HashMap<Address, TokenInfo>,
    channels: Mutex<HashMap<ChannelId, Arc<tokio::sync::Mutex<SellerChannel>>>>,
    /// `exact` authorizations being settled or settled by this process: (payer, nonce).
    exact_nonces: Mutex<HashSet<(Address, B256)>>,
    claim_policy: ClaimPolicy,
    /// Counters.
    pub stats: SellerStats,
    /// Payments received and claims confirmed go here once an agent attaches its bus.
    pub events: EventLink,
    /// Its requests' latency, once an agent attaches its metrics.
    pub requests: crate::metrics::RequestTiming,
}

impl std::fmt::Debug for Seller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seller")
            .field("receiver", &self.receiver)
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Seller {
    /// Connects to the chain, reads the tokens' EIP-712 names, starts the routes' sensors and
    /// restores saved channels. `sensor` serves the routes whose sensor is simulated (pass
    /// [`sensor::SimulatedSensor`], or a source of the embedder's own).
    pub async fn start(
        config: SellerConfig,
        signer: SharedSigner,
        store: ChannelStore,
        sensor: Arc<dyn SensorSource>,
    ) -> Result<Arc<Self>, SellerError> {
        config
            .validate()
            .map_err(|e| SellerError::Config(e.to_string()))?;
        let device = signer.evm_address();
        let chain = SettlementClient::connect(&config.rpc_url, signer, config.settlement).await?;
        if chain.chain_id() != config.chain_id() {
            return Err(SellerError::Config(format!(
                "network {} does not match the RPC endpoint's chain id {}",
                config.network,
                chain.chain_id()
            )));
        }
        let mut tokens = HashMap::new();
        let mut routes = HashMap::new();
        for route in &config.routes {
            if let std::collections::hash_map::Entry::Vacant(slot) = tokens.entry(route.asset) {
                slot.insert(chain.token_info(route.asset).await?);
            }
            let price = route.price.parse().unwrap_or_default(); // validated above
            let source = route.sensor.start(&format!("{device:#x}"), &sensor).await;
            routes.insert(
                route.path.clone(),
                Route {
                    config: route.clone(),
                    price,
                    offers: Vec::new(),
                    source,
                },
            );
        }
        let claim_policy = ClaimPolicy {
            threshold_units: config::threshold_units(&config.claim.threshold).unwrap_or(u128::MAX),
            max_interval_secs: config.claim.interval_secs,
        };
        let mut seller = Self {
            receiver: config.pay_to.unwrap_or(device),
            receiver_authorizer: device,
            routes,
            chain,
            store,
            verifier: Secp256k1Verifier::default(),
            tokens,
            channels: Mutex::new(HashMap::new()),
            exact_nonces: Mutex::new(HashSet::new()),
            claim_policy,
            stats: SellerStats::default(),
            events: EventLink::default(),
            requests: Default::default(),
            config,
        };
        let offers: Vec<(String, Vec<PaymentRequirements>)> = seller
            .routes
            .values()
            .map(|route| (route.config.path.clone(), seller.build_requirements(route)))
            .collect();
        for (path, list) in offers {
            if let Some(route) = seller.routes.get_mut(&path) {
                route.offers = list;
            }
        }
        seller.restore_channels()?;
        Ok(Arc::new(seller))
    }

    /// Loads every channel this seller was paid on from the store.
    fn restore_channels(&self) -> Result<(), SellerError> {
        let mut channels = self.lock_channels();
        for (id, terms) in self.store.all_terms()? {
            let restore_error = |reason: String| SellerError::Restore {
                id: B256::from(id.0),
                reason,
            };
            let config = decode_config(&terms).map_err(|e| restore_error(e.to_string()))?;
            let Some(record) = self.store.load_payee(&id)? else {
                continue; // terms saved, first record not yet: nothing was acknowledged
            };
            let payee = PayeeChannel::restore(self.terms_of(&config, id), record)
                .map_err(|e| restore_error(e.to_string()))?;
            channels.insert(
                id,
                Arc::new(tokio::sync::Mutex::new(SellerChannel { config, payee })),
            );
        }
        tracing::info!(channels = channels.len(), "restored payee channels");
        Ok(())
    }

    fn lock_channels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Arc<tokio::sync::Mutex<SellerChannel>>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The core's terms of a channel with `config`.
    fn terms_of(&self, config: &ChannelConfig, id: ChannelId) -> ChannelTerms {
        ChannelTerms {
            channel_id: id,
            asset: Asset::Erc20 {
                chain_id: self.chain.chain_id(),
                token: config.token.0.0,
            },
            domain_separator: self.chain.domain().separator().0,
            payer_authorizer: EvmAddress(config.payerAuthorizer.0.0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SellerConfig {
        &self.config
    }

    /// The route at `path`.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.get(path)
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Who is paid.
    pub fn receiver(&self) -> Address {
        self.receiver
    }

    /// The channel store its payments go to.
    pub fn store(&self) -> &ChannelStore {
        &self.store
    }

    /// The chain client.
    pub fn chain(&self) -> &SettlementClient {
        &self.chain
    }

    /// What a route accepts, one entry per scheme.
    pub fn requirements<'r>(&self, route: &'r Route) -> &'r [PaymentRequirements] {
        &route.offers
    }

    fn build_requirements(&self, route: &Route) -> Vec<PaymentRequirements> {
        let token = self.tokens.get(&route.config.asset);
        let (name, version) = token
            .map(|t| (t.name.as_str(), t.version.as_str()))
            .unwrap_or_default();
        route
            .config
            .schemes
            .iter()
            .map(|scheme| {
                let extra = match scheme {
                    Scheme::Exact => json!({ "name": name, "version": version }),
                    Scheme::BatchSettlement => json!({
                        "receiverAuthorizer": self.receiver_authorizer.to_checksum(None),
                        "withdrawDelay": self.config.withdraw_delay_secs,
                        "minDeposit": (route.price
                            .saturating_mul(u128::from(self.config.min_deposit_readings)))
                            .to_string(),
                        "name": name,
                        "version": version,
                    }),
                };
                PaymentRequirements {
                    scheme: scheme.as_str().into(),
                    network: self.config.network.clone(),
                    amount: route.price.to_string(),
                    asset: route.config.asset.to_checksum(None),
                    pay_to: self.receiver.to_checksum(None),
                    max_timeout_seconds: self.config.max_timeout_seconds,
                    extra: Some(extra),
                }
            })
            .collect()
    }

    /// The `402` body for `route` at `url`, with an error code when a payment was refused.
    pub fn payment_required(
        &self,
        route: &Route,
        url: &str,
        error: Option<&str>,
    ) -> PaymentRequired {
        PaymentRequired {
            x402_version: X402_VERSION,
            error: error.map(str::to_owned),
            resource: ResourceInfo {
                url: url.to_owned(),
                description: route.config.description.clone(),
                mime_type: Some("application/senml+json".into()),
            },
            accepts: self.requirements(route).to_vec(),
            extensions: None,
        }
    }

    /// A fresh reading for `route`, as SenML JSON bytes; an error when its sensor has none.
    pub fn reading(&self, route: &Route) -> Result<Vec<u8>, SensorError> {
        let pack = self.reading_records(route)?;
        Ok(serde_json::to_vec(&pack).unwrap_or_default())
    }

    /// A fresh reading for `route` as SenML records.
    pub fn reading_records(&self, route: &Route) -> Result<Vec<sensor::SenmlRecord>, SensorError> {
        route.source.read(route.config.sensor.kind)
    }

    /// Claims everything unclaimed now (used on shutdown and by tests).
    pub async fn claim_all(&self) -> Result<usize, ChainError> {
        claimer::claim_due(
            self,
            &ClaimPolicy {
                threshold_units: 1,
                max_interval_secs: 0,
            },
        )
        .await
    }

    /// The next claim pass after `check_secs`, forever; call from a spawned task.
    pub async fn run_claimer(self: Arc<Self>) {
        claimer::run(self).await;
    }

    /// Every channel this seller is paid on.
    pub async fn channel_summaries(&self) -> Vec<ChannelSummary> {
        let entries: Vec<_> = self.lock_channels().values().cloned().collect();
        let mut summaries = Vec::with_capacity(entries.len());
        for entry in entries {
            let channel = entry.lock().await;
            let record = channel.payee.record();
            summaries.push(ChannelSummary {
                id: B256::from(channel.payee.terms().channel_id.0),
                payer: channel.config.payer,
                token: channel.config.token,
                deposit: record.deposit_units,
                charged: record.charged_units,
                claimed: record.claimed_units,
            });
        }
        summaries
    }

    /// Counts paid readings in total.
    pub fn paid_readings(&self) -> u64 {
        self.stats.batch_paid.load(Ordering::Relaxed)
            + self.stats.exact_paid.load(Ordering::Relaxed)
    }
}

/// ABI encoding of a channel config, as stored in the terms table.
fn encode_config(config: &ChannelConfig) -> Vec<u8> {
    alloy::sol_types::SolValue::abi_encode(config)
}

fn decode_config(bytes: &[u8]) -> Result<ChannelConfig, alloy::sol_types::Error> {
    <ChannelConfig as alloy::sol_types::SolValue>::abi_decode(bytes)
}

use crate::now_secs;
