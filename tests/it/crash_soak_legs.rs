//! The crash soak (`crash_soak.rs`) on each leg: `m2m serve` and `m2m get` on anvil, then
//! `m2m btc serve` and `m2m btc get` on regtest, with the settlement checked on chain to the unit.
//! Short by default (the test command); `scripts/crash-soak` sets the long counts.

use alloy::primitives::{Address, U256};
use m2m::contracts::bindings::TestToken;
use serde_json::Value;

use crate::cli::{Device, stdout_json};
use crate::crash_soak::{Side, SoakPlan, beside, free_port, soak, total};
use crate::support::{LocalChain, give_eth, send};

const EVM_PRICE: u128 = 1_000;
const MINTED: u128 = 1_000_000_000_000;

fn initialised() -> (Device, Value) {
    let device = Device::new();
    let info = stdout_json(&device.run_ok(&["--json", "init"]));
    (device, info)
}

fn address(info: &Value, key: &str) -> String {
    info[key].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_seller_and_buyer_processes_survive_sigkills_without_losing_a_payment() {
    let plan = SoakPlan::from_env(SoakPlan {
        seller_kills: 12,
        buyer_kills: 12,
        max_delay_ms: 600,
    });
    let chain = LocalChain::start(31337).await;
    let (seller_device, seller_info) = initialised();
    let (buyer_device, buyer_info) = initialised();
    let seller_address: Address = address(&seller_info, "ethereum").parse().unwrap();
    let buyer_address: Address = address(&buyer_info, "ethereum").parse().unwrap();
    give_eth(&chain, seller_address, 10u128.pow(20)).await; // it relays deposits and claims
    let token = TestToken::new(chain.token, &chain.facilitator);
    send(token.mint(buyer_address, U256::from(MINTED)), "mint").await;

    let port = free_port();
    let config = beside(&seller_device, "seller.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            listen = "127.0.0.1:{port}"
            rpc_url = "{rpc}"
            network = "eip155:31337"
            [claim]
            threshold = "200000"
            check_secs = 1
            [[route]]
            path = "/temperature"
            price = "{EVM_PRICE}"
            asset = "{token}"
            "#,
            rpc = chain.anvil.endpoint(),
            token = chain.token,
        ),
    )
    .unwrap();
    let seller_log = beside(&seller_device, "seller.log");
    let buyer_log = beside(&buyer_device, "buyer.log");
    let mut seller = Side::new(
        seller_device,
        vec![
            "--json".into(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        seller_log,
    );
    let mut buyer = Side::new(
        buyer_device,
        [
            "--json",
            "get",
            &format!("http://127.0.0.1:{port}/temperature"),
            "--count",
            "1000000000",
            "--scheme",
            "batch-settlement",
            "--deposit-readings",
            "50",
        ]
        .map(String::from)
        .to_vec(),
        buyer_log,
    );
    // Blocking child-process work: off the runtime's worker threads.
    let (report, seller, buyer) = tokio::task::spawn_blocking(move || {
        // `--json` prints each reading as one pretty-printed object, written whole.
        let report = soak(&mut seller, &mut buyer, EVM_PRICE, plan, |line| {
            line.trim() == r#""scheme": "batch-settlement""#
        });
        (report, seller, buyer)
    })
    .await
    .unwrap();

    // Settled on chain: the seller claimed exactly what its store held, and every unit of the
    // token is with the seller, still with the buyer, or in the buyer's channel deposit.
    let balance = |who| {
        let token = token.clone();
        async move { token.balanceOf(who).call().await.unwrap().to::<u128>() }
    };
    let seller_got = balance(seller_address).await;
    let buyer_left = balance(buyer_address).await;
    let escrow = balance(chain.deployment.settlement).await;
    let seller_rows = seller.channels();
    let (claimed, _) = total(&seller_rows, "payee", "claimed");
    assert_eq!(claimed, report.seller_total, "everything held was claimed");
    assert_eq!(seller_got, report.seller_total, "claimed on chain");
    assert_eq!(seller_got + buyer_left + escrow, MINTED, "conservation");
    let (deposited, _) = total(&buyer.channels(), "payer", "capacity");
    assert!(
        deposited <= escrow + seller_got,
        "the buyer's store counts deposits the chain never saw"
    );
    println!(
        "crash soak (evm): {} SIGKILLs of m2m serve, {} of m2m get, {} acknowledged readings, \
         0 lost, 0 counted twice, {} paid but cut off by a kill; seller {seller_got}, buyer \
         {buyer_left}, escrow {escrow} (= {MINTED}); {:.0} s",
        report.seller_kills,
        report.buyer_kills,
        report.acknowledged,
        report.paid_unseen,
        report.elapsed.as_secs_f64()
    );
}

const BTC_PRICE: u128 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btc_seller_process_survives_sigkills_without_losing_a_payment() {
    let plan = SoakPlan::from_env(SoakPlan {
        seller_kills: 10,
        buyer_kills: 4,
        max_delay_ms: 800,
    });
    let node = m2m::node::tools::start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = node.rpc().clone();
    let (seller_device, _) = initialised();
    let (buyer_device, buyer_info) = initialised();
    rpc.mine_to(1, &address(&buyer_info, "bitcoin"))
        .await
        .unwrap();
    crate::btc_channel::mine(&rpc, 100).await; // the coinbase matures
    // Fundings confirm while the buyer waits for them.
    let miner = crate::btc_channel::start_miner(&rpc, std::time::Duration::from_secs(1));

    let port = free_port();
    let cookie = node.cookie_path().display().to_string();
    let btc = |args: &[&str]| {
        let mut all = vec![
            "--json",
            "btc",
            "--bitcoind",
            node.rpc_url(),
            "--cookie",
            &cookie,
        ];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let listen = format!("127.0.0.1:{port}");
    let route = format!("/temperature={BTC_PRICE}");
    let url = format!("http://{listen}/temperature");
    let seller_log = beside(&seller_device, "seller.log");
    let buyer_log = beside(&buyer_device, "buyer.log");
    let mut seller = Side::new(
        seller_device,
        btc(&["serve", "--listen", &listen, "--route", &route]),
        seller_log,
    );
    let mut buyer = Side::new(
        buyer_device,
        btc(&[
            "get",
            &url,
            "--count",
            "1000000000",
            "--capacity",
            "2000000",
        ]),
        buyer_log,
    );
    let (report, seller, buyer) = tokio::task::spawn_blocking(move || {
        // Each paid reading's body (a SenML pack) is one line of JSON.
        let report = soak(&mut seller, &mut buyer, BTC_PRICE, plan, |line| {
            line.starts_with("[{")
        });
        (report, seller, buyer)
    })
    .await
    .unwrap();
    miner.abort();

    // Every channel the seller was paid on closes on chain with its newest voucher, to the sat:
    // the seller's output is what its store held, the rest (less the close fee) is the buyer's.
    let signed: Vec<Value> = buyer.channels();
    let mut closed_total = 0u128;
    for row in seller.channels() {
        let held: u128 = row["paid"].as_str().unwrap().parse().unwrap();
        if held == 0 {
            continue;
        }
        let id = row["id"].as_str().unwrap();
        let payer_row = signed
            .iter()
            .find(|r| r["id"] == id)
            .expect("the buyer knows it");
        let exposure: u128 = payer_row["exposure"].as_str().unwrap().parse().unwrap();
        assert!(held <= exposure, "{held} held, {exposure} signed");
        let args = btc(&["close", id]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let txid = String::from_utf8(seller.device.run_ok(&args).stdout).unwrap();
        let txid: bitcoin::Txid = txid.trim().parse().unwrap();
        crate::btc_channel::mine(&rpc, 1).await;
        let close = rpc.transaction(&txid).await.unwrap();
        let capacity: u128 = row["capacity"].as_str().unwrap().parse().unwrap();
        let outputs: u128 = close
            .output
            .iter()
            .map(|o| u128::from(o.value.to_sat()))
            .sum();
        assert_eq!(
            u128::from(close.output[0].value.to_sat()),
            held,
            "the seller's output"
        );
        assert!(
            capacity - outputs < 5_000,
            "the rest returns to the buyer, less the close fee: {capacity} → {outputs}"
        );
        closed_total += held;
    }
    assert_eq!(
        closed_total, report.seller_total,
        "every held satoshi closed on chain"
    );
    println!(
        "crash soak (btc): {} SIGKILLs of m2m btc serve, {} of m2m btc get, {} acknowledged \
         readings, 0 lost, 0 counted twice, {} paid but cut off by a kill; {closed_total} sat \
         closed to the seller on chain; {:.0} s",
        report.seller_kills,
        report.buyer_kills,
        report.acknowledged,
        report.paid_unseen,
        report.elapsed.as_secs_f64()
    );
}
