//! Restoring an old backup of a data directory, for the payer and for the payee on the EVM and
//! Bitcoin legs, with the real processes: the directory is copied mid-stream, the stream goes
//! on, the copy is put back and the process restarted, and the stream goes on again.
//!
//! What must hold: nothing stale is claimed or closed to the other side's harm; the restored
//! side resynchronises without anyone paying twice; the money at risk is exactly what was paid
//! after the copy. A restored payer forgot vouchers it signed: the seller's proof (the payer's
//! own signature) brings them back, so it neither pays again nor stalls. A restored payee forgot
//! vouchers it was paid: the payer's later vouchers continue from the payee's older total, so the
//! payee loses exactly the payments made after the copy — and the payer pays nothing twice.

use std::path::Path;
use std::time::Duration;

use m2m::contracts::bindings::{BatchSettlement, TestToken};

use crate::cli::Device;
use crate::crash_soak::{channels_of, total};
use crate::process_pairs::{BTC_PRICE, BtcPair, EVM_PRICE, EvmPair, MINTED};
use crate::support::LocalChain;

/// Readings per stretch of the stream.
const STRETCH: u64 = 30;

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies a device's data directory aside (its backup).
fn back_up(device: &Device) -> tempfile::TempDir {
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&device.data_dir, &backup.path().join("copy"));
    backup
}

/// Puts a backup in place of the device's data directory.
fn restore(device: &Device, backup: &tempfile::TempDir) {
    std::fs::remove_dir_all(&device.data_dir).unwrap();
    copy_dir(&backup.path().join("copy"), &device.data_dir);
}

/// Runs the buyer for one stretch; returns the readings it printed (all of them paid).
fn stretch(buyer: &Device, args: &[String], is_reading: fn(&str) -> bool) -> u64 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = buyer.run_ok(&args);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| is_reading(l))
        .count() as u64
}

/// Child-process work, off the runtime's worker threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

