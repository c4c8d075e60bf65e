//! A seller that was down does not lose what it was paid: while it is stopped its payer starts a
//! timed withdrawal and the chain moves on (time and blocks); restarted well inside the delay, the
//! seller reads the channel's state from the chain and claims at once, before the payer can
//! finalize and take back what was never claimed. (Before the fix the event scan started at the
//! block current at the restart, and this claim never happened.)

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use m2m::contracts::bindings::TestToken;
use m2m::node::buyer::{Buyer, BuyerOptions};

use crate::paid_http::{PRICE, open_store, start_seller, start_withdrawal};
use crate::support::{LocalChain, seller_and_buyer};

const READINGS: u128 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_restarted_during_a_withdrawal_claims_before_it_completes() {
    let chain = LocalChain::start(31337).await;
    let (seller_keys, buyer_keys) = seller_and_buyer(&chain, 1_000_000).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let dirs = tempfile::tempdir().unwrap();
    let seller_dir = dirs.path().join("seller");

    // Paid readings, below the claim threshold (50 readings) and inside the claim interval.
    let (seller, server, base) = start_seller(&chain, &seller_keys, &seller_dir, "").await;
    let buyer = Buyer::new(
        buyer_keys.clone(),
        open_store(&dirs.path().join("buyer")),
        BuyerOptions::default(),
    );
    for _ in 0..READINGS {
        let fetched = buyer.get(&format!("{base}/temperature")).await.unwrap();
        assert_eq!(fetched.status, 200);
    }

    // The seller goes down without claiming (a crash, a power cut).
    server.shutdown().await;
    let receiver = seller.receiver();

    // Meanwhile the payer starts a timed withdrawal, and ten minutes and blocks go by.
    let (settlement, id) = start_withdrawal(&chain, &buyer_keys, &seller).await;
    drop(seller);
    let _: serde_json::Value = chain
        .facilitator
        .raw_request("evm_increaseTime".into(), (600u64,))
        .await
        .unwrap();
    let _: serde_json::Value = chain
        .facilitator
        .raw_request("anvil_mine".into(), (U256::from(5u64),))
        .await
        .unwrap();

    // Back up, 300 s before the payer may finalize: it claims at once.
    let (seller, server, _) = start_seller(&chain, &seller_keys, &seller_dir, "").await;
    let claimer = tokio::spawn(seller.clone().run_claimer());
    let deadline = Instant::now() + Duration::from_secs(20);
    while settlement.channels(id).call().await.unwrap().totalClaimed < READINGS * PRICE {
        assert!(
            Instant::now() < deadline,
            "the restarted seller did not claim the channel whose withdrawal started while it was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    claimer.abort();
    server.shutdown().await;

    // Settled to the seller: the payer's finalize can now take back only what it did not spend.
    let balance = token.balanceOf(receiver).call().await.unwrap().to::<u128>();
    assert_eq!(
        balance,
        READINGS * PRICE,
        "claimed and settled to the seller"
    );
}
