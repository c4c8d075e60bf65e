//! TLS on the device's servers, end to end on loopback: the EVM seller and the gateway speak
//! TLS with the device's seed-derived certificate; a buyer holding the seller's pin pays over
//! https, and its tunnel through the gateway rides on TLS. A wrong pin, no pin (a self-signed
//! key is not in the system's roots) and plain HTTP to a TLS port all fail before anything is
//! paid.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::events::error_line;
use m2m::node::gateway::{self, Gateway};
use m2m::node::seller::serve;
use m2m::node::tls::{DeviceIdentity, Pin, ServerTls, TlsMode, Trust};
use m2m::sim::roaming::{self, get_through, tunnel};

use crate::paid_http::{PRICE, open_store, start_seller};
use crate::support::{LocalChain, seller_and_buyer};

fn tls_for(keys: &m2m::wallet::DeviceKeys) -> (ServerTls, Pin) {
    let identity = DeviceIdentity::derive(keys).expect("TLS identity");
    let tls = ServerTls::resolve(TlsMode::On, "127.0.0.1:0".parse().unwrap(), &identity).unwrap();
    (tls, identity.pin())
}

fn buyer_with(keys: &Arc<m2m::wallet::DeviceKeys>, dir: &std::path::Path, trust: Trust) -> Buyer {
    let options = BuyerOptions {
        trust,
        ..BuyerOptions::default()
    };
    Buyer::new(keys.clone(), open_store(dir), options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_buyer_pays_over_tls_and_a_wrong_pin_pays_nothing() {
    let chain = LocalChain::start(31337).await;
    let (seller_keys, buyer_keys) = seller_and_buyer(&chain, 10_000_000).await;
    let dirs = tempfile::tempdir().unwrap();
    let (seller, _plain, _) =
        start_seller(&chain, &seller_keys, &dirs.path().join("seller"), "").await;
    let (tls, pin) = tls_for(&seller_keys);
    let server = serve(seller.clone(), None, tls)
        .await
        .expect("TLS listener");
    let base = server.url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let url = format!("{base}/temperature");

    // A wrong pin: the handshake fails naming both keys, before any 402 is even seen.
    let wrong = buyer_with(
        &buyer_keys,
        &dirs.path().join("wrong"),
        Trust::pinned(&url, Pin([7; 32])).unwrap(),
    );
    let refused = error_line(&wrong.get(&url).await.unwrap_err());
    assert!(
        refused.contains("not the pinned") && refused.contains(&pin.to_string()),
        "{refused}"
    );
    // No pin: the device's self-signed key is in no system root store.
    let unpinned = buyer_with(&buyer_keys, &dirs.path().join("unpinned"), Trust::default());
    assert!(
        unpinned.get(&url).await.is_err(),
        "an unknown issuer is refused"
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/temperature", server.local_addr))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP on a TLS port: {plain:?}");
    assert_eq!(seller.stats.batch_paid.load(Ordering::Relaxed), 0);
    assert_eq!(seller.stats.refused.load(Ordering::Relaxed), 0);

    // The right pin: paid readings over TLS, each one received.
    let pinned = buyer_with(
        &buyer_keys,
        &dirs.path().join("pinned"),
        Trust::pinned(&url, pin).unwrap(),
    );
    for _ in 0..3 {
        let fetched = pinned.get(&url).await.expect("a paid reading over TLS");
        assert_eq!(fetched.status, 200);
        assert_eq!(
            fetched.paid.as_ref().map(|(_, amount)| *amount),
            Some(PRICE)
        );
    }
    assert_eq!(seller.stats.batch_paid.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_through_a_tls_gateway_carries_traffic() {
    let chain = LocalChain::start(31337).await;
    let (gateway_keys, client_keys) = seller_and_buyer(&chain, 10_000_000).await;
    let dirs = tempfile::tempdir().unwrap();
    let config = gateway::GatewayConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:31337\"\nasset = \"{}\"\n\
         price_per_minute = 60000\ntick_secs = 1\nticks_per_voucher = 3\nupstreams = [\"127.0.0.1:*\"]\n",
        chain.anvil.endpoint(),
        chain.token
    ))
    .unwrap();
    let store = open_store(&dirs.path().join("gateway"));
    let gateway = Gateway::start(config, gateway_keys.clone(), store)
        .await
        .unwrap();
    let (tls, pin) = tls_for(&gateway_keys);
    let server = gateway::serve(gateway.clone(), None, tls).await.unwrap();
    let base = server.url();
    let buyer = Arc::new(buyer_with(
        &client_keys,
        &dirs.path().join("client"),
        Trust::pinned(&base, pin).unwrap(),
    ));
    let client = gateway::client::connect(&base, buyer, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("a session over TLS");
    let upstream = roaming::upstream().await.unwrap();
    let mut stream = tunnel(client.local_addr, upstream)
        .await
        .expect("a tunnel through the TLS gateway");
    assert!(get_through(&mut stream).await.unwrap().contains("xxxx"));
    assert!(client.ticks.load(Ordering::Relaxed) >= 1);
}
