//! The MQTT leg of a run: priced topics on a real mosquitto (TLS, one password account and ACL
//! per device), on the run's anvil with a test token of its own (so its units are counted apart
//! from the EVM leg's) funded by another of anvil's accounts. Each seller publishes a sealed reading on its topic
//! every `publish_every_ms`; each paying subscriber buys every reading's key with
//! batch-settlement vouchers (its channel opened by a relayed deposit); an unpaid subscriber
//! reads every topic and must open nothing; the broker is restarted `broker_restarts` times
//! during the paying phase (persistent sessions on both sides).
//!
//! With `ticks_per_voucher` = K, sellers offer tick streams and every other subscriber pays K
//! readings in K + 1 with one hash-chain tick each.
//!
//! At the end the sellers claim on chain and the check runs from the chain: each seller holds
//! exactly what its vouchers added; every key sold is paid for but at most K per stream still
//! on credit; subscribers, sellers and the escrow hold every unit the subscribers were topped up
//! with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use m2m_contracts::bindings::TestToken;
use m2m_node::buyer::{Buyer, BuyerOptions};
use m2m_node::datadir::DataDir;
use m2m_node::mqtt::buyer::{MqttBuyer, MqttBuyerOptions};
use m2m_node::mqtt::seller::{MqttSeller, MqttSellerHandle, MqttSellerOptions};
use m2m_node::mqtt::{MqttEndpoint, pack, wire};
use m2m_node::seller::sensor::SimulatedSensor;
use m2m_node::seller::{Seller, SellerConfig};
use m2m_node::store::ChannelStore;
use m2m_node::tools::{MosquittoHandle, MqttAccount, start_mosquitto};
use m2m_wallet::Signer;
use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::events::{Ledger, Timeline};

/// The `[mqtt]` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttLeg {
    /// Sellers, one priced topic each (0: no MQTT leg).
    pub sellers: usize,
    /// Paying subscribers, spread over the sellers.
    pub subscribers: usize,
    /// Price of one reading's key, test-token units.
    pub price: u128,
    /// Each seller publishes a reading this often.
    pub publish_every_ms: u64,
    /// Broker restarts during the paying phase.
    pub broker_restarts: u32,
    /// What each subscriber's owner tops it up with.
    pub top_up: u128,
    /// Sellers offer tick streams of K readings per voucher, and every other subscriber pays
    /// with ticks (0: vouchers only).
    pub ticks_per_voucher: u32,
}

impl Default for MqttLeg {
    fn default() -> Self {
        Self {
            sellers: 0,
            subscribers: 0,
            price: 1_000,
            publish_every_ms: 500,
            broker_restarts: 1,
            top_up: 10_000_000,
            ticks_per_voucher: 0,
        }
    }
}

/// What the MQTT leg did, and whether it balanced.
#[derive(Debug, Clone, Serialize)]
pub struct MqttFigures {
    /// Sellers, paying subscribers and the unpaid one.
    pub devices: usize,
    /// Readings published.
    pub published: u64,
    /// Keys bought (readings decrypted by their payers).
    pub paid: u64,
    /// Purchases that failed (a reading whose key did not come; nothing charged for it unless
    /// the seller took the payment, which the check below counts).
    pub failed: u64,
    /// Keys sold per second over the paying phase.
    pub paid_per_sec: f64,
    /// From receiving a reading to holding its key, milliseconds (p50, p99).
    pub latency_ms: (f64, f64),
    /// Broker restarts that happened.
    pub broker_restarts: u32,
    /// Readings the unpaid subscriber saw, and how many it could open (must be 0).
    pub unpaid_seen: (u64, u64),
    /// Keys the sellers sold for vouchers, for ticks, and redeliveries answered free.
    pub sold: (u64, u64, u64),
    /// Readings paid by ticks and not yet by a voucher at the end (each stream ≤ K).
    pub on_credit: u64,
    /// Conservation violations (empty: every unit accounted for).
    pub violations: Vec<String>,
    /// Where every unit topped up ended.
    pub ledger: Ledger,
    /// Each key bought (for the report's plots).
    #[serde(skip)]
    pub timeline: Timeline,
}

