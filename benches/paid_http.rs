//! Load generator for pay-per-reading over HTTP 402 on loopback (`cargo bench --bench paid_http`).
//!
//! Starts anvil with the contracts, our seller, and 64 buyer wallets sharing one channel store.
//! Each buyer opens a channel once (a relayed deposit), then every request carries a fresh
//! voucher that the buyer persists before sending and the seller persists before serving (both
//! fsync'd, group commit). In the same run it measures the x402 `exact` loop (one on-chain
//! EIP-3009 transfer per request, anvil automine) through the same seller, and reports the
//! ratio. Bounded in time: `M2M_LOAD_SECS` (default 10) per phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use m2m::contracts::bindings::TestToken;
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::datadir::DataDir;
use m2m::node::seller::sensor::SimulatedSensor;
use m2m::node::seller::{Seller, SellerConfig, serve};
use m2m::node::store::ChannelStore;
use m2m::node::tools::{Foundry, start_anvil};
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength, Signer};

const BUYERS: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Phase {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn print(&self, name: &str) {
        println!(
            "{name:<44} {:>9.0} paid req/s   p50 {:>8.3} ms   p99 {:>8.3} ms   ({} requests)",
            self.per_second(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.requests
        );
    }
}

/// Runs `concurrency` loops of `buyer.get(url)` for `duration`.
async fn load(buyers: &[Arc<Buyer>], concurrency: usize, url: &str, duration: Duration) -> Phase {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..concurrency {
        let buyer = buyers[index % buyers.len()].clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let begun = Instant::now();
                let fetched = buyer.get(&url).await.expect("paid request");
                assert_eq!(fetched.status, 200);
                latencies.push(begun.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    Phase {
        requests: all.len(),
        elapsed,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    }
}

/// Tick overhead at the connectivity gateway: sequential ticks over one keep-alive connection,
/// written by hand so the wire bytes are exact; each costs the client's hash-chain step, the HTTP
/// round trip and the gateway's one SHA-256.
async fn gateway_ticks(
    rpc: &str,
    token: alloy::primitives::Address,
    keys: Arc<DeviceKeys>,
    dir: &std::path::Path,
) {
    use m2m::node::gateway::{Gateway, GatewayConfig, serve as serve_gateway};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TICKS: u32 = 5_000;
    let config = GatewayConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nrpc_url = \"{rpc}\"\nnetwork = \"eip155:31337\"\nasset = \"{token}\"\n\
         price_per_minute = 60000\nticks_per_voucher = {TICKS}\nupstreams = [\"127.0.0.1:*\"]\n"
    ))
    .unwrap();
    let data_dir = DataDir::open(dir).unwrap();
    let gateway = Gateway::start(config, keys, ChannelStore::open(&data_dir).unwrap())
        .await
        .unwrap();
    let server = serve_gateway(gateway, None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr);
    let mut chain = m2m::core::ticks::TickChain::new([7; 32], TICKS);
    let session = m2m::node::gateway::client::open_session_with(
        &reqwest::Client::new(),
        &base,
        &chain,
        TICKS,
    )
    .await
    .unwrap();
    let mut stream = tokio::net::TcpStream::connect(server.local_addr)
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sent, mut received) = (0usize, 0usize);
    let mut buffer = vec![0u8; 4096];
    let started = Instant::now();
    for _ in 0..TICKS {
        let tick = chain.next_tick().unwrap();
        let body = format!(
            "{{\"preimage\":\"{}\"}}",
            alloy::primitives::B256::from(tick.preimage)
        );
        let request = format!(
            "POST /sessions/{session}/ticks HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        sent += request.len();
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            buffer[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buffer[..n])
        );
        received += n;
    }
    let per_tick = started.elapsed() / TICKS;
    println!(
        "gateway ticks: {:.1} µs per tick round trip (client + gateway, sequential), {} B up + {} B down per tick; \
         one minute at 1 tick/s = {:.2} ms and {:.1} KiB",
        per_tick.as_secs_f64() * 1e6,
        sent / TICKS as usize,
        received / TICKS as usize,
        per_tick.as_secs_f64() * 1e3 * 60.0,
        (sent + received) as f64 / f64::from(TICKS) * 60.0 / 1024.0
    );
    server.shutdown().await;
}

