//! The buyer: fetches a priced resource and answers its `402` by itself, inside a budget.
//!
//! [`Buyer::get`] requests the URL; on `402` it reads `PAYMENT-REQUIRED`, picks the first
//! offer it supports in its preference order (`batch-settlement`, then `exact`), checks the
//! budget, pays, and retries once with `PAYMENT-SIGNATURE`. For `batch-settlement` it keeps one
//! channel per seller/token in the store, deposits (EIP-3009, relayed by the seller) when the
//! channel runs low, persists each voucher before sending it, and checks the seller's
//! `PAYMENT-RESPONSE` before it signs the next one (x402 client rules). A seller that charges
//! more than it may is blocked. [`Buyer::pay_over`] runs the same payment over another carrier
//! (a priced MQTT topic).

mod batch;
mod carrier;
mod exact;

pub use carrier::{PaidAnswer, PaymentCarrier};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256};
use m2m_core::payer::PayerChannel;
use m2m_core::{Asset, ChannelId};
use reqwest::header::HeaderMap;

use crate::budget::{Budgets, BudgetsError};
use crate::channel_crypto::Secp256k1Verifier;
use crate::events::Leg;
use crate::evm::{SharedSigner, parse_eip155};
use crate::store::{ChannelStore, StoreError};
use crate::x402::codes;
use crate::x402::headers::{self, PAYMENT_REQUIRED, PAYMENT_RESPONSE};
use crate::x402::types::{
    PaymentPayload, PaymentRequired, PaymentRequirements, SettlementResponse, X402_VERSION,
};

/// How the buyer pays.
#[derive(Debug, Clone)]
pub struct BuyerOptions {
    /// Schemes in preference order.
    pub prefer: Vec<String>,
    /// A new or topped-up channel holds this many readings' worth (or the seller's
    /// `minDeposit` hint, if larger).
    pub deposit_readings: u32,
    /// Refuse any single reading priced above this (atomic units, any asset).
    pub max_price: Option<u128>,
    /// Largest single deposit (atomic units); `None` = no cap beyond the budget.
    pub max_deposit: Option<u128>,
    /// Spending caps, shared with the agent's other buyers and kept in the store; `None` =
    /// unlimited (not recommended on a device).
    pub budget: Option<Arc<Budgets>>,
    /// Channel salt (distinct salts give distinct channels with the same seller).
    pub salt: B256,
    /// Settlement contract the channels live in.
    pub settlement: Address,
    /// EIP-3009 deposit collector.
    pub erc3009_collector: Address,
    /// Longest wait for a seller's whole answer (connecting has its own 5 s limit).
    pub timeout: std::time::Duration,
    /// Sellers' pinned TLS keys (other https sellers are checked against the system's roots).
    pub trust: crate::tls::Trust,
}

impl Default for BuyerOptions {
    fn default() -> Self {
        Self {
            prefer: vec![
                crate::x402::batch::SCHEME.into(),
                crate::x402::exact::SCHEME.into(),
            ],
            deposit_readings: 100,
            max_price: None,
            max_deposit: None,
            budget: None,
            salt: B256::ZERO,
            settlement: m2m_contracts::CANONICAL_SETTLEMENT,
            erc3009_collector: m2m_contracts::CANONICAL_ERC3009_COLLECTOR,
            timeout: crate::http_client::RESPONSE_TIMEOUT,
            trust: crate::tls::Trust::default(),
        }
    }
}

