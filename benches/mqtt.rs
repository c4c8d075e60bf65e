//! Priced MQTT topics (`cargo bench --bench mqtt`): what a paid reading costs on the wire and in
//! CPU, and how one seller fans out to many paying subscribers.
//!
//! 1. In process: bytes of a signed reading with nothing, the value, or every field encrypted
//!    (and the SenML JSON HTTP serves, for reference); the seller's CPU per reading (seal + sign)
//!    and per key sold (ECDH + wrap), as ratios to one ECDSA signature measured in the same run.
//! 2. On mosquitto (TLS, one account per device) and anvil: one seller, N paying subscribers
//!    (`M2M_MQTT_FANOUT`, default `100,1000`), `M2M_MQTT_ROUNDS` readings each (default 3): keys
//!    sold per second and key-release latency (publish → key unwrapped and reading opened)
//!    p50/p99, and the bytes of one payment and one answer as a spy account sees them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use m2m::contracts::bindings::TestToken;
use m2m::core::key_wrap::{self, WrapParties};
use m2m::core::senml::{self, Mask, Reading};
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::datadir::DataDir;
use m2m::node::mqtt::buyer::{MqttBuyer, MqttBuyerOptions};
use m2m::node::mqtt::seller::{MqttSeller, MqttSellerOptions};
use m2m::node::mqtt::{MqttEndpoint, connect, pack, wire};
use m2m::node::seller::sensor::{SenmlRecord, SimulatedSensor};
use m2m::node::seller::{Seller, SellerConfig};
use m2m::node::store::ChannelStore;
use m2m::node::tools::{Foundry, MosquittoHandle, MqttAccount, start_anvil, start_mosquitto};
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength, Signer};
use rumqttc::v5::Event;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;

const TOPIC: &str = "building1/floor1/room1/temperature";
const PRICE: u128 = 1_000;

