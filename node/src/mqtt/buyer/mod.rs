//! The buyer's end of priced topics: subscribe to a reading topic and its retained price sheet,
//! check each reading's signature against the seller named in the sheet, pay for its key with
//! the device's [`Buyer`] (same budget, same channels, voucher durable before it is published),
//! unwrap the key from the answer on this buyer's own topic and decrypt — or pay for it over
//! Lightning ([`MqttBuyer::buy_by_lightning`], a hold invoice whose preimage opens the key).
//!
//! Nothing is paid for a reading whose signature, price or seller status does not check out; a
//! seller whose status topic says `offline` (its will) is not paid at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::Address;
use m2m_core::key_wrap::{self, WrapParties};
use m2m_core::senml::{PackError, Reading};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;

mod inbox;
#[cfg(feature = "lightning")]
mod lightning;
mod streams;

#[cfg(feature = "lightning")]
pub use lightning::InvoiceRefusal;

use inbox::{Inbox, MqttCarrier, Router, lock};

use super::{Delivery, MqttEndpoint, MqttError, connect_acking, pack, spawn_pump, wire};
use crate::buyer::{Buyer, BuyerError};
use crate::evm::SharedSigner;
use crate::x402::headers;
use crate::x402::types::{PaymentRequired, PaymentRequirements, SettlementResponse};

/// How the buyer meets sellers on the broker.
#[derive(Debug, Clone)]
pub struct MqttBuyerOptions {
    /// The broker client id (empty: `m2m-buyer-<device address>`).
    pub client_id: String,
    /// `false` resumes the broker's session for this id: answers that arrived while the buyer
    /// was away are delivered when it returns.
    pub clean_start: bool,
    /// How long to wait for a seller's answer to a payment.
    pub answer_timeout: Duration,
    /// How long to wait for a topic's retained price sheet.
    pub sheet_timeout: Duration,
    /// Refuse any reading priced above this.
    pub max_price: Option<u128>,
    /// Pay with ticks where a topic offers tick streams (a voucher every K readings).
    pub ticks: bool,
    /// How long a Lightning payment may take.
    pub lightning_timeout: Duration,
}

impl Default for MqttBuyerOptions {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            clean_start: true,
            answer_timeout: Duration::from_secs(20),
            sheet_timeout: Duration::from_secs(20),
            max_price: None,
            ticks: false,
            lightning_timeout: Duration::from_secs(60),
        }
    }
}