/// Why a fetch failed. Nothing was paid unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum BuyerError {
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The seller's 402 or response headers are not valid x402.
    #[error("seller sent an invalid x402 message: {0}")]
    Protocol(String),
    /// No offer uses a scheme and network this buyer can pay with.
    #[error("no acceptable payment offer (offered: {0})")]
    NoAcceptableOffer(String),
    /// The price is above the buyer's per-reading limit.
    #[error("price {0} is above the per-reading limit")]
    PriceAboveLimit(u128),
    /// The budget refused the payment (or could not record it); nothing was paid.
    #[error("budget")]
    Budget(#[source] BudgetsError),
    /// The seller refused the payment (its x402 error code).
    #[error("seller refused the payment: {code}")]
    Refused {
        /// The error code.
        code: String,
    },
    /// The seller could not serve now (a non-402 failure such as 503 when its sensor has no
    /// reading); it accepted no payment.
    #[error("the seller answered {status}: {message}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// What its body said.
        message: String,
    },
    /// The seller reported charges it was not entitled to; it is now blocked.
    #[error("seller misbehaved and is blocked: {0}")]
    SellerMisbehaved(String),
    /// The channel rules refused (e.g. the deposit cannot cover the price).
    #[error("channel: {0}")]
    Channel(#[from] m2m_core::ChannelError),
    /// Persisting failed; nothing was sent.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet could not sign.
    #[error("signing: {0}")]
    Signer(#[from] m2m_wallet::SignerError),
}

/// A fetched resource.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// The seller's settlement, if a payment was made.
    pub settlement: Option<SettlementResponse>,
    /// The scheme paid with and the amount, if any.
    pub paid: Option<(String, u128)>,
}

/// Buyer counters.
#[derive(Debug, Default)]
pub struct BuyerStats {
    /// Readings paid with a voucher.
    pub vouchers: AtomicU64,
    /// Deposits made.
    pub deposits: AtomicU64,
    /// Readings paid with `exact`.
    pub exact: AtomicU64,
    /// Corrective 402s that resynchronised a channel.
    pub resyncs: AtomicU64,
}

/// A paying HTTP client bound to the device wallet and its channel store.
pub struct Buyer {
    signer: SharedSigner,
    store: Arc<ChannelStore>,
    http: reqwest::Client,
    verifier: Secp256k1Verifier,
    options: BuyerOptions,
    channels: Mutex<HashMap<ChannelId, Arc<tokio::sync::Mutex<PayerChannel>>>>,
    /// The last `402` terms seen per URL, to pay up front next time.
    known: Mutex<HashMap<String, Arc<PaymentRequired>>>,
    /// Channel configs per seller offer.
    contexts: Mutex<HashMap<String, Arc<batch::ChannelContext>>>,
    /// Counters.
    pub stats: BuyerStats,
    /// Channel openings go here once an agent attaches its bus.
    pub events: crate::events::EventLink,
}

impl std::fmt::Debug for Buyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buyer")
            .field("address", &self.signer.evm_address())
            .finish_non_exhaustive()
    }
}

impl Buyer {
    /// A buyer paying from `signer`, keeping its channels in `store` (which several buyers, e.g.
    /// one per wallet, may share: their writes then share fsyncs).
    pub fn new(
        signer: SharedSigner,
        store: impl Into<Arc<ChannelStore>>,
        options: BuyerOptions,
    ) -> Self {
        Self {
            signer,
            store: store.into(),
            http: crate::http_client::client_trusting(options.timeout, 1024, &options.trust),
            verifier: Secp256k1Verifier::default(),
            options,
            channels: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            contexts: Mutex::new(HashMap::new()),
            stats: BuyerStats::default(),
            events: crate::events::EventLink::default(),
        }
    }

    /// The channel store its payments are kept in.
    pub fn store(&self) -> &ChannelStore {
        &self.store
    }

    /// The sellers' pinned TLS keys this buyer checks.
    pub fn trust(&self) -> &crate::tls::Trust {
        &self.options.trust
    }

    /// Fetches `url`, paying a `402` if the budget allows.
    pub async fn get(&self, url: &str) -> Result<Fetched, BuyerError> {
        self.get_within(url, self.options.max_price).await
    }

