//! What arrives for the buyer, and the exchange of one payment message for its answer.
//!
//! Every message is filed (an answer to its waiting payment, a price sheet, a status, a
//! reading) before the broker is told it arrived (manual QoS 1 acknowledgements): an answer no
//! purchase waits for — after its timeout, or one the broker kept in the persistent session
//! while this process was down — is first kept in the store ([`crate::store::mqtt`]), so the
//! key it carries survives any crash. The correlation data of a payment is 16 random bytes and
//! the key id, so such an answer names its key without any record of the payment.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::Address;
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use tokio::sync::{mpsc, oneshot};

use super::MqttBuyer;
use crate::buyer::{BuyerError, PaidAnswer, PaymentCarrier};
use crate::mqtt::wire;
use crate::store::ChannelStore;
use crate::store::mqtt::KeptAnswer;
use crate::x402::headers::{self, PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE};
use crate::x402::types::{PaymentPayload, PaymentRequired};

/// Random bytes before the key id in a payment's correlation data.
const CORRELATION_NONCE: usize = 16;

#[derive(Default)]
pub(super) struct Inbox {
    pub(super) pending: HashMap<Vec<u8>, oneshot::Sender<Publish>>,
    /// Answers that came with no purchase waiting: key id → answer (used instead of paying
    /// again). Also in the store.
    pub(super) late: HashMap<Vec<u8>, KeptAnswer>,
    pub(super) sheets: HashMap<String, PaymentRequired>,
    pub(super) offline: HashMap<String, bool>,
    pub(super) readings: HashMap<String, mpsc::UnboundedSender<Vec<u8>>>,
}

pub(super) fn lock(inbox: &Mutex<Inbox>) -> std::sync::MutexGuard<'_, Inbox> {
    inbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the router files what arrives.
pub(super) struct Router<'a> {
    pub(super) inbox: &'a Mutex<Inbox>,
    pub(super) sheet_arrived: &'a tokio::sync::Notify,
    pub(super) client: &'a AsyncClient,
    pub(super) key_topic: &'a str,
    pub(super) store: &'a ChannelStore,
}

impl Router<'_> {
    /// Files one delivery, then acknowledges it to the broker.
    pub(super) async fn file(&self, publish: Publish) {
        // An acknowledgement needs only the QoS and the packet id: no copy of the message.
        let mut receipt = Publish::new("", publish.qos, Vec::new(), None);
        receipt.pkid = publish.pkid;
        self.route(publish).await;
        if let Err(error) = self.client.ack(&receipt).await {
            tracing::debug!(%error, "acknowledging a message (the broker sends it again)");
        }
    }

    async fn route(&self, publish: Publish) {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        if topic == self.key_topic {
            return self.answer(publish).await;
        }
        if let Some(reading_topic) = topic.strip_suffix(wire::PRICE_SUFFIX) {
            let Ok(sheet) = serde_json::from_slice::<PaymentRequired>(&publish.payload) else {
                tracing::debug!(%topic, "a price sheet that is not x402");
                return;
            };
            let status = sheet
                .accepts
                .iter()
                .find_map(|offer| {
                    offer
                        .extra
                        .as_ref()?
                        .get("receiverAuthorizer")?
                        .as_str()?
                        .parse::<Address>()
                        .ok()
                })
                .map(wire::status_topic);
            lock(self.inbox)
                .sheets
                .insert(reading_topic.to_owned(), sheet);
            self.sheet_arrived.notify_waiters();
            if let Some(status) = status {
                let _ = self.client.subscribe(status, QoS::AtLeastOnce).await;
            }
            return;
        }
        if topic.starts_with("m2m/status/") {
            let offline = publish.payload.as_ref() == wire::OFFLINE;
            lock(self.inbox).offline.insert(topic, offline);
            return;
        }
        if let Some(readings) = lock(self.inbox).readings.get(&topic) {
            let _ = readings.send(publish.payload.to_vec());
        }
    }

    /// An answer: to its waiting purchase, or kept (durably) for the next purchase of its key.
    async fn answer(&self, publish: Publish) {
        let correlation = publish
            .properties
            .as_ref()
            .and_then(|p| p.correlation_data.clone())
            .unwrap_or_default();
        if let Some(waiting) = lock(self.inbox).pending.remove(correlation.as_ref()) {
            let _ = waiting.send(publish);
            return;
        }
        let key_id = correlation.get(CORRELATION_NONCE..).unwrap_or_default();
        // Only a served key is worth keeping: not a refusal, not an unpaid invoice.
        if key_id.is_empty()
            || key_id.len() > wire::MAX_KEY_ID
            || publish.payload.is_empty()
            || wire::user_property(&publish, PAYMENT_RESPONSE).is_none()
                && wire::user_property(&publish, wire::TICKS_UNCOVERED).is_none()
        {
            return;
        }
        let kept = KeptAnswer {
            key_id: key_id.to_vec(),
            wrapped: publish.payload.to_vec(),
            settlement: wire::user_property(&publish, PAYMENT_RESPONSE).map(str::to_owned),
            by_tick: wire::user_property(&publish, wire::TICKS_UNCOVERED).is_some(),
            at_secs: crate::now_secs(),
        };
        let store = self.store.clone();
        let to_keep = kept.clone();
        match tokio::task::spawn_blocking(move || store.keep_mqtt_answer(&to_keep)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "keeping a late answer (memory only)"),
            Err(error) => tracing::warn!(%error, "keeping a late answer (memory only)"),
        }
        let mut inbox = lock(self.inbox);
        if inbox.late.len() >= crate::store::mqtt::MAX_ANSWERS
            && let Some(oldest) = inbox
                .late
                .values()
                .min_by_key(|kept| kept.at_secs)
                .map(|kept| kept.key_id.clone())
        {
            inbox.late.remove(&oldest);
        }
        inbox.late.insert(kept.key_id.clone(), kept);
    }
}

