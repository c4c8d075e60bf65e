//! `btc-channel` over HTTP against a real regtest bitcoind: a buyer opens a Taproot channel from
//! its BDK wallet on the seller's first 402, pays readings one voucher each, recovers from a
//! voucher lost on the way, and the seller's close pays exactly what was served.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::Amount;
use m2m::node::btc::{BtcBuyer, BtcBuyerOptions, BtcRoute, BtcSeller, PayeePolicy, serve_btc};
use m2m::node::seller::config::LimitsConfig;
use m2m::node::seller::sensor::{SensorKind, SimulatedSensor};
use m2m::node::x402::btc::BTC_SIGNATURE;
use m2m::node::x402::headers::{self, PAYMENT_REQUIRED, PAYMENT_SIGNATURE};
use m2m::node::x402::types::{PaymentPayload, PaymentRequired};

use super::btc_channel::{mine, setup, start_miner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_paid_over_a_taproot_channel() {
    let (node, payer_device, payee_device) = setup().await;
    let rpc = node.rpc().clone();
    let policy = PayeePolicy {
        min_blocks_to_expiry: 50,
        ..PayeePolicy::default()
    };
    let payee = Arc::new(payee_device.payee(&rpc, policy));
    let price = Amount::from_sat(25);
    let seller = Arc::new(BtcSeller::new(
        payee.clone(),
        &policy,
        rpc.caip2().await.unwrap(),
        vec![BtcRoute {
            path: "/temperature".into(),
            price,
            sensor: SensorKind::Temperature,
            source: None,
        }],
        Arc::new(SimulatedSensor::new("btc-seller")),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve_btc(
        seller.clone(),
        listener,
        &LimitsConfig::default(),
        m2m::node::tls::ServerTls::Plain,
    )
    .unwrap();
    let url = format!("http://{}/temperature", server.local_addr);

    // A block every 200 ms, so the buyer's funding confirms while it waits.
    let miner = start_miner(&rpc, Duration::from_millis(200));
    let payer = Arc::new(payer_device.payer());
    let buyer = BtcBuyer::new(payer.clone(), rpc.clone(), BtcBuyerOptions::default())
        .await
        .unwrap();
    for _ in 0..200 {
        let fetched = buyer.get(&url).await.unwrap();
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.paid, Some(price));
        assert!(String::from_utf8_lossy(&fetched.body).contains("Cel"));
    }
    miner.abort();
    assert_eq!(seller.paid_readings(), 200);

    // Hostile input: a forged voucher is refused with the scheme's code and changes nothing.
    let unpaid = reqwest::get(&url).await.unwrap();
    assert_eq!(unpaid.status(), 402);
    let required: PaymentRequired =
        headers::decode(unpaid.headers()[PAYMENT_REQUIRED].to_str().unwrap()).unwrap();
    let offer = required.accepts[0].clone();
    let id = payer.usable(&payee.payee_key(), price).await.unwrap();
    let terms = payer.terms(&id).await.unwrap();
    let mut voucher = payer.pay(&id, price).await.unwrap(); // signed, then lost on the way
    let valid = voucher;
    let mut forged_sig = voucher.signature.serialize();
    forged_sig[0] ^= 1;
    voucher.signature = bitcoin::secp256k1::schnorr::Signature::from_slice(&forged_sig).unwrap();
    let payment_of = |voucher: &m2m::contracts::btc::BtcVoucher| PaymentPayload {
        x402_version: 2,
        resource: None,
        accepted: offer.clone(),
        payload: serde_json::to_value(m2m::node::x402::btc::BtcChannelPayload {
            channel: m2m::node::x402::btc::BtcChannelWire::from_terms(&terms),
            voucher: m2m::node::x402::btc::BtcVoucherWire::from_voucher(voucher),
        })
        .unwrap(),
        extensions: None,
    };
    let forged = payment_of(&voucher);
    let refused = reqwest::Client::new()
        .get(&url)
        .header(PAYMENT_SIGNATURE, headers::encode(&forged))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    let required: PaymentRequired =
        headers::decode(refused.headers()[PAYMENT_REQUIRED].to_str().unwrap()).unwrap();
    assert_eq!(required.error.as_deref(), Some(BTC_SIGNATURE));
    let served = Amount::from_sat(25 * 200);
    assert_eq!(payee.state(&id).await.unwrap().0, served);

    // HEAD serves no reading and other methods none either: neither takes a payment, not even
    // a valid voucher.
    for (method, status) in [(reqwest::Method::HEAD, 402), (reqwest::Method::POST, 405)] {
        let response = reqwest::Client::new()
            .request(method.clone(), &url)
            .header(PAYMENT_SIGNATURE, headers::encode(&payment_of(&valid)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method}");
        assert_eq!(
            payee.state(&id).await.unwrap().0,
            served,
            "{method} charged nothing"
        );
    }

    // The buyer signed one voucher the seller never got: it re-signs from the seller's total.
    let fetched = buyer.get(&url).await.unwrap();
    assert_eq!(fetched.status, 200);
    let served = served + price;
    assert_eq!(payee.state(&id).await.unwrap().0, served);

    // The buyer closes cooperatively: one MuSig2 key-path signature, the seller paid exactly
    // what it served, the buyer the rest less the (smaller) cooperative fee.
    let closes = buyer.close(&url).await.unwrap();
    assert_eq!(closes.len(), 1);
    mine(&rpc, 1).await;
    let close = rpc.transaction(&closes[0]).await.unwrap();
    let channel = m2m::contracts::btc::TaprootChannel::new(terms).unwrap();
    assert_eq!(close.input[0].witness.len(), 1, "key path");
    assert_eq!(close.output[0].value, served);
    assert_eq!(
        close.output[1].value,
        terms.funding.capacity - served - channel.cooperative_fee()
    );
    let funding = rpc.transaction(&terms.funding.outpoint.txid).await.unwrap();
    eprintln!(
        "btc channel lifecycle, cooperative: funding {} vB + close {} vB = {} vB",
        funding.vsize(),
        close.vsize(),
        funding.vsize() + close.vsize()
    );
    assert_eq!(close.vsize(), 154);
    assert!(funding.vsize() + close.vsize() <= 325, "the lifecycle goal");

    // After co-signing, the seller takes no voucher on that channel; the buyer opens a new one.
    let stale = payer.pay(&id, price).await;
    assert!(
        stale.is_err(),
        "the payer pays no more on a closing channel"
    );
    let miner = start_miner(&rpc, Duration::from_millis(200));
    let fetched = buyer.get(&url).await.unwrap();
    assert_eq!(fetched.status, 200);
    miner.abort();
    assert_ne!(payer.usable(&payee.payee_key(), price).await, Some(id));
    server.shutdown().await;
}
