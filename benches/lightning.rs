//! Lightning payments between two embedded ldk-node agents on regtest
//! (`cargo bench --bench lightning`).
//!
//! `M2M_LN_CHANNELS` (default 1) channels, payer → payee, on a regtest bitcoind on this machine;
//! both nodes in this process (each channel takes a bounded number of HTLCs in flight). Phase 1 sends keysend payments one at a time (latency); phase 2 keeps
//! `M2M_LN_IN_FLIGHT` (default 16) payments in flight for `M2M_LOAD_SECS` (default 10) seconds
//! (throughput). LDK holds HTLCs about 100 ms before forwarding or claiming them (batching for
//! privacy), which bounds the one-at-a-time rate; concurrency amortises it. Every payment is
//! waited for until ldk-node reports it succeeded (both sides persisted the HTLC's settlement).
//! Published anchors on 8 vCPU (PERFORMANCE.md): Eclair 89/s, CLN 61/s, LND 33/s.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::Amount;
use m2m::node::ln::{LnConfig, LnNode};
use m2m::node::tools::start_bitcoind;
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength};

const SEQUENTIAL: usize = 200;
const WAIT: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn node(
    rpc: &m2m::node::btc::BitcoinRpc,
    dir: &std::path::Path,
    alias: &str,
    trusted_peers: Vec<bitcoin::secp256k1::PublicKey>,
) -> LnNode {
    let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
    let keys = DeviceKeys::derive(&seed, Network::Regtest).unwrap();
    let config = LnConfig {
        storage_dir: dir.join(alias),
        listen: free_addr(),
        network: Network::Regtest,
        alias: alias.into(),
        trusted_peers,
        forward_to_private_channels: false,
        durable_receiver: false,
    };
    LnNode::start(&keys, rpc, config).await.unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let in_flight: usize = std::env::var("M2M_LN_IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let load = Duration::from_secs(
        std::env::var("M2M_LOAD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let channels: usize = std::env::var("M2M_LN_CHANNELS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let bitcoind = start_bitcoind().await.expect("bitcoind (scripts/bitcoind)");
    let rpc = bitcoind.rpc().clone();
    let dir = tempfile::tempdir().unwrap();
    let payer = Arc::new(node(&rpc, dir.path(), "payer", Vec::new()).await);
    // The payee trusts the payer's channels (no on-chain reserve of its own needed).
    let payee = node(&rpc, dir.path(), "payee", vec![payer.node_id()]).await;

    let burn = DeviceKeys::derive(
        &DeviceSeed::generate(SeedLength::Words12).unwrap(),
        Network::Regtest,
    )
    .unwrap()
    .bitcoin_address()
    .to_string();
    let funding = payer.new_onchain_address().unwrap().to_string();
    rpc.mine_to(channels as u32, &funding).await.unwrap();
    rpc.mine_to(100, &burn).await.unwrap();
    payer.sync().await.unwrap();
    for _ in 0..channels {
        let id = payer
            .open_channel(
                payee.node_id(),
                payee.listen_address(),
                Amount::from_sat(10_000_000),
                0,
                true,
            )
            .unwrap();
        payer.wait_funding(id, WAIT).await.unwrap();
        // Confirmed, and seen so by both, before the next open: ldk-node's wallet would otherwise
        // reuse the coin, and LDK refuses a fifth unconfirmed channel from one peer.
        rpc.mine_to(6, &burn).await.unwrap();
        payer.sync().await.unwrap();
        payee.sync().await.unwrap();
    }
    payer
        .wait_channels("the channels", WAIT, |c| {
            c.iter().filter(|c| c.is_usable).count() == channels
        })
        .await
        .unwrap();

    let payee_id = payee.node_id();
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        let sent = Instant::now();
        payer.keysend(payee_id, 1_000, WAIT).await.unwrap();
        latencies.push(sent.elapsed());
    }
    let sequential = started.elapsed();
    latencies.sort();
    println!(
        "lightning, one at a time:   {:>7.1} payments/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({SEQUENTIAL} keysends)",
        SEQUENTIAL as f64 / sequential.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let payer = payer.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut refused) = (Vec::new(), 0usize);
            while started.elapsed() < load {
                let sent = Instant::now();
                // The channel limits HTLCs in flight: a refused send is counted and retried.
                match payer.keysend(payee_id, 1_000, WAIT).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (latencies, refused)
        }));
    }
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for task in tasks {
        let (done, failed) = task.await.unwrap();
        latencies.extend(done);
        refused += failed;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "lightning, {in_flight} in flight:      {:>7.1} payments/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} keysends, {refused} sends refused and retried)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
    println!(
        "payee received {} msat; published anchors on 8 vCPU: Eclair 89/s, CLN 61/s, LND 33/s",
        payee.received_msat()
    );
    payee.stop().await.unwrap();
    payer.stop().await.unwrap();
}
