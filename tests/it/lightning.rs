//! Lightning between three agents on a real regtest: buyer → router → seller, each an embedded
//! ldk-node seeded from its device seed, channels opened and confirmed by mining, a routed
//! payment, invoices paid both ways, and a keysend stream across a restart of every node with
//! no payment lost.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bitcoin::Amount;
use bitcoin::hashes::{Hash, sha256};
use m2m::node::btc::BitcoinRpc;
use m2m::node::ln::{LnConfig, LnNode};
use m2m::node::tools::start_bitcoind;
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength};

use super::btc_channel::mine;

const WAIT: Duration = Duration::from_secs(60);

/// One agent: its keys, storage and port survive restarts of its node.
pub struct Agent {
    keys: DeviceKeys,
    dir: tempfile::TempDir,
    pub listen: SocketAddr,
    alias: &'static str,
}

impl Agent {
    pub fn new(alias: &'static str) -> Self {
        let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            keys: DeviceKeys::derive(&seed, Network::Regtest).unwrap(),
            dir: tempfile::tempdir().unwrap(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            alias,
        }
    }

    pub fn keys(&self) -> &DeviceKeys {
        &self.keys
    }

    /// Where its node keeps its state (what a backup copies).
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("lightning")
    }

    pub async fn start(&self, rpc: &BitcoinRpc) -> LnNode {
        let config = LnConfig {
            storage_dir: self.storage(),
            listen: self.listen,
            network: Network::Regtest,
            alias: self.alias.into(),
            trusted_peers: Vec::new(),
            forward_to_private_channels: false,
            durable_receiver: false,
        };
        LnNode::start(&self.keys, rpc, config).await.unwrap()
    }
}

/// Funds `payer`'s on-chain wallet, opens a channel of `capacity` from it to `payee` and waits
/// until both ends can use it.
pub async fn channel_between(
    rpc: &BitcoinRpc,
    payer: &LnNode,
    payee: &LnNode,
    capacity: Amount,
    announced: bool,
) {
    let address = payer.new_onchain_address().unwrap().to_string();
    rpc.mine_to(1, &address).await.unwrap();
    mine(rpc, 100).await;
    payer.sync().await.unwrap();
    let id = payer
        .open_channel(
            payee.node_id(),
            payee.listen_address(),
            capacity,
            0,
            announced,
        )
        .unwrap();
    payer.wait_funding(id, WAIT).await.unwrap();
    mine(rpc, 7).await;
    sync_all(&[payer, payee]).await;
    for node in [payer, payee] {
        node.wait_channels("the channel usable", WAIT, |c| {
            c.iter().any(|c| c.is_usable)
        })
        .await
        .unwrap();
    }
}

async fn sync_all(nodes: &[&LnNode]) {
    for node in nodes {
        node.sync().await.unwrap();
    }
}

