//! Lightning through an embedded ldk-node (feature `lightning`).
//!
//! The node's entropy is derived from the device seed ([`DeviceKeys::lightning_entropy`], a
//! dedicated hardened path), so the one seed backup covers it and no seed file is written; its
//! chain source is the same bitcoind the rest of the agent uses (RPC); its state lives in
//! `<data dir>/lightning` (ldk-node's SQLite store, written before LDK acknowledges anything).
//!
//! A watchdog redials disconnected channel peers every few seconds. Payments wait for their
//! outcome through ldk-node's events: one task drains the event queue
//! (marking each handled) and wakes every waiter, which then reads the payment's status from
//! the node's payment store — so any number of payments can be in flight at once.

mod events;
pub mod hold;
pub mod l402;
pub mod ops;
pub mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Address, Amount, Network};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::payment::{PaymentDirection, PaymentStatus};
use ldk_node::{ChannelDetails, Node, UserChannelId};
use m2m_wallet::DeviceKeys;
use tokio::sync::Notify;

use crate::btc::{BitcoinRpc, RpcError};
use events::{FailureReasons, pump_events, redial_peers};

/// The gossip view of the network (channels and their direction updates).
pub use ldk_node::graph::NetworkGraph;

/// A Lightning operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LnError {
    /// The node could not be built (storage, chain source, entropy).
    #[error("building the lightning node: {0}")]
    Build(String),
    /// ldk-node refused an operation.
    #[error("lightning: {0}")]
    Node(#[from] ldk_node::NodeError),
    /// The seed could not be turned into the node's entropy.
    #[error(transparent)]
    Seed(#[from] m2m_wallet::SeedError),
    /// bitcoind's credentials could not be read.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A payment failed.
    #[error("payment failed: {0}")]
    PaymentFailed(String),
    /// Waiting took too long.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// Bad input (an invoice, a node id, an address).
    #[error("{0}")]
    Input(String),
}

/// Where and how a node runs.
#[derive(Debug, Clone)]
pub struct LnConfig {
    /// Its storage directory (`<data dir>/lightning`).
    pub storage_dir: PathBuf,
    /// The peer-to-peer listening address.
    pub listen: SocketAddr,
    /// Bitcoin network.
    pub network: Network,
    /// The node's public alias (announced channels need one).
    pub alias: String,
    /// Peers whose channels to this node need no on-chain reserve here (a device's hub or LSP).
    /// Without one, an anchor channel from a peer is refused unless the node holds 25,000 sat
    /// on chain to bump its closing fees, and the peer falls back to a channel without anchors.
    pub trusted_peers: Vec<PublicKey>,
    /// A hub or LSP: forward payments into peers' private channels, so devices need no announced
    /// channel and payers reach them through the route hints in their invoices. ldk-node offers
    /// this only through its async-payments server role (which also holds HTLCs that peers ask
    /// it to hold for them while offline).
    pub forward_to_private_channels: bool,
    /// Received payments carrying custom records (keysend streams) are held, not acknowledged,
    /// until a durable receiver ([`LnNode::receive_durably`]) has recorded them: a gateway sets
    /// this so no credit is lost between a payment and its record, across crashes included.
    pub durable_receiver: bool,
}

/// Records a received payment durably; `true` once it is recorded (or is not the receiver's),
/// `false` to be asked again (the event stays unacknowledged meanwhile).
pub type ReceivedHook = Arc<
    dyn Fn(Received) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// A finished outgoing payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentOutcome {
    /// The preimage: proof of payment (what L402 presents).
    pub preimage: [u8; 32],
    /// Routing fees paid.
    pub fee_msat: u64,
}

/// An inbound payment as it was claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its payment hash.
    pub payment_hash: [u8; 32],
    /// Amount, msat.
    pub amount_msat: u64,
    /// Custom TLV records from the onion, (type, value).
    pub records: Vec<(u64, Vec<u8>)>,
}

/// How many received payments a slow subscriber may fall behind by before it misses some.
const RECEIVED_BACKLOG: usize = 4096;

