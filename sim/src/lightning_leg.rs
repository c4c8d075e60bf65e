//! The Lightning leg's run (feature `lightning`); see the parent module for what it does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Network};
use m2m_node::btc::{BitcoinRpc, BtcRoute, BtcSeller, PayeeChannels, PayeePolicy, serve_btc};
use m2m_node::datadir::DataDir;
use m2m_node::ln::l402::{self, L402Issuer};
use m2m_node::ln::{LnConfig, LnNode};
use m2m_node::seller::ServerHandle;
use m2m_node::seller::config::LimitsConfig;
use m2m_node::seller::sensor::{SensorKind, SimulatedSensor};
use m2m_node::store::ChannelStore;
use m2m_node::tools::start_bitcoind;
use m2m_wallet::topup::{lightning_of_uri, unified_uri};
use m2m_wallet::{DeviceKeys, DeviceSeed, SeedLength};
use rand::{Rng, SeedableRng};

use super::{LightningFigures, LightningLeg};
use crate::SimError;

/// How long setup steps and single payments may take.
const WAIT: Duration = Duration::from_secs(60);

fn failed(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> SimError {
    move |e| SimError::Setup(format!("lightning leg, {what}: {e}"))
}

/// A device with its Lightning node.
struct Device {
    keys: Arc<DeviceKeys>,
    store: Arc<ChannelStore>,
    ln: Arc<LnNode>,
    _data_dir: DataDir,
}

impl Device {
    async fn start(
        dir: std::path::PathBuf,
        rpc: &BitcoinRpc,
        alias: &str,
        trusted_peers: Vec<bitcoin::secp256k1::PublicKey>,
    ) -> Result<Self, SimError> {
        let data_dir = DataDir::open(&dir).map_err(|e| failed("data dir")(&e))?;
        let seed = DeviceSeed::generate(SeedLength::Words12).map_err(|e| failed("seed")(&e))?;
        let keys =
            Arc::new(DeviceKeys::derive(&seed, Network::Regtest).map_err(|e| failed("keys")(&e))?);
        let store = Arc::new(ChannelStore::open(&data_dir).map_err(|e| failed("store")(&e))?);
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed("port")(&e))?;
        let config = LnConfig {
            storage_dir: dir.join("lightning"),
            listen,
            network: Network::Regtest,
            alias: alias.into(),
            // The hub forwards into the devices' private channels.
            forward_to_private_channels: alias == "hub",
            durable_receiver: false,
            trusted_peers,
        };
        let ln = LnNode::start(&keys, rpc, config)
            .await
            .map_err(|e| failed("node")(&e))?;
        Ok(Self {
            keys,
            store,
            ln: Arc::new(ln),
            _data_dir: data_dir,
        })
    }
}

/// A seller: its node, HTTP server and reading counter.
struct Seller {
    ln: Arc<LnNode>,
    seller: Arc<BtcSeller>,
    server: ServerHandle,
}

async fn start_seller(
    device: &Device,
    rpc: &BitcoinRpc,
    leg: &LightningLeg,
    index: usize,
) -> Result<Seller, SimError> {
    let policy = PayeePolicy::default();
    let payee = PayeeChannels::load(
        device.store.clone(),
        rpc.clone(),
        device.keys.clone(),
        policy,
    )
    .map_err(|e| failed("seller")(&e))?;
    let issuer = L402Issuer::new(device.ln.clone(), device.store.clone(), &device.keys)
        .map_err(|e| failed("L402")(&e))?;
    let network = rpc.caip2().await.map_err(|e| failed("bitcoind")(&e))?;
    let seller = BtcSeller::new(
        Arc::new(payee),
        &policy,
        network,
        vec![BtcRoute {
            path: "/temperature".into(),
            price: Amount::from_sat(leg.price_sat),
            sensor: SensorKind::Temperature,
            source: None,
        }],
        Arc::new(SimulatedSensor::new(&format!("ln-seller-{index}"))),
    )
    .with_l402(Arc::new(issuer));
    let seller = Arc::new(seller);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed("listen")(&e))?;
    let server = serve_btc(
        seller.clone(),
        listener,
        &LimitsConfig::default(),
        m2m_node::tls::ServerTls::Plain,
    )
    .map_err(|e| failed("listen")(&e))?;
    Ok(Seller {
        ln: device.ln.clone(),
        seller,
        server,
    })
}

