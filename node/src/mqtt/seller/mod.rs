//! The seller's end of priced topics: every `batch-settlement` route of a [`Seller`] becomes a
//! reading topic (see [`super::wire`]). Each reading is sealed under a key of its own (value
//! encrypted, the rest in clear), signed, and published retained; the key stays on sale for the
//! last [`MqttSellerOptions::keys_on_sale`] readings. A payment for a key goes through the same
//! [`Seller::accept_payment`] as an HTTP request (voucher durable before anything is answered);
//! only then is the key, wrapped for the payer, published on the payer's own topic.
//!
//! A redelivered payment (QoS 1 after a lost PUBACK or a reconnection) is recognised by its
//! channel, voucher total and key id and answered again without a second charge. Payments on
//! one channel take their turn one at a time (a buyer waits for each answer before it signs its
//! next voucher, so only copies of one payment meet there); payments on different channels run
//! side by side (up to [`PAYMENTS_IN_FLIGHT`]), so their vouchers share the store's group
//! commit. Keys may also be sold over Lightning with hold invoices ([`LightningSales`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use m2m_core::key_wrap::{self, WrapParties};
use m2m_core::senml::{self, Mask, Reading};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Publish};

#[cfg(feature = "lightning")]
mod lightning;
mod streams;

#[cfg(feature = "lightning")]
pub use lightning::LightningSales;

use super::{Delivery, MqttEndpoint, MqttError, connect_with_will, pack, spawn_pump, wire};
use crate::evm::SharedSigner;
use crate::seller::batch::Refusal;
use crate::seller::sensor::SensorError;
use crate::seller::{Route, Scheme, Seller};
use crate::x402::codes;
use crate::x402::headers::{self, HeaderError, PAYMENT_REQUIRED, PAYMENT_RESPONSE};
use crate::x402::types::PaymentRequired;

/// Payments being taken at once (beyond it, the next waits for a slot).
pub const PAYMENTS_IN_FLIGHT: usize = 512;

/// How the seller publishes.
#[derive(Debug, Clone)]
pub struct MqttSellerOptions {
    /// The broker client id (empty: `m2m-seller-<device address>`). The session is persistent:
    /// payments sent while the seller was away are delivered when it returns.
    pub client_id: String,
    /// Which fields of a reading are encrypted.
    pub mask: Mask,
    /// How many recent readings' keys stay on sale; a payment for an older one is refused
    /// before anything is charged.
    pub keys_on_sale: usize,
    /// Publish a reading on every topic this often (`None`: only on
    /// [`MqttSeller::publish_reading`]).
    pub publish_every: Option<Duration>,
    /// Offer tick streams: K readings paid by one SHA-256 tick each between vouchers (at most
    /// K readings on credit). `None`: every reading by voucher.
    pub ticks_per_voucher: Option<u32>,
    /// Also sell keys over Lightning (hold invoices).
    #[cfg(feature = "lightning")]
    pub lightning: Option<LightningSales>,
}

impl Default for MqttSellerOptions {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            mask: Mask::default(),
            keys_on_sale: 256,
            publish_every: None,
            ticks_per_voucher: None,
            #[cfg(feature = "lightning")]
            lightning: None,
        }
    }
}

