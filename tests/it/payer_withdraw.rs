//! The EVM payer takes its deposit back with `m2m withdraw`, end to end on anvil: a device buys
//! three readings with `m2m get` (a channel funded with 100 readings' worth), `m2m channels`
//! lists the channel from the store, `m2m withdraw` starts the timed withdrawal, the seller
//! claims its vouchers during the delay, and once the delay is over `m2m withdraw` pays the
//! rest back. Every unit is accounted for: seller + payer + channel = what was minted.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use m2m::contracts::bindings::TestToken;
use serde_json::Value;

use super::cli::{Device, stdout_json};
use super::paid_http::{PRICE, start_seller};
use crate::support::{LocalChain, funded_device, give_eth, send};

const MINTED: u128 = 10_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payer_withdraws_what_the_seller_did_not_claim() {
    let chain = LocalChain::start(31337).await;
    let seller_keys = funded_device(&chain, 10u128.pow(20)).await;
    let dirs = tempfile::tempdir().unwrap();
    let (seller, server, base) =
        start_seller(&chain, &seller_keys, &dirs.path().join("seller"), "").await;
    let device = Device::new();
    let info = stdout_json(&device.run_ok(&["--json", "init"]));
    let payer: Address = info["ethereum"].as_str().unwrap().parse().unwrap();
    let token = TestToken::new(chain.token, &chain.facilitator);
    send(token.mint(payer, U256::from(MINTED)), "mint").await;
    // Gas for the withdrawal's two transactions (deposits were relayed by the seller).
    give_eth(&chain, payer, 10u128.pow(18)).await;

    let url = format!("{base}/temperature");
    device.run_ok(&["get", &url, "-n", "3"]);
    let channels = stdout_json(&device.run_ok(&["--json", "channels"]));
    let row = &channels[0];
    assert_eq!(
        (row["leg"].as_str(), row["role"].as_str()),
        (Some("evm"), Some("payer")),
        "{channels}"
    );
    assert_eq!(row["paid"], (3 * PRICE).to_string(), "{row}");
    let deposit: u128 = row["capacity"].as_str().unwrap().parse().unwrap();
    assert_eq!(deposit, 100 * PRICE, "{row}");
    let id = row["id"].as_str().unwrap().to_owned();

    let rpc = chain.anvil.endpoint();
    let settlement = chain.deployment.settlement.to_string();
    let withdraw = |device: &Device| {
        let out = device.run_ok(&[
            "--json",
            "withdraw",
            &id,
            "--rpc-url",
            &rpc,
            "--settlement",
            &settlement,
        ]);
        stdout_json(&out)
    };
    let started = withdraw(&device);
    assert_eq!(started["withdrawal"], "started", "{started}");
    assert_eq!(
        started["amount"],
        deposit.to_string(),
        "nothing was claimed yet: all of it"
    );
    let waiting = withdraw(&device);
    assert_eq!(waiting["withdrawal"], "waiting", "{waiting}");

    // The seller claims its three readings during the delay: its claim wins.
    assert_eq!(seller.claim_all().await.unwrap(), 1);
    let _: Value = chain
        .facilitator
        .raw_request("evm_increaseTime".into(), (901u64,))
        .await
        .unwrap();
    let _: Value = chain
        .facilitator
        .raw_request("anvil_mine".into(), (U256::from(1u64),))
        .await
        .unwrap();
    let finished = withdraw(&device);
    assert_eq!(finished["withdrawal"], "finished", "{finished}");
    assert_eq!(
        finished["amount"],
        (deposit - 3 * PRICE).to_string(),
        "{finished}"
    );

    let balance = |owner: Address| {
        let token = token.clone();
        async move { token.balanceOf(owner).call().await.unwrap().to::<u128>() }
    };
    assert_eq!(
        balance(payer).await,
        MINTED - 3 * PRICE,
        "the payer has all but three readings back"
    );
    assert_eq!(
        balance(seller.receiver()).await,
        3 * PRICE,
        "the seller has its three readings"
    );
    let channels = stdout_json(&device.run_ok(&["--json", "channels"]));
    assert_eq!(
        channels[0]["capacity"],
        (3 * PRICE).to_string(),
        "the store knows the deposit left: {channels}"
    );
    let empty = withdraw(&device);
    assert_eq!(empty["withdrawal"], "empty", "{empty}");

    // Bad input changes nothing and says why.
    let unknown = device.run(&[
        "withdraw",
        &format!("0x{}", "ab".repeat(32)),
        "--rpc-url",
        &rpc,
    ]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no EVM channel"),
        "{unknown:?}"
    );
    server.shutdown().await;
}
