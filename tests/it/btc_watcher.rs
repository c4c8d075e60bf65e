//! The Bitcoin expiry watcher when a close fails: the other channels near expiry are still
//! closed in the same pass, and the failed one is retried soon (backoff from 5 s) rather than
//! at the next full period. The failure is real: bitcoind is told (`prioritisetransaction` with
//! a negative delta) to treat one commitment's fee as below its relay minimum, as a fee spike
//! would, so its broadcast is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::Amount;
use serde_json::json;

use super::btc_channel::{cosigned, mine, opened, policy, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_close_does_not_leave_the_other_channels_to_expire() {
    let (node, payer_device, payee_device) = setup().await;
    let rpc = node.rpc();
    let payer = payer_device.payer();
    let payee = Arc::new(payee_device.payee(rpc, policy(10)));
    let price = Amount::from_sat(1_000);
    let mut channels = Vec::new();
    for _ in 0..3 {
        let channel = opened(rpc, &payer, &payee, 200_000, 40).await;
        payee.register(*channel.terms()).await.unwrap();
        let mut latest = None;
        for _ in 0..3 {
            let voucher = payer.pay(&channel.id(), price).await.unwrap();
            payee.accept(&channel.id(), &voucher, price).await.unwrap();
            latest = Some(voucher);
        }
        channels.push((channel, latest.unwrap()));
    }

    // The first channel's close will be refused: its fee counts as 1 BTC lower to this node.
    let (stuck, stuck_voucher) = &channels[0];
    let stuck_close = cosigned(&payee_device, stuck, stuck_voucher).compute_txid();
    let prioritise = |delta: i64| {
        rpc.call(
            "prioritisetransaction",
            json!([stuck_close.to_string(), 0, delta]),
        )
    };
    prioritise(-100_000_000).await.unwrap();

    // All three come within the close margin of their expiry.
    let last_expiry = channels
        .iter()
        .map(|(c, _)| c.terms().parties.expiry_height)
        .max()
        .unwrap();
    let first_expiry = channels
        .iter()
        .map(|(c, _)| c.terms().parties.expiry_height)
        .min()
        .unwrap();
    let margin = m2m::node::btc::channels::PayeePolicy::default().close_margin_blocks;
    let height = rpc.block_count().await.unwrap();
    mine(rpc, last_expiry - margin - height).await;
    assert!(
        rpc.block_count().await.unwrap() < first_expiry,
        "every channel still unexpired"
    );

    let report = payee.watch().await.unwrap();
    assert_eq!(
        report.closed.len(),
        2,
        "the other two are closed: {report:?}"
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, stuck.id());
    eprintln!("refused close: {}", report.failed[0].1);

    // The running watcher's first pass (at start) fails on it too; then the fee pressure
    // passes, and it retries within seconds, not after its hour-long period.
    let watcher = tokio::spawn(payee.clone().run_watcher(Duration::from_secs(3_600)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(payee.funding_unspent(&stuck.id()).await.unwrap());
    prioritise(100_000_000).await.unwrap();
    let started = Instant::now();
    let retried = loop {
        if !payee.funding_unspent(&stuck.id()).await.unwrap() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the failed close was not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watcher.abort();
    mine(rpc, 1).await;
    for (channel, voucher) in &channels {
        assert!(!payee.funding_unspent(&channel.id()).await.unwrap());
        let close = cosigned(&payee_device, channel, voucher);
        let confirmed = rpc.transaction(&close.compute_txid()).await.unwrap();
        assert_eq!(
            confirmed.output[0].value,
            Amount::from_sat(3_000),
            "each close pays the newest voucher"
        );
    }
    eprintln!("btc watcher: 2 closed past a failed one, the failed one retried after {retried:?}");
}
