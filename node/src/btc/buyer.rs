//! The buyer side of `btc-channel`: pays readings priced in satoshi over Taproot channels it
//! opens from the device's on-chain wallet.
//!
//! First request to a seller: the 402's offer names the payee key and its rules; the buyer opens
//! a channel (funding from the BDK wallet, expiry and close fee inside those rules), waits for
//! the confirmations asked for, then pays. Later requests pay up front with the cached offer.
//! Each voucher is durable before it leaves; the receipt must show exactly the new total. When
//! a seller reports holding less than was signed (a voucher lost on the way), the next voucher
//! is signed from the seller's total — never above what was already promised plus the price.

use std::collections::HashMap;
use std::time::Duration;

use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::{Amount, FeeRate};
use reqwest::StatusCode;
use tokio::sync::Mutex;

use super::channels::{BtcChannelsError, PayerChannels};
use super::rpc::{BitcoinRpc, RpcError};
use crate::x402::btc::{
    BTC_CHANNEL, BTC_CUMULATIVE_MISMATCH, BtcChannelPayload, BtcChannelWire, BtcOfferExtra,
    BtcVoucherWire, CLOSE_PATH, CloseAnswerWire, CloseRequestWire, sats,
};
use crate::x402::headers::{self, PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE};
use crate::x402::types::{
    PaymentPayload, PaymentRequired, PaymentRequirements, SettlementResponse, X402_VERSION,
};

/// Buyer settings.
#[derive(Debug, Clone)]
pub struct BtcBuyerOptions {
    /// Value locked in each new channel.
    pub capacity: Amount,
    /// Blocks from now to a new channel's expiry (raised to the seller's minimum plus a day).
    pub expiry_blocks: u32,
    /// Fee rate for funding and closes (raised to the seller's minimum).
    pub fee_rate: FeeRate,
    /// Highest price per reading paid.
    pub max_price: Amount,
    /// How long to wait for a new channel's confirmations.
    pub confirmation_timeout: Duration,
    /// Sellers' pinned TLS keys (other https sellers are checked against the system's roots).
    pub trust: crate::tls::Trust,
}

impl Default for BtcBuyerOptions {
    fn default() -> Self {
        Self {
            capacity: Amount::from_sat(100_000),
            expiry_blocks: 1_008,
            fee_rate: FeeRate::from_sat_per_vb_u32(2),
            max_price: Amount::from_sat(1_000),
            confirmation_timeout: Duration::from_secs(600),
            trust: crate::tls::Trust::default(),
        }
    }
}