/// The EVM pair's settlement once its seller stopped cleanly (it claims on the way out):
/// (what the seller got, what the buyer still has, what is left in escrow).
async fn evm_settled(chain: &LocalChain, pair: &EvmPair) -> (u128, u128, u128) {
    let token = TestToken::new(chain.token, &chain.facilitator);
    let balance = |who| {
        let token = token.clone();
        async move { token.balanceOf(who).call().await.unwrap().to::<u128>() }
    };
    let got = balance(pair.seller_address).await;
    let left = balance(pair.buyer_address).await;
    let escrow = balance(chain.deployment.settlement).await;
    assert_eq!(got + left + escrow, MINTED, "conservation");
    (got, left, escrow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evm_payer_restored_from_an_old_backup_resynchronises_without_paying_twice() {
    let chain = LocalChain::start(31337).await;
    let pair = EvmPair::new(&chain, 1_000_000_000).await;
    let pair = blocking(move || {
        let mut pair = pair;
        let args = pair.buyer_args(STRETCH);
        pair.seller.start_ready();
        assert_eq!(stretch(&pair.buyer, &args, EvmPair::is_reading), STRETCH);
        let backup = back_up(&pair.buyer);
        assert_eq!(stretch(&pair.buyer, &args, EvmPair::is_reading), STRETCH);
        restore(&pair.buyer, &backup);
        let (forgotten, _) = total(&channels_of(&pair.buyer), "payer", "exposure");
        assert_eq!(
            forgotten,
            STRETCH as u128 * EVM_PRICE,
            "the backup's exposure"
        );
        // The restored payer pays on: the seller's corrective 402 proves (with the payer's own
        // signature) what it holds, and the payer continues from there.
        assert_eq!(stretch(&pair.buyer, &args, EvmPair::is_reading), STRETCH);
        let (exposure, _) = total(&channels_of(&pair.buyer), "payer", "exposure");
        assert_eq!(
            exposure,
            3 * STRETCH as u128 * EVM_PRICE,
            "every reading paid once"
        );
        pair.seller.stop(Duration::from_secs(60));
        let (held, _) = total(&pair.seller.channels(), "payee", "paid");
        assert_eq!(held, exposure);
        eprintln!(
            "restore (evm payer): the backup had forgotten {} units signed after the copy; \
             adopted from the seller's proof at the first payment; 0 paid twice",
            exposure - forgotten - STRETCH as u128 * EVM_PRICE
        );
        pair
    })
    .await;
    let (got, _, _) = evm_settled(&chain, &pair).await;
    assert_eq!(
        got,
        3 * STRETCH as u128 * EVM_PRICE,
        "claimed: every reading, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evm_payee_restored_from_an_old_backup_loses_only_what_came_after_it() {
    let chain = LocalChain::start(31337).await;
    // It claims once 40 readings are unclaimed: a claim lands between the copy and the restore.
    let pair = EvmPair::new(&chain, 40 * EVM_PRICE).await;
    let settlement = BatchSettlement::new(chain.deployment.settlement, chain.facilitator.clone());
    let (pair, backup) = blocking(move || {
        let mut pair = pair;
        let args = pair.buyer_args(STRETCH);
        pair.seller.start_ready();
        assert_eq!(stretch(&pair.buyer, &args, EvmPair::is_reading), STRETCH);
        let backup = back_up(&pair.seller.device); // while it runs, between readings
        assert_eq!(stretch(&pair.buyer, &args, EvmPair::is_reading), STRETCH);
        (pair, backup)
    })
    .await;
    let id: alloy::primitives::B256 = payer_channel_id(&pair.buyer).parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while settlement.channels(id).call().await.unwrap().totalClaimed == 0 {
        assert!(std::time::Instant::now() < deadline, "no claim landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let claimed_before_restore = settlement.channels(id).call().await.unwrap().totalClaimed;
    let pair = blocking(move || {
        let mut pair = pair;
        let args = pair.buyer_args(STRETCH);
        pair.seller.kill();
        restore(&pair.seller.device, &backup);
        let (stale, _) = total(&pair.seller.channels(), "payee", "paid");
        assert_eq!(stale, STRETCH as u128 * EVM_PRICE, "the backup's total");
        pair.seller.start_ready();
        assert_eq!(stretch(&pair.buyer, &args, EvmPair::is_reading), STRETCH);
        pair.seller.stop(Duration::from_secs(60));
        pair
    })
    .await;
    let (held, _) = total(&pair.seller.channels(), "payee", "paid");
    let (exposure, _) = total(&channels_of(&pair.buyer), "payer", "exposure");
    let (got, _, _) = evm_settled(&chain, &pair).await;
    let readings = 3 * STRETCH as u128;
    assert_eq!(
        got,
        held.max(claimed_before_restore),
        "claimed what it held"
    );
    assert!(got <= exposure, "never more than the payer signed");
    let lost = readings * EVM_PRICE - got;
    assert_eq!(
        lost,
        STRETCH as u128 * EVM_PRICE,
        "the restored payee loses exactly the payments made after the copy"
    );
    eprintln!(
        "restore (evm payee): {readings} readings served, {got} units claimed; {lost} lost = \
         the {STRETCH} readings paid after the copy; the payer signed {exposure}, paid nothing twice"
    );
}

/// The id of a device's (only) payer channel.
fn payer_channel_id(device: &Device) -> String {
    channels_of(device)
        .iter()
        .find(|r| r["role"] == "payer")
        .and_then(|r| r["id"].as_str())
        .expect("a payer channel")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_btc_payer_restored_from_an_old_backup_resynchronises_without_paying_twice() {
    let node = m2m::node::tools::start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let pair = BtcPair::new(&node).await;
    let miner = crate::btc_channel::start_miner(node.rpc(), Duration::from_secs(1));
    let pair = blocking(move || {
        let mut pair = pair;
        let args = pair.buyer_args(STRETCH);
        pair.seller.start_ready();
        assert_eq!(stretch(&pair.buyer, &args, BtcPair::is_reading), STRETCH);
        let backup = back_up(&pair.buyer);
        assert_eq!(stretch(&pair.buyer, &args, BtcPair::is_reading), STRETCH);
        restore(&pair.buyer, &backup);
        let (forgotten, _) = total(&channels_of(&pair.buyer), "payer", "exposure");
        assert_eq!(
            forgotten,
            STRETCH as u128 * BTC_PRICE,
            "the backup's exposure"
        );
        assert_eq!(stretch(&pair.buyer, &args, BtcPair::is_reading), STRETCH);
        let (exposure, channels) = total(&channels_of(&pair.buyer), "payer", "exposure");
        assert_eq!(channels, 1, "no second channel opened");
        assert_eq!(
            exposure,
            3 * STRETCH as u128 * BTC_PRICE,
            "every reading paid once"
        );
        pair.seller.stop(Duration::from_secs(60));
        let (held, _) = total(&pair.seller.channels(), "payee", "paid");
        assert_eq!(held, exposure);
        eprintln!(
            "restore (btc payer): the backup had forgotten {} sat signed after the copy; \
             adopted from the seller's proof at the first payment; 0 paid twice",
            exposure - forgotten - STRETCH as u128 * BTC_PRICE
        );
        pair
    })
    .await;
    miner.abort();
    drop(pair);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_btc_payee_restored_from_an_old_backup_loses_only_what_came_after_it() {
    let node = m2m::node::tools::start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = node.rpc().clone();
    let pair = BtcPair::new(&node).await;
    let miner = crate::btc_channel::start_miner(&rpc, Duration::from_secs(1));
    let pair = blocking(move || {
        let mut pair = pair;
        let args = pair.buyer_args(STRETCH);
        pair.seller.start_ready();
        assert_eq!(stretch(&pair.buyer, &args, BtcPair::is_reading), STRETCH);
        let backup = back_up(&pair.seller.device);
        assert_eq!(stretch(&pair.buyer, &args, BtcPair::is_reading), STRETCH);
        pair.seller.kill();
        restore(&pair.seller.device, &backup);
        pair.seller.start_ready();
        assert_eq!(stretch(&pair.buyer, &args, BtcPair::is_reading), STRETCH);
        pair.seller.stop(Duration::from_secs(60));
        pair
    })
    .await;
    miner.abort();
    let (held, _) = total(&pair.seller.channels(), "payee", "paid");
    let (exposure, _) = total(&channels_of(&pair.buyer), "payer", "exposure");
    let readings = 3 * STRETCH as u128;
    assert!(held <= exposure, "never more than the payer signed");
    let lost = readings * BTC_PRICE - held;
    assert_eq!(
        lost,
        STRETCH as u128 * BTC_PRICE,
        "the restored payee loses exactly the payments made after the copy"
    );
    // What it closes with is its newest voucher, to the satoshi.
    let row = pair.seller.channels().into_iter().next().unwrap();
    let args = pair.cli.args(&["close", row["id"].as_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let txid = String::from_utf8(pair.seller.device.run_ok(&args).stdout).unwrap();
    crate::btc_channel::mine(&rpc, 1).await;
    let close = rpc
        .transaction(&txid.trim().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(u128::from(close.output[0].value.to_sat()), held);
    eprintln!(
        "restore (btc payee): {readings} readings served, {held} sat closed to it; {lost} lost = \
         the {STRETCH} readings paid after the copy; the payer signed {exposure}, paid nothing twice"
    );
}