/// Waits until `node` knows both channels and the router's update for each (the direction a
/// routed payment leaves the router in, whichever way it goes).
async fn wait_for_graph(node: &LnNode, router: &bitcoin::secp256k1::PublicKey) {
    let graph = node.inner().network_graph();
    let router = router.serialize();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let channels = graph.list_channels();
        let seen: Vec<bool> = channels
            .iter()
            .map(|scid| {
                graph.channel(*scid).is_some_and(|c| {
                    if c.node_one.as_slice() == router {
                        c.one_to_two.is_some()
                    } else {
                        c.two_to_one.is_some()
                    }
                })
            })
            .collect();
        if seen.len() == 2 && seen.iter().all(|s| *s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gossip did not arrive at {}: {seen:?}",
            node.node_id()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every channel is usable again after a restart, redialling neighbours whose
/// channel is not (rather than waiting for ldk-node's periodic reconnection); a dial may race
/// the neighbour's own, so its failure is only retried.
async fn reconnected(nodes: &[LnNode], agents: &[Agent; 3]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let usable = |node: &LnNode| node.channels().iter().filter(|c| c.is_usable).count();
        let counts = [usable(&nodes[0]), usable(&nodes[1]), usable(&nodes[2])];
        if counts == [1, 2, 1] {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "channels usable after a restart: {counts:?}"
        );
        for (a, b) in [(0, 1), (1, 2)] {
            let down = |n: &LnNode, peer| {
                !n.channels()
                    .iter()
                    .any(|c| c.counterparty_node_id == peer && c.is_usable)
            };
            if down(&nodes[a], nodes[b].node_id()) {
                let _ = nodes[a].reconnect(nodes[b].node_id(), agents[b].listen);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Pays `invoice`, retrying for a while when no route exists yet: a channel's direction updates
/// may trail its announcement in gossip.
pub async fn pay_once_routable(
    node: &LnNode,
    invoice: &str,
) -> Result<m2m::node::ln::PaymentOutcome, m2m::node::ln::LnError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.pay(invoice, WAIT).await {
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            outcome => return outcome,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_payments_invoices_both_ways_and_restarts_lose_nothing() {
    let bitcoind = start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = bitcoind.rpc().clone();
    let agents = [
        Agent::new("buyer"),
        Agent::new("router"),
        Agent::new("seller"),
    ];
    let mut nodes = Vec::new();
    for agent in &agents {
        nodes.push(agent.start(&rpc).await);
    }

    // Fund the buyer's and router's on-chain wallets, then open buyer → router → seller.
    for node in &nodes[..2] {
        let address = node.new_onchain_address().unwrap().to_string();
        rpc.mine_to(1, &address).await.unwrap();
    }
    mine(&rpc, 100).await;
    sync_all(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert!(nodes[0].spendable_onchain() > Amount::from_int_btc(1));
    let capacity = Amount::from_sat(2_000_000);
    nodes[0]
        .open_channel(nodes[1].node_id(), agents[1].listen, capacity, 0, true)
        .unwrap();
    nodes[1]
        .open_channel(nodes[2].node_id(), agents[2].listen, capacity, 0, true)
        .unwrap();
    // Both fundings in the mempool, then confirmed deep enough to be announced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    mine(&rpc, 7).await;
    sync_all(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    for (node, count) in [(&nodes[0], 1), (&nodes[1], 2), (&nodes[2], 1)] {
        node.wait_channels("channels usable", WAIT, |c| {
            c.iter().filter(|c| c.is_usable).count() == count
        })
        .await
        .unwrap();
    }
    // Gossip: once the router knows both channels with its own updates, the buyer and the seller
    // reconnect to it and sync the graph from it (a channel's updates sent before its
    // announcement was known are dropped, so the first pass may miss some).
    let router = nodes[1].node_id();
    wait_for_graph(&nodes[1], &router).await;
    for edge in [0, 2] {
        // A dial may race the redial watchdog's own: retried, and the graph check decides.
        for _ in 0..10 {
            if nodes[edge].reconnect(router, agents[1].listen).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        wait_for_graph(&nodes[edge], &router).await;
    }

    // A routed payment: the seller's invoice paid by the buyer through the router.
    let invoice = nodes[2].invoice(50_000_000, "reading", 600).unwrap();
    let paid = match pay_once_routable(&nodes[0], &invoice.to_string()).await {
        Ok(paid) => paid,
        Err(error) => {
            let log = std::fs::read_to_string(agents[0].dir.path().join("lightning/ldk_node.log"))
                .or_else(|_| {
                    std::fs::read_to_string(
                        agents[0].dir.path().join("lightning/logs/ldk_node.log"),
                    )
                })
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{error}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    };
    assert_eq!(
        sha256::Hash::hash(&paid.preimage).to_byte_array(),
        *invoice.payment_hash().as_byte_array(),
        "the preimage proves the payment"
    );
    assert!(paid.fee_msat > 0, "the router charged a forwarding fee");
    // And back: the buyer's invoice paid by the seller.
    let invoice = nodes[0].invoice(10_000_000, "refund", 600).unwrap();
    pay_once_routable(&nodes[2], &invoice.to_string())
        .await
        .unwrap();

    // A keysend stream, with each node restarted in turn; every payment ends, none is lost.
    let mut sent_msat = 50_000_000;
    for round in 0..3 {
        for _ in 0..5 {
            let outcome = nodes[0].keysend(nodes[2].node_id(), 1_000_000, WAIT).await;
            outcome.unwrap();
            sent_msat += 1_000_000;
        }
        let which = 2 - round; // seller, then router, then buyer
        let stopped = nodes.remove(which);
        let node_id = stopped.node_id();
        stopped.stop().await.unwrap();
        nodes.insert(which, agents[which].start(&rpc).await);
        // The same device seed gives the same node: no separate Lightning seed exists.
        assert_eq!(nodes[which].node_id(), node_id);
        reconnected(&nodes, &agents).await;
    }
    for _ in 0..5 {
        nodes[0]
            .keysend(nodes[2].node_id(), 1_000_000, WAIT)
            .await
            .unwrap();
        sent_msat += 1_000_000;
    }
    assert_eq!(
        nodes[2].received_msat(),
        sent_msat,
        "the seller has every payment"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}
