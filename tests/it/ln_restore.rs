//! Restoring an old backup of a Lightning node's state, for the payer and for the payee of a
//! channel, on a real regtest: the node is stopped and its storage copied after ten payments,
//! ten more are made, the copy is put back.
//!
//! A restored node must not meet its peer while the channel is open: the peer's
//! `channel_reestablish` proves the copy is stale, and LDK stops the node there (a panic, by
//! design) rather than risk broadcasting the revoked commitment, which would hand the whole
//! channel to the peer. The recovery LDK prescribes is what this test does: the restored node
//! stays away until its peer has force-closed on its newest commitment; then it starts, learns
//! the close from the chain and sweeps its own output. Both sides end with their newest balance
//! (less fees): the payments after the copy stay paid, once, and nothing goes to a penalty.

use std::time::Duration;

use m2m::node::ln::LnNode;
use m2m::node::tools::start_bitcoind;

use super::btc_channel::mine;
use super::lightning::{Agent, channel_between};
use super::restore::copy_dir;

const WAIT: Duration = Duration::from_secs(60);
const CAPACITY_SAT: u64 = 1_000_000;
const PAYMENT_SAT: u64 = 10_000;
const STRETCH: u64 = 10;

fn total_onchain(node: &LnNode) -> u64 {
    node.inner().list_balances().total_onchain_balance_sats
}

async fn stretch(payer: &LnNode, payee: &LnNode) {
    for _ in 0..STRETCH {
        payer
            .keysend(payee.node_id(), PAYMENT_SAT * 1_000, WAIT)
            .await
            .unwrap();
    }
}

/// Waits until `node` has a usable channel again, redialling `peer`.
async fn usable_again(node: &LnNode, peer: &Agent, peer_id: bitcoin::secp256k1::PublicKey) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !node.channels().iter().any(|c| c.is_usable) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel is not usable again"
        );
        let _ = node.reconnect(peer_id, peer.listen);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn restored_side(restore_payer: bool) {
    let bitcoind = start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = bitcoind.rpc().clone();
    let agents = [Agent::new("payer"), Agent::new("payee")];
    let mut nodes = vec![agents[0].start(&rpc).await, agents[1].start(&rpc).await];
    channel_between(
        &rpc,
        &nodes[0],
        &nodes[1],
        bitcoin::Amount::from_sat(CAPACITY_SAT),
        false,
    )
    .await;
    let funding = nodes[0].channels()[0].funding_txo.unwrap();
    let before = [total_onchain(&nodes[0]), total_onchain(&nodes[1])];
    stretch(&nodes[0], &nodes[1]).await;

    // The backup: the node stopped, its storage copied, the node started again.
    let (restored, peer) = if restore_payer { (0, 1) } else { (1, 0) };
    let backup = tempfile::tempdir().unwrap();
    nodes[restored].stop().await.unwrap();
    copy_dir(&agents[restored].storage(), &backup.path().join("copy"));
    nodes[restored] = agents[restored].start(&rpc).await;
    let peer_id = nodes[peer].node_id();
    usable_again(&nodes[restored], &agents[peer], peer_id).await;
    stretch(&nodes[0], &nodes[1]).await;

    // The old copy put back, with both nodes down; the peer, started alone, force-closes on
    // its newest commitment (an operator asking the hub to close), which confirms.
    nodes[restored].stop().await.unwrap();
    nodes[peer].stop().await.unwrap();
    std::fs::remove_dir_all(agents[restored].storage()).unwrap();
    copy_dir(&backup.path().join("copy"), &agents[restored].storage());
    nodes[peer] = agents[peer].start(&rpc).await;
    let channel = nodes[peer].channels()[0].clone();
    nodes[peer]
        .inner()
        .force_close_channel(
            &channel.user_channel_id,
            channel.counterparty_node_id,
            Some("the peer restored an old backup".into()),
        )
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while rpc.tx_out(&funding).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the peer's close was not broadcast"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mine(&rpc, 6).await;
    nodes[restored] = agents[restored].start(&rpc).await;
    // The channel closes on chain; then both sides' outputs are swept to their wallets (the
    // broadcaster's own output waits out its delay).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let paid = STRETCH * 2 * PAYMENT_SAT;
    let expected = [CAPACITY_SAT - paid, paid];
    loop {
        mine(&rpc, 20).await;
        for node in &nodes {
            node.sync().await.unwrap();
        }
        let recovered = [
            total_onchain(&nodes[0]).saturating_sub(before[0]),
            total_onchain(&nodes[1]).saturating_sub(before[1]),
        ];
        // Fees (the commitment's, the anchors', the sweeps') are at most a few thousand sat.
        let done = recovered
            .iter()
            .zip(expected)
            .all(|(got, want)| *got > want - 10_000);
        if done {
            for (got, want) in recovered.iter().zip(expected) {
                assert!(*got <= want, "more than the newest balance: {got} > {want}");
            }
            eprintln!(
                "ln restore ({} restored): closed on the peer's newest commitment; payer recovered \
                 {} of {} sat, payee {} of {} sat (the rest is fees); nothing paid twice, \
                 nothing lost to a penalty",
                if restore_payer { "payer" } else { "payee" },
                recovered[0],
                expected[0],
                recovered[1],
                expected[1]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recovered {recovered:?} of {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lightning_payer_restored_from_an_old_backup_closes_on_the_newest_state() {
    restored_side(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lightning_payee_restored_from_an_old_backup_closes_on_the_newest_state() {
    restored_side(false).await;
}