/// The seller could not start or publish.
#[derive(Debug, thiserror::Error)]
pub enum MqttSellError {
    /// The broker connection.
    #[error(transparent)]
    Connect(#[from] MqttError),
    /// The client could not queue a request (its event loop stopped).
    #[error("MQTT client")]
    Client(#[from] rumqttc::v5::ClientError),
    /// No priced topic of that name.
    #[error("no priced topic {0}")]
    NoTopic(String),
    /// The route's sensor has no reading.
    #[error("reading the sensor")]
    Sensor(#[source] SensorError),
    /// The sensor returned a pack with no record.
    #[error("the sensor returned an empty SenML pack")]
    EmptyReading,
    /// Sealing failed.
    #[error("sealing the reading")]
    Seal(#[source] senml::PackError),
    /// Signing failed.
    #[error("signing the reading")]
    Sign(#[source] pack::PackSignatureError),
    /// No randomness for a key.
    #[error("drawing a reading key")]
    Entropy(#[source] getrandom::Error),
}

/// Counters.
#[derive(Debug, Default)]
pub struct MqttSellerStats {
    /// Readings published.
    pub readings: AtomicU64,
    /// Keys sold (payments taken).
    pub keys_sold: AtomicU64,
    /// Payments answered again without a charge (redeliveries).
    pub redelivered: AtomicU64,
    /// Payments refused.
    pub refused: AtomicU64,
    /// Keys sold for a tick.
    pub ticks: AtomicU64,
    /// Units the vouchers taken added (what the seller can claim for its topics).
    pub charged_units: AtomicU64,
    /// Hold invoices handed out.
    pub invoices: AtomicU64,
    /// What keys sold over Lightning brought, msat.
    pub lightning_msat: AtomicU64,
}

/// Keys of recent readings, oldest first.
#[derive(Default)]
struct KeysOnSale {
    order: VecDeque<Vec<u8>>,
    keys: HashMap<Vec<u8>, (String, [u8; 32])>,
}

/// The last payment taken on a channel and its answer.
struct Answered {
    total: String,
    key_id: Vec<u8>,
    settlement: String,
    wrapped: Vec<u8>,
}

/// A seller on a broker.
pub struct MqttSeller {
    seller: Arc<Seller>,
    signer: SharedSigner,
    client: AsyncClient,
    options: MqttSellerOptions,
    broker: String,
    /// Reading topic → route path.
    topics: HashMap<String, String>,
    /// Key ids are this process's random prefix and a sequence number, so a key id from before
    /// a restart never names a key of after it.
    key_prefix: [u8; 8],
    sequence: AtomicU64,
    keys: Mutex<KeysOnSale>,
    /// Per channel: its payments' turn, and the last one taken with its answer.
    answered: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Answered>>>>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    streams: streams::Streams,
    /// Counters.
    pub stats: MqttSellerStats,
}

impl std::fmt::Debug for MqttSeller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSeller")
            .field("broker", &self.broker)
            .field("topics", &self.topics.keys().collect::<Vec<_>>())
            .finish_non_exhaustive() // never the keys
    }
}

/// A running seller; [`MqttSellerHandle::stop`] says `offline` and disconnects.
#[derive(Debug)]
pub struct MqttSellerHandle {
    /// The seller.
    pub seller: Arc<MqttSeller>,
    pump: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MqttSellerHandle {
    /// Publishes `offline` on the status topic, disconnects, and stops the tasks.
    pub async fn stop(self) {
        #[cfg(feature = "lightning")]
        self.seller.stop_lightning();
        let client = &self.seller.client;
        let status = wire::status_topic(self.seller.signer.evm_address());
        let _ = client
            .publish(status, QoS::AtLeastOnce, true, wire::OFFLINE)
            .await;
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pump).await;
        for task in self.tasks {
            task.abort();
        }
    }

    /// Drops the connection without a DISCONNECT, as a crash or a cut link would: the broker
    /// then publishes the seller's will (`offline`).
    pub fn crash(&self) {
        self.pump.abort();
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes)
}

impl MqttSeller {
    /// Connects to the broker (will: `offline` on the status topic), subscribes to the payment
    /// topics, publishes the retained price sheets and `online`, and starts taking payments.
    pub async fn start(
        seller: Arc<Seller>,
        signer: SharedSigner,
        endpoint: &MqttEndpoint,
        options: MqttSellerOptions,
    ) -> Result<MqttSellerHandle, MqttSellError> {
        let status = wire::status_topic(signer.evm_address());
        let will = LastWill::new(status, wire::OFFLINE, QoS::AtLeastOnce, true, None);
        let client_id = match options.client_id.as_str() {
            "" => format!("m2m-seller-{:x}", signer.evm_address()),
            id => id.to_owned(),
        };
        let (client, events) = connect_with_will(endpoint, &client_id, false, Some(will)).await?;
        let topics = seller
            .routes()
            .filter(|route| route.config.schemes.contains(&Scheme::BatchSettlement))
            .map(|route| {
                let topic = wire::route_topic(&route.config.path).to_owned();
                (topic, route.config.path.clone())
            })
            .collect();
        let mqtt = Arc::new(MqttSeller {
            seller,
            signer,
            client,
            broker: format!("mqtts://{}:{}", endpoint.host, endpoint.port),
            topics,
            key_prefix: random().map_err(MqttSellError::Entropy)?,
            sequence: AtomicU64::new(0),
            keys: Mutex::default(),
            answered: Mutex::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(PAYMENTS_IN_FLIGHT)),
            streams: Default::default(),
            stats: MqttSellerStats::default(),
            options,
        });
        #[cfg(feature = "lightning")]
        mqtt.start_lightning();
        mqtt.announce().await?;
        let (sink, mut deliveries) = tokio::sync::mpsc::unbounded_channel();
        let pump = spawn_pump(events, sink);
        let worker = tokio::spawn({
            let mqtt = mqtt.clone();
            async move {
                while let Some(delivery) = deliveries.recv().await {
                    match delivery {
                        Delivery::Connected { .. } => {
                            // After a reconnection: `online` again (a will may have said
                            // otherwise) and the subscriptions, if the session was lost.
                            if let Err(error) = mqtt.announce().await {
                                tracing::warn!(error = %crate::events::error_line(&error), "MQTT announce");
                            }
                        }
                        Delivery::Message(publish) => {
                            let Ok(slot) = mqtt.in_flight.clone().acquire_owned().await else {
                                return;
                            };
                            let mqtt = mqtt.clone();
                            tokio::spawn(async move {
                                mqtt.on_payment(*publish).await;
                                drop(slot);
                            });
                        }
                    }
                }
            }
        });
        let mut tasks = vec![worker];
        if let Some(every) = mqtt.options.publish_every {
            let mqtt = mqtt.clone();
            tasks.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    let topics: Vec<String> = mqtt.topics.keys().cloned().collect();
                    for topic in topics {
                        if let Err(error) = mqtt.publish_reading(&topic).await {
                            tracing::warn!(%topic, error = %crate::events::error_line(&error), "publishing a reading");
                        }
                    }
                }
            }));
        }
        Ok(MqttSellerHandle {
            seller: mqtt,
            pump,
            tasks,
        })
    }

    /// The priced topics.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    fn route(&self, topic: &str) -> Option<&Route> {
        self.seller.route(self.topics.get(topic)?)
    }

    /// The price sheet of a topic: the route's `batch-settlement` offers, for a resource named
    /// by its broker and topic.
    fn sheet(&self, topic: &str, route: &Route, refusal: Option<&Refusal>) -> PaymentRequired {
        let url = format!("{}/{topic}", self.broker);
        let mut sheet = self
            .seller
            .terms_after(route, &url, refusal)
            .unwrap_or_else(|| {
                self.seller
                    .payment_required(route, &url, Some(codes::UNEXPECTED))
            });
        sheet
            .accepts
            .retain(|offer| offer.scheme == Scheme::BatchSettlement.as_str());
        #[cfg(feature = "lightning")]
        if let Some(lightning) = &self.options.lightning {
            sheet.accepts.push(lightning.offer());
        }
        if let Some(k) = self.options.ticks_per_voucher {
            for offer in &mut sheet.accepts {
                if let Some(extra) = offer.extra.as_mut().and_then(|e| e.as_object_mut()) {
                    extra.insert(wire::TICKS_PER_VOUCHER.into(), k.into());
                }
            }
        }
        sheet.resource.mime_type = Some("application/cose; cose-type=\"cose-sign1\"".into());
        sheet
    }

    async fn announce(&self) -> Result<(), MqttSellError> {
        for topic in self.topics.keys() {
            let Some(route) = self.route(topic) else {
                continue;
            };
            self.client
                .subscribe(wire::pay_topic(topic), QoS::AtLeastOnce)
                .await?;
            let sheet = serde_json::to_vec(&self.sheet(topic, route, None)).unwrap_or_default();
            self.client
                .publish(wire::price_topic(topic), QoS::AtLeastOnce, true, sheet)
                .await?;
        }
        let status = wire::status_topic(self.signer.evm_address());
        self.client
            .publish(status, QoS::AtLeastOnce, true, wire::ONLINE)
            .await?;
        Ok(())
    }

    /// Samples `topic`'s sensor, seals and signs the reading, puts its key on sale and
    /// publishes it (retained, QoS 1). Returns the key id.
    pub async fn publish_reading(&self, topic: &str) -> Result<Vec<u8>, MqttSellError> {
        let route = self
            .route(topic)
            .ok_or_else(|| MqttSellError::NoTopic(topic.to_owned()))?;
        let records = self
            .seller
            .reading_records(route)
            .map_err(MqttSellError::Sensor)?;
        let record = records.first().ok_or(MqttSellError::EmptyReading)?;
        let reading = Reading {
            name: format!(
                "{}{}",
                record.base_name.as_deref().unwrap_or_default(),
                record.name
            ),
            unit: Some(record.unit.clone()),
            time: Some(record.time),
            value: record.value,
        };
        let key: [u8; 32] = random().map_err(MqttSellError::Entropy)?;
        let mut key_id = self.key_prefix.to_vec();
        key_id.extend_from_slice(&self.sequence.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let nonce = random().map_err(MqttSellError::Entropy)?;
        let sealed = senml::seal(
            &reading,
            self.options.mask,
            route.price,
            &key_id,
            &key,
            nonce,
        )
        .map_err(MqttSellError::Seal)?;
        let signed = pack::sign(sealed, &*self.signer).map_err(MqttSellError::Sign)?;
        {
            // On sale before anyone can see the reading.
            let mut sale = lock(&self.keys);
            sale.order.push_back(key_id.clone());
            sale.keys.insert(key_id.clone(), (topic.to_owned(), key));
            while sale.order.len() > self.options.keys_on_sale.max(1) {
                if let Some(old) = sale.order.pop_front() {
                    sale.keys.remove(&old);
                }
            }
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, true, signed)
            .await?;
        self.stats.readings.fetch_add(1, Ordering::Relaxed);
        Ok(key_id)
    }

    /// Answers one message on a payment topic on its response topic.
    async fn on_payment(&self, request: Publish) {
        let topic = String::from_utf8_lossy(&request.topic).into_owned();
        let Some(reading_topic) = topic.strip_suffix(wire::PAY_SUFFIX) else {
            return;
        };
        let (Some(route), Some(response_topic)) = (
            self.route(reading_topic),
            request
                .properties
                .as_ref()
                .and_then(|p| p.response_topic.clone()),
        ) else {
            tracing::debug!(%topic, "payment without a priced topic or a response topic");
            return;
        };
        let (property, payload) = match self.take_payment(reading_topic, route, &request).await {
            Ok(answer) => answer,
            Err(refusal) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let sheet = self.sheet(reading_topic, route, Some(&refusal));
                ((PAYMENT_REQUIRED, headers::encode(&sheet)), Vec::new())
            }
        };
        let properties = wire::answer_properties(&request, property);
        if let Err(error) = self
            .client
            .publish_with_properties(response_topic, QoS::AtLeastOnce, false, payload, properties)
            .await
        {
            tracing::warn!(error = %error, "answering a payment");
        }
    }

    /// The key of `key_id`, if it is on sale on `topic`.
    fn key_on_sale(&self, topic: &str, key_id: &[u8]) -> Result<[u8; 32], Refusal> {
        match lock(&self.keys).keys.get(key_id) {
            Some((sold_on, key)) if sold_on == topic => Ok(*key),
            _ => Err(Refusal::new(
                codes::READING_KEY_UNKNOWN,
                "no reading with this key id is on sale on this topic",
            )),
        }
    }

    /// Checks and takes the payment in `request` (a voucher, or a tick of a stream) for the key
    /// it names; the answer's property (`PAYMENT-RESPONSE`, or the ticks on credit) and the
    /// wrapped key.
    async fn take_payment(
        &self,
        topic: &str,
        route: &Route,
        request: &Publish,
    ) -> Result<((&'static str, String), Vec<u8>), Refusal> {
        let no_properties = Vec::new();
        let properties = request
            .properties
            .as_ref()
            .map_or(&no_properties, |p| &p.user_properties);
        #[cfg(feature = "lightning")]
        if wire::property(properties, wire::LN_HOLD).is_some() {
            return self.offer_hold(topic, request, properties).await;
        }
        if wire::property(properties, wire::TICK).is_some() {
            let reading_key = self.key_on_sale(topic, &request.payload)?;
            return self.take_tick(request, properties, reading_key).await;
        }
        let stream_request = streams::stream_request(properties)?;
        let message = wire::read_payment(&request.payload, properties).map_err(refusal_of)?;
        let key_id = message.key_id;
        let reading_key = self.key_on_sale(topic, &key_id)?;
        let (payload, payer) = (message.payload, (message.payer, message.buyer_key));
        let (channel, total) = message.voucher;
        let turn = lock(&self.answered)
            .entry(channel.clone())
            .or_default()
            .clone();
        let mut last = turn.lock().await;
        if let Some(done) = last.as_ref()
            && done.total == total
            && done.key_id == key_id
        {
            self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            return Ok((
                (PAYMENT_RESPONSE, done.settlement.clone()),
                done.wrapped.clone(),
            ));
        }
        // The wrap is made before the charge, so nothing can fail between taking the payment
        // and answering it.
        let shared = self.signer.evm_key_agreement(&payer.1);
        let parties = WrapParties {
            seller: self.signer.evm_address().0.0,
            buyer: payer.0.0.0,
        };
        let nonce = random().map_err(|_| Refusal::new(codes::UNEXPECTED, "no randomness"))?;
        let wrapped = key_wrap::wrap(&shared, &parties, &key_id, &reading_key, nonce)
            .map_err(|e| Refusal::new(codes::UNEXPECTED, e.to_string()))?;
        // A voucher of a tick stream also pays for the readings its ticks bought.
        let (stream, readings) = self.stream_for_voucher(stream_request.as_ref()).await;
        if stream.as_ref().is_some_and(|s| s.payer() != payer.0) {
            return Err(Refusal::new(
                codes::INVALID_PAYLOAD,
                "m2m-tick-anchor names another payer's stream",
            ));
        }
        let price = route.price.saturating_mul(u128::from(readings));
        let settlement = self
            .seller
            .accept_payment_of(route, &payload, price)
            .await?;
        let units = u64::try_from(price).unwrap_or(u64::MAX);
        self.stats.charged_units.fetch_add(units, Ordering::Relaxed);
        self.after_voucher(stream_request.as_ref(), stream, route, &channel, payer);
        let settlement = headers::encode(&settlement);
        self.stats.keys_sold.fetch_add(1, Ordering::Relaxed);
        *last = Some(Answered {
            total,
            key_id,
            settlement: settlement.clone(),
            wrapped: wrapped.clone(),
        });
        Ok(((PAYMENT_RESPONSE, settlement), wrapped))
    }
}

/// The coded refusal of a payment message that does not read.
fn refusal_of(error: wire::PaymentMessageError) -> Refusal {
    let message = crate::events::error_line(&error);
    match error {
        wire::PaymentMessageError::BuyerKey(_) => Refusal::new(codes::BUYER_KEY_INVALID, message),
        wire::PaymentMessageError::KeyId => Refusal::new(codes::READING_KEY_UNKNOWN, message),
        wire::PaymentMessageError::Signature(HeaderError::Version(_)) => {
            Refusal::new(codes::INVALID_X402_VERSION, message)
        }
        _ => Refusal::new(codes::INVALID_PAYLOAD, message),
    }
}