/// The hub opens a private channel to every device (it forwards into them; payers find the
/// sellers through the route hints in their invoices, with no gossip needed), then the channels
/// are confirmed and reestablished on both ends.
async fn open_channels(
    rpc: &BitcoinRpc,
    hub: &LnNode,
    devices: &[&LnNode],
    leg: &LightningLeg,
) -> Result<(), SimError> {
    let address = hub
        .new_onchain_address()
        .map_err(|e| failed("hub address")(&e))?
        .to_string();
    // One coinbase per channel, so no funding waits for another's change.
    rpc.mine_to(devices.len() as u32, &address)
        .await
        .map_err(|e| failed("mining")(&e))?;
    rpc.mine_to(100, &address)
        .await
        .map_err(|e| failed("mining")(&e))?;
    hub.sync().await.map_err(|e| failed("hub sync")(&e))?;
    for device in devices {
        let id = hub
            .open_channel(
                device.node_id(),
                device.listen_address(),
                Amount::from_sat(leg.channel_sat),
                0,
                false,
            )
            .map_err(|e| failed("open")(&e))?;
        hub.wait_funding(id, WAIT)
            .await
            .map_err(|e| failed("funding")(&e))?;
        // ldk-node's wallet sees its own unconfirmed spend only at its next mempool poll; a
        // funding opened before that may pick the same coin and be refused as a double spend.
        // Confirming each funding first rules that out.
        rpc.mine_to(1, &address)
            .await
            .map_err(|e| failed("mining")(&e))?;
        hub.sync().await.map_err(|e| failed("hub sync")(&e))?;
    }
    rpc.mine_to(6, &address)
        .await
        .map_err(|e| failed("mining")(&e))?;
    let expected = devices.len();
    hub.sync().await.map_err(|e| failed("sync")(&e))?;
    for node in devices {
        node.sync().await.map_err(|e| failed("sync")(&e))?;
    }
    hub.wait_channels("the hub's channels", WAIT, |c| {
        c.iter().filter(|c| c.is_usable).count() == expected
    })
    .await
    .map_err(|e| failed("channels")(&e))?;
    for device in devices {
        device
            .wait_channels("a device's channel", WAIT, |c| {
                c.iter().any(|c| c.is_usable)
            })
            .await
            .map_err(|e| failed("channels")(&e))?;
    }
    Ok(())
}

/// Each buyer shows a unified top-up request; its owner's wallet (the hub) pays the invoice in it.
async fn top_up(hub: &LnNode, buyers: &[Device], leg: &LightningLeg) -> Result<(), SimError> {
    for buyer in buyers {
        let invoice = buyer
            .ln
            .invoice(leg.top_up_sat * 1_000, "m2m device top-up", 3_600)
            .map_err(|e| failed("top-up invoice")(&e))?;
        let uri = unified_uri(
            &buyer.keys.bitcoin_address(),
            Some(Amount::from_sat(leg.top_up_sat)),
            Some("m2m device"),
            &invoice.to_string(),
        );
        let bolt11 = lightning_of_uri(&uri)
            .ok_or_else(|| SimError::Setup(format!("no invoice in the top-up request {uri}")))?;
        hub.pay(bolt11, WAIT)
            .await
            .map_err(|e| failed("top-up")(&e))?;
    }
    Ok(())
}

/// What the buyers did.
struct Paying {
    timeline: crate::events::Timeline,
    failures: u64,
    first_failure: Option<String>,
    took: Duration,
}

/// Buyers fetch readings at a Poisson rate, each paid over L402.
async fn pay_readings(
    buyers: &[Device],
    sellers: &[Seller],
    leg: &LightningLeg,
    duration: Duration,
    seed: u64,
) -> Result<Paying, SimError> {
    let started = Instant::now();
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (index, buyer) in buyers.iter().enumerate() {
        let url = format!(
            "http://{}/temperature",
            sellers[index % sellers.len()].server.local_addr
        );
        let (ln, http, rate, max_msat) = (
            buyer.ln.clone(),
            http.clone(),
            leg.readings_per_sec,
            leg.price_sat * 1_000,
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (index as u64 + 0x1e7));
        tasks.push(tokio::spawn(async move {
            let mut timeline = crate::events::Timeline::default();
            let (mut failures, mut first_failure) = (0u64, None);
            while started.elapsed() < duration {
                let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
                tokio::time::sleep(Duration::from_secs_f64(gap.min(5.0))).await;
                let sent = Instant::now();
                let failure = match l402::get(&http, &ln, &url, max_msat, None, WAIT).await {
                    Ok(fetched) if fetched.status == 200 && fetched.paid_msat > 0 => {
                        let took = sent.elapsed().as_secs_f64() * 1e3;
                        timeline.push(started.elapsed().as_secs_f64(), took);
                        continue;
                    }
                    Ok(fetched) => format!("HTTP {}", fetched.status),
                    Err(error) => error.to_string(),
                };
                failures += 1;
                first_failure.get_or_insert(failure);
            }
            (timeline, failures, first_failure)
        }));
    }
    let mut timeline = crate::events::Timeline::default();
    let (mut failures, mut first_failure) = (0, None);
    for task in tasks {
        let (t, f, first) = task.await.map_err(|e| failed("buyer task")(&e))?;
        timeline.extend(t);
        failures += f;
        first_failure = first_failure.or(first);
    }
    Ok(Paying {
        timeline,
        failures,
        first_failure,
        took: started.elapsed(),
    })
}

/// Waits until `check` holds (balances settle a moment after a payment succeeds), or gives the
/// last value it saw.
async fn settled(check: impl Fn() -> Result<(), String>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcome => return outcome,
        }
    }
}