fn main() {
    let secs: u64 = std::env::var("M2M_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let foundry = Foundry::ensure().expect("provision anvil");
        let anvil = start_anvil(&foundry, 31337).unwrap();
        let deployer = PrivateKeySigner::from(anvil.instance().keys()[0].clone());
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(deployer))
            .connect_http(anvil.endpoint().parse().unwrap())
            .erased();
        m2m::contracts::deploy::install_canonical(&provider).await.unwrap();
        let token_address = m2m::contracts::deploy::deploy_test_token(&provider).await.unwrap();
        let token = TestToken::new(token_address, &provider);
        let device = || {
            let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
            Arc::new(DeviceKeys::derive(&seed, Network::Regtest).unwrap())
        };
        let dirs = tempfile::tempdir().unwrap();

        let seller_keys = device();
        let _: serde_json::Value = provider
            .raw_request("anvil_setBalance".into(), (Signer::evm_address(&*seller_keys), U256::from(10u128.pow(21))))
            .await
            .unwrap();
        let config = SellerConfig::parse(&format!(
            "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:31337\"\n\
             [claim]\nthreshold = \"{}\"\n[limits]\nrate_per_client = 1000000\nburst_per_client = 1000000\n\
             [[route]]\npath = \"/temperature\"\nprice = \"1\"\nasset = \"{token_address}\"\n",
            anvil.endpoint(),
            u128::MAX
        ))
        .unwrap();
        let seller_dir = DataDir::open(&dirs.path().join("seller")).unwrap();
        let seller = Seller::start(config, seller_keys, ChannelStore::open(&seller_dir).unwrap(), Arc::new(SimulatedSensor::new("load")))
            .await
            .unwrap();
        let server = serve(seller.clone(), None, m2m::node::tls::ServerTls::Plain).await.unwrap();
        let url = format!("http://{}/temperature", server.local_addr);

        let buyer_dir = DataDir::open(&dirs.path().join("buyers")).unwrap();
        let store = Arc::new(ChannelStore::open(&buyer_dir).unwrap());
        let mut buyers = Vec::new();
        let mut exact_buyers = Vec::new();
        for _ in 0..BUYERS {
            let keys = device();
            token.mint(Signer::evm_address(&*keys), U256::from(10u64.pow(12))).send().await.unwrap().get_receipt().await.unwrap();
            let options = BuyerOptions { deposit_readings: 10_000_000, ..BuyerOptions::default() };
            buyers.push(Arc::new(Buyer::new(keys.clone(), store.clone(), options)));
            let exact = BuyerOptions { prefer: vec!["exact".into()], ..BuyerOptions::default() };
            exact_buyers.push(Arc::new(Buyer::new(keys, store.clone(), exact)));
        }
        eprintln!("opening {BUYERS} channels (one relayed deposit each)...");
        for buyer in &buyers {
            buyer.get(&url).await.unwrap();
        }

        println!("pay per reading over HTTP 402, loopback, vouchers durable on both sides ({secs} s per phase)");
        let exact = load(&exact_buyers, 1, &url, duration).await;
        exact.print("x402 exact loop (1 client, on-chain each)");
        let exact_parallel = load(&exact_buyers, 8, &url, duration).await;
        exact_parallel.print("x402 exact, 8 clients");
        let light = load(&buyers, 8, &url, duration).await;
        light.print("batch-settlement vouchers, 8 channels");
        let heavy = load(&buyers, BUYERS, &url, duration).await;
        heavy.print("batch-settlement vouchers, 64 channels");
        let best_exact = exact.per_second().max(exact_parallel.per_second());
        println!(
            "ratio vs exact (same run): {:.0}x (8 channels), {:.0}x (64 channels)",
            light.per_second() / best_exact,
            heavy.per_second() / best_exact
        );
        server.shutdown().await;
        gateway_ticks(&anvil.endpoint(), token_address, device(), &dirs.path().join("gateway")).await;
        drop(anvil);
    });
}
