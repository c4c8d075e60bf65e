//! The crash soak (`crash_soak.rs`) on each leg: `m2m serve` and `m2m get` on anvil, then
//! `m2m btc serve` and `m2m btc get` on regtest, with the settlement checked on chain to the unit.
//! Short by default (the test command); `scripts/crash-soak` sets the long counts.

use serde_json::Value;

use crate::crash_soak::{Side, SoakPlan, beside, soak, total};
use crate::process_pairs::{BTC_PRICE, BtcPair, EVM_PRICE, EvmPair, MINTED};
use crate::support::LocalChain;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_seller_and_buyer_processes_survive_sigkills_without_losing_a_payment() {
    let plan = SoakPlan::from_env(SoakPlan {
        seller_kills: 12,
        buyer_kills: 12,
        max_delay_ms: 600,
    });
    let chain = LocalChain::start(31337).await;
    let pair = EvmPair::new(&chain, 200_000).await;
    let (seller_address, buyer_address) = (pair.seller_address, pair.buyer_address);
    let args = pair.buyer_args(1_000_000_000);
    let log = beside(&pair.buyer, "buyer.log");
    let (mut seller, mut buyer) = (pair.seller, Side::new(pair.buyer, args, log));
    // Blocking child-process work: off the runtime's worker threads.
    let (report, seller, buyer) = tokio::task::spawn_blocking(move || {
        let report = soak(
            &mut seller,
            &mut buyer,
            EVM_PRICE,
            plan,
            EvmPair::is_reading,
        );
        (report, seller, buyer)
    })
    .await
    .unwrap();

    // Settled on chain: the seller claimed exactly what its store held, and every unit of the
    // token is with the seller, still with the buyer, or in the buyer's channel deposit.
    let (seller_got, buyer_left, escrow) =
        crate::support::token_split(&chain, seller_address, buyer_address).await;
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
    let pair = BtcPair::new(&node).await;
    // Fundings confirm while the buyer waits for them.
    let miner = crate::btc_channel::start_miner(&rpc, std::time::Duration::from_secs(1));
    let cli = pair.cli.clone();
    let args = pair.buyer_args(1_000_000_000);
    let log = beside(&pair.buyer, "buyer.log");
    let (mut seller, mut buyer) = (pair.seller, Side::new(pair.buyer, args, log));
    let (report, seller, buyer) = tokio::task::spawn_blocking(move || {
        let report = soak(
            &mut seller,
            &mut buyer,
            BTC_PRICE,
            plan,
            BtcPair::is_reading,
        );
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
        let args = cli.args(&["close", id]);
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