fn failed(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> SimError {
    move |e| SimError::Setup(format!("mqtt leg, {what}: {e}"))
}

fn account(user: &str, topics: Vec<String>) -> MqttAccount {
    MqttAccount {
        user: user.into(),
        password: format!("{user}-sim-password"),
        topics,
    }
}

fn endpoint(broker: &MosquittoHandle, user: &str) -> MqttEndpoint {
    MqttEndpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        ca_pem: broker.ca_pem().to_owned(),
        user: user.into(),
        password: format!("{user}-sim-password"),
    }
}

fn topic(seller: usize) -> String {
    format!("sim/seller{seller}/temperature")
}

/// One paying subscriber's loop: every reading of its topic, bought.
async fn subscribe_and_pay(
    mqtt: MqttBuyer,
    topic: String,
    until: Instant,
    started: Instant,
    failures: Arc<AtomicU64>,
) -> (Timeline, Vec<f64>) {
    let (mut timeline, mut latencies) = (Timeline::default(), Vec::new());
    let Ok(mut readings) = mqtt.subscribe(&topic).await else {
        failures.fetch_add(1, Ordering::Relaxed);
        return (timeline, latencies);
    };
    let mut bought = None;
    while Instant::now() < until {
        let wait = until.saturating_duration_since(Instant::now());
        let Ok(Some(signed)) = tokio::time::timeout(wait, readings.recv()).await else {
            break;
        };
        let key_id = pack::key_id_of(&signed);
        if key_id.is_none() || key_id == bought {
            continue;
        }
        let received = Instant::now();
        match mqtt.buy(&topic, &signed).await {
            Ok(paid) => {
                bought = Some(paid.key_id);
                let latency_ms = received.elapsed().as_secs_f64() * 1e3;
                timeline.push(started.elapsed().as_secs_f64(), latency_ms);
                latencies.push(latency_ms);
            }
            Err(_) => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    mqtt.disconnect().await;
    (timeline, latencies)
}

/// The unpaid subscriber: reads every topic and tries each reading with a key of its own.
async fn eavesdrop(
    mqtt: MqttBuyer,
    topics: Vec<String>,
    sellers: Vec<Address>,
    until: Instant,
) -> (u64, u64) {
    let (mut seen, mut opened) = (0, 0);
    let mut streams = Vec::new();
    for topic in &topics {
        if let Ok(stream) = mqtt.subscribe(topic).await {
            streams.push(stream);
        }
    }
    while Instant::now() < until {
        for (stream, seller) in streams.iter_mut().zip(&sellers) {
            while let Ok(signed) = stream.try_recv() {
                seen += 1;
                if let Ok(checked) = pack::verify(&signed, *seller)
                    && checked.sealed.open(&[0x5a; 32]).is_ok()
                {
                    opened += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mqtt.disconnect().await;
    (seen, opened)
}

/// Runs the leg for `duration` (its paying phase). `None` if the scenario has no MQTT leg.
pub(crate) async fn run_leg(
    leg: MqttLeg,
    chain: crate::run::SharedChain,
    duration: Duration,
    dir: std::path::PathBuf,
) -> Result<Option<MqttFigures>, SimError> {
    if leg.sellers == 0 || leg.subscribers == 0 {
        return Ok(None);
    }
    let token_address = m2m_contracts::deploy::deploy_test_token(&chain.owner)
        .await
        .map_err(|e| failed("token")(&e))?;
    let token = TestToken::new(token_address, &chain.owner);
    let set_eth = |who: Address| {
        let owner = chain.owner.clone();
        async move {
            let _: serde_json::Value = owner
                .raw_request("anvil_setBalance".into(), (who, U256::from(10u128.pow(21))))
                .await
                .map_err(SimError::rpc)?;
            Ok::<_, SimError>(())
        }
    };
    let sellers_keys: Vec<_> = (0..leg.sellers)
        .map(|_| crate::fleet::new_device())
        .collect::<Result<_, _>>()?;
    let mut accounts = Vec::new();
    for (index, keys) in sellers_keys.iter().enumerate() {
        let topic = topic(index);
        accounts.push(account(
            &format!("seller{index}"),
            vec![
                format!("write {topic}"),
                format!("write {topic}/price"),
                format!("read {topic}/pay"),
                "write m2m/keys/#".into(),
                format!("write {}", wire::status_topic(keys.evm_address())),
            ],
        ));
    }
    for index in 0..leg.subscribers {
        let (user, topic) = (format!("sub{index}"), topic(index % leg.sellers));
        accounts.push(account(
            &user,
            vec![
                format!("read {topic}"),
                format!("read {topic}/price"),
                format!("write {topic}/pay"),
                format!("read m2m/keys/{user}"),
                "read m2m/status/#".into(),
            ],
        ));
    }
    accounts.push(account(
        "unpaid",
        vec!["read sim/#".into(), "read m2m/status/#".into()],
    ));
    let mut broker = start_mosquitto(&accounts)
        .await
        .map_err(|e| failed("mosquitto")(&e))?;

    let mut sellers: Vec<(Arc<Seller>, MqttSellerHandle)> = Vec::new();
    for (index, keys) in sellers_keys.iter().enumerate() {
        set_eth(keys.evm_address()).await?;
        chain
            .senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(keys.evm_address());
        let config = SellerConfig::parse(&format!(
            "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:{}\"\n\
             [claim]\nthreshold = \"{}\"\n[[route]]\npath = \"/{}\"\nprice = \"{}\"\nasset = \"{}\"\n",
            chain.endpoint,
            crate::run::CHAIN_ID,
            u128::MAX,
            topic(index),
            leg.price,
            token_address,
        ))
        .map_err(|e| failed("seller config")(&e))?;
        let data_dir = DataDir::open(&dir.join(format!("mqtt-seller-{index}")))
            .map_err(|e| failed("seller data")(&e))?;
        let store = ChannelStore::open(&data_dir).map_err(|e| failed("seller store")(&e))?;
        let sensor = Arc::new(SimulatedSensor::new(&format!("mqtt{index}")));
        let seller = Seller::start(config, keys.clone(), store, sensor)
            .await
            .map_err(|e| failed("seller")(&e))?;
        let options = MqttSellerOptions {
            publish_every: Some(Duration::from_millis(leg.publish_every_ms.max(10))),
            ticks_per_voucher: (leg.ticks_per_voucher > 0).then_some(leg.ticks_per_voucher),
            ..MqttSellerOptions::default()
        };
        let handle = MqttSeller::start(
            seller.clone(),
            keys.clone(),
            &endpoint(&broker, &format!("seller{index}")),
            options,
        )
        .await
        .map_err(|e| failed("MQTT seller")(&e))?;
        sellers.push((seller, handle));
    }

    let store_dir =
        DataDir::open(&dir.join("mqtt-subscribers")).map_err(|e| failed("store")(&e))?;
    let store = Arc::new(ChannelStore::open(&store_dir).map_err(|e| failed("store")(&e))?);
    let mut subscribers = Vec::new();
    let mut subscriber_addresses = Vec::new();
    for index in 0..leg.subscribers {
        let keys = crate::fleet::new_device()?;
        crate::confirm(token.mint(keys.evm_address(), U256::from(leg.top_up))).await?;
        subscriber_addresses.push(keys.evm_address());
        let buyer = Arc::new(Buyer::new(
            keys.clone(),
            store.clone(),
            BuyerOptions::default(),
        ));
        let options = MqttBuyerOptions {
            client_id: format!("sub{index}"),
            clean_start: false,
            ticks: index % 2 == 1,
            ..MqttBuyerOptions::default()
        };
        let user = format!("sub{index}");
        let mqtt = MqttBuyer::connect(buyer, keys, &endpoint(&broker, &user), options)
            .await
            .map_err(|e| failed("subscriber")(&e))?;
        subscribers.push((mqtt, topic(index % leg.sellers)));
    }
    let unpaid_keys = crate::fleet::new_device()?;
    let unpaid = MqttBuyer::connect(
        Arc::new(Buyer::new(
            unpaid_keys.clone(),
            store.clone(),
            BuyerOptions::default(),
        )),
        unpaid_keys,
        &endpoint(&broker, "unpaid"),
        MqttBuyerOptions::default(),
    )
    .await
    .map_err(|e| failed("unpaid subscriber")(&e))?;

    // The paying phase, with the broker restarts spread over it.
    let started = Instant::now();
    let until = started + duration;
    let failures = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|(mqtt, topic)| {
            tokio::spawn(subscribe_and_pay(
                mqtt,
                topic,
                until,
                started,
                failures.clone(),
            ))
        })
        .collect();
    let seller_addresses: Vec<Address> = sellers_keys.iter().map(|k| k.evm_address()).collect();
    let eve = tokio::spawn(eavesdrop(
        unpaid,
        (0..leg.sellers).map(topic).collect(),
        seller_addresses.clone(),
        until,
    ));
    let mut restarts = 0;
    for index in 1..=leg.broker_restarts {
        let at = started + duration * index / (leg.broker_restarts + 1);
        tokio::time::sleep_until(at.into()).await;
        broker
            .restart()
            .await
            .map_err(|e| failed("broker restart")(&e))?;
        restarts += 1;
    }
    let (mut timeline, mut latencies) = (Timeline::default(), Vec::new());
    for task in tasks {
        let (one, more) = task.await.map_err(|e| failed("subscriber task")(&e))?;
        timeline.extend(one);
        latencies.extend(more);
    }
    let unpaid_seen = eve.await.map_err(|e| failed("unpaid task")(&e))?;
    let elapsed = started.elapsed();

    // Settle and check from the chain.
    let (mut published, mut sold, mut ticks, mut redelivered) = (0, 0, 0, 0);
    let mut charged = 0u128;
    let mut violations = Vec::new();
    let balance = |who: Address| {
        let token = token.clone();
        async move {
            token
                .balanceOf(who)
                .call()
                .await
                .map(|b| b.to::<u128>())
                .map_err(SimError::contract)
        }
    };
    let mut sellers_held = 0u128;
    for (index, (seller, handle)) in sellers.into_iter().enumerate() {
        let stats = &handle.seller.stats;
        published += stats.readings.load(Ordering::Relaxed);
        sold += stats.keys_sold.load(Ordering::Relaxed);
        ticks += stats.ticks.load(Ordering::Relaxed);
        let seller_charged = u128::from(stats.charged_units.load(Ordering::Relaxed));
        charged += seller_charged;
        redelivered += stats.redelivered.load(Ordering::Relaxed);
        handle.stop().await;
        seller.claim_all().await.map_err(|e| failed("claim")(&e))?;
        let held = balance(seller.receiver()).await?;
        if held != seller_charged {
            violations.push(format!(
                "seller {index} holds {held}, its vouchers added {seller_charged}"
            ));
        }
        sellers_held += held;
    }
    let mut buyers_held = 0u128;
    for address in subscriber_addresses {
        buyers_held += balance(address).await?;
    }
    let escrow = balance(chain.settlement).await?;
    let total = leg.top_up * leg.subscribers as u128;
    if buyers_held + sellers_held + escrow != total {
        violations.push(format!(
            "topped up {total}, found {buyers_held} + {sellers_held} + {escrow}"
        ));
    }
    if unpaid_seen.1 > 0 {
        violations.push(format!(
            "the unpaid subscriber opened {} readings",
            unpaid_seen.1
        ));
    }
    let paid = latencies.len() as u64;
    if sold + ticks < paid {
        violations.push(format!("{paid} keys bought but only {} sold", sold + ticks));
    }
    // Every key sold is paid by a voucher, but the last ticks of each stream (at most K).
    let covered = u64::try_from(charged / leg.price.max(1)).unwrap_or(u64::MAX);
    let on_credit = (sold + ticks).saturating_sub(covered);
    let streams = (leg.subscribers / 2) as u64;
    if on_credit > u64::from(leg.ticks_per_voucher) * streams || covered > sold + ticks {
        violations.push(format!(
            "{} keys sold, {covered} paid for: {on_credit} on credit (at most {} × {streams})",
            sold + ticks,
            leg.ticks_per_voucher
        ));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Some(MqttFigures {
        devices: leg.sellers + leg.subscribers + 1,
        published,
        paid,
        failed: failures.load(Ordering::Relaxed),
        paid_per_sec: paid as f64 / elapsed.as_secs_f64(),
        latency_ms: (at(0.5), at(0.99)),
        broker_restarts: restarts,
        unpaid_seen,
        sold: (sold, ticks, redelivered),
        on_credit,
        violations,
        ledger: Ledger {
            asset: "test token (MQTT leg)",
            total,
            parts: vec![
                ("subscribers", buyers_held),
                ("sellers", sellers_held),
                ("escrow", escrow),
            ],
        },
        timeline,
    }))
}
