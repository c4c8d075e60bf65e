//! The priced-topic protocol on MQTT 5 (decision 0014). For a reading topic `T`:
//!
//! | topic               | who writes | what                                                     |
//! |---------------------|------------|----------------------------------------------------------|
//! | `T`                 | seller     | signed sealed readings (COSE_Sign1 of a SenML pack), retained, QoS 1 |
//! | `T/price`           | seller     | the x402 `PaymentRequired` (JSON), retained              |
//! | `T/pay`             | buyers     | payment for one reading's key: payload = key id          |
//! | `m2m/keys/<buyer>`  | seller     | answers for one buyer (its ACL lets only it read them)   |
//! | `m2m/status/<addr>` | seller     | `online`, retained; its will says `offline`              |
//!
//! A payment carries, as MQTT 5 properties: user property `PAYMENT-SIGNATURE` (the x402 payload,
//! base64 JSON as in the HTTP header), user property `m2m-buyer-key` (the compressed public key
//! that signs the buyer's vouchers, hex), the response topic and correlation data. The answer
//! echoes the correlation data and carries either user property `PAYMENT-RESPONSE` with the
//! reading key wrapped for that buyer as payload, or `PAYMENT-REQUIRED` (the refusal, with the
//! corrective channel state) and an empty payload.
//!
//! Tick streams (where the sheet's offer names [`TICKS_PER_VOUCHER`] = K): a voucher payment
//! with [`TICK_ANCHOR`] and [`TICK_LENGTH`] opens a stream on the payer's channel; the next
//! readings may each be paid with one [`TICK`] (a SHA-256 preimage, checked with one hash) and
//! [`TICK_ANCHOR`], up to K of them; the next voucher (with [`TICK_ANCHOR`]) pays for the
//! readings the ticks bought and its own. At most K readings are ever on credit.
//!
//! Over Lightning (where the sheet has an [`LN_SCHEME`] offer): a message with [`LN_HOLD`] and
//! [`BUYER_KEY`] asks for a hold invoice; the answer carries it as [`LN_INVOICE`], with the key
//! wrapped under the ECDH secret bound to the invoice's preimage as payload
//! ([`m2m_core::hold`]). Paying the invoice is the purchase; its preimage opens the wrap.

use alloy::primitives::Address;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use secp256k1::PublicKey;

use crate::x402::headers::{self, HeaderError, PAYMENT_SIGNATURE};
use crate::x402::types::PaymentPayload;

/// Suffix of a reading topic's price sheet.
pub const PRICE_SUFFIX: &str = "/price";
/// Suffix of a reading topic's payment topic.
pub const PAY_SUFFIX: &str = "/pay";
/// User property: the buyer's key-agreement (and voucher-signing) public key, compressed, hex.
pub const BUYER_KEY: &str = "m2m-buyer-key";
/// User property: names a tick stream by its anchor (hex, 32 bytes); on a voucher payment it
/// opens the stream (with [`TICK_LENGTH`]) or covers its ticks.
pub const TICK_ANCHOR: &str = "m2m-tick-anchor";
/// User property: the chain length of the stream a voucher payment opens.
pub const TICK_LENGTH: &str = "m2m-tick-length";
/// User property: one tick — the next preimage of the stream's chain (hex, 32 bytes) — paying
/// for one reading's key instead of a voucher.
pub const TICK: &str = "m2m-tick";
/// Answer property to a tick: how many readings paid by ticks the next voucher must cover.
pub const TICKS_UNCOVERED: &str = "m2m-ticks-uncovered";
/// User property of a payment message asking for a hold invoice for the key it names (value
/// `1`) instead of paying with a voucher.
pub const LN_HOLD: &str = "m2m-ln-hold";
/// Answer property: the BOLT11 hold invoice that pays for the wrapped key in the payload.
pub const LN_INVOICE: &str = "m2m-ln-invoice";
/// The sheet's offer of keys over Lightning: amount in msat, `payTo` the node id.
pub const LN_SCHEME: &str = "m2m-ln-hold";
/// The network of [`LN_SCHEME`] offers (the invoice names the chain).
pub const LN_NETWORK: &str = "lightning";
/// `extra` key of the sheet's batch-settlement offer: K, the readings a stream may pay by ticks
/// between vouchers (absent: no ticks on this topic).
pub const TICKS_PER_VOUCHER: &str = "m2mTicksPerVoucher";

/// 32 bytes from hex, if that is what `text` holds.
pub fn hex32(text: &str) -> Option<[u8; 32]> {
    alloy::primitives::hex::decode(text).ok()?.try_into().ok()
}

/// The value of user property `name` among `properties`, if there is exactly one.
pub fn property<'p>(properties: &'p [(String, String)], name: &str) -> Option<&'p str> {
    one_property(properties, name)
}

