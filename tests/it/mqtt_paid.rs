//! A priced MQTT topic end to end: our seller and buyer (device wallets, channel stores) on a
//! real mosquitto (TLS, password accounts, per-account ACLs) and anvil. The seller publishes
//! signed readings with the value encrypted and a retained x402 price sheet; the buyer pays per
//! reading with batch-settlement vouchers carried in MQTT 5 user properties and gets each key
//! wrapped for it alone on its own topic. Then the hostile and unlucky cases: an unpaid
//! subscriber sees the clear fields but not the value and cannot read another buyer's keys, a
//! malformed payment is refused and changes nothing, a redelivered payment is answered again
//! without a second charge, and a seller whose will says `offline` is not paid. Every unit of
//! the token is accounted for on chain.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::primitives::Address;
use m2m::core::key_wrap::{self, WrapParties};
use m2m::node::buyer::{Buyer, BuyerError, BuyerOptions, PaidAnswer, PaymentCarrier};
use m2m::node::datadir::DataDir;
use m2m::node::mqtt::buyer::{MqttBuyError, MqttBuyer, MqttBuyerOptions};
use m2m::node::mqtt::seller::{MqttSeller, MqttSellerHandle, MqttSellerOptions};
use m2m::node::mqtt::{MqttEndpoint, connect, pack, wire};
use m2m::node::seller::sensor::SimulatedSensor;
use m2m::node::seller::{Seller, SellerConfig};
use m2m::node::store::ChannelStore;
use m2m::node::tools::{MosquittoHandle, MqttAccount, start_mosquitto};
use m2m::node::x402::headers;
use m2m::node::x402::types::{PaymentPayload, PaymentRequired};
use m2m::wallet::Signer;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop};

use crate::support::{LocalChain, seller_and_buyer};

pub(super) const TOPIC: &str = "building1/floor1/room1/temperature";
pub(super) const PRICE: u128 = 1_000;
const MINTED: u128 = 10_000_000;
const READINGS: u128 = 12;

pub(super) fn account(user: &str, topics: Vec<String>) -> MqttAccount {
    MqttAccount {
        user: user.into(),
        password: format!("{user}-secret-password"),
        topics,
    }
}

/// A buyer's ACL: the readings, the sheet and statuses to read, the payment topic to write, and
/// its own answer topic only.
pub(super) fn buyer_account(user: &str) -> MqttAccount {
    account(
        user,
        vec![
            format!("read {TOPIC}"),
            format!("read {TOPIC}/price"),
            format!("write {TOPIC}/pay"),
            format!("read m2m/keys/{user}"),
            "read m2m/status/#".into(),
        ],
    )
}

pub(super) fn endpoint(broker: &MosquittoHandle, user: &str) -> MqttEndpoint {
    MqttEndpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        ca_pem: broker.ca_pem().to_owned(),
        user: user.into(),
        password: format!("{user}-secret-password"),
    }
}

fn seller_config(chain: &LocalChain) -> SellerConfig {
    SellerConfig::parse(&format!(
        r#"
        listen = "127.0.0.1:0"
        rpc_url = "{rpc}"
        network = "eip155:31337"
        [[route]]
        path = "/{TOPIC}"
        price = "{PRICE}"
        asset = "{token}"
        description = "room 1 temperature"
        "#,
        rpc = chain.anvil.endpoint(),
        token = chain.token,
    ))
    .expect("seller config")
}

fn store(dir: &std::path::Path) -> ChannelStore {
    ChannelStore::open(&DataDir::open(dir).unwrap()).unwrap()
}