/// Paying failed.
#[derive(Debug, thiserror::Error)]
pub enum BtcBuyerError {
    /// The request itself failed.
    #[error("request to {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The seller offers no `btc-channel` payment on our network.
    #[error("no btc-channel offer on {0}")]
    NoOffer(String),
    /// The price is above the buyer's maximum.
    #[error("price {price} is above the maximum {max}")]
    TooExpensive {
        /// The price.
        price: Amount,
        /// The maximum.
        max: Amount,
    },
    /// The seller's answer is malformed or dishonest.
    #[error("seller misbehaved: {0}")]
    Seller(String),
    /// The seller refused the payment.
    #[error("payment refused: {0}")]
    Refused(String),
    /// The seller could not serve now (a non-402 failure such as 503 when its sensor has no
    /// reading); it accepted no voucher.
    #[error("the seller answered {status}: {message}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// What its body said.
        message: String,
    },
    /// The channel layer failed (wallet, store, signing).
    #[error(transparent)]
    Channel(#[from] BtcChannelsError),
    /// bitcoind failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A new channel did not confirm in time.
    #[error("channel funding not confirmed after {0:?}")]
    Unconfirmed(Duration),
    /// The budget refused the payment (or could not record it); no voucher was sent.
    #[error("budget")]
    Budget(#[source] crate::budget::BudgetsError),
}

/// A fetched reading.
#[derive(Debug, Clone)]
pub struct BtcFetched {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// What this request cost.
    pub paid: Option<Amount>,
}

/// The buyer.
#[derive(Debug)]
pub struct BtcBuyer {
    payer: std::sync::Arc<PayerChannels>,
    rpc: BitcoinRpc,
    network: String,
    options: BtcBuyerOptions,
    http: reqwest::Client,
    offers: Mutex<HashMap<String, PaymentRequirements>>,
    opening: Mutex<()>,
    /// Per channel, the seller's total as its last receipt in this process gave it. A channel
    /// missing here (first use since start, or the last exchange ended without a receipt) may
    /// or may not hold our newest voucher.
    receipted: Mutex<HashMap<[u8; 32], Amount>>,
    budget: Option<std::sync::Arc<crate::budget::Budgets>>,
    /// Channel openings go here once an agent attaches its bus.
    pub events: crate::events::EventLink,
}

impl BtcBuyer {
    /// A buyer paying from `payer`'s channels on the chain behind `rpc`.
    pub async fn new(
        payer: std::sync::Arc<PayerChannels>,
        rpc: BitcoinRpc,
        options: BtcBuyerOptions,
    ) -> Result<Self, BtcBuyerError> {
        let network = rpc.caip2().await?;
        Ok(Self {
            payer,
            rpc,
            network,
            http: crate::http_client::client_trusting(
                crate::http_client::RESPONSE_TIMEOUT,
                32,
                &options.trust,
            ),
            options,
            offers: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
            receipted: Mutex::new(HashMap::new()),
            budget: None,
            events: crate::events::EventLink::default(),
        })
    }

    /// Pays inside `budget` (its `btc` leg; the payee is the seller's x-only key).
    pub fn with_budget(mut self, budget: std::sync::Arc<crate::budget::Budgets>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// GETs `url`, paying a `btc-channel` 402 if one comes.
    pub async fn get(&self, url: &str) -> Result<BtcFetched, BtcBuyerError> {
        self.get_within(url, self.options.max_price).await
    }

    /// [`Self::get`], refusing any price above `max_price` (and the options' cap).
    pub async fn get_within(
        &self,
        url: &str,
        max_price: Amount,
    ) -> Result<BtcFetched, BtcBuyerError> {
        let cached = self.offers.lock().await.get(url).cloned();
        let offer = match cached {
            Some(offer) => offer,
            None => {
                let response = self.send(url, None).await?;
                if response.status() != StatusCode::PAYMENT_REQUIRED {
                    return fetched(response, None).await;
                }
                let offer = self.choose(&response)?;
                self.offers
                    .lock()
                    .await
                    .insert(url.to_owned(), offer.clone());
                offer
            }
        };
        let price =
            sats(&offer.amount, "amount").map_err(|e| BtcBuyerError::Seller(e.to_string()))?;
        if price > max_price {
            return Err(BtcBuyerError::TooExpensive {
                price,
                max: max_price,
            });
        }
        self.pay(url, &offer).await
    }

    /// Closes, cooperatively, every channel paid on to the seller of `url` (a URL fetched
    /// before): one key-path transaction each, paying the seller its total and us the rest.
    /// Returns the closes' txids.
    pub async fn close(&self, url: &str) -> Result<Vec<bitcoin::Txid>, BtcBuyerError> {
        let offer = self
            .offers
            .lock()
            .await
            .get(url)
            .cloned()
            .ok_or_else(|| BtcBuyerError::NoOffer(format!("{url} (never paid)")))?;
        let payee: XOnlyPublicKey = offer
            .pay_to
            .parse()
            .map_err(|_| BtcBuyerError::Seller("payTo is not an x-only key".into()))?;
        let mut endpoint =
            reqwest::Url::parse(url).map_err(|e| BtcBuyerError::Seller(e.to_string()))?;
        endpoint.set_path(CLOSE_PATH);
        endpoint.set_query(None);
        let mut closed = Vec::new();
        for (terms, signed) in self.payer.all().await {
            if terms.parties.payee != payee || signed == Amount::ZERO {
                continue;
            }
            let id = m2m_contracts::btc::channel_id(&terms.funding.outpoint);
            let (http, endpoint) = (self.http.clone(), endpoint.clone());
            let txid = self
                .payer
                .close_cooperatively(&id, |request| async move {
                    let refused = |e: String| BtcChannelsError::CloseRefused(e);
                    let response = http
                        .post(endpoint)
                        .json(&CloseRequestWire::from_request(&request))
                        .send()
                        .await
                        .map_err(|e| refused(e.to_string()))?;
                    if !response.status().is_success() {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        return Err(refused(format!("{status}: {body}")));
                    }
                    let answer: CloseAnswerWire =
                        response.json().await.map_err(|e| refused(e.to_string()))?;
                    answer.to_answer().map_err(|e| refused(e.to_string()))
                })
                .await?;
            closed.push(txid);
        }
        Ok(closed)
    }

    async fn pay(
        &self,
        url: &str,
        offer: &PaymentRequirements,
    ) -> Result<BtcFetched, BtcBuyerError> {
        let price =
            sats(&offer.amount, "amount").map_err(|e| BtcBuyerError::Seller(e.to_string()))?;
        let payee: XOnlyPublicKey = offer
            .pay_to
            .parse()
            .map_err(|_| BtcBuyerError::Seller("payTo is not an x-only key".into()))?;
        let extra: BtcOfferExtra = offer
            .extra
            .clone()
            .and_then(|e| serde_json::from_value(e).ok())
            .ok_or_else(|| BtcBuyerError::Seller("offer without btc-channel rules".into()))?;
        let id = self.channel_for(payee, price, &extra).await?;
        let terms = self
            .payer
            .terms(&id)
            .await
            .expect("the channel was just found");
        if let Some(budget) = &self.budget {
            // Checked once per reading: a resynchronised retry below pays the same reading. Its
            // record is queued before the voucher's, which is durable before the voucher leaves,
            // so there is nothing to wait for here.
            drop(
                budget
                    .reserve(
                        crate::events::Leg::Btc,
                        m2m_core::Asset::Bitcoin,
                        &payee.to_string(),
                        u128::from(price.to_sat()),
                    )
                    .map_err(BtcBuyerError::Budget)?,
            );
        }
        // Without a receipt for our newest voucher the seller may never have got it (a crash
        // on either side): send that amount again — no new exposure — and let a mismatch tell
        // us its total, rather than sign a price on top of a voucher it may not hold.
        let receipted = self.receipted.lock().await.remove(&id);
        let highest = self.payer.signed(&id).await.unwrap_or(Amount::ZERO);
        let mut base = receipted.unwrap_or_else(|| highest.checked_sub(price).unwrap_or_default());
        let mut resynced = false;
        loop {
            let voucher = self.payer.pay_from(&id, Some(base), price).await?;
            let payment = PaymentPayload {
                x402_version: X402_VERSION,
                resource: None,
                accepted: offer.clone(),
                payload: serde_json::to_value(BtcChannelPayload {
                    channel: BtcChannelWire::from_terms(&terms),
                    voucher: BtcVoucherWire::from_voucher(&voucher),
                })
                .unwrap_or_default(),
                extensions: None,
            };
            let response = self.send(url, Some(headers::encode(&payment))).await?;
            if response.status().is_success() {
                let receipt: SettlementResponse = header(&response, PAYMENT_RESPONSE)
                    .ok_or_else(|| BtcBuyerError::Seller("no PAYMENT-RESPONSE".into()))?;
                let charged = receipt
                    .extra
                    .as_ref()
                    .and_then(|e| e["chargedAmount"].as_str());
                if charged != Some(voucher.cumulative.to_sat().to_string().as_str()) {
                    return Err(BtcBuyerError::Seller(format!(
                        "receipt says {charged:?}, the voucher pays {}",
                        voucher.cumulative
                    )));
                }
                self.receipted.lock().await.insert(id, voucher.cumulative);
                return fetched(response, Some(price)).await;
            }
            if response.status() != StatusCode::PAYMENT_REQUIRED {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                return Err(BtcBuyerError::Unavailable {
                    status,
                    message: crate::http_client::failure_message(&body),
                });
            }
            let required: Option<PaymentRequired> = header(&response, PAYMENT_REQUIRED);
            let error = required
                .as_ref()
                .and_then(|r| r.error.clone())
                .unwrap_or_default();
            let extra = required
                .as_ref()
                .and_then(|r| r.accepts.first())
                .and_then(|o| o.extra.as_ref());
            let reported = extra
                .and_then(|e| e["chargedAmount"].as_str())
                .and_then(|text| sats(text, "chargedAmount").ok());
            match (error.as_str(), reported) {
                (BTC_CUMULATIVE_MISMATCH, Some(charged)) if !resynced => {
                    if charged > self.payer.signed(&id).await.unwrap_or(Amount::ZERO) {
                        // More than we remember signing: only our own voucher proves it.
                        self.adopt_proven(&id, charged, extra).await?;
                    }
                    tracing::info!(%charged, "re-signing from the seller's total");
                    base = charged;
                    resynced = true;
                }
                _ => return Err(BtcBuyerError::Refused(error)),
            }
        }
    }

    /// Takes back our voucher for `charged` from a mismatch 402 (we signed it and forgot: a
    /// store restored from an old backup); anything else claiming more than we signed is a lie.
    async fn adopt_proven(
        &self,
        id: &[u8; 32],
        charged: Amount,
        extra: Option<&serde_json::Value>,
    ) -> Result<(), BtcBuyerError> {
        let lie =
            || BtcBuyerError::Seller(format!("claims {charged} charged, more than we signed"));
        let voucher = extra
            .and_then(|e| {
                serde_json::from_value::<BtcVoucherWire>(e["chargedVoucher"].clone()).ok()
            })
            .and_then(|wire| wire.to_voucher().ok())
            .filter(|voucher| voucher.cumulative == charged)
            .ok_or_else(lie)?;
        self.payer.adopt(id, &voucher).await.map_err(|_| lie())?;
        tracing::warn!(%charged, "the seller holds a voucher of ours this store had forgotten (restored from a backup?): adopted");
        Ok(())
    }

    /// A channel to `payee` with room for `price`, opened (and confirmed) if none has.
    async fn channel_for(
        &self,
        payee: XOnlyPublicKey,
        price: Amount,
        extra: &BtcOfferExtra,
    ) -> Result<[u8; 32], BtcBuyerError> {
        if let Some(id) = self.payer.usable(&payee, price).await {
            return Ok(id);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(id) = self.payer.usable(&payee, price).await {
            return Ok(id);
        }
        let tip = self.rpc.block_count().await?;
        let expiry_blocks = self
            .options
            .expiry_blocks
            .max(extra.min_blocks_to_expiry + 144);
        let fee_rate = self.options.fee_rate.max(extra.min_close_fee_rate());
        let channel = self
            .payer
            .open(payee, self.options.capacity, tip + expiry_blocks, fee_rate)
            .await?;
        let outpoint = channel.terms().funding.outpoint;
        let deadline = tokio::time::Instant::now() + self.options.confirmation_timeout;
        loop {
            let confirmations = self
                .rpc
                .tx_out(&outpoint)
                .await?
                .map_or(0, |o| o.confirmations);
            if confirmations >= extra.min_confirmations {
                self.events
                    .publish(|| crate::events::AgentEvent::ChannelOpened {
                        leg: crate::events::Leg::Btc,
                        id: crate::x402::btc::channel_id_hex(&channel.id()),
                    });
                return Ok(channel.id());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BtcBuyerError::Unconfirmed(
                    self.options.confirmation_timeout,
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn choose(&self, response: &reqwest::Response) -> Result<PaymentRequirements, BtcBuyerError> {
        let required: PaymentRequired = header(response, PAYMENT_REQUIRED)
            .ok_or_else(|| BtcBuyerError::Seller("402 without PAYMENT-REQUIRED".into()))?;
        let offer = required
            .accepts
            .into_iter()
            .find(|o| o.scheme == BTC_CHANNEL && o.network == self.network)
            .ok_or_else(|| BtcBuyerError::NoOffer(self.network.clone()))?;
        let price =
            sats(&offer.amount, "amount").map_err(|e| BtcBuyerError::Seller(e.to_string()))?;
        if price > self.options.max_price {
            return Err(BtcBuyerError::TooExpensive {
                price,
                max: self.options.max_price,
            });
        }
        Ok(offer)
    }

    async fn send(
        &self,
        url: &str,
        payment: Option<String>,
    ) -> Result<reqwest::Response, BtcBuyerError> {
        let mut request = self.http.get(url);
        if let Some(payment) = payment {
            request = request.header(PAYMENT_SIGNATURE, payment);
        }
        request.send().await.map_err(|source| BtcBuyerError::Http {
            url: url.to_owned(),
            source,
        })
    }
}

fn header<T: serde::de::DeserializeOwned>(response: &reqwest::Response, name: &str) -> Option<T> {
    headers::decode(response.headers().get(name)?.to_str().ok()?).ok()
}

async fn fetched(
    response: reqwest::Response,
    paid: Option<Amount>,
) -> Result<BtcFetched, BtcBuyerError> {
    let status = response.status().as_u16();
    let url = response.url().to_string();
    let body = response
        .bytes()
        .await
        .map_err(|source| BtcBuyerError::Http { url, source })?
        .to_vec();
    Ok(BtcFetched { status, body, paid })
}