impl MqttBuyer {
    /// Publishes a payment message for `key_id` on `topic`'s payment topic (this buyer's answer
    /// topic and key added to `properties`) and waits for the answer.
    pub(super) async fn exchange(
        &self,
        topic: &str,
        key_id: &[u8],
        mut properties: Vec<(String, String)>,
    ) -> Result<Publish, BuyerError> {
        let carrier = |what: &'static str| BuyerError::Protocol(format!("MQTT: {what}"));
        let mut correlation = vec![0u8; CORRELATION_NONCE];
        getrandom::getrandom(&mut correlation).map_err(m2m_wallet::SignerError::Entropy)?;
        correlation.extend_from_slice(key_id);
        let (answer, answered) = oneshot::channel();
        lock(&self.inbox)
            .pending
            .insert(correlation.clone(), answer);
        let buyer_key = self.signer.evm_public_key().serialize();
        properties.push((
            wire::BUYER_KEY.to_owned(),
            alloy::primitives::hex::encode(buyer_key),
        ));
        let properties = PublishProperties {
            response_topic: Some(self.key_topic.clone()),
            correlation_data: Some(bytes::Bytes::copy_from_slice(&correlation)),
            user_properties: properties,
            ..PublishProperties::default()
        };
        let sent = self
            .client
            .publish_with_properties(
                wire::pay_topic(topic),
                QoS::AtLeastOnce,
                false,
                key_id.to_vec(),
                properties,
            )
            .await;
        let outcome = match sent {
            Err(_) => Err(carrier("the client stopped")),
            Ok(()) => match tokio::time::timeout(self.options.answer_timeout, answered).await {
                Ok(Ok(publish)) => Ok(publish),
                // The seller may have taken it: an answer that comes later is kept by its key
                // id, and a purchase of the same key uses it instead of paying again.
                _ => Err(carrier("no answer from the seller in time")),
            },
        };
        lock(&self.inbox).pending.remove(&correlation);
        outcome
    }
}

/// One payment for one key, published on the topic's payment topic with this buyer's answer
/// topic (and, for a tick stream, its anchor); its answer comes back by correlation data.
pub(super) struct MqttCarrier<'a> {
    pub(super) mqtt: &'a MqttBuyer,
    pub(super) topic: &'a str,
    pub(super) key_id: &'a [u8],
    pub(super) extra: Vec<(String, String)>,
}

impl PaymentCarrier for MqttCarrier<'_> {
    async fn carry(&self, message: PaymentPayload) -> Result<PaidAnswer, BuyerError> {
        let mut properties = vec![(PAYMENT_SIGNATURE.to_owned(), headers::encode(&message))];
        properties.extend(self.extra.iter().cloned());
        let answer = self
            .mqtt
            .exchange(self.topic, self.key_id, properties)
            .await?;
        read_answer(&answer)
    }
}

/// The seller's answer as the buyer's payment logic reads it.
pub(super) fn read_answer(publish: &Publish) -> Result<PaidAnswer, BuyerError> {
    if let Some(required) = wire::user_property(publish, PAYMENT_REQUIRED) {
        return headers::decode(required)
            .map(PaidAnswer::PaymentRequired)
            .map_err(|e| BuyerError::Protocol(e.to_string()));
    }
    let settlement = wire::user_property(publish, PAYMENT_RESPONSE)
        .map(headers::decode)
        .transpose()
        .map_err(|e| BuyerError::Protocol(e.to_string()))?;
    Ok(PaidAnswer::Served {
        status: 200,
        body: publish.payload.to_vec(),
        settlement,
    })
}