fn device() -> Arc<DeviceKeys> {
    let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
    Arc::new(DeviceKeys::derive(&seed, Network::Regtest).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Mean time of `f` over `runs` calls.
fn time(runs: u32, mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..runs {
        f();
    }
    started.elapsed() / runs
}

fn in_process() {
    let keys = device();
    let reading = Reading {
        name: "urn:dev:m2m:0x5e11e4:temperature".into(),
        unit: Some("Cel".into()),
        time: Some(1_796_354_833.25),
        value: 21.37,
    };
    let (key, nonce) = ([7u8; 32], [1u8; 12]);
    let signed = |mask: Mask| {
        let sealed = senml::seal(&reading, mask, PRICE, b"0123456789ab", &key, nonce).unwrap();
        pack::sign(sealed, &*keys).unwrap()
    };
    let all = Mask {
        name: true,
        unit: true,
        time: true,
        value: true,
    };
    let json = serde_json::to_vec(&[SenmlRecord {
        base_name: None,
        name: reading.name.clone(),
        unit: "Cel".into(),
        value: reading.value,
        time: reading.time.unwrap(),
    }])
    .unwrap();
    println!("bytes per reading (payload of one MQTT message, signed by the device key):");
    println!(
        "  SenML JSON as HTTP serves it, unsigned: {:>4} B",
        json.len()
    );
    let clear = pack::sign(senml::clear(&reading, PRICE).unwrap(), &*keys).unwrap();
    println!(
        "  SenML CBOR in clear, signed:            {:>4} B",
        clear.len()
    );
    for (what, mask) in [
        ("value encrypted (default)", Mask::default()),
        ("every field encrypted", all),
    ] {
        println!("  {what:<38} {:>4} B", signed(mask).len());
    }
    const RUNS: u32 = 2_000;
    let digest = alloy::primitives::B256::repeat_byte(9);
    let ecdsa = time(RUNS, || {
        keys.sign_evm_digest(&digest).unwrap();
    });
    let per_reading = time(RUNS, || {
        signed(Mask::default());
    });
    let buyer = device();
    let parties = WrapParties {
        seller: keys.evm_address().0.0,
        buyer: buyer.evm_address().0.0,
    };
    let per_key = time(RUNS, || {
        let shared = keys.evm_key_agreement(&buyer.evm_public_key());
        key_wrap::wrap(&shared, &parties, b"0123456789ab", &key, nonce).unwrap();
    });
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!("seller CPU (one core, {RUNS} runs each, same run):");
    println!(
        "  one ECDSA signature (reference)        {:>7.1} µs",
        micros(ecdsa)
    );
    println!(
        "  a reading: seal + sign                 {:>7.1} µs  ({:.2}x the signature)",
        micros(per_reading),
        per_reading.as_secs_f64() / ecdsa.as_secs_f64()
    );
    println!(
        "  a key sold: ECDH + HKDF + wrap         {:>7.1} µs  ({:.2}x the signature)",
        micros(per_key),
        per_key.as_secs_f64() / ecdsa.as_secs_f64()
    );
}

fn account(user: &str, topics: Vec<String>) -> MqttAccount {
    MqttAccount {
        user: user.into(),
        password: format!("{user}-bench-password"),
        topics,
    }
}

fn endpoint(broker: &MosquittoHandle, user: &str) -> MqttEndpoint {
    MqttEndpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        ca_pem: broker.ca_pem().to_owned(),
        user: user.into(),
        password: format!("{user}-bench-password"),
    }
}

/// Sizes of the latest payment and answer (MQTT packets), kept up to date by a spy account
/// allowed to see both.
async fn spy(broker: &MosquittoHandle) -> Arc<[std::sync::atomic::AtomicUsize; 2]> {
    let (client, mut events) = connect(&endpoint(broker, "spy"), "spy", true)
        .await
        .unwrap();
    client
        .subscribe(wire::pay_topic(TOPIC), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("m2m/keys/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let sizes: Arc<[std::sync::atomic::AtomicUsize; 2]> = Arc::default();
    let seen = sizes.clone();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let slot = usize::from(!publish.topic.ends_with(wire::PAY_SUFFIX.as_bytes()));
                    seen[slot].store(publish.size(), std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    sizes
}

async fn fan_out(subscribers: usize, rounds: usize) {
    let foundry = Foundry::ensure().expect("provision anvil");
    let anvil = start_anvil(&foundry, 31337).unwrap();
    let deployer = PrivateKeySigner::from(anvil.instance().keys()[0].clone());
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(deployer))
        .connect_http(anvil.endpoint().parse().unwrap())
        .erased();
    m2m::contracts::deploy::install_canonical(&provider)
        .await
        .unwrap();
    let token_address = m2m::contracts::deploy::deploy_test_token(&provider)
        .await
        .unwrap();
    let token = TestToken::new(token_address, &provider);
    let seller_keys = device();
    let _: serde_json::Value = provider
        .raw_request(
            "anvil_setBalance".into(),
            (seller_keys.evm_address(), U256::from(10u128.pow(21))),
        )
        .await
        .unwrap();
    let mut accounts = vec![
        account(
            "seller",
            vec![
                format!("write {TOPIC}"),
                format!("write {TOPIC}/price"),
                format!("read {TOPIC}/pay"),
                "write m2m/keys/#".into(),
                format!("write {}", wire::status_topic(seller_keys.evm_address())),
            ],
        ),
        account(
            "spy",
            vec![format!("read {TOPIC}/pay"), "read m2m/keys/#".into()],
        ),
    ];
    for index in 0..subscribers {
        let user = format!("b{index}");
        accounts.push(account(
            &user,
            vec![
                format!("read {TOPIC}"),
                format!("read {TOPIC}/price"),
                format!("write {TOPIC}/pay"),
                format!("read m2m/keys/{user}"),
                "read m2m/status/#".into(),
            ],
        ));
    }
    eprintln!(
        "fan-out {subscribers}: broker with {} accounts...",
        accounts.len()
    );
    let broker = start_mosquitto(&accounts).await.expect("mosquitto");
    let dirs = tempfile::tempdir().unwrap();
    let config = SellerConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:31337\"\n\
         [claim]\nthreshold = \"{}\"\n[[route]]\npath = \"/{TOPIC}\"\nprice = \"{PRICE}\"\nasset = \"{token_address}\"\n",
        anvil.endpoint(),
        u128::MAX
    ))
    .unwrap();
    let seller_store =
        ChannelStore::open(&DataDir::open(&dirs.path().join("seller")).unwrap()).unwrap();
    let seller = Seller::start(
        config,
        seller_keys.clone(),
        seller_store,
        Arc::new(SimulatedSensor::new("bench")),
    )
    .await
    .unwrap();
    let mqtt_seller = MqttSeller::start(
        seller,
        seller_keys.clone(),
        &endpoint(&broker, "seller"),
        MqttSellerOptions::default(),
    )
    .await
    .unwrap();
    let sizes = spy(&broker).await;

    let buyer_store =
        Arc::new(ChannelStore::open(&DataDir::open(&dirs.path().join("buyers")).unwrap()).unwrap());
    eprintln!("fan-out {subscribers}: {subscribers} buyers connect and subscribe...");
    let mut buyers = Vec::new();
    for index in 0..subscribers {
        let keys = device();
        token
            .mint(keys.evm_address(), U256::from(10u64.pow(9)))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let buyer = Arc::new(Buyer::new(
            keys.clone(),
            buyer_store.clone(),
            BuyerOptions::default(),
        ));
        let user = format!("b{index}");
        let options = MqttBuyerOptions {
            client_id: user.clone(),
            answer_timeout: Duration::from_secs(120),
            ..MqttBuyerOptions::default()
        };
        let mqtt = MqttBuyer::connect(buyer, keys, &endpoint(&broker, &user), options)
            .await
            .unwrap();
        let readings = mqtt.subscribe(TOPIC).await.unwrap();
        buyers.push((Arc::new(mqtt), readings));
    }
    // Round 0 opens every channel (a relayed deposit each); rounds 1.. are measured.
    let mut latencies = Vec::new();
    let mut measured = Duration::ZERO;
    let mut tasks: Vec<_> = buyers
        .into_iter()
        .map(|(mqtt, mut readings)| {
            let (start, done) = (
                tokio::sync::mpsc::unbounded_channel::<Instant>(),
                tokio::sync::mpsc::unbounded_channel::<Duration>(),
            );
            let (start_tx, mut start_rx) = start;
            let (done_tx, done_rx) = done;
            tokio::spawn(async move {
                let mut bought = None;
                while let Some(published) = start_rx.recv().await {
                    // The round's reading (a copy of one already bought is skipped).
                    let signed = loop {
                        let signed = readings.recv().await.unwrap();
                        if pack::key_id_of(&signed) != bought {
                            break signed;
                        }
                    };
                    let paid = mqtt.buy(TOPIC, &signed).await;
                    let paid = paid.unwrap_or_else(|error| panic!("a purchase failed: {error:?}"));
                    bought = Some(paid.key_id);
                    let _ = done_tx.send(published.elapsed());
                }
                mqtt.disconnect().await;
            });
            (start_tx, done_rx)
        })
        .collect();
    for round in 0..=rounds {
        let published = Instant::now();
        mqtt_seller.seller.publish_reading(TOPIC).await.unwrap();
        for (start, _) in &tasks {
            start.send(published).unwrap();
        }
        for (_, done) in &mut tasks {
            let latency = done.recv().await.expect("the buyer finished its round");
            if round > 0 {
                latencies.push(latency);
            }
        }
        if round == 0 {
            eprintln!(
                "fan-out {subscribers}: channels opened in {:.1} s",
                published.elapsed().as_secs_f64()
            );
        } else {
            measured += published.elapsed();
        }
    }
    latencies.sort();
    let [payment, answer] = [0, 1].map(|i| sizes[i].load(std::sync::atomic::Ordering::Relaxed));
    println!(
        "one seller → {subscribers:>4} paying subscribers: {:>6.0} keys sold/s   key release p50 {:>7.1} ms   p99 {:>7.1} ms   ({} keys; payment {payment} B, answer {answer} B)",
        latencies.len() as f64 / measured.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len(),
    );
    drop(tasks);
    mqtt_seller.stop().await;
}

fn main() {
    in_process();
    let fanouts: Vec<usize> = std::env::var("M2M_MQTT_FANOUT")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let rounds = std::env::var("M2M_MQTT_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    m2m::node::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for subscribers in fanouts {
        runtime.block_on(fan_out(subscribers, rounds));
    }
}