/// Status payloads.
pub const ONLINE: &[u8] = b"online";
/// The seller's will.
pub const OFFLINE: &[u8] = b"offline";
/// Longest key id a payment may name.
pub const MAX_KEY_ID: usize = m2m_core::key_wrap::MAX_KEY_ID;

/// `T/price`.
pub fn price_topic(topic: &str) -> String {
    format!("{topic}{PRICE_SUFFIX}")
}

/// `T/pay`.
pub fn pay_topic(topic: &str) -> String {
    format!("{topic}{PAY_SUFFIX}")
}

/// Where the seller answers `buyer` (its broker account).
pub fn key_topic(buyer: &str) -> String {
    format!("m2m/keys/{buyer}")
}

/// The seller's status topic (`addr` = its device address, lowercase hex).
pub fn status_topic(seller: alloy::primitives::Address) -> String {
    format!("m2m/status/{seller:#x}")
}

/// The reading topic of a seller route (`/building1/room1/temperature` →
/// `building1/room1/temperature`).
pub fn route_topic(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The value of user property `name` of `publish`, if it has exactly one.
pub fn user_property<'p>(publish: &'p Publish, name: &str) -> Option<&'p str> {
    one_property(&publish.properties.as_ref()?.user_properties, name)
}

fn one_property<'p>(properties: &'p [(String, String)], name: &str) -> Option<&'p str> {
    let mut values = properties
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str());
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Properties of an answer to `request`: its correlation data and `property`.
pub fn answer_properties(request: &Publish, property: (&str, String)) -> PublishProperties {
    PublishProperties {
        correlation_data: request
            .properties
            .as_ref()
            .and_then(|p| p.correlation_data.clone()),
        user_properties: vec![(property.0.to_owned(), property.1)],
        ..PublishProperties::default()
    }
}

/// A payment message as the seller reads it, before any of it is checked against a channel.
#[derive(Debug, Clone)]
pub struct PaymentMessage {
    /// The key id paid for (the message's payload).
    pub key_id: Vec<u8>,
    /// The x402 payload of `PAYMENT-SIGNATURE`.
    pub payload: PaymentPayload,
    /// The voucher's signer (`channelConfig.payerAuthorizer`).
    pub payer: Address,
    /// Its key-agreement key (`m2m-buyer-key`), checked to be `payer`'s key.
    pub buyer_key: PublicKey,
    /// The voucher's channel id (lowercase hex) and total (decimal), as written.
    pub voucher: (String, String),
}

/// Why a payment message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PaymentMessageError {
    /// No (or more than one) `PAYMENT-SIGNATURE` property.
    #[error("no PAYMENT-SIGNATURE property")]
    NoSignature,
    /// `PAYMENT-SIGNATURE` is not an x402 payload.
    #[error("PAYMENT-SIGNATURE")]
    Signature(#[source] HeaderError),
    /// The key id is empty or too long.
    #[error("the key id must be 1 to {MAX_KEY_ID} bytes")]
    KeyId,
    /// `m2m-buyer-key` is missing, not a key, or not the voucher signer's.
    #[error("m2m-buyer-key: {0}")]
    BuyerKey(&'static str),
}

/// Reads a payment message: its payload (the key id) and user properties.
pub fn read_payment(
    key_id: &[u8],
    properties: &[(String, String)],
) -> Result<PaymentMessage, PaymentMessageError> {
    let one = |name: &str| one_property(properties, name);
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID {
        return Err(PaymentMessageError::KeyId);
    }
    let payload: PaymentPayload =
        headers::decode(one(PAYMENT_SIGNATURE).ok_or(PaymentMessageError::NoSignature)?)
            .map_err(PaymentMessageError::Signature)?;
    let buyer_key = one(BUYER_KEY)
        .and_then(|hex| alloy::primitives::hex::decode(hex).ok())
        .and_then(|bytes| PublicKey::from_slice(&bytes).ok())
        .ok_or(PaymentMessageError::BuyerKey("missing or not a public key"))?;
    let payer: Address = payload.payload["channelConfig"]["payerAuthorizer"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or(PaymentMessageError::BuyerKey(
            "the payment names no payerAuthorizer",
        ))?;
    if m2m_wallet::evm_address_of(&buyer_key) != payer {
        return Err(PaymentMessageError::BuyerKey(
            "not the key that signs the vouchers",
        ));
    }
    let voucher = &payload.payload["voucher"];
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    let voucher = (
        text(&voucher["channelId"]).to_ascii_lowercase(),
        text(&voucher["maxClaimableAmount"]),
    );
    Ok(PaymentMessage {
        key_id: key_id.to_vec(),
        payload,
        payer,
        buyer_key,
        voucher,
    })
}