/// A reading could not be bought. Nothing was paid unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum MqttBuyError {
    /// The broker connection.
    #[error(transparent)]
    Connect(#[from] MqttError),
    /// The client could not queue a request (its event loop stopped).
    #[error("MQTT client")]
    Client(#[from] rumqttc::v5::ClientError),
    /// No retained price sheet on the topic in time.
    #[error("no price sheet on {0}/price")]
    NoPriceSheet(String),
    /// The price sheet is not an x402 `PaymentRequired` with a batch-settlement offer.
    #[error("the price sheet of {topic}: {why}")]
    BadPriceSheet {
        /// The topic.
        topic: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The seller's status topic says it is offline.
    #[error("the seller {0:#x} is offline")]
    SellerOffline(Address),
    /// The reading is not signed by the seller of the sheet, or does not read.
    #[error("the reading")]
    Reading(#[source] pack::PackSignatureError),
    /// The reading's clear price differs from the sheet.
    #[error("the reading is priced {pack}, the sheet says {sheet}")]
    PriceMismatch {
        /// Price in the pack.
        pack: u128,
        /// Price on the sheet.
        sheet: u128,
    },
    /// The payment failed (refused, over budget, carrier failure): see the buyer's error for
    /// whether anything was paid.
    #[error("paying for the key")]
    Pay(#[source] BuyerError),
    /// Paid, but the answer did not unwrap to this reading's key, or the key does not open it:
    /// the seller is at fault.
    #[error("paid, but the key does not open the reading")]
    Key(#[source] PackError),
    /// The seller refused (its code).
    #[error("the seller refused: {0}")]
    Refused(String),
    /// The budget refused the payment (or could not record it): nothing was paid.
    #[error("budget")]
    Budget(#[source] crate::budget::BudgetsError),
    /// The seller's invoice is not what its sheet offers: nothing was paid.
    #[cfg(feature = "lightning")]
    #[error("the seller's invoice")]
    Invoice(#[source] InvoiceRefusal),
    /// Asked to pay over Lightning with no Lightning node.
    #[error("no Lightning node to pay with")]
    NoLightning,
    /// The Lightning payment failed (or did not finish in time: it may still settle).
    #[cfg(feature = "lightning")]
    #[error("the Lightning payment")]
    Lightning(#[source] crate::ln::LnError),
}

/// A bought reading.
#[derive(Debug, Clone)]
pub struct PaidReading {
    /// The whole reading.
    pub reading: Reading,
    /// What this purchase paid (atomic units): one reading's price, or a stream's voucher that
    /// also paid for the readings its ticks bought; for a tick, the reading's price on credit.
    pub price: u128,
    /// The key id bought.
    pub key_id: Vec<u8>,
    /// The seller's settlement (none for a reading paid with a tick).
    pub settlement: Option<SettlementResponse>,
    /// Paid with a tick of a stream (covered by the stream's next voucher).
    pub by_tick: bool,
    /// Paid over Lightning: [`Self::price`] is in msat.
    pub by_lightning: bool,
}

/// A buyer on a broker.
pub struct MqttBuyer {
    buyer: Arc<Buyer>,
    signer: SharedSigner,
    client: AsyncClient,
    options: MqttBuyerOptions,
    key_topic: String,
    inbox: Arc<Mutex<Inbox>>,
    sheet_arrived: Arc<tokio::sync::Notify>,
    streams: streams::Streams,
    pump: tokio::task::JoinHandle<()>,
    router: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MqttBuyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBuyer")
            .field("key_topic", &self.key_topic)
            .finish_non_exhaustive()
    }
}

impl MqttBuyer {
    /// Connects as `endpoint.user` and subscribes to its answer topic (`m2m/keys/<user>`).
    pub async fn connect(
        buyer: Arc<Buyer>,
        signer: SharedSigner,
        endpoint: &MqttEndpoint,
        options: MqttBuyerOptions,
    ) -> Result<Self, MqttBuyError> {
        let client_id = match options.client_id.as_str() {
            "" => format!("m2m-buyer-{:x}", signer.evm_address()),
            id => id.to_owned(),
        };
        // Answers kept from before (a restart, or a purchase that gave up waiting).
        let mut kept = Inbox::default();
        match buyer.store().mqtt_answers() {
            Ok(answers) => {
                kept.late = answers.into_iter().map(|a| (a.key_id.clone(), a)).collect();
            }
            Err(error) => tracing::warn!(%error, "reading kept MQTT answers"),
        }
        let (client, events) = connect_acking(endpoint, &client_id, options.clean_start).await?;
        let key_topic = wire::key_topic(&endpoint.user);
        client.subscribe(&key_topic, QoS::AtLeastOnce).await?;
        let inbox = Arc::new(Mutex::new(kept));
        let sheet_arrived = Arc::new(tokio::sync::Notify::new());
        let (sink, mut deliveries) = mpsc::unbounded_channel();
        let pump = spawn_pump(events, sink);
        let router = tokio::spawn({
            let (inbox, sheet_arrived) = (inbox.clone(), sheet_arrived.clone());
            let (client, key_topic) = (client.clone(), key_topic.clone());
            let store = buyer.store().clone();
            async move {
                while let Some(delivery) = deliveries.recv().await {
                    match delivery {
                        Delivery::Connected {
                            session_present: false,
                        } => {
                            // The broker forgot the session: subscribe again.
                            let topics: Vec<String> =
                                lock(&inbox).readings.keys().cloned().collect();
                            let _ = client.subscribe(&key_topic, QoS::AtLeastOnce).await;
                            for topic in topics {
                                let _ = client.subscribe(&topic, QoS::AtLeastOnce).await;
                                let _ = client
                                    .subscribe(wire::price_topic(&topic), QoS::AtLeastOnce)
                                    .await;
                            }
                        }
                        Delivery::Connected { .. } => {}
                        Delivery::Message(publish) => {
                            let router = Router {
                                inbox: &inbox,
                                sheet_arrived: &sheet_arrived,
                                client: &client,
                                key_topic: &key_topic,
                                store: &store,
                            };
                            router.file(*publish).await;
                        }
                    }
                }
            }
        });
        Ok(Self {
            buyer,
            signer,
            client,
            options,
            key_topic,
            inbox,
            sheet_arrived,
            streams: Default::default(),
            pump,
            router,
        })
    }

    /// Subscribes to `topic` and its price sheet; the signed readings published there, as
    /// they arrive (the retained one first).
    pub async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<mpsc::UnboundedReceiver<Vec<u8>>, MqttBuyError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.inbox).readings.insert(topic.to_owned(), sender);
        self.client
            .subscribe(wire::price_topic(topic), QoS::AtLeastOnce)
            .await?;
        self.client.subscribe(topic, QoS::AtLeastOnce).await?;
        Ok(receiver)
    }

    /// Whether `seller`'s status topic says `offline` (its will, or its goodbye).
    pub fn seller_offline(&self, seller: Address) -> bool {
        lock(&self.inbox)
            .offline
            .get(&wire::status_topic(seller))
            .copied()
            .unwrap_or(false)
    }

    /// The price sheet of `topic`, waiting for it up to the answer timeout.
    async fn sheet(&self, topic: &str) -> Result<PaymentRequired, MqttBuyError> {
        let wait = async {
            loop {
                let arrived = self.sheet_arrived.notified();
                if let Some(sheet) = lock(&self.inbox).sheets.get(topic) {
                    return sheet.clone();
                }
                arrived.await;
            }
        };
        tokio::time::timeout(self.options.sheet_timeout, wait)
            .await
            .map_err(|_| MqttBuyError::NoPriceSheet(topic.to_owned()))
    }

    /// Buys the reading `signed` (as received on `topic`): checks it, pays for its key, and
    /// returns it decrypted.
    pub async fn buy(&self, topic: &str, signed: &[u8]) -> Result<PaidReading, MqttBuyError> {
        self.buy_within(topic, signed, self.options.max_price).await
    }

    /// [`Self::buy`], refusing any price above `max_price` (instead of the options' cap).
    pub async fn buy_within(
        &self,
        topic: &str,
        signed: &[u8],
        max_price: Option<u128>,
    ) -> Result<PaidReading, MqttBuyError> {
        self.buy_with(topic, signed, max_price, self.options.ticks)
            .await
    }

    /// [`Self::buy_within`], paying with ticks where the topic offers them if `ticks`.
    pub async fn buy_with(
        &self,
        topic: &str,
        signed: &[u8],
        max_price: Option<u128>,
        ticks: bool,
    ) -> Result<PaidReading, MqttBuyError> {
        let (sheet, seller, checked) = self.checked_reading(topic, signed).await?;
        let offer =
            batch_offer(&sheet).ok_or_else(|| bad_sheet(topic, "no batch-settlement offer"))?;
        let price = checked.sealed.price;
        if let Some(late) = self.late_answer(&checked, seller) {
            return Ok(late);
        }
        let ticks_per_voucher = offer
            .extra
            .as_ref()
            .and_then(|e| e.get(wire::TICKS_PER_VOUCHER)?.as_u64())
            .and_then(|k| u32::try_from(k).ok())
            .filter(|k| ticks && *k > 0);
        let key_id = &checked.sealed.key_id;
        let fetched = match ticks_per_voucher {
            Some(k) => {
                self.pay_in_stream(topic, &sheet, key_id, max_price, (k, price))
                    .await?
            }
            None => {
                let carrier = MqttCarrier {
                    mqtt: self,
                    topic,
                    key_id,
                    extra: Vec::new(),
                };
                let fetched = self
                    .buyer
                    .pay_over(&carrier, &sheet, max_price)
                    .await
                    .map_err(MqttBuyError::Pay)?;
                streams::StreamPaid {
                    paid: fetched.paid.map_or(price, |(_, paid)| paid),
                    body: fetched.body,
                    settlement: fetched.settlement,
                    by_tick: false,
                }
            }
        };
        let (shared, parties) = self.wrap_secret(&checked, seller);
        let (key_id, reading) = Self::open_wrapped(&checked, &shared, &parties, &fetched.body)
            .map_err(MqttBuyError::Key)?;
        Ok(PaidReading {
            reading,
            price: fetched.paid,
            key_id,
            settlement: fetched.settlement,
            by_tick: fetched.by_tick,
            by_lightning: false,
        })
    }

    /// The sheet of `topic`, its seller, and the reading `signed` checked against both: signed
    /// by that seller, priced as the sheet's batch-settlement offer, the seller not offline.
    async fn checked_reading(
        &self,
        topic: &str,
        signed: &[u8],
    ) -> Result<(PaymentRequired, Address, pack::SignedReading), MqttBuyError> {
        let sheet = self.sheet(topic).await?;
        let offer =
            batch_offer(&sheet).ok_or_else(|| bad_sheet(topic, "no batch-settlement offer"))?;
        let seller: Address = offer
            .extra
            .as_ref()
            .and_then(|e| e.get("receiverAuthorizer")?.as_str()?.parse().ok())
            .ok_or_else(|| bad_sheet(topic, "no receiverAuthorizer"))?;
        let price: u128 = offer
            .amount
            .parse()
            .map_err(|_| bad_sheet(topic, "amount"))?;
        if self.seller_offline(seller) {
            return Err(MqttBuyError::SellerOffline(seller));
        }
        let checked = pack::verify(signed, seller).map_err(MqttBuyError::Reading)?;
        if checked.sealed.price != price {
            return Err(MqttBuyError::PriceMismatch {
                pack: checked.sealed.price,
                sheet: price,
            });
        }
        Ok((sheet, seller, checked))
    }

    /// The ECDH secret with the seller of `checked` and the parties of its wraps.
    fn wrap_secret(
        &self,
        checked: &pack::SignedReading,
        seller: Address,
    ) -> ([u8; 32], WrapParties) {
        let shared = self.signer.evm_key_agreement(&checked.seller_key);
        let parties = WrapParties {
            seller: seller.0.0,
            buyer: self.signer.evm_address().0.0,
        };
        (shared, parties)
    }

    /// The reading of `checked`, opened with the key in `wrapped` (under `secret`).
    fn open_wrapped(
        checked: &pack::SignedReading,
        secret: &[u8; 32],
        parties: &WrapParties,
        wrapped: &[u8],
    ) -> Result<(Vec<u8>, Reading), PackError> {
        let (key_id, key) = key_wrap::unwrap(secret, parties, wrapped)?;
        if key_id != checked.sealed.key_id {
            return Err(PackError::Decrypt);
        }
        Ok((key_id, checked.sealed.open(&key)?))
    }

    /// The reading of `checked`, from the answer to an earlier payment for its key that came
    /// after that purchase had given up (nothing is paid again).
    fn late_answer(&self, checked: &pack::SignedReading, seller: Address) -> Option<PaidReading> {
        let answer = lock(&self.inbox).late.remove(&checked.sealed.key_id)?;
        if let Err(error) = self.buyer.store().forget_mqtt_answer(&answer.key_id) {
            tracing::warn!(%error, "forgetting a used MQTT answer");
        }
        let (shared, parties) = self.wrap_secret(checked, seller);
        let (key_id, reading) =
            Self::open_wrapped(checked, &shared, &parties, &answer.wrapped).ok()?;
        let settlement = answer
            .settlement
            .as_deref()
            .and_then(|text| headers::decode::<SettlementResponse>(text).ok());
        Some(PaidReading {
            reading,
            price: checked.sealed.price,
            key_id,
            settlement,
            by_tick: answer.by_tick,
            by_lightning: false,
        })
    }

    /// Disconnects (the pump ends once the DISCONNECT is out).
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.pump.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pump.abort();
        self.router.abort();
    }
}

/// The sheet's batch-settlement offer.
fn batch_offer(sheet: &PaymentRequired) -> Option<&PaymentRequirements> {
    sheet
        .accepts
        .iter()
        .find(|offer| offer.scheme == crate::x402::batch::SCHEME)
}

fn bad_sheet(topic: &str, why: &'static str) -> MqttBuyError {
    MqttBuyError::BadPriceSheet {
        topic: topic.to_owned(),
        why,
    }
}
