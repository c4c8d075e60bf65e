//! Reading keys sold over Lightning with hold invoices (decision 0014; the scheme is in
//! [`m2m_core::hold`]). A buyer asks for an invoice on the payment topic ([`wire::LN_HOLD`],
//! payload = key id); the answer carries the invoice ([`wire::LN_INVOICE`]) and, as payload, the
//! reading key wrapped under the ECDH secret bound to the invoice's preimage. The invoice's
//! record (its nonce, amount and expiry) is durable before the answer leaves, so a payment that
//! arrives after a restart is still claimed; when it arrives, the record is marked claimed
//! (durably) and the payment claimed with the preimage — which is what the buyer needed.
//!
//! Nothing here holds a preimage for longer than a claim: each is derived again from the
//! record's nonce and a secret of the device seed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use m2m_core::ChannelId;
use m2m_core::hold;
use m2m_core::key_wrap::{self, WrapParties};
use rumqttc::v5::mqttbytes::v5::Publish;

use super::{MqttSeller, random};
use crate::events::{AgentEvent, Leg, Payment};
use crate::ln::hold::{Held, HoldClaimer, HoldDecision};
use crate::ln::{LnError, LnNode};
use crate::mqtt::wire;
use crate::seller::batch::Refusal;
use crate::store::RecordWrite;
use crate::store::ln::HoldRecord;
use crate::x402::codes;
use crate::x402::types::PaymentRequirements;

/// How long a reading's invoice stays payable.
pub const INVOICE_EXPIRY_SECS: u32 = 600;
/// Invoices kept after they expire (a late claim is still recognised), seconds.
const KEEP_EXPIRED_SECS: u64 = 3_600;

/// Selling reading keys over the device's Lightning node.
#[derive(Clone)]
pub struct LightningSales {
    node: Arc<LnNode>,
    /// Derives each invoice's preimage from its nonce; from the device seed.
    secret: [u8; 32],
    /// The price of one reading's key, msat.
    pub price_msat: u64,
    /// How long an invoice stays payable.
    pub invoice_expiry_secs: u32,
}

impl std::fmt::Debug for LightningSales {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LightningSales")
            .field("node", &self.node.node_id())
            .field("price_msat", &self.price_msat)
            .finish_non_exhaustive() // never the secret
    }
}

impl LightningSales {
    /// Sells every priced topic's keys for `price_msat` each over `node`, with the preimage
    /// secret derived from `keys` (so it survives restarts without a file of its own).
    pub fn new(
        node: Arc<LnNode>,
        keys: &m2m_wallet::DeviceKeys,
        price_msat: u64,
    ) -> Result<Self, LnError> {
        let secret = crate::ln::seed_secret(keys, b"m2m/priced-topic/ln-hold-secret/v1")?;
        Ok(Self {
            node,
            secret,
            price_msat,
            invoice_expiry_secs: INVOICE_EXPIRY_SECS,
        })
    }

