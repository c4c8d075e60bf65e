//! The Bitcoin-priced leg of a run, next to the EVM one: a regtest bitcoind, sellers pricing
//! readings in satoshi (`btc-channel`), buyers topped up by their owner through the BIP-21
//! request each device shows, paying over Taproot channels they open from their BDK wallets.
//!
//! A miner makes a block every `block_interval_ms`. At the end every buyer closes its channels
//! cooperatively (MuSig2 key path); a seller closes any channel left open with its newest
//! commitment; a block confirms the closes, and the check runs from the chain: each seller's wallet holds exactly what it charged; each buyer's holds its top-up less
//! what it paid and the fees of its fundings and closes; everything topped up is accounted for
//! to the satoshi.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, FeeRate, Network};
use m2m_node::btc::{
    BitcoinRpc, BtcBuyer, BtcBuyerOptions, BtcRoute, BtcSeller, BtcWallet, PayeeChannels,
    PayeePolicy, PayerChannels, serve_btc,
};
use m2m_node::datadir::DataDir;
use m2m_node::seller::ServerHandle;
use m2m_node::seller::config::LimitsConfig;
use m2m_node::seller::sensor::{SensorKind, SimulatedSensor};
use m2m_node::store::ChannelStore;
use m2m_node::tools::start_bitcoind;
use m2m_wallet::topup::{bitcoin_uri, parse_bitcoin_uri};
use m2m_wallet::{DeviceKeys, DeviceSeed, SeedLength};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::SimError;

/// The `[bitcoin]` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BitcoinLeg {
    /// Sellers pricing in satoshi (0: no Bitcoin leg).
    pub sellers: usize,
    /// Buyers paying them.
    pub buyers: usize,
    /// Price per reading, satoshi.
    pub price_sat: u64,
    /// Average readings per buyer per second.
    pub readings_per_sec: f64,
    /// Satoshi each new channel locks.
    pub capacity_sat: u64,
    /// What each buyer's owner tops it up with, satoshi.
    pub top_up_sat: u64,
    /// A block every this many milliseconds.
    pub block_interval_ms: u64,
}

impl Default for BitcoinLeg {
    fn default() -> Self {
        Self {
            sellers: 0,
            buyers: 0,
            price_sat: 20,
            readings_per_sec: 4.0,
            capacity_sat: 200_000,
            top_up_sat: 1_000_000,
            block_interval_ms: 1_000,
        }
    }
}

/// What the Bitcoin leg did, and whether it balanced.
#[derive(Debug, Clone, Serialize)]
pub struct BitcoinFigures {
    /// Sellers and buyers.
    pub devices: usize,
    /// Readings paid with vouchers.
    pub paid: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Paid readings per second over the paying phase.
    pub paid_per_sec: f64,
    /// Latency of paid requests, milliseconds (p50, p99).
    pub latency_ms: (f64, f64),
    /// Channels opened (and closed at the end).
    pub channels: usize,
    /// Mean virtual size of a funding transaction.
    pub funding_vbytes: f64,
    /// Mean virtual size of a cooperative close (MuSig2 key path).
    pub close_vbytes: f64,
    /// Closes the sellers made alone (script path): count and mean virtual size.
    pub unilateral_closes: (usize, f64),
    /// Satoshi the sellers received on chain.
    pub sellers_received: u64,
    /// Satoshi paid in fees (fundings, closes, top-ups).
    pub fees: u64,
    /// Conservation violations (empty: every satoshi accounted for).
    pub violations: Vec<String>,
    /// Where every satoshi topped up ended.
    pub ledger: crate::events::Ledger,
    /// Each paid reading (for the report's plots).
    #[serde(skip)]
    pub timeline: crate::events::Timeline,
}

struct Device {
    keys: Arc<DeviceKeys>,
    store: Arc<ChannelStore>,
    wallet: Arc<BtcWallet>,
    _data_dir: DataDir,
}

