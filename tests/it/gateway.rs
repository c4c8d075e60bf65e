//! Pay per minute through the connectivity gateway, with real traffic on loopback: a paid
//! session tunnels to a local HTTP server; forged ticks are refused; when payments stop the
//! tunnel is cut within 2 s and new tunnels are refused; every voucher was billed on chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use m2m::contracts::bindings::TestToken;
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::gateway::{self, Gateway, GatewayConfig};
use m2m::sim::roaming::{self, get_through, tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{LocalChain, funded_device, send};

async fn upstream() -> std::net::SocketAddr {
    roaming::upstream().await.expect("an upstream on loopback")
}

async fn get_hello(stream: &mut TcpStream) -> std::io::Result<String> {
    get_through(stream).await
}

/// A chain with a funded gateway device and a client device holding test tokens.
async fn setup() -> (
    LocalChain,
    Arc<m2m::wallet::DeviceKeys>,
    Arc<m2m::wallet::DeviceKeys>,
    tempfile::TempDir,
) {
    let chain = LocalChain::start(31337).await;
    let gateway_keys = funded_device(&chain, 10u128.pow(20)).await;
    let client_keys = funded_device(&chain, 0).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    send(
        token.mint(
            m2m::wallet::Signer::evm_address(&*client_keys),
            U256::from(10_000_000u64),
        ),
        "mint",
    )
    .await;
    (
        chain,
        gateway_keys,
        client_keys,
        tempfile::tempdir().unwrap(),
    )
}

fn gateway_config(chain: &LocalChain, listen: &str) -> GatewayConfig {
    GatewayConfig::parse(&format!(
        "listen = \"{listen}\"\nrpc_url = \"{}\"\nnetwork = \"eip155:31337\"\nasset = \"{}\"\n\
         price_per_minute = 60000\ntick_secs = 1\nticks_per_voucher = 3\ngrace_ms = 500\nupstreams = [\"127.0.0.1:*\"]\n",
        chain.anvil.endpoint(),
        chain.token
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_session_tunnels_and_is_cut_when_payments_stop() {
    let (chain, gateway_keys, client_keys, dirs) = setup().await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let config = gateway_config(&chain, "127.0.0.1:0");
    let store = crate::paid_http::open_store(&dirs.path().join("gateway"));
    let gateway = Gateway::start(config, gateway_keys, store).await.unwrap();
    let server = gateway::serve(gateway.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr);
    let upstream = upstream().await;

    // Without a session: 407.
    let mut raw = TcpStream::connect(server.local_addr).await.unwrap();
    raw.write_all(format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = raw.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 407"));

    let buyer = Arc::new(Buyer::new(
        client_keys,
        crate::paid_http::open_store(&dirs.path().join("client")),
        BuyerOptions::default(),
    ));
    let client = gateway::client::connect(&base, buyer, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // Paid: traffic flows, across several vouchers.
    let mut stream = tunnel(client.local_addr, upstream)
        .await
        .expect("tunnel while paid");
    assert!(get_hello(&mut stream).await.unwrap().contains("xxxx"));
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    assert!(
        get_hello(&mut stream).await.unwrap().contains("xxxx"),
        "still paid after 7 s"
    );
    let covers = client.covers.load(std::sync::atomic::Ordering::Relaxed);
    assert!(covers >= 2, "vouchers paid: {covers}");

    // A forged tick is refused.
    let forged = reqwest::Client::new()
        .post(format!(
            "{base}/sessions/{}/ticks",
            client.session.load(std::sync::atomic::Ordering::Relaxed)
        ))
        .json(&serde_json::json!({ "preimage": alloy::primitives::B256::repeat_byte(7) }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 402);

    // A replayed tick is refused too: a session of our own, its first tick sent twice.
    let mut chain_of_ours = m2m::core::ticks::TickChain::new([9; 32], 16);
    let http = reqwest::Client::new();
    let ours = gateway::client::open_session_with(&http, &base, &chain_of_ours, 16)
        .await
        .unwrap();
    let first = chain_of_ours.next_tick().unwrap();
    let tick_url = format!("{base}/sessions/{ours}/ticks");
    let body = serde_json::json!({ "preimage": alloy::primitives::B256::from(first.preimage) });
    let post_tick = || async {
        http.post(&tick_url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(post_tick().await, 200);
    assert_eq!(post_tick().await, 402, "replay");

    // Payments stop: the open tunnel is cut within 2 s of the last tick, new ones are refused.
    client.stop_paying();
    let stopped = Instant::now();
    let mut buffer = [0u8; 16];
    let cut = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel closed: {cut:?}"
    );
    let latency = stopped.elapsed();
    println!("cut-off {latency:?} after the ticker stopped (the last tick was ≤ 1 s before that)");
    assert!(latency < Duration::from_secs(2), "cut after {latency:?}");
    let refused = tunnel(client.local_addr, upstream)
        .await
        .expect_err("refused after payments stopped");
    assert!(refused.starts_with("HTTP/1.1 402"), "{refused}");

    // Billing: every voucher is durable at the gateway and claimable on chain.
    let session = client.session.load(std::sync::atomic::Ordering::Relaxed);
    let (covers_seen, ticks, bytes, cuts) = gateway.session_figures(session).unwrap();
    println!(
        "session: {covers_seen} vouchers, {ticks} ticks, {bytes} bytes metered, {cuts} cut(s)"
    );
    assert!(bytes > 200, "both exchanges were metered: {bytes} bytes");
    assert_eq!(
        covers_seen,
        client.covers.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(u64::from(ticks) >= covers_seen * 3 && cuts >= 1);
    assert_eq!(gateway.seller().claim_all().await.unwrap(), 1);
    let tick_price = 1000u128;
    assert_eq!(
        token
            .balanceOf(gateway.seller().receiver())
            .call()
            .await
            .unwrap(),
        U256::from(u128::from(covers_seen as u32) * 3 * tick_price),
        "the gateway earned exactly the covered ticks"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_loses_no_paid_minute() {
    let (chain, gateway_keys, client_keys, dirs) = setup().await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let store_dir = dirs.path().join("gateway");
    let gateway = Gateway::start(
        gateway_config(&chain, "127.0.0.1:0"),
        gateway_keys.clone(),
        crate::paid_http::open_store(&store_dir),
    )
    .await
    .unwrap();
    let server = gateway::serve(gateway.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let addr = server.local_addr;
    let buyer = Arc::new(Buyer::new(
        client_keys,
        crate::paid_http::open_store(&dirs.path().join("client")),
        BuyerOptions::default(),
    ));
    let client = gateway::client::connect(
        &format!("http://{addr}"),
        buyer,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let paid_before = client.covers.load(std::sync::atomic::Ordering::Relaxed);
    assert!(paid_before >= 1);

    // Crash: the server and every in-memory session go; the store stays.
    server.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&gateway) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(gateway);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gateway = Gateway::start(
        gateway_config(&chain, &addr.to_string()),
        gateway_keys,
        crate::paid_http::open_store(&store_dir),
    )
    .await
    .unwrap();
    let charged: u128 = gateway
        .seller()
        .channel_summaries()
        .await
        .iter()
        .map(|c| c.charged)
        .sum();
    let per_voucher = 3 * 1000u128;
    assert!(
        charged >= u128::from(paid_before as u32) * per_voucher,
        "paid minutes survived: {charged}"
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = gateway::serve(
        gateway.clone(),
        Some(listener),
        m2m::node::tls::ServerTls::Plain,
    )
    .await
    .unwrap();

    // The client opens a new session by itself and keeps paying; traffic flows again.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let upstream = upstream().await;
    let mut stream = tunnel(client.local_addr, upstream)
        .await
        .expect("tunnel after the restart");
    assert!(get_hello(&mut stream).await.unwrap().contains("xxxx"));
    let paid_total = client.covers.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        paid_total > paid_before,
        "payments resumed: {paid_before} → {paid_total}"
    );
    client.stop_paying();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.seller().claim_all().await.unwrap();
    let earned = token
        .balanceOf(gateway.seller().receiver())
        .call()
        .await
        .unwrap()
        .to::<u128>();
    assert_eq!(
        earned,
        u128::from(client.covers.load(std::sync::atomic::Ordering::Relaxed) as u32) * per_voucher,
        "every voucher billed once"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_idle_ones_are_forgotten() {
    let (chain, gateway_keys, _client_keys, dirs) = setup().await;
    let mut config = gateway_config(&chain, "127.0.0.1:0");
    config.max_sessions = 3;
    config.session_idle_secs = 1;
    let store = crate::paid_http::open_store(&dirs.path().join("gateway"));
    let gateway = Gateway::start(config, gateway_keys, store).await.unwrap();
    let server = gateway::serve(gateway.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let open = || {
        let http = http.clone();
        let url = format!("http://{}/sessions", server.local_addr);
        async move {
            let chain = m2m::core::ticks::TickChain::new([9; 32], 10);
            let anchor = alloy::primitives::B256::from(chain.anchor());
            http.post(url)
                .json(&serde_json::json!({ "anchor": anchor, "length": 10 }))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(open().await.status(), 200);
    }
    // Unpaid opens cannot grow the gateway without bound.
    let refused = open().await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.text().await.unwrap().contains("too_many_sessions"));
    assert_eq!(gateway.session_count(), 3);
    // Once the idle ones expire, there is room again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(open().await.status(), 200);
    assert_eq!(
        gateway.session_count(),
        1,
        "the three idle sessions were forgotten"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_rate_limits_each_client_like_every_server() {
    let (chain, gateway_keys, _client_keys, dirs) = setup().await;
    let mut config = gateway_config(&chain, "127.0.0.1:0");
    config.limits.rate_per_client = 5;
    config.limits.burst_per_client = 5;
    let store = crate::paid_http::open_store(&dirs.path().join("gateway"));
    let gateway = Gateway::start(config, gateway_keys, store).await.unwrap();
    let server = gateway::serve(gateway.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let answer = http
            .get(format!("http://{}/", server.local_addr))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        statuses[..5].iter().all(|s| *s == 200) && limited >= 10,
        "a burst of 5, then 429: {statuses:?}"
    );
    server.shutdown().await;
}

/// The gateway's egress rules with a paying client, all on loopback: the default (`public:*`)
/// refuses every loopback target, the gateway's chain RPC and its own listener included; a rule
/// naming one loopback address and port opens exactly that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paying_client_reaches_a_loopback_upstream_only_when_a_rule_names_it() {
    let (chain, gateway_keys, client_keys, dirs) = setup().await;
    let upstream = upstream().await;
    let anvil: std::net::SocketAddr = chain
        .anvil
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let config = |rules: &str| {
        let mut config = gateway_config(&chain, "127.0.0.1:0");
        config.upstreams = rules.parse().unwrap();
        config
    };
    let (mut outcomes, mut socks_outcomes) = (Vec::new(), Vec::new());
    for (name, rules) in [
        ("default", "public:*".to_owned()),
        ("named", format!("127.0.0.1:{}", upstream.port())),
    ] {
        let store = crate::paid_http::open_store(&dirs.path().join(name));
        let gateway = Gateway::start(config(&rules), gateway_keys.clone(), store)
            .await
            .unwrap();
        let server = gateway::serve(gateway.clone(), None, m2m::node::tls::ServerTls::Plain)
            .await
            .unwrap();
        let buyer = Arc::new(Buyer::new(
            client_keys.clone(),
            crate::paid_http::open_store(&dirs.path().join(format!("{name}-client"))),
            BuyerOptions::default(),
        ));
        let base = format!("http://{}", server.local_addr);
        let client = gateway::client::connect(&base, buyer, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let own = server.local_addr;
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, upstream.port()));
        for target in [upstream, anvil, own, v6] {
            let answer = match tunnel(client.local_addr, target).await {
                Ok(mut stream) => get_hello(&mut stream).await.unwrap_or_default(),
                Err(head) => head,
            };
            outcomes.push((name, target, answer));
        }
        // The same port speaks SOCKS5 for applications that know only SOCKS: the same rules.
        for target in [upstream, anvil] {
            let socks = fast_socks5::client::Socks5Stream::connect(
                client.local_addr,
                target.ip().to_string(),
                target.port(),
                fast_socks5::client::Config::default(),
            )
            .await;
            let opened = match socks {
                Ok(stream) => get_hello(&mut stream.get_socket())
                    .await
                    .unwrap_or_default(),
                Err(error) => error.to_string(),
            };
            socks_outcomes.push((name, target, opened));
        }
        drop(client);
        server.shutdown().await;
    }
    for (name, target, answer) in &outcomes {
        let opened = *name == "named" && *target == upstream;
        if opened {
            assert!(answer.contains("xxxx"), "{name} {target}: {answer}");
        } else {
            assert!(
                answer.starts_with("HTTP/1.1 403"),
                "{name} {target}: {answer}"
            );
        }
    }
    for (name, target, answer) in &socks_outcomes {
        if *name == "named" && *target == upstream {
            assert!(answer.contains("xxxx"), "SOCKS {name} {target}: {answer}");
        } else {
            assert!(
                answer.to_lowercase().contains("not allowed"),
                "SOCKS {name} {target}: {answer}"
            );
        }
    }
}