/// The next publish on `events` within `within`.
pub(super) async fn next_publish(events: &mut EventLoop, within: Duration) -> Option<Publish> {
    tokio::time::timeout(within, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => return Some(publish),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// The signed reading with key id `key_id` from `readings` (skipping older retained ones).
pub(super) async fn reading_with_key(
    readings: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    seller: Address,
    key_id: &[u8],
) -> Vec<u8> {
    loop {
        let signed = tokio::time::timeout(Duration::from_secs(10), readings.recv())
            .await
            .expect("a reading in time")
            .expect("reading stream open");
        if pack::verify(&signed, seller).unwrap().sealed.key_id == key_id {
            return signed;
        }
    }
}

/// A buyer's own connection to the broker, to send payments as it likes: answers come back on
/// its answer topic.
pub(super) struct RawPayer {
    client: AsyncClient,
    events: tokio::sync::Mutex<EventLoop>,
    user: String,
}

impl RawPayer {
    /// Connects as `user`, subscribes to its answer topic and the price sheet; also returns the
    /// retained sheet.
    pub(super) async fn connect(broker: &MosquittoHandle, user: &str) -> (Self, PaymentRequired) {
        let (client, mut events) = connect(&endpoint(broker, user), user, true).await.unwrap();
        client
            .subscribe(wire::key_topic(user), QoS::AtLeastOnce)
            .await
            .unwrap();
        client
            .subscribe(wire::price_topic(TOPIC), QoS::AtLeastOnce)
            .await
            .unwrap();
        let sheet = loop {
            let publish = next_publish(&mut events, Duration::from_secs(10))
                .await
                .expect("the retained sheet");
            if publish.topic.as_ref() == wire::price_topic(TOPIC).as_bytes() {
                break serde_json::from_slice::<PaymentRequired>(&publish.payload).unwrap();
            }
        };
        let raw = Self {
            client,
            events: tokio::sync::Mutex::new(events),
            user: user.to_owned(),
        };
        (raw, sheet)
    }

    /// Publishes `message` as a payment for `key_id` with `buyer_key` as `m2m-buyer-key`; the
    /// seller's answer.
    pub(super) async fn pay(
        &self,
        message: &PaymentPayload,
        key_id: &[u8],
        buyer_key: &str,
    ) -> Publish {
        let properties = vec![
            ("PAYMENT-SIGNATURE".into(), headers::encode(message)),
            (wire::BUYER_KEY.into(), buyer_key.to_owned()),
        ];
        self.send(key_id, properties).await
    }

    /// Publishes a payment message for `key_id` with `properties`; the seller's answer.
    pub(super) async fn send(&self, key_id: &[u8], properties: Vec<(String, String)>) -> Publish {
        let properties = PublishProperties {
            response_topic: Some(wire::key_topic(&self.user)),
            correlation_data: Some(key_id.to_vec().into()),
            user_properties: properties,
            ..Default::default()
        };
        let mut events = self.events.lock().await;
        self.client
            .publish_with_properties(
                wire::pay_topic(TOPIC),
                QoS::AtLeastOnce,
                false,
                key_id.to_vec(),
                properties,
            )
            .await
            .unwrap();
        loop {
            let answer = next_publish(&mut events, Duration::from_secs(10))
                .await
                .expect("an answer");
            if answer.topic.as_ref() == wire::key_topic(&self.user).as_bytes() {
                return answer;
            }
        }
    }
}

/// The answer as the buyer's payment logic takes it.
pub(super) fn served(answer: &Publish) -> PaidAnswer {
    let settlement =
        wire::user_property(answer, "PAYMENT-RESPONSE").map(|text| headers::decode(text).unwrap());
    PaidAnswer::Served {
        status: 200,
        body: answer.payload.to_vec(),
        settlement,
    }
}

/// A carrier that publishes each payment twice, as QoS 1 does after a lost acknowledgement,
/// and hands on the first answer after checking the second is the same.
struct Redelivering {
    raw: RawPayer,
    key_id: Vec<u8>,
    buyer_key: String,
}

impl PaymentCarrier for Redelivering {
    async fn carry(&self, message: PaymentPayload) -> Result<PaidAnswer, BuyerError> {
        let first = self.raw.pay(&message, &self.key_id, &self.buyer_key).await;
        let second = self.raw.pay(&message, &self.key_id, &self.buyer_key).await;
        assert_eq!(first.payload, second.payload, "the same wrapped key twice");
        let property = |p: &Publish| p.properties.as_ref().unwrap().user_properties.clone();
        assert_eq!(property(&first), property(&second), "the same settlement");
        Ok(served(&first))
    }
}

/// The seller's ACL: its readings, sheet and status to write, payments to read, every
/// buyer's answer topic to write.
pub(super) fn seller_account(seller: Address) -> MqttAccount {
    account(
        "seller",
        vec![
            format!("write {TOPIC}"),
            format!("write {TOPIC}/price"),
            format!("read {TOPIC}/pay"),
            "write m2m/keys/#".into(),
            format!("write {}", wire::status_topic(seller)),
        ],
    )
}

/// A seller and a buyer device on anvil and a broker with accounts `seller`, `b1`, `b2`, `eve`.
pub(super) struct Market {
    pub(super) chain: LocalChain,
    pub(super) broker: MosquittoHandle,
    pub(super) seller_keys: Arc<m2m::wallet::DeviceKeys>,
    pub(super) buyer_keys: Arc<m2m::wallet::DeviceKeys>,
    pub(super) seller: Arc<Seller>,
    pub(super) mqtt_seller: MqttSellerHandle,
    pub(super) buyer: Arc<Buyer>,
    _dirs: tempfile::TempDir,
}

pub(super) async fn market() -> Market {
    market_with(MqttSellerOptions::default()).await
}

/// [`market`] with the MQTT seller's `options`.
pub(super) async fn market_with(options: MqttSellerOptions) -> Market {
    let chain = LocalChain::start(31337).await;
    let (seller_keys, buyer_keys) = seller_and_buyer(&chain, MINTED).await;
    let broker = start_mosquitto(&[
        seller_account(seller_keys.evm_address()),
        buyer_account("b1"),
        buyer_account("b2"),
        buyer_account("eve"),
    ])
    .await
    .expect("mosquitto");
    let dirs = tempfile::tempdir().unwrap();
    let seller = Seller::start(
        seller_config(&chain),
        seller_keys.clone(),
        store(&dirs.path().join("seller")),
        Arc::new(SimulatedSensor::new("room1")),
    )
    .await
    .expect("seller");
    let mqtt_seller = MqttSeller::start(
        seller.clone(),
        seller_keys.clone(),
        &endpoint(&broker, "seller"),
        options,
    )
    .await
    .expect("MQTT seller");
    let buyer = Arc::new(Buyer::new(
        buyer_keys.clone(),
        store(&dirs.path().join("buyer")),
        BuyerOptions::default(),
    ));
    Market {
        chain,
        broker,
        seller_keys,
        buyer_keys,
        seller,
        mqtt_seller,
        buyer,
        _dirs: dirs,
    }
}

impl Market {
    /// A buyer on the market's broker as account `user`, paying from the market's buyer.
    pub(super) async fn buyer_client(&self, user: &str, options: MqttBuyerOptions) -> MqttBuyer {
        MqttBuyer::connect(
            self.buyer.clone(),
            self.buyer_keys.clone(),
            &endpoint(&self.broker, user),
            options,
        )
        .await
        .expect("buyer connects")
    }

    /// The seller publishes a reading; its key id and the signed reading as `readings` gets it.
    pub(super) async fn publish(
        &self,
        readings: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    ) -> (Vec<u8>, Vec<u8>) {
        let seller = &self.mqtt_seller.seller;
        let key_id = seller.publish_reading(TOPIC).await.unwrap();
        let signed = reading_with_key(readings, self.seller_keys.evm_address(), &key_id).await;
        (key_id, signed)
    }

    /// The seller claims what it was paid; every unit of the token is accounted for: the seller
    /// holds `paid` readings' worth, the escrow the rest of the one deposit.
    pub(super) async fn settle_and_check(&self, paid: u128) {
        self.seller.claim_all().await.expect("claim");
        let (seller_got, buyer_left, escrow) = crate::support::token_split(
            &self.chain,
            self.seller.receiver(),
            self.buyer_keys.evm_address(),
        )
        .await;
        assert_eq!(seller_got, paid * PRICE);
        assert_eq!(escrow, 100 * PRICE - paid * PRICE);
        assert_eq!(seller_got + buyer_left + escrow, MINTED, "conservation");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_on_a_priced_topic_are_paid_per_key_and_only_the_payer_can_read_them() {
    let market = market().await;
    let Market {
        broker,
        seller_keys,
        buyer_keys,
        mqtt_seller,
        buyer,
        ..
    } = &market;
    let seller_address = seller_keys.evm_address();
    let topics: Vec<&str> = mqtt_seller.seller.topics().collect();
    assert_eq!(topics, [TOPIC]);

    let b1 = MqttBuyer::connect(
        buyer.clone(),
        buyer_keys.clone(),
        &endpoint(broker, "b1"),
        MqttBuyerOptions::default(),
    )
    .await
    .expect("buyer connects");
    let mut readings = b1.subscribe(TOPIC).await.unwrap();

    // An unpaid subscriber (its own account) sees every reading and its price sheet.
    let (eve, mut eve_events) = connect(&endpoint(broker, "eve"), "eve", true)
        .await
        .unwrap();
    eve.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    // ... and tries to read b1's answers (the ACL filters them out).
    eve.subscribe(wire::key_topic("b1"), QoS::AtLeastOnce)
        .await
        .unwrap();

    // Paid per reading: each key bought, unwrapped and used.
    for round in 0..READINGS {
        let key_id = mqtt_seller.seller.publish_reading(TOPIC).await.unwrap();
        let signed = reading_with_key(&mut readings, seller_address, &key_id).await;
        let paid = b1.buy(TOPIC, &signed).await.expect("bought");
        assert_eq!(paid.key_id, key_id);
        assert_eq!(paid.price, PRICE);
        assert_eq!(
            paid.reading.name, "urn:dev:m2m:room1:simulated:temperature",
            "round {round}"
        );
        assert_eq!(paid.reading.unit.as_deref(), Some("Cel"));
        assert!((-10.0..50.0).contains(&paid.reading.value), "{paid:?}");
        assert!(paid.settlement.is_some_and(|s| s.success));
    }
    assert_eq!(
        buyer.stats.vouchers.load(Ordering::Relaxed),
        READINGS as u64
    );
    assert_eq!(buyer.stats.deposits.load(Ordering::Relaxed), 1);
    assert_eq!(
        mqtt_seller.seller.stats.keys_sold.load(Ordering::Relaxed),
        READINGS as u64
    );

    // What eve got: readings with name, unit, time and price in clear, no value, no key.
    let mut seen = 0;
    let mut leaked = Vec::new();
    while let Some(publish) = next_publish(&mut eve_events, Duration::from_secs(2)).await {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        if topic != TOPIC {
            leaked.push(topic);
            continue;
        }
        let sealed = pack::verify(&publish.payload, seller_address)
            .expect("signed by the seller")
            .sealed;
        assert_eq!(
            sealed.name.as_deref(),
            Some("urn:dev:m2m:room1:simulated:temperature")
        );
        assert_eq!(sealed.unit.as_deref(), Some("Cel"));
        assert_eq!(sealed.price, PRICE);
        assert_eq!(sealed.value, None, "the value is not in clear");
        assert!(sealed.open(&[0; 32]).is_err());
        seen += 1;
    }
    assert!(seen >= 1, "eve saw the readings");
    assert!(
        leaked.is_empty(),
        "eve received {leaked:?}\n{}",
        broker.log()
    );

    // A malformed payment gets a PAYMENT-REQUIRED on eve's own topic and charges nothing.
    eve.subscribe(wire::key_topic("eve"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let key_id = mqtt_seller.seller.publish_reading(TOPIC).await.unwrap();
    let bogus = PublishProperties {
        response_topic: Some(wire::key_topic("eve")),
        correlation_data: Some(b"c1"[..].into()),
        user_properties: vec![("PAYMENT-SIGNATURE".into(), "not base64 JSON".into())],
        ..Default::default()
    };
    eve.publish_with_properties(
        wire::pay_topic(TOPIC),
        QoS::AtLeastOnce,
        false,
        key_id.clone(),
        bogus,
    )
    .await
    .unwrap();
    let answer = loop {
        let publish = next_publish(&mut eve_events, Duration::from_secs(10))
            .await
            .expect("an answer to eve");
        if publish.topic.as_ref() == wire::key_topic("eve").as_bytes() {
            break publish;
        }
    };
    assert!(answer.payload.is_empty(), "no key for a bad payment");
    let refusal: PaymentRequired =
        headers::decode(wire::user_property(&answer, "PAYMENT-REQUIRED").unwrap()).unwrap();
    assert_eq!(refusal.error.as_deref(), Some("invalid_payload"));
    assert_eq!(
        answer
            .properties
            .as_ref()
            .unwrap()
            .correlation_data
            .as_deref(),
        Some(&b"c1"[..])
    );

    // A redelivered payment (the same message twice) is answered twice with the same key and
    // charged once.
    let (raw, sheet) = RawPayer::connect(broker, "b2").await;
    assert_eq!(sheet.accepts.len(), 1, "batch-settlement only on MQTT");
    let sold_before = mqtt_seller.seller.stats.keys_sold.load(Ordering::Relaxed);
    let charged_before = buyer.stats.vouchers.load(Ordering::Relaxed);
    let twice = Redelivering {
        raw,
        key_id: key_id.clone(),
        buyer_key: alloy::primitives::hex::encode(buyer_keys.evm_public_key().serialize()),
    };
    let fetched = buyer
        .pay_over(&twice, &sheet, None)
        .await
        .expect("paid once");
    let shared = buyer_keys.evm_key_agreement(&seller_keys.evm_public_key());
    let parties = WrapParties {
        seller: seller_address.0.0,
        buyer: buyer_keys.evm_address().0.0,
    };
    let (unwrapped_id, _key) = key_wrap::unwrap(&shared, &parties, &fetched.body).unwrap();
    assert_eq!(unwrapped_id, key_id);
    let stats = &mqtt_seller.seller.stats;
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), sold_before + 1);
    assert_eq!(stats.redelivered.load(Ordering::Relaxed), 1);
    assert_eq!(
        buyer.stats.vouchers.load(Ordering::Relaxed),
        charged_before + 1
    );
    let paid_readings = READINGS + 1;

    // The seller drops off without a goodbye: its will says `offline`, and the buyer pays
    // nothing for a reading it still holds.
    let last_key = mqtt_seller.seller.publish_reading(TOPIC).await.unwrap();
    let last = reading_with_key(&mut readings, seller_address, &last_key).await;
    mqtt_seller.crash();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !b1.seller_offline(seller_address) {
        assert!(std::time::Instant::now() < deadline, "no will seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = match b1.buy(TOPIC, &last).await {
        Err(MqttBuyError::SellerOffline(who)) => who,
        other => panic!("bought from a seller that is offline: {other:?}"),
    };
    assert_eq!(refused, seller_address);
    assert_eq!(
        buyer.stats.vouchers.load(Ordering::Relaxed),
        paid_readings as u64
    );

    market.settle_and_check(paid_readings).await;
    b1.disconnect().await;
    println!("mqtt: {paid_readings} keys sold, 1 redelivery answered free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_acknowledged_payment() {
    let mut market = market().await;
    // A persistent session: the broker keeps the buyer's subscriptions and its unacknowledged
    // messages (both ways) across the restart, on disk.
    let options = MqttBuyerOptions {
        clean_start: false,
        ..MqttBuyerOptions::default()
    };
    let b1 = market.buyer_client("b1", options).await;
    let mut readings = b1.subscribe(TOPIC).await.unwrap();
    const ROUNDS: usize = 24;
    let (mut bought, mut failed) = (0u128, Vec::new());
    for round in 0..ROUNDS {
        let (key_id, signed) = market.publish(&mut readings).await;
        let buying = b1.buy(TOPIC, &signed);
        if round == ROUNDS / 2 {
            // The broker goes down and comes back while this payment is on its way.
            let begun = std::time::Instant::now();
            let (paid, restarted) = tokio::join!(buying, market.broker.restart());
            restarted.expect("broker restarts");
            println!("the purchase across the restart took {:?}", begun.elapsed());
            match paid {
                Ok(_) => bought += 1,
                Err(error) => failed.push(error),
            }
        } else {
            match buying.await {
                Ok(paid) => {
                    assert_eq!(paid.key_id, key_id);
                    bought += 1;
                }
                Err(error) => failed.push(error),
            }
        }
    }
    let stats = &market.mqtt_seller.seller.stats;
    let sold = u128::from(stats.keys_sold.load(Ordering::Relaxed));
    println!(
        "broker restart: {bought} bought, {sold} sold, {} redelivered, failures {failed:?}",
        stats.redelivered.load(Ordering::Relaxed)
    );
    assert!(failed.is_empty(), "every purchase completed: {failed:?}");
    assert_eq!(bought, ROUNDS as u128);
    assert_eq!(sold, bought, "no payment taken twice, none lost");
    assert_eq!(
        market.buyer.stats.vouchers.load(Ordering::Relaxed),
        ROUNDS as u64
    );
    b1.disconnect().await;
    market.settle_and_check(bought).await;
}