    /// [`Self::get`], refusing any price above `max_price` (instead of the options' cap).
    pub async fn get_within(
        &self,
        url: &str,
        max_price: Option<u128>,
    ) -> Result<Fetched, BuyerError> {
        let carrier = carrier::HttpCarrier {
            http: &self.http,
            url,
        };
        if let Some(required) = self.cached_requirements(url) {
            // Pay up front with what this URL asked last time (saves the 402 round trip). If the
            // seller changed its terms, forget them and start over from a fresh 402.
            match self.pay_over(&carrier, &required, max_price).await {
                Err(BuyerError::Refused { code })
                    if code == codes::INVALID_PAYMENT_REQUIREMENTS
                        || code == codes::UNSUPPORTED_SCHEME =>
                {
                    self.forget_requirements(url);
                }
                Err(error) => {
                    self.forget_requirements(url);
                    return Err(error);
                }
                done => return done,
            }
        }
        let first = self.http.get(url).send().await?;
        if first.status().as_u16() != 402 {
            return unpaid(first).await;
        }
        let required = payment_required(first.headers(), None)?;
        let outcome = self.pay_over(&carrier, &required, max_price).await;
        if outcome.is_ok() {
            self.lock_known().insert(url.to_owned(), Arc::new(required));
        }
        outcome
    }

    /// Pays one request under `required` (a seller's `PAYMENT-REQUIRED`, however it came) and
    /// sends it by `carrier`, inside the budget and below `max_price`.
    pub async fn pay_over(
        &self,
        carrier: &impl PaymentCarrier,
        required: &PaymentRequired,
        max_price: Option<u128>,
    ) -> Result<Fetched, BuyerError> {
        self.pay_over_for(carrier, required, max_price, 1).await
    }

    /// [`Self::pay_over`] for `readings` readings at the offer's price in one payment (a
    /// tick stream's voucher covers the readings paid by ticks since the last one, and its own);
    /// `max_price` caps the price of one reading, the budget sees the whole payment.
    pub async fn pay_over_for(
        &self,
        carrier: &impl PaymentCarrier,
        required: &PaymentRequired,
        max_price: Option<u128>,
        readings: u32,
    ) -> Result<Fetched, BuyerError> {
        let offer = self.choose(required)?;
        let each: u128 = offer
            .amount
            .parse()
            .map_err(|_| BuyerError::Protocol(format!("amount {:?}", offer.amount)))?;
        if max_price.is_some_and(|cap| each > cap) {
            return Err(BuyerError::PriceAboveLimit(each));
        }
        let price = each
            .checked_mul(u128::from(readings.max(1)))
            .ok_or_else(|| BuyerError::Protocol("price overflow".into()))?;
        if readings > 1 && offer.scheme != crate::x402::batch::SCHEME {
            return Err(BuyerError::NoAcceptableOffer(offer.scheme.clone()));
        }
        let peer = payee_identity(offer);
        let recorded = self.reserve(&peer, offer, price)?;
        let outcome = if offer.scheme == crate::x402::batch::SCHEME {
            // The voucher's record is queued after the budget's and is durable before the
            // voucher leaves, so the budget's is too: no second wait.
            drop(recorded);
            self.pay_batch(carrier, required, offer, price).await
        } else {
            // `exact` writes nothing of its own before the transfer leaves.
            if let Some(recorded) = recorded {
                recorded
                    .durable()
                    .await
                    .map_err(|e| BuyerError::Budget(e.into()))?;
            }
            self.pay_exact(carrier, required, offer, price).await
        };
        if let Err(BuyerError::SellerMisbehaved(_)) = &outcome
            && let Some(budget) = &self.options.budget
        {
            budget
                .block(Leg::Evm, asset_of(offer)?, &peer)
                .await
                .map_err(BuyerError::Budget)?;
        }
        outcome
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PaymentRequired>>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached_requirements(&self, url: &str) -> Option<Arc<PaymentRequired>> {
        self.lock_known().get(url).cloned()
    }

    fn forget_requirements(&self, url: &str) {
        self.lock_known().remove(url);
    }

    /// The first offer in preference order that this buyer can pay.
    fn choose<'r>(
        &self,
        required: &'r PaymentRequired,
    ) -> Result<&'r PaymentRequirements, BuyerError> {
        self.options
            .prefer
            .iter()
            .find_map(|scheme| {
                required
                    .accepts
                    .iter()
                    .find(|offer| &offer.scheme == scheme && parse_eip155(&offer.network).is_some())
            })
            .ok_or_else(|| {
                let offered: Vec<_> = required
                    .accepts
                    .iter()
                    .map(|o| format!("{} on {}", o.scheme, o.network))
                    .collect();
                BuyerError::NoAcceptableOffer(offered.join(", "))
            })
    }

    /// Checks the budget and queues its record (see [`Budgets::reserve`]).
    fn reserve(
        &self,
        peer: &str,
        offer: &PaymentRequirements,
        price: u128,
    ) -> Result<Option<crate::store::Ticket>, BuyerError> {
        let Some(budget) = &self.options.budget else {
            return Ok(None);
        };
        budget
            .reserve(Leg::Evm, asset_of(offer)?, peer, price)
            .map_err(BuyerError::Budget)
    }

    /// The paid request's message: `offer` of `required`, paid with `payload`.
    fn paid_message(
        required: &PaymentRequired,
        offer: &PaymentRequirements,
        payload: serde_json::Value,
    ) -> PaymentPayload {
        PaymentPayload {
            x402_version: X402_VERSION,
            resource: Some(required.resource.clone()),
            accepted: offer.clone(),
            payload,
            extensions: None,
        }
    }

    /// The wallet's address.
    pub fn address(&self) -> Address {
        self.signer.evm_address()
    }
}