    /// The price sheet's Lightning offer.
    pub(super) fn offer(&self) -> PaymentRequirements {
        PaymentRequirements {
            scheme: wire::LN_SCHEME.into(),
            network: wire::LN_NETWORK.into(),
            amount: self.price_msat.to_string(),
            asset: "msat".into(),
            pay_to: self.node.node_id().to_string(),
            max_timeout_seconds: u64::from(self.invoice_expiry_secs),
            extra: None,
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MqttSeller {
    /// Makes this seller the claimer of its node's held payments and forgets long-expired
    /// invoices.
    pub(super) fn start_lightning(self: &Arc<Self>) {
        let Some(sales) = &self.options.lightning else {
            return;
        };
        let store = self.seller.store();
        match store.prune_ln_holds(now_secs().saturating_sub(KEEP_EXPIRED_SECS)) {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "expired hold invoices forgotten"),
            Err(error) => tracing::warn!(%error, "pruning hold invoices"),
        }
        let seller = Arc::downgrade(self);
        let claimer: HoldClaimer = Arc::new(move |held| {
            let seller = seller.clone();
            Box::pin(async move {
                match seller.upgrade() {
                    Some(seller) => seller.decide_held(held).await,
                    None => HoldDecision::Fail,
                }
            })
        });
        sales.node.set_hold_claimer(Some(claimer));
    }

    /// Stops claiming (payments that arrive from now on are failed back).
    pub(super) fn stop_lightning(&self) {
        if let Some(sales) = &self.options.lightning {
            sales.node.set_hold_claimer(None);
        }
    }

    /// A held payment: claimed if it pays an invoice of ours in full (the sale durable first).
    async fn decide_held(&self, held: Held) -> HoldDecision {
        let Some(sales) = &self.options.lightning else {
            return HoldDecision::Fail;
        };
        let store = self.seller.store();
        let record = match store.ln_hold(&held.payment_hash) {
            Ok(Some(record)) => record,
            Ok(None) => return HoldDecision::Fail,
            Err(error) => {
                tracing::warn!(%error, "reading a hold invoice: failing the payment back");
                return HoldDecision::Fail;
            }
        };
        if held.amount_msat < record.amount_msat {
            return HoldDecision::Fail;
        }
        let preimage = hold::preimage(&sales.secret, &record.nonce);
        if hold::payment_hash(&preimage) != held.payment_hash {
            return HoldDecision::Fail; // another secret's invoice: not ours to claim
        }
        if !record.claimed {
            let resource = self.topics.get(&record.topic).cloned().unwrap_or_default();
            let sold = HoldRecord {
                claimed: true,
                ..record
            };
            let write = RecordWrite::LnHold(ChannelId(held.payment_hash), sold);
            if let Err(error) = store.submit(write).durable().await {
                tracing::warn!(%error, "recording a Lightning sale: failing the payment back");
                return HoldDecision::Fail;
            }
            self.stats.keys_sold.fetch_add(1, Ordering::Relaxed);
            self.stats
                .lightning_msat
                .fetch_add(held.amount_msat, Ordering::Relaxed);
            self.seller.events.publish(|| {
                AgentEvent::PaymentReceived(Payment {
                    leg: Leg::Lightning,
                    scheme: wire::LN_SCHEME.into(),
                    amount: u128::from(held.amount_msat),
                    resource,
                })
            });
        }
        HoldDecision::Claim(preimage)
    }

    /// Answers an invoice request for the key `request` names: a hold invoice, and the key
    /// wrapped so that only this buyer, once paid, can open it.
    pub(super) async fn offer_hold(
        &self,
        topic: &str,
        request: &Publish,
        properties: &[(String, String)],
    ) -> Result<((&'static str, String), Vec<u8>), Refusal> {
        let Some(sales) = &self.options.lightning else {
            return Err(Refusal::new(
                codes::UNSUPPORTED_SCHEME,
                "this seller sells no keys over Lightning",
            ));
        };
        let key_id = request.payload.to_vec();
        if key_id.is_empty() || key_id.len() > wire::MAX_KEY_ID {
            return Err(Refusal::new(
                codes::READING_KEY_UNKNOWN,
                "the payload must be a key id of 1 to 64 bytes",
            ));
        }
        let buyer_key = wire::property(properties, wire::BUYER_KEY)
            .and_then(|hex| alloy::primitives::hex::decode(hex).ok())
            .and_then(|bytes| secp256k1::PublicKey::from_slice(&bytes).ok())
            .ok_or_else(|| {
                Refusal::new(
                    codes::BUYER_KEY_INVALID,
                    "m2m-buyer-key is not a public key",
                )
            })?;
        let reading_key = self.key_on_sale(topic, &key_id)?;
        let unexpected = |why: &'static str| Refusal::new(codes::UNEXPECTED, why);
        let nonce: [u8; hold::NONCE_LEN] = random().map_err(|_| unexpected("no randomness"))?;
        let preimage = hold::preimage(&sales.secret, &nonce);
        let payment_hash = hold::payment_hash(&preimage);
        let record = HoldRecord {
            nonce,
            amount_msat: sales.price_msat,
            expires_at_secs: now_secs() + u64::from(sales.invoice_expiry_secs),
            claimed: false,
            topic: topic.to_owned(),
        };
        // Durable before the invoice exists, so any payment of it finds its record.
        self.seller
            .store()
            .submit(RecordWrite::LnHold(ChannelId(payment_hash), record))
            .durable()
            .await
            .map_err(|e| Refusal::internal(format!("recording the invoice: {e}")))?;
        let invoice = sales
            .node
            .hold_invoice(
                sales.price_msat,
                &format!("m2m reading on {topic}"),
                sales.invoice_expiry_secs,
                payment_hash,
            )
            .map_err(|e| Refusal::internal(format!("making the invoice: {e}")))?;
        let shared = self.signer.evm_key_agreement(&buyer_key);
        let parties = WrapParties {
            seller: self.signer.evm_address().0.0,
            buyer: m2m_wallet::evm_address_of(&buyer_key).0.0,
        };
        let wrap_nonce = random().map_err(|_| unexpected("no randomness"))?;
        let secret = hold::bind(&shared, &preimage);
        let wrapped = key_wrap::wrap(&secret, &parties, &key_id, &reading_key, wrap_nonce)
            .map_err(|e| Refusal::internal(format!("wrapping the key: {e}")))?;
        self.stats.invoices.fetch_add(1, Ordering::Relaxed);
        Ok(((wire::LN_INVOICE, invoice.to_string()), wrapped))
    }
}