/// The device's Lightning node.
pub struct LnNode {
    node: Arc<Node>,
    events: Arc<Notify>,
    received: tokio::sync::broadcast::Sender<Received>,
    failures: Arc<FailureReasons>,
    /// The durable receiver, once one is set.
    hook: Arc<std::sync::OnceLock<ReceivedHook>>,
    /// Who decides held payments (hold invoices).
    claimer: hold::ClaimerSlot,
    rpc: BitcoinRpc,
    listen: SocketAddr,
    pump: tokio::task::JoinHandle<()>,
    redial: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LnNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LnNode")
            .field("node_id", &self.node.node_id())
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Drop for LnNode {
    /// A node dropped without [`LnNode::stop`] is stopped here, before its storage may go away.
    /// Stopping waits for ldk-node's tasks, so on a multi-thread runtime the worker is handed
    /// over to the runtime meanwhile (`block_in_place`); a current-thread runtime cannot wait
    /// for them, and the node is stopped on a thread of its own.
    fn drop(&mut self) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        self.pump.abort();
        self.redial.abort();
        if !self.node.status().is_running {
            return;
        }
        let node = self.node.clone();
        let stop = move || {
            let _ = node.stop();
        };
        match Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(stop)
            }
            Ok(_) => drop(std::thread::spawn(stop)),
            Err(_) => stop(),
        }
    }
}

impl LnNode {
    /// Builds and starts the node of `keys` against the bitcoind behind `rpc`.
    pub async fn start(
        keys: &DeviceKeys,
        rpc: &BitcoinRpc,
        config: LnConfig,
    ) -> Result<Self, LnError> {
        let entropy = keys.lightning_entropy()?;
        let (user, password) = rpc.credentials()?;
        let (host, port) = rpc.host_port().ok_or_else(|| {
            LnError::Input(format!("bitcoind URL {} has no host:port", rpc.url()))
        })?;
        let mut node_config = ldk_node::config::Config::default();
        if let Some(anchors) = node_config.anchor_channels_config.as_mut() {
            anchors.trusted_peers_no_reserve = config.trusted_peers.clone();
        }
        let mut builder = ldk_node::Builder::from_config(node_config);
        // ldk-node writes its own log (`<storage>/ldk_node.log`); `M2M_LN_LOG` sets its level.
        if let Some(level) = std::env::var("M2M_LN_LOG").ok().and_then(|l| log_level(&l)) {
            builder.set_filesystem_logger(None, Some(level));
        }
        builder
            .set_network(config.network)
            .set_storage_dir_path(config.storage_dir.display().to_string())
            .set_entropy_seed_bytes(*entropy)
            .set_chain_source_bitcoind_rpc(host, port, user, password)
            .set_gossip_source_p2p()
            .set_listening_addresses(vec![SocketAddress::from(config.listen)])
            .map_err(|e| LnError::Build(e.to_string()))?
            .set_node_alias(config.alias.clone())
            .map_err(|e| LnError::Build(e.to_string()))?;
        if config.forward_to_private_channels {
            builder
                .set_async_payments_role(Some(ldk_node::config::AsyncPaymentsRole::Server))
                .map_err(|e| LnError::Build(e.to_string()))?;
        }
        // Building opens the store and starting connects to bitcoind: blocking work.
        let node = tokio::task::spawn_blocking(move || {
            let node = builder.build().map_err(|e| LnError::Build(e.to_string()))?;
            node.start()?;
            Ok::<_, LnError>(Arc::new(node))
        })
        .await
        .map_err(|e| LnError::Build(e.to_string()))??;
        let events = Arc::new(Notify::new());
        let (received, _) = tokio::sync::broadcast::channel(RECEIVED_BACKLOG);
        let failures = Arc::new(FailureReasons::default());
        let hook = Arc::new(std::sync::OnceLock::new());
        let claimer = hold::ClaimerSlot::default();
        let pump = tokio::spawn(pump_events(
            node.clone(),
            events::Waiters {
                events: events.clone(),
                received: received.clone(),
                failures: failures.clone(),
                hook: hook.clone(),
                hold: config.durable_receiver,
                claimer: claimer.clone(),
            },
        ));
        let redial = tokio::spawn(redial_peers(node.clone()));
        Ok(Self {
            node,
            events,
            received,
            failures,
            hook,
            claimer,
            rpc: rpc.clone(),
            listen: config.listen,
            pump,
            redial,
        })
    }

    /// Sets the durable receiver of payments with custom records (see
    /// [`LnConfig::durable_receiver`]); a second one is refused.
    pub fn receive_durably(&self, hook: ReceivedHook) -> Result<(), LnError> {
        self.hook
            .set(hook)
            .map_err(|_| LnError::Input("a durable receiver is already set".into()))
    }

