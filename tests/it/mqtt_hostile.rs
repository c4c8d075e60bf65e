//! Hostile payments on a priced MQTT topic, against the real seller on mosquitto and anvil: a
//! forged voucher, an earlier voucher replayed for a new reading, a voucher below what was
//! already charged, another buyer's key named as the payer's, and a payment for a key that is
//! not on sale each get a coded `PAYMENT-REQUIRED` on the sender's own topic, release no key and
//! charge nothing; the genuine payment that follows each of them goes through, and the token
//! balances add up on chain. And what a non-payer with an account sees through the broker's own
//! `mosquitto_sub` (Debian `mosquitto-clients`, installed when missing): the retained reading's
//! name, unit and price in clear, its value nowhere.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use m2m::node::buyer::{BuyerError, PaidAnswer, PaymentCarrier};
use m2m::node::x402::headers;
use m2m::node::x402::types::{PaymentPayload, PaymentRequired};
use m2m::wallet::Signer;
use rumqttc::v5::mqttbytes::v5::Publish;

use super::mqtt_paid::{RawPayer, TOPIC, market, served};

/// The refusal code of an answer, checking it carries no key.
fn refusal_code(answer: &Publish) -> String {
    assert!(
        answer.payload.is_empty(),
        "a refused payment released a key"
    );
    let required: PaymentRequired = headers::decode(
        m2m::node::mqtt::wire::user_property(answer, "PAYMENT-REQUIRED").expect("a refusal"),
    )
    .unwrap();
    required.error.unwrap_or_default()
}