impl Device {
    fn new(dir: std::path::PathBuf, rpc: &BitcoinRpc) -> Result<Self, SimError> {
        let setup = |e: &dyn std::fmt::Display| SimError::Setup(format!("btc device: {e}"));
        let data_dir = DataDir::open(&dir).map_err(|e| setup(&e))?;
        let seed = DeviceSeed::generate(SeedLength::Words12).map_err(|e| setup(&e))?;
        let keys = Arc::new(DeviceKeys::derive(&seed, Network::Regtest).map_err(|e| setup(&e))?);
        let store = Arc::new(ChannelStore::open(&data_dir).map_err(|e| setup(&e))?);
        let wallet =
            Arc::new(BtcWallet::open(&keys, store.clone(), rpc.clone()).map_err(|e| setup(&e))?);
        Ok(Self {
            keys,
            store,
            wallet,
            _data_dir: data_dir,
        })
    }
}

fn failed(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> SimError {
    move |e| SimError::Setup(format!("bitcoin leg, {what}: {e}"))
}

/// Runs the leg for `duration` (its paying phase). `None` if the scenario has no Bitcoin leg.
pub async fn run_leg(
    leg: BitcoinLeg,
    duration: Duration,
    seed: u64,
    dir: std::path::PathBuf,
) -> Result<Option<BitcoinFigures>, SimError> {
    if leg.sellers == 0 || leg.buyers == 0 {
        return Ok(None);
    }
    let node = start_bitcoind().await.map_err(|e| failed("bitcoind")(&e))?;
    let rpc = node.rpc().clone();
    let fee_rate = FeeRate::from_sat_per_vb_u32(2);

    // The owners' wallet: one matured coinbase.
    let owner = Device::new(dir.join("btc-owner"), &rpc)?;
    let burn = Device::new(dir.join("btc-miner"), &rpc)?;
    let burn_address = burn.keys.bitcoin_address().to_string();
    rpc.mine_to(1, &owner.keys.bitcoin_address().to_string())
        .await
        .map_err(|e| failed("mining")(&e))?;
    rpc.mine_to(100, &burn_address)
        .await
        .map_err(|e| failed("mining")(&e))?;
    owner
        .wallet
        .sync()
        .await
        .map_err(|e| failed("owner sync")(&e))?;

    let policy = PayeePolicy {
        min_blocks_to_expiry: 100,
        ..PayeePolicy::default()
    };
    let network = rpc.caip2().await.map_err(|e| failed("bitcoind")(&e))?;
    let mut sellers: Vec<(Device, Arc<PayeeChannels>, Arc<BtcSeller>, ServerHandle)> = Vec::new();
    for index in 0..leg.sellers {
        let device = Device::new(dir.join(format!("btc-seller-{index}")), &rpc)?;
        let payee = Arc::new(
            PayeeChannels::load(
                device.store.clone(),
                rpc.clone(),
                device.keys.clone(),
                policy,
            )
            .map_err(|e| failed("seller")(&e))?,
        );
        let seller = Arc::new(BtcSeller::new(
            payee.clone(),
            &policy,
            network.clone(),
            vec![BtcRoute {
                path: "/temperature".into(),
                price: Amount::from_sat(leg.price_sat),
                sensor: SensorKind::Temperature,
                source: None,
            }],
            Arc::new(SimulatedSensor::new(&format!("btc-seller-{index}"))),
        ));
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
        sellers.push((device, payee, seller, server));
    }

    // Buyers, topped up by the owner paying the BIP-21 request each one shows.
    let mut buyers = Vec::with_capacity(leg.buyers);
    let top_up = Amount::from_sat(leg.top_up_sat);
    let mut top_up_fees = Amount::ZERO;
    for index in 0..leg.buyers {
        let device = Device::new(dir.join(format!("btc-buyer-{index}")), &rpc)?;
        let uri = bitcoin_uri(
            &device.keys.bitcoin_address(),
            Some(top_up),
            Some("m2m device"),
        );
        let (address, amount) =
            parse_bitcoin_uri(&uri, Network::Regtest).map_err(|e| failed("top-up URI")(&e))?;
        let amount = amount.unwrap_or(top_up);
        let (tx, _) = owner
            .wallet
            .build_funding(address.script_pubkey(), amount, fee_rate)
            .await
            .map_err(|e| failed("top-up")(&e))?;
        top_up_fees += owner.wallet.fee_of(&tx).await.unwrap_or_default();
        owner
            .wallet
            .broadcast(&tx)
            .await
            .map_err(|e| failed("top-up")(&e))?;
        buyers.push(device);
    }
    rpc.mine_to(1, &burn_address)
        .await
        .map_err(|e| failed("mining")(&e))?;

    let miner = {
        let (rpc, address) = (rpc.clone(), burn_address.clone());
        let interval = Duration::from_millis(leg.block_interval_ms.max(50));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let _ = rpc.mine_to(1, &address).await;
            }
        })
    };

    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut payers = Vec::new();
    for (index, device) in buyers.iter().enumerate() {
        device
            .wallet
            .sync()
            .await
            .map_err(|e| failed("buyer sync")(&e))?;
        let payer = Arc::new(
            PayerChannels::load(
                device.store.clone(),
                device.wallet.clone(),
                device.keys.clone(),
            )
            .map_err(|e| failed("buyer")(&e))?,
        );
        payers.push(payer.clone());
        let options = BtcBuyerOptions {
            capacity: Amount::from_sat(leg.capacity_sat),
            max_price: Amount::from_sat(leg.price_sat),
            fee_rate,
            confirmation_timeout: Duration::from_secs(30),
            ..BtcBuyerOptions::default()
        };
        let buyer = BtcBuyer::new(payer, rpc.clone(), options)
            .await
            .map_err(|e| failed("buyer")(&e))?;
        let url = format!(
            "http://{}/temperature",
            sellers[index % sellers.len()].3.local_addr
        );
        let rate = leg.readings_per_sec;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (index as u64 + 0xb7c));
        tasks.push(tokio::spawn(async move {
            let (mut timeline, mut failures) = (crate::events::Timeline::default(), 0u64);
            while started.elapsed() < duration {
                let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
                tokio::time::sleep(Duration::from_secs_f64(gap.min(5.0))).await;
                let sent = Instant::now();
                match buyer.get(&url).await {
                    Ok(fetched) if fetched.paid.is_some() => {
                        let took = sent.elapsed().as_secs_f64() * 1e3;
                        timeline.push(started.elapsed().as_secs_f64(), took);
                    }
                    Ok(_) | Err(_) => failures += 1,
                }
            }
            // Done: the buyer closes its channel cooperatively (MuSig2 key path).
            let closes = buyer.close(&url).await;
            (timeline, failures, closes)
        }));
    }
    let mut timeline = crate::events::Timeline::default();
    let mut failures = 0;
    let mut cooperative = HashMap::new(); // funding outpoint → close
    for task in tasks {
        let (t, f, closes) = task.await.map_err(|e| failed("buyer task")(&e))?;
        timeline.extend(t);
        failures += f;
        // A refused cooperative close is no violation: the seller closes by itself below.
        for txid in closes.unwrap_or_default() {
            let close = rpc
                .transaction(&txid)
                .await
                .map_err(|e| failed("close")(&e))?;
            cooperative.insert(close.input[0].previous_output, close);
        }
    }
    let paying = started.elapsed();
    miner.abort();

    // Settle: every seller closes, with its newest commitment, every channel it holds a voucher
    // on that its buyer did not close cooperatively; one block confirms everything.
    let mut unilateral_vbytes = Vec::new();
    let mut charged_per_seller = Vec::new();
    for (_, payee, _, _) in &sellers {
        let mut charged = Amount::ZERO;
        for id in payee.channel_ids().await {
            let (amount, latest) = payee.state(&id).await.map_err(|e| failed("state")(&e))?;
            if latest.is_none() {
                continue;
            }
            charged += amount;
            if payee
                .funding_unspent(&id)
                .await
                .map_err(|e| failed("close")(&e))?
            {
                let txid = payee.close(&id).await.map_err(|e| failed("close")(&e))?;
                let close = rpc
                    .transaction(&txid)
                    .await
                    .map_err(|e| failed("close")(&e))?;
                unilateral_vbytes.push(close.vsize() as f64);
            }
        }
        charged_per_seller.push(charged);
    }
    let close_vbytes: Vec<f64> = cooperative.values().map(|tx| tx.vsize() as f64).collect();
    let mut close_fees = Amount::ZERO;
    rpc.mine_to(1, &burn_address)
        .await
        .map_err(|e| failed("mining")(&e))?;

    let mut violations = Vec::new();
    let mut sellers_received = Amount::ZERO;
    for ((device, _, _, _), charged) in sellers.iter().zip(&charged_per_seller) {
        device
            .wallet
            .sync()
            .await
            .map_err(|e| failed("seller sync")(&e))?;
        let received = device.wallet.balance().await.confirmed;
        sellers_received += received;
        if received != *charged {
            violations.push(format!(
                "a seller received {received} for {charged} charged"
            ));
        }
    }
    let mut funding_vbytes = Vec::new();
    let mut funding_fees = Amount::ZERO;
    let mut buyers_hold = Amount::ZERO;
    let mut locked = Amount::ZERO;
    for (device, payer) in buyers.iter().zip(&payers) {
        device
            .wallet
            .sync()
            .await
            .map_err(|e| failed("buyer sync")(&e))?;
        let mut spent = Amount::ZERO;
        for (terms, signed) in payer.all().await {
            if signed == Amount::ZERO {
                // Never paid on, so not closed: the capacity waits for the refund path.
                locked += terms.funding.capacity;
                spent += terms.funding.capacity;
            }
            let funding = rpc
                .transaction(&terms.funding.outpoint.txid)
                .await
                .map_err(|e| failed("funding")(&e))?;
            funding_vbytes.push(funding.vsize() as f64);
            let fee = device.wallet.fee_of(&funding).await.unwrap_or_default();
            funding_fees += fee;
            spent += fee;
            if signed > Amount::ZERO {
                let close_fee = if cooperative.contains_key(&terms.funding.outpoint) {
                    m2m_contracts::btc::TaprootChannel::new(terms)
                        .map_err(|e| failed("channel")(&e))?
                        .cooperative_fee()
                } else {
                    terms.close_fee
                };
                close_fees += close_fee;
                spent += close_fee + signed;
            }
        }
        let balance = device.wallet.balance().await;
        let holds = balance.confirmed + balance.trusted_pending;
        buyers_hold += holds;
        if holds + spent != top_up {
            violations.push(format!(
                "a buyer holds {holds} and spent {spent}; it was topped up with {top_up}"
            ));
        }
    }
    let topped_up = top_up * leg.buyers as u64;
    let fees = funding_fees + close_fees;
    if sellers_received + buyers_hold + fees + locked != topped_up {
        violations.push(format!(
            "conservation: sellers {sellers_received} + buyers {buyers_hold} + fees {fees} + unused channels {locked} != topped up {topped_up}"
        ));
    }
    for (_, _, _, server) in sellers.drain(..) {
        server.shutdown().await;
    }
    let latency_ms = crate::p50_p99(&mut timeline.latencies());
    drop(node); // stops bitcoind
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Ok(Some(BitcoinFigures {
        devices: leg.sellers + leg.buyers,
        paid: timeline.len() as u64,
        failed: failures,
        paid_per_sec: timeline.len() as f64 / paying.as_secs_f64(),
        latency_ms,
        channels: funding_vbytes.len(),
        funding_vbytes: mean(&funding_vbytes),
        close_vbytes: mean(&close_vbytes),
        unilateral_closes: (unilateral_vbytes.len(), mean(&unilateral_vbytes)),
        sellers_received: sellers_received.to_sat(),
        fees: (fees + top_up_fees).to_sat(),
        violations,
        ledger: crate::events::Ledger {
            asset: "satoshi (Bitcoin leg)",
            total: topped_up.to_sat().into(),
            parts: vec![
                ("sellers", sellers_received.to_sat().into()),
                ("buyers", buyers_hold.to_sat().into()),
                ("fees", fees.to_sat().into()),
                ("unused channels", locked.to_sat().into()),
            ],
        },
        timeline,
    }))
}