    /// Stops the node (its state is already on disk). Calls after the first do nothing.
    pub async fn stop(&self) -> Result<(), LnError> {
        self.pump.abort();
        self.redial.abort();
        let node = self.node.clone();
        match tokio::task::spawn_blocking(move || node.stop())
            .await
            .map_err(|e| LnError::Build(e.to_string()))?
        {
            Ok(()) | Err(ldk_node::NodeError::NotRunning) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The node id (its public key).
    pub fn node_id(&self) -> PublicKey {
        self.node.node_id()
    }

    /// Where peers reach it.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen
    }

    /// The embedded ldk-node, for what this wrapper does not cover.
    pub fn inner(&self) -> &Node {
        &self.node
    }

    /// A fresh address of the node's own on-chain wallet (channel funding comes from it).
    pub fn new_onchain_address(&self) -> Result<Address, LnError> {
        Ok(self.node.onchain_payment().new_address()?)
    }

    /// Syncs the node's wallets with the chain now (they also sync in the background).
    pub async fn sync(&self) -> Result<(), LnError> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.sync_wallets())
            .await
            .map_err(|e| LnError::Build(e.to_string()))??;
        Ok(())
    }

    /// On-chain coins the node may spend (anchor reserves excluded).
    pub fn spendable_onchain(&self) -> Amount {
        Amount::from_sat(self.node.list_balances().spendable_onchain_balance_sats)
    }

    /// Opens a channel of `capacity` to `peer` at `address`, pushing `push_msat`. An announced
    /// channel routes for others (its peers learn it by gossip); a private one is the device's own
    /// link to its peer, reached by others through route hints in the device's invoices.
    pub fn open_channel(
        &self,
        peer: PublicKey,
        address: SocketAddr,
        capacity: Amount,
        push_msat: u64,
        announced: bool,
    ) -> Result<UserChannelId, LnError> {
        let open = if announced {
            Node::open_announced_channel
        } else {
            Node::open_channel
        };
        Ok(open(
            &self.node,
            peer,
            SocketAddress::from(address),
            capacity.to_sat(),
            Some(push_msat).filter(|p| *p > 0),
            None,
        )?)
    }

    /// Waits until the channel `id` has its funding transaction, negotiated with the peer and
    /// accepted by bitcoind (in its mempool or a block), and returns its outpoint.
    pub async fn wait_funding(
        &self,
        id: UserChannelId,
        timeout: Duration,
    ) -> Result<bitcoin::OutPoint, LnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let funding = || {
            self.node
                .list_channels()
                .iter()
                .find(|c| c.user_channel_id == id)
                .and_then(|c| c.funding_txo)
        };
        self.wait_channels("the channel's funding", timeout, |_| funding().is_some())
            .await?;
        let outpoint = funding().ok_or(LnError::Timeout(timeout, "the channel's funding"))?;
        // LDK broadcasts the funding only once the peer has signed the first commitment.
        while self.rpc.tx_out(&outpoint).await?.is_none() {
            if tokio::time::Instant::now() > deadline {
                return Err(LnError::Timeout(timeout, "the funding broadcast"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(outpoint)
    }

    /// Balances: (spendable on chain, spendable over Lightning), satoshi.
    pub fn balances(&self) -> (Amount, Amount) {
        let balances = self.node.list_balances();
        (
            Amount::from_sat(balances.spendable_onchain_balance_sats),
            Amount::from_sat(balances.total_lightning_balance_sats),
        )
    }

    /// Inbound payments as they arrive (with their custom TLV records), for live consumers such
    /// as a gateway crediting sessions. Missed ones remain in the node's payment store.
    pub fn subscribe_received(&self) -> tokio::sync::broadcast::Receiver<Received> {
        self.received.subscribe()
    }

    /// Connects to `peer` (dropping an existing connection first), remembering it for
    /// reconnection. A fresh connection also re-syncs gossip from that peer.
    pub fn reconnect(&self, peer: PublicKey, address: SocketAddr) -> Result<(), LnError> {
        let _ = self.node.disconnect(peer); // not connected: nothing to drop
        Ok(self
            .node
            .connect(peer, SocketAddress::from(address), true)?)
    }

    /// The node's channels.
    pub fn channels(&self) -> Vec<ChannelDetails> {
        self.node.list_channels()
    }

    /// A BOLT11 invoice for `amount_msat`, valid for `expiry_secs`.
    pub fn invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry_secs: u32,
    ) -> Result<Bolt11Invoice, LnError> {
        let description = Description::new(description.to_owned())
            .map_err(|e| LnError::Input(format!("invoice description: {e}")))?;
        Ok(self.node.bolt11_payment().receive(
            amount_msat,
            &Bolt11InvoiceDescription::Direct(description),
            expiry_secs,
        )?)
    }

    /// Pays a BOLT11 invoice and waits for the outcome.
    pub async fn pay(&self, invoice: &str, timeout: Duration) -> Result<PaymentOutcome, LnError> {
        let invoice = Bolt11Invoice::from_str(invoice.trim())
            .map_err(|e| LnError::Input(format!("not a BOLT11 invoice: {e}")))?;
        self.pay_invoice(&invoice, timeout).await
    }

    /// Pays an invoice already parsed (and checked) by the caller, and waits for the outcome.
    pub async fn pay_invoice(
        &self,
        invoice: &Bolt11Invoice,
        timeout: Duration,
    ) -> Result<PaymentOutcome, LnError> {
        let id = self.node.bolt11_payment().send(invoice, None)?;
        self.outcome(id, timeout).await
    }

    /// Sends `amount_msat` to `node` without an invoice (keysend) and waits for the outcome.
    pub async fn keysend(
        &self,
        node: PublicKey,
        amount_msat: u64,
        timeout: Duration,
    ) -> Result<PaymentOutcome, LnError> {
        self.keysend_with_records(node, amount_msat, Vec::new(), timeout)
            .await
    }

    /// A keysend carrying custom TLV `records` (type, value) in the onion, e.g. a stream's
    /// metadata; types must be ≥ 2^16 and odd ones are ignored by receivers that do not know them.
    pub async fn keysend_with_records(
        &self,
        node: PublicKey,
        amount_msat: u64,
        records: Vec<(u64, Vec<u8>)>,
        timeout: Duration,
    ) -> Result<PaymentOutcome, LnError> {
        let records = records
            .into_iter()
            .map(|(type_num, value)| ldk_node::CustomTlvRecord { type_num, value })
            .collect();
        let id = self.node.spontaneous_payment().send_with_custom_tlvs(
            amount_msat,
            node,
            None,
            records,
        )?;
        self.outcome(id, timeout).await
    }

    /// Total received in succeeded inbound Lightning payments, msat (on-chain receipts, which
    /// the node's payment store also lists, are not counted).
    pub fn received_msat(&self) -> u64 {
        self.node
            .list_payments_with_filter(|p| {
                p.direction == PaymentDirection::Inbound
                    && p.status == PaymentStatus::Succeeded
                    && !matches!(p.kind, ldk_node::payment::PaymentKind::Onchain { .. })
            })
            .iter()
            .filter_map(|p| p.amount_msat)
            .sum()
    }

    /// Succeeded outbound Lightning payments: (amount delivered, routing fees), msat (channel
    /// fundings and other on-chain spends are not counted).
    pub fn sent_msat(&self) -> (u64, u64) {
        self.node
            .list_payments_with_filter(|p| {
                p.direction == PaymentDirection::Outbound
                    && p.status == PaymentStatus::Succeeded
                    && !matches!(p.kind, ldk_node::payment::PaymentKind::Onchain { .. })
            })
            .iter()
            .fold((0, 0), |(amount, fees), p| {
                (
                    amount + p.amount_msat.unwrap_or_default(),
                    fees + p.fee_paid_msat.unwrap_or_default(),
                )
            })
    }

    /// Lets in-flight HTLCs settle (up to `wait`: a payer waits for the fulfilment of what this
    /// node claimed until it comes back otherwise), then stops the node. `Ok(false)`: some were
    /// still in flight; they settle at the next start.
    pub async fn settle_and_stop(&self, wait: Duration) -> Result<bool, LnError> {
        let settled = self.wait_settled(wait).await.is_ok();
        self.stop().await?;
        Ok(settled)
    }

    /// Waits until no HTLC is in flight on any channel (a claimed payment's fulfilment has
    /// reached the payer, a sent one is fully removed), so the node can stop without leaving a
    /// peer waiting for its next start.
    pub async fn wait_settled(&self, timeout: Duration) -> Result<(), LnError> {
        use ldk_node::LightningBalance;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.events.notified();
            let in_flight = self
                .node
                .list_balances()
                .lightning_balances
                .iter()
                .any(|b| {
                    matches!(b, LightningBalance::ClaimableOnChannelClose {
                    outbound_payment_htlc_rounded_msat,
                    outbound_forwarded_htlc_rounded_msat,
                    inbound_claiming_htlc_rounded_msat,
                    inbound_htlc_rounded_msat,
                    ..
                } if *outbound_payment_htlc_rounded_msat
                    + *outbound_forwarded_htlc_rounded_msat
                    + *inbound_claiming_htlc_rounded_msat
                    + *inbound_htlc_rounded_msat
                    > 0)
                });
            if !in_flight {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LnError::Timeout(timeout, "HTLCs to settle"));
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Waits until the invoice with `payment_hash` is paid; returns the amount received, msat.
    pub async fn wait_received(
        &self,
        payment_hash: [u8; 32],
        timeout: Duration,
    ) -> Result<u64, LnError> {
        // An inbound BOLT11 payment's id is its hash.
        let id = ldk_node::lightning::ln::channelmanager::PaymentId(payment_hash);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.events.notified();
            if let Some(details) = self.node.payment(&id)
                && details.status == PaymentStatus::Succeeded
            {
                return Ok(details.amount_msat.unwrap_or_default());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LnError::Timeout(timeout, "the invoice to be paid"));
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Waits until `ready` holds for the node's channels (checked on every event and every
    /// 100 ms).
    pub async fn wait_channels(
        &self,
        what: &'static str,
        timeout: Duration,
        ready: impl Fn(&[ChannelDetails]) -> bool,
    ) -> Result<(), LnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready(&self.node.list_channels()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LnError::Timeout(timeout, what));
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.events.notified()).await;
        }
    }

    async fn outcome(
        &self,
        id: ldk_node::lightning::ln::channelmanager::PaymentId,
        timeout: Duration,
    ) -> Result<PaymentOutcome, LnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.events.notified();
            if let Some(details) = self.node.payment(&id) {
                match details.status {
                    PaymentStatus::Succeeded => {
                        let preimage = preimage_of(&details.kind).ok_or_else(|| {
                            LnError::PaymentFailed("succeeded without a preimage".into())
                        })?;
                        return Ok(PaymentOutcome {
                            preimage,
                            fee_msat: details.fee_paid_msat.unwrap_or_default(),
                        });
                    }
                    PaymentStatus::Failed => {
                        // The status may be seen before its event is pumped: wait for it briefly.
                        let reason = match self.failures.take(&id.0) {
                            Some(reason) => reason,
                            None => {
                                let wait = Duration::from_millis(500);
                                let _ = tokio::time::timeout(wait, notified).await;
                                self.failures
                                    .take(&id.0)
                                    .unwrap_or_else(|| "no reason given".into())
                            }
                        };
                        return Err(LnError::PaymentFailed(reason));
                    }
                    PaymentStatus::Pending => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LnError::Timeout(timeout, "a payment"));
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

/// A 32-byte secret for `purpose` (a versioned label) from the device's Lightning entropy:
/// SHA-256(purpose ‖ entropy), so it survives restarts with no file of its own (the L402 root
/// key, the hold-invoice preimage secret).
pub fn seed_secret(keys: &DeviceKeys, purpose: &[u8]) -> Result<[u8; 32], LnError> {
    use bitcoin::hashes::{Hash, sha256};
    let entropy = keys.lightning_entropy()?;
    let mut tagged = zeroize::Zeroizing::new(purpose.to_vec());
    tagged.extend_from_slice(&entropy[..]);
    Ok(sha256::Hash::hash(&tagged).to_byte_array())
}

/// A log level name (`error`, `warn`, `info`, `debug`, `trace`, `gossip`).
fn log_level(name: &str) -> Option<ldk_node::logger::LogLevel> {
    use ldk_node::logger::LogLevel;
    Some(match name.to_ascii_lowercase().as_str() {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        "gossip" => LogLevel::Gossip,
        _ => return None,
    })
}

fn preimage_of(kind: &ldk_node::payment::PaymentKind) -> Option<[u8; 32]> {
    use ldk_node::payment::PaymentKind;
    match kind {
        PaymentKind::Bolt11 { preimage, .. } | PaymentKind::Spontaneous { preimage, .. } => {
            preimage.map(|p| p.0)
        }
        _ => None,
    }
}