pub(super) async fn run(
    leg: LightningLeg,
    duration: Duration,
    seed: u64,
    dir: std::path::PathBuf,
) -> Result<LightningFigures, SimError> {
    let node = start_bitcoind().await.map_err(|e| failed("bitcoind")(&e))?;
    let rpc = node.rpc().clone();
    let mut started: Vec<Device> = Vec::with_capacity(1 + leg.sellers + leg.buyers);
    let roles = std::iter::once("hub".to_owned())
        .chain((0..leg.sellers).map(|i| format!("seller-{i}")))
        .chain((0..leg.buyers).map(|i| format!("buyer-{i}")));
    let mut outcome = Ok(());
    for role in roles {
        // Devices trust the hub that opens their channels (no on-chain reserve for them).
        let trusted = started
            .first()
            .map(|hub| hub.ln.node_id())
            .into_iter()
            .collect();
        match Device::start(dir.join(format!("ln-{role}")), &rpc, &role, trusted).await {
            Ok(device) => started.push(device),
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    let figures = match outcome {
        Ok(()) => {
            let (hub, rest) = started.split_first().expect("the hub started");
            let (sellers, buyers) = rest.split_at(leg.sellers);
            run_on(&rpc, hub, sellers, buyers, &leg, duration, seed).await
        }
        Err(error) => Err(error),
    };
    // Stopped whatever happened: a node left running would outlive its directory.
    for device in &started {
        let _ = device.ln.stop().await;
    }
    drop(node); // stops bitcoind
    figures
}

/// The leg on started nodes.
async fn run_on(
    rpc: &BitcoinRpc,
    hub: &Device,
    sellers: &[Device],
    buyers: &[Device],
    leg: &LightningLeg,
    duration: Duration,
    seed: u64,
) -> Result<LightningFigures, SimError> {
    let devices: Vec<&LnNode> = sellers.iter().chain(buyers).map(|d| &*d.ln).collect();
    open_channels(rpc, &hub.ln, &devices, leg).await?;
    top_up(&hub.ln, buyers, leg).await?;
    let mut shops = Vec::with_capacity(leg.sellers);
    for (index, device) in sellers.iter().enumerate() {
        shops.push(start_seller(device, rpc, leg, index).await?);
    }

    let Paying {
        timeline,
        failures,
        first_failure,
        took: paying,
    } = pay_readings(buyers, &shops, leg, duration, seed).await?;

    // The check, to the millisatoshi.
    let mut violations = Vec::new();
    let price_msat = leg.price_sat * 1_000;
    let mut sellers_received = 0;
    for shop in &shops {
        let received = shop.ln.received_msat();
        sellers_received += received;
        let served = shop.seller.paid_readings();
        if received != served * price_msat {
            violations.push(format!(
                "a seller received {received} msat for {served} readings at {price_msat} msat"
            ));
        }
    }
    let (mut buyers_sent, mut fees) = (0u64, 0u64);
    let topped_up = leg.top_up_sat * 1_000 * leg.buyers as u64;
    for buyer in buyers {
        let received = buyer.ln.received_msat();
        let (sent, fee) = buyer.ln.sent_msat();
        buyers_sent += sent;
        fees += fee;
        if received != leg.top_up_sat * 1_000 {
            violations.push(format!("a buyer was topped up with {received} msat"));
        }
        // Its channel balance (whole satoshi) is the top-up less what it sent and paid in fees.
        let expected_sat = (received - sent - fee) / 1_000;
        let ln = buyer.ln.clone();
        if let Err(violation) = settled(move || {
            let (_, balance) = ln.balances();
            if balance.to_sat() == expected_sat {
                Ok(())
            } else {
                Err(format!(
                    "a buyer holds {balance}, expected {expected_sat} sat (top-up − sent − fees)"
                ))
            }
        })
        .await
        {
            violations.push(violation);
        }
    }
    if buyers_sent != sellers_received {
        violations.push(format!(
            "buyers sent {buyers_sent} msat, sellers received {sellers_received} msat"
        ));
    }
    for shop in shops {
        shop.server.shutdown().await;
    }
    let latency_ms = crate::p50_p99(&mut timeline.latencies());
    Ok(LightningFigures {
        nodes: 1 + leg.sellers + leg.buyers,
        top_ups: leg.buyers,
        paid: timeline.len() as u64,
        failed: failures,
        paid_per_sec: timeline.len() as f64 / paying.as_secs_f64(),
        latency_ms,
        sellers_received_msat: sellers_received,
        routing_fees_msat: fees,
        first_failure,
        violations,
        ledger: crate::events::Ledger {
            asset: "millisatoshi (Lightning leg)",
            total: u128::from(topped_up),
            parts: vec![
                ("sellers", u128::from(sellers_received)),
                (
                    "buyers",
                    u128::from(topped_up.saturating_sub(buyers_sent + fees)),
                ),
                ("routing fees (hub)", u128::from(fees)),
            ],
        },
        timeline,
    })
}
