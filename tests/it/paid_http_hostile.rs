//! The seller under hostile input: forged and replayed vouchers, a replayed `exact`
//! authorization, an oversized header, a client that never finishes its headers, a flood from one
//! address — each refused with the spec's error code (or the HTTP limit's status) and no reading
//! served. Then a seller restart: the channel continues from the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::aliases::U40;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolStruct;
use m2m::contracts::bindings::{ChannelConfig, TestToken};
use m2m::contracts::eip712;
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::datadir::DataDir;
use m2m::node::store::ChannelStore;
use m2m::node::x402::headers;
use m2m::node::x402::types::{PaymentPayload, PaymentRequired, PaymentRequirements};
use m2m::wallet::{DeviceKeys, Signer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::paid_http::{PRICE, start_seller};
use crate::support::{LocalChain, funded_device, seller_and_buyer};
use m2m::sim::adversary::{send_payment, signed_voucher_payload};

/// Sends `payload` for `path` as the offer of `scheme`; returns status, error code, body.
async fn pay_raw(
    base: &str,
    path: &str,
    scheme: &str,
    payload: Value,
) -> (u16, Option<String>, String) {
    let http = reqwest::Client::new();
    let url = format!("{base}{path}");
    let accepted = offer(&http, &url, scheme).await;
    let response = send_payment(&http, &url, accepted, payload).await.unwrap();
    let status = response.status().as_u16();
    let code = response.headers().get("PAYMENT-REQUIRED").map(|v| {
        headers::decode::<PaymentRequired>(v.to_str().unwrap())
            .unwrap()
            .error
            .unwrap_or_default()
    });
    (status, code, response.text().await.unwrap())
}

/// The seller's offer of `scheme` for `url`, from an unpaid request's 402.
async fn offer(http: &reqwest::Client, url: &str, scheme: &str) -> PaymentRequirements {
    let unpaid = http.get(url).send().await.unwrap();
    let required: PaymentRequired =
        headers::decode(unpaid.headers()["PAYMENT-REQUIRED"].to_str().unwrap()).unwrap();
    required
        .accepts
        .into_iter()
        .find(|o| o.scheme == scheme)
        .unwrap()
}

fn voucher_payload(config: &ChannelConfig, signer: &dyn Signer, cumulative: u128) -> Value {
    signed_voucher_payload(31337, config, signer, cumulative).expect("sign a voucher")
}

fn exact_payload(buyer: &DeviceKeys, pay_to: Address, token: Address) -> Value {
    let authorization = eip712::TransferWithAuthorization {
        from: buyer.evm_address(),
        to: pay_to,
        value: U256::from(PRICE),
        validAfter: U256::ZERO,
        validBefore: U256::from(u64::MAX / 2),
        nonce: B256::with_last_byte(7),
    };
    let domain = eip712::token_domain("Test USD".into(), "1".into(), 31337, token);
    let signature = buyer
        .sign_evm_digest(&authorization.eip712_signing_hash(&domain))
        .unwrap();
    json!({
        "signature": Bytes::from(signature.as_bytes().to_vec()),
        "authorization": { "from": authorization.from, "to": pay_to, "value": PRICE.to_string(),
            "validAfter": "0", "validBefore": authorization.validBefore.to_string(), "nonce": authorization.nonce },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payments_are_refused_with_spec_codes_and_nothing_is_served() {
    let chain = LocalChain::start(31337).await;
    let (seller_keys, buyer_keys) = seller_and_buyer(&chain, 1_000_000).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let token_name = token.name().call().await.unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let limits =
        "[limits]\nheader_read_timeout_ms = 300\nrate_per_client = 20\nburst_per_client = 400\n";
    let (seller, server, base) =
        start_seller(&chain, &seller_keys, &dirs.path().join("seller"), limits).await;
    let buyer_dir = DataDir::open(&dirs.path().join("buyer")).unwrap();
    let buyer = Buyer::new(
        buyer_keys.clone(),
        ChannelStore::open(&buyer_dir).unwrap(),
        BuyerOptions::default(),
    );
    for _ in 0..3 {
        buyer
            .get(&format!("{base}/temperature"))
            .await
            .expect("honest reading");
    }
    let config = ChannelConfig {
        payer: Signer::evm_address(&*buyer_keys),
        payerAuthorizer: Signer::evm_address(&*buyer_keys),
        receiver: seller.receiver(),
        receiverAuthorizer: Signer::evm_address(&*seller_keys),
        token: chain.token,
        withdrawDelay: U40::from(900u64),
        salt: B256::ZERO,
    };

    // Forged: the right amount, signed by someone else.
    let mallory = funded_device(&chain, 0).await;
    let (status, code, body) = pay_raw(
        &base,
        "/temperature",
        "batch-settlement",
        voucher_payload(&config, &*mallory, 4 * PRICE),
    )
    .await;
    assert_eq!(
        (status, code.as_deref()),
        (402, Some("invalid_batch_settlement_evm_voucher_signature"))
    );
    assert!(!body.contains("\"n\":"), "no SenML reading served: {body}");

    // A well-signed voucher on a channel nobody funded: refused, and nothing is recorded.
    let mut unfunded = config.clone();
    unfunded.payer = Signer::evm_address(&*mallory);
    unfunded.payerAuthorizer = unfunded.payer;
    let (_, code, _) = pay_raw(
        &base,
        "/temperature",
        "batch-settlement",
        voucher_payload(&unfunded, &*mallory, PRICE),
    )
    .await;
    assert_eq!(
        code.as_deref(),
        Some("invalid_batch_settlement_evm_channel_not_found")
    );
    assert_eq!(
        seller.channel_summaries().await.len(),
        1,
        "no entry for unfunded channels"
    );

    // Replayed: the buyer's own voucher for reading 3, again. Corrective 402 with the proof.
    let (status, code, _) = pay_raw(
        &base,
        "/temperature",
        "batch-settlement",
        voucher_payload(&config, &*buyer_keys, 3 * PRICE),
    )
    .await;
    assert_eq!(
        (status, code.as_deref()),
        (
            402,
            Some("invalid_batch_settlement_evm_cumulative_amount_mismatch")
        )
    );
    // HEAD serves no reading, so it takes no payment: the buyer's valid next voucher, sent with
    // HEAD, gets the price and is not recorded (else the honest buyer's own next voucher below
    // would be stale and need a resync, which the end of this test rules out).
    let http = reqwest::Client::new();
    let url = format!("{base}/temperature");
    let message = PaymentPayload {
        x402_version: 2,
        resource: None,
        accepted: offer(&http, &url, "batch-settlement").await,
        payload: voucher_payload(&config, &*buyer_keys, 4 * PRICE),
        extensions: None,
    };
    let paid_before = seller.paid_readings();
    let head = http
        .head(&url)
        .header("PAYMENT-SIGNATURE", headers::encode(&message))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 402, "HEAD shows the price");
    assert!(head.headers().get("PAYMENT-RESPONSE").is_none());
    assert_eq!(seller.paid_readings(), paid_before, "HEAD charged nothing");
    // Beyond the deposit: refused.
    let (_, code, _) = pay_raw(
        &base,
        "/temperature",
        "batch-settlement",
        voucher_payload(&config, &*buyer_keys, 10u128.pow(9)),
    )
    .await;
    assert_eq!(
        code.as_deref(),
        Some("invalid_batch_settlement_evm_cumulative_amount_mismatch")
    );
    // Another receiver in the config: refused before any signature work.
    let mut elsewhere = config.clone();
    elsewhere.receiver = Address::with_last_byte(9);
    let (_, code, _) = pay_raw(
        &base,
        "/temperature",
        "batch-settlement",
        voucher_payload(&elsewhere, &*buyer_keys, 4 * PRICE),
    )
    .await;
    assert_eq!(
        code.as_deref(),
        Some("invalid_batch_settlement_evm_receiver_mismatch")
    );
    // The facilitator is off by default: nobody spends this seller's gas through /settle.
    let settle = reqwest::Client::new()
        .post(format!("{base}/settle"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(settle.status(), 404, "no facilitator unless configured");
    // Garbage in the header.
    let garbage = reqwest::Client::new()
        .get(format!("{base}/temperature"))
        .header("PAYMENT-SIGNATURE", "%%%")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 402);
    assert_eq!(
        headers::decode::<PaymentRequired>(garbage.headers()["PAYMENT-REQUIRED"].to_str().unwrap())
            .unwrap()
            .error
            .as_deref(),
        Some("invalid_payload")
    );

    // exact: the first use pays, the replay is refused.
    assert_eq!(
        token_name, "Test USD",
        "the exact payload below signs for this token name"
    );
    let payment = exact_payload(&buyer_keys, seller.receiver(), chain.token);
    let (status, _, body) = pay_raw(&base, "/humidity", "exact", payment.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, code, _) = pay_raw(&base, "/humidity", "exact", payment).await;
    assert_eq!(
        (status, code.as_deref()),
        (402, Some("invalid_exact_evm_nonce_already_used"))
    );

    // The honest buyer is unaffected: the next voucher still fits.
    buyer
        .get(&format!("{base}/temperature"))
        .await
        .expect("honest reading after the attacks");

    // An oversized head gets 431; a head that never ends is cut after the timeout.
    let big = reqwest::Client::new()
        .get(format!("{base}/temperature"))
        .header("X-Filler", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    let mut slow = tokio::net::TcpStream::connect(server.local_addr)
        .await
        .unwrap();
    slow.write_all(b"GET /temperature HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the server closed the slow connection");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cut after {:?}",
        started.elapsed()
    );

    // A flood from one address is throttled.
    let http = reqwest::Client::new();
    let mut throttled = 0;
    for _ in 0..600 {
        if http
            .get(format!("{base}/temperature"))
            .send()
            .await
            .unwrap()
            .status()
            == 429
        {
            throttled += 1;
        }
    }
    assert!(
        throttled > 0,
        "600 quick requests against a burst of 400 must see 429s"
    );

    // Restart from the store: the channel continues where it stopped.
    server.shutdown().await;
    let mut seller = seller;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&seller) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seller = match Arc::try_unwrap(seller) {
        Ok(inner) => {
            drop(inner);
            tokio::time::sleep(Duration::from_millis(50)).await;
            start_seller(&chain, &seller_keys, &dirs.path().join("seller"), "")
                .await
                .0
        }
        Err(_) => panic!("server still holds the seller"),
    };
    let server = m2m::node::seller::serve(seller.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .unwrap();
    let fetched = buyer
        .get(&format!("http://{}/temperature", server.local_addr))
        .await
        .expect("after restart");
    assert_eq!(fetched.paid.unwrap().1, PRICE);
    assert_eq!(
        buyer
            .stats
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no resync needed"
    );
}
