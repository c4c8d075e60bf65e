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

use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

/// Suffix of a reading topic's price sheet.
pub const PRICE_SUFFIX: &str = "/price";
/// Suffix of a reading topic's payment topic.
pub const PAY_SUFFIX: &str = "/pay";
/// User property: the buyer's key-agreement (and voucher-signing) public key, compressed, hex.
pub const BUYER_KEY: &str = "m2m-buyer-key";
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
    let properties = publish.properties.as_ref()?;
    let mut values = properties
        .user_properties
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