/// Sends hostile variants of each genuine payment first (and records their refusal codes),
/// then the genuine one, whose answer it hands on.
struct Tampering {
    raw: RawPayer,
    key_id: Mutex<Vec<u8>>,
    buyer_key: String,
    stranger_key: String,
    earlier: Mutex<Option<PaymentPayload>>,
    refusals: Mutex<Vec<(&'static str, String)>>,
}

impl PaymentCarrier for Tampering {
    async fn carry(&self, message: PaymentPayload) -> Result<PaidAnswer, BuyerError> {
        let key_id = self.key_id.lock().unwrap().clone();
        let mut attempts: Vec<(&'static str, PaymentPayload, Vec<u8>, String)> = Vec::new();
        // One bit of the voucher's signature changed.
        let mut forged = message.clone();
        let signature = forged.payload["voucher"]["signature"]
            .as_str()
            .unwrap()
            .to_owned();
        let last = if signature.ends_with('0') { "1" } else { "0" };
        forged.payload["voucher"]["signature"] =
            format!("{}{last}", &signature[..signature.len() - 1]).into();
        attempts.push(("forged", forged, key_id.clone(), self.buyer_key.clone()));
        // The same (genuine) voucher, claimed by another device's key.
        attempts.push((
            "stranger",
            message.clone(),
            key_id.clone(),
            self.stranger_key.clone(),
        ));
        // The genuine voucher for a key id nobody sells.
        attempts.push((
            "unknown key",
            message.clone(),
            b"no such key".to_vec(),
            self.buyer_key.clone(),
        ));
        if let Some(earlier) = self.earlier.lock().unwrap().clone() {
            // The previous reading's voucher again, for this reading: below what was charged.
            attempts.push(("replayed", earlier, key_id.clone(), self.buyer_key.clone()));
        }
        for (what, payload, key, buyer_key) in attempts {
            let answer = self.raw.pay(&payload, &key, &buyer_key).await;
            self.refusals
                .lock()
                .unwrap()
                .push((what, refusal_code(&answer)));
        }
        let answer = self.raw.pay(&message, &key_id, &self.buyer_key).await;
        *self.earlier.lock().unwrap() = Some(message);
        Ok(served(&answer))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_foreign_payments_release_no_key_and_charge_nothing() {
    let market = market().await;
    let (raw, sheet) = RawPayer::connect(&market.broker, "b2").await;
    let stranger = m2m::wallet::DeviceKeys::derive(
        &m2m::wallet::DeviceSeed::generate(m2m::wallet::SeedLength::Words12).unwrap(),
        m2m::wallet::Network::Regtest,
    )
    .unwrap();
    let hex = |key: bitcoin::secp256k1::PublicKey| alloy::primitives::hex::encode(key.serialize());
    let tampering = Tampering {
        raw,
        key_id: Mutex::new(Vec::new()),
        buyer_key: hex(market.buyer_keys.evm_public_key()),
        stranger_key: hex(stranger.evm_public_key()),
        earlier: Mutex::new(None),
        refusals: Mutex::new(Vec::new()),
    };
    // The readings as an unpaid subscriber of the same account sees them.
    let b2 = m2m::node::mqtt::buyer::MqttBuyer::connect(
        market.buyer.clone(),
        market.buyer_keys.clone(),
        &super::mqtt_paid::endpoint(&market.broker, "b2"),
        m2m::node::mqtt::buyer::MqttBuyerOptions {
            client_id: "b2-readings".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut readings = b2.subscribe(TOPIC).await.unwrap();
    const ROUNDS: u128 = 3;
    for _ in 0..ROUNDS {
        let (key_id, _) = market.publish(&mut readings).await;
        *tampering.key_id.lock().unwrap() = key_id.clone();
        let fetched = market
            .buyer
            .pay_over(&tampering, &sheet, None)
            .await
            .expect("the genuine payment goes through");
        assert!(!fetched.body.is_empty(), "the genuine payment got its key");
    }
    let refusals = tampering.refusals.lock().unwrap().clone();
    let codes = |what: &str| -> Vec<String> {
        refusals
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|(_, code)| code.clone())
            .collect()
    };
    let each = |code: &str, times: usize| vec![code.to_owned(); times];
    let rounds = ROUNDS as usize;
    assert_eq!(
        codes("forged"),
        each("invalid_batch_settlement_evm_voucher_signature", rounds)
    );
    assert_eq!(codes("stranger"), each("m2m_buyer_key_invalid", rounds));
    assert_eq!(
        codes("unknown key"),
        each("m2m_reading_key_unknown", rounds)
    );
    assert_eq!(
        codes("replayed"),
        each(
            "invalid_batch_settlement_evm_cumulative_amount_mismatch",
            rounds - 1
        )
    );
    let stats = &market.mqtt_seller.seller.stats;
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), ROUNDS as u64);
    assert_eq!(
        stats.refused.load(Ordering::Relaxed),
        refusals.len() as u64,
        "{refusals:?}"
    );
    b2.disconnect().await;
    market.settle_and_check(ROUNDS).await;
}

/// CBOR encodings of `value` a pack could hold (double, and single when exact).
fn float_encodings(value: f64) -> Vec<String> {
    let mut encodings = vec![format!(
        "fb{}",
        alloy::primitives::hex::encode(value.to_be_bytes())
    )];
    if f64::from(value as f32) == value {
        let single = (value as f32).to_be_bytes();
        encodings.push(format!("fa{}", alloy::primitives::hex::encode(single)));
    }
    encodings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_shows_a_non_payer_the_clear_fields_and_ciphertext_only() {
    let market = market().await;
    let b1 = m2m::node::mqtt::buyer::MqttBuyer::connect(
        market.buyer.clone(),
        market.buyer_keys.clone(),
        &super::mqtt_paid::endpoint(&market.broker, "b1"),
        Default::default(),
    )
    .await
    .unwrap();
    let mut readings = b1.subscribe(TOPIC).await.unwrap();
    let (_, signed) = market.publish(&mut readings).await;
    let paid = b1.buy(TOPIC, &signed).await.expect("the payer reads it");

    // The broker's own command-line client, as `eve` (an account that may read the topic).
    let sub = m2m::node::tools::mosquitto_sub().expect("mosquitto_sub");
    let port = market.broker.port().to_string();
    let ca = market.broker.ca_file();
    let output = std::process::Command::new(sub)
        .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port, "--cafile"])
        .arg(&ca)
        .args(["-u", "eve", "-P", "eve-secret-password", "-i", "eve-cli"])
        .args(["-t", TOPIC, "-C", "1", "-W", "10", "-F", "%x"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(
        seen,
        alloy::primitives::hex::encode(&signed),
        "the retained reading"
    );
    let hex = |text: &str| alloy::primitives::hex::encode(text.as_bytes());
    for clear in [paid.reading.name.as_str(), "Cel", "price_", "1000"] {
        assert!(seen.contains(&hex(clear)), "{clear} is in clear");
    }
    for encoding in float_encodings(paid.reading.value) {
        assert!(!seen.contains(&encoding), "the value is not in clear");
    }
    println!(
        "mosquitto_sub -t {TOPIC} -F %x (a non-payer, value {} hidden):\n{seen}",
        paid.reading.value
    );
    b1.disconnect().await;
    market.settle_and_check(1).await;
}
