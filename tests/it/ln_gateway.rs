//! Connectivity paid by the minute over Lightning: a client opens a Lightning session at the
//! gateway and streams keysends (each carrying the session's record); tunnels run while the
//! paid time lasts and are cut when the stream stops; the gateway credits exactly what it
//! received, and a keysend naming no session buys nothing; then the same through the client that
//! `m2m connect --lightning` runs (a local CONNECT proxy); and a restarted gateway still holds
//! every paid session, rebuilt from the credits it recorded before acknowledging them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::Amount;
use m2m::node::gateway::{self, Gateway, GatewayConfig};
use m2m::node::ln::stream::{self, StreamPayer};
use m2m::sim::roaming::get_through;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::lightning::{Agent, channel_between};
use crate::support::{LocalChain, funded_device};

const WAIT: Duration = Duration::from_secs(60);

/// `CONNECT target` through the gateway with the session's `Proxy-Authorization`.
async fn tunnel(
    gateway: SocketAddr,
    session: u64,
    target: SocketAddr,
) -> Result<TcpStream, String> {
    let authorization = format!("Proxy-Authorization: M2M {session}\r\n");
    m2m::sim::roaming::tunnel_with(gateway, target, &authorization).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keysend_stream_pays_the_minutes_and_stopping_it_cuts_the_tunnel() {
    let bitcoind = m2m::node::tools::start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = bitcoind.rpc().clone();
    let (client_agent, gateway_agent) = (Agent::new("client"), Agent::new("gateway"));
    let client_ln = Arc::new(client_agent.start(&rpc).await);
    let gateway_ln = gateway_agent.start(&rpc).await;
    channel_between(
        &rpc,
        &client_ln,
        &gateway_ln,
        Amount::from_sat(1_000_000),
        false,
    )
    .await;

    // The gateway: its EVM side as usual, plus Lightning sessions at 60 sat a minute.
    let chain = LocalChain::start(31337).await;
    let keys = funded_device(&chain, 10u128.pow(20)).await;
    let config = GatewayConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:31337\"\nasset = \"{}\"\n\
         price_per_minute = 60000\ngrace_ms = 500\nlightning_msat_per_minute = 60000\nupstreams = [\"127.0.0.1:*\"]\n",
        chain.anvil.endpoint(),
        chain.token
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::paid_http::open_store(dir.path());
    let gateway = Gateway::start(config.clone(), keys.clone(), store.clone())
        .await
        .unwrap();
    gateway.accept_lightning(&gateway_ln).unwrap();
    let server = gateway::serve(gateway.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr);
    let upstream = m2m::sim::roaming::upstream().await.unwrap();

    let http = reqwest::Client::new();
    let session = stream::open_gateway_session(&http, &base).await.unwrap();
    assert_eq!(session.node, gateway_ln.node_id());
    assert_eq!(session.msat_per_minute, 60_000);
    let refused = tunnel(server.local_addr, session.id, upstream)
        .await
        .expect_err("nothing paid yet");
    assert!(refused.starts_with("HTTP/1.1 402"), "{refused}");
    let ticks = reqwest::Client::new()
        .post(format!("{base}/sessions/{}/ticks", session.id))
        .json(&serde_json::json!({ "preimage": alloy::primitives::B256::repeat_byte(1) }))
        .send()
        .await
        .unwrap();
    assert_eq!(ticks.status(), 409, "a Lightning session takes no ticks");

    // The stream: one keysend per second of connectivity (1 sat each), paid a second ahead.
    let mut payer = StreamPayer::new(client_ln.clone(), session);
    let period = Duration::from_secs(1);
    payer.pay_for(period * 2, WAIT).await.unwrap();
    let credited = |expected: u64| {
        let gateway = gateway.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            while gateway.lightning_received(session.id) != Some(expected) {
                assert!(Instant::now() < deadline, "credit of {expected} msat");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    credited(2_000).await;
    let mut stream = tunnel(server.local_addr, session.id, upstream)
        .await
        .expect("tunnel while paid");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert!(get_through(&mut stream).await.unwrap().contains("xxxx"));
        payer.pay_for(period, WAIT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    credited(payer.paid_msat()).await;

    // A keysend with no session record (or another session's id) buys nothing.
    client_ln
        .keysend(gateway_ln.node_id(), 5_000, WAIT)
        .await
        .unwrap();
    assert_eq!(
        gateway.lightning_received(session.id),
        Some(payer.paid_msat())
    );

    // The stream stops: the tunnel is cut once the paid time and the grace run out.
    let stopped = Instant::now();
    let mut buffer = [0u8; 16];
    let cut = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel closed: {cut:?}"
    );
    let latency = stopped.elapsed();
    println!("cut {latency:?} after the last keysend (it paid up to ~3 s ahead)");
    assert!(latency < Duration::from_secs(5), "cut after {latency:?}");
    let refused = tunnel(server.local_addr, session.id, upstream)
        .await
        .expect_err("refused after the stream stopped");
    assert!(refused.starts_with("HTTP/1.1 402"), "{refused}");
    assert_eq!(
        gateway_ln.received_msat(),
        payer.paid_msat() + 5_000,
        "the node holds every payment"
    );
    let (keysends, _, bytes, cuts) = gateway.session_figures(session.id).unwrap();
    println!(
        "session: {keysends} keysends, {} msat, {bytes} bytes, {cuts} cut",
        payer.paid_msat()
    );
    assert!(keysends >= 5 && bytes > 2_000 && cuts == 1);

    // The same through the client `m2m connect --lightning` runs: a local proxy, paid per second.
    let client = stream::connect_lightning(
        &base,
        client_ln.clone(),
        "127.0.0.1:0".parse().unwrap(),
        period,
        &m2m::node::tls::Trust::default(),
    )
    .await
    .unwrap();
    let mut stream = m2m::sim::roaming::tunnel(client.local_addr, upstream)
        .await
        .expect("a tunnel through the local proxy");
    assert!(get_through(&mut stream).await.unwrap().contains("xxxx"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        get_through(&mut stream).await.unwrap().contains("xxxx"),
        "still paid after 3 s"
    );
    client.stop_paying();
    let paid = client.paid_msat.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        paid >= 4_000,
        "two periods ahead, then one a second: {paid} msat"
    );
    let deadline = Instant::now() + WAIT;
    while gateway.lightning_received(client.session) != Some(paid) {
        assert!(Instant::now() < deadline, "the gateway credits {paid} msat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;

    // A restarted gateway rebuilds every paid session from the credits it recorded before the
    // node acknowledged them; a credit recorded twice (an event replayed) counts once.
    let restarted = Gateway::start(config.clone(), keys.clone(), store.clone())
        .await
        .unwrap();
    assert_eq!(
        restarted.lightning_received(session.id),
        Some(payer.paid_msat())
    );
    assert_eq!(restarted.lightning_received(client.session), Some(paid));
    for expected in [true, false] {
        let credited = restarted
            .credit_lightning_durably([42; 32], client.session, 1_000)
            .await
            .unwrap();
        assert_eq!(credited, expected, "the same payment hash credits once");
    }
    drop(restarted);
    let again = Gateway::start(config, keys, store).await.unwrap();
    assert_eq!(again.lightning_received(client.session), Some(paid + 1_000));
    client_ln.stop().await.unwrap();
    gateway_ln.stop().await.unwrap();
}