/// The `asset` of an EVM offer as the core names it.
fn asset_of(offer: &PaymentRequirements) -> Result<Asset, BuyerError> {
    let chain_id = parse_eip155(&offer.network)
        .ok_or_else(|| BuyerError::Protocol(format!("network {}", offer.network)))?;
    let token: Address = offer
        .asset
        .parse()
        .map_err(|_| BuyerError::Protocol(format!("asset {}", offer.asset)))?;
    Ok(Asset::Erc20 {
        chain_id,
        token: token.0.0,
    })
}

/// The budget's notion of a peer: who is paid (`network` + `payTo`), not where the request
/// went — one seller behind several ports or host names is one peer with one cap.
fn payee_identity(offer: &PaymentRequirements) -> String {
    format!("{}/{}", offer.network, offer.pay_to.to_ascii_lowercase())
}

/// A `402`'s requirements from its header (or, for v1-style servers, its JSON body).
fn payment_required(
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Result<PaymentRequired, BuyerError> {
    if let Some(value) = headers.get(PAYMENT_REQUIRED) {
        let text = value
            .to_str()
            .map_err(|_| BuyerError::Protocol("PAYMENT-REQUIRED is not text".into()))?;
        return headers::decode(text).map_err(|e| BuyerError::Protocol(e.to_string()));
    }
    match body {
        Some(body) => serde_json::from_slice(body).map_err(|e| BuyerError::Protocol(e.to_string())),
        None => Err(BuyerError::Protocol("402 without PAYMENT-REQUIRED".into())),
    }
}

/// The seller's `PAYMENT-RESPONSE`, if present.
fn settlement(headers: &HeaderMap) -> Result<Option<SettlementResponse>, BuyerError> {
    let Some(value) = headers.get(PAYMENT_RESPONSE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| BuyerError::Protocol("PAYMENT-RESPONSE is not text".into()))?;
    headers::decode(text)
        .map(Some)
        .map_err(|e| BuyerError::Protocol(e.to_string()))
}

/// The error code of a refusal.
fn refused(required: PaymentRequired) -> BuyerError {
    BuyerError::Refused {
        code: required.error.unwrap_or_else(|| "unspecified".into()),
    }
}

async fn unpaid(response: reqwest::Response) -> Result<Fetched, BuyerError> {
    Ok(Fetched {
        status: response.status().as_u16(),
        body: response.bytes().await?.to_vec(),
        settlement: None,
        paid: None,
    })
}

/// Counts one event.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
