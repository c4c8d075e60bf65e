//! Taproot script channels bound to the store, the wallet and bitcoind.
//!
//! Payer: [`PayerChannels::open`] saves the terms before the funding is broadcast (a crash
//! leaves a known channel, never lost coins); [`PayerChannels::pay`] persists "highest signed"
//! before the voucher is returned; [`PayerChannels::refund`] takes the output back once the
//! expiry height is reached.
//!
//! Payee: [`PayeeChannels::register`] checks the funding output on chain (value, script,
//! confirmations, time left before expiry) before the first voucher counts; [`PayeeChannels::accept`]
//! persists each voucher before it returns; [`PayeeChannels::close`] broadcasts the newest
//! commitment co-signed; [`PayeeChannels::watch`] closes every channel that comes within
//! `close_margin_blocks` of its expiry, so the payer's refund path never opens on unclaimed value.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::{Amount, FeeRate, OutPoint, Txid};
use m2m_contracts::btc::{
    BtcChannelError, BtcPayee, BtcPayer, BtcVoucher, ChannelFunding, ChannelParties,
    ChannelTermsBtc, TaprootChannel,
};
use m2m_core::ChannelId;
use m2m_wallet::{SchnorrKey, Signer, SignerError};
use tokio::sync::Mutex;

use super::rpc::{BitcoinRpc, RpcError};
use super::wallet::{BtcWallet, WalletError};
use crate::store::btc::BtcRole;
use crate::store::{ChannelStore, RecordWrite, StoreError};

/// A channel operation failed; nothing was promised or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BtcChannelsError {
    /// The channel rules refused.
    #[error(transparent)]
    Channel(#[from] BtcChannelError),
    /// The wallet could not fund or broadcast.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// bitcoind failed or refused.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signer failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// No such channel here.
    #[error("unknown bitcoin channel {0}")]
    Unknown(String),
    /// The funding output is not (or no longer) what the terms say.
    #[error("funding {outpoint}: {problem}")]
    Funding {
        /// The outpoint.
        outpoint: OutPoint,
        /// What is wrong.
        problem: String,
    },
    /// The terms are not acceptable to this payee.
    #[error("channel terms refused: {0}")]
    Terms(String),
    /// The refund path is not open yet.
    #[error("refund possible from block {expiry}; the chain is at {height}")]
    NotExpired {
        /// The expiry height.
        expiry: u32,
        /// The current height.
        height: u32,
    },
    /// Nothing to close with.
    #[error("no voucher received on this channel yet")]
    NoVoucher,
    /// The channel is being closed cooperatively: no more payments on it.
    #[error("channel is closing; open a new one")]
    Closing,
    /// The other side's close request or answer is not acceptable.
    #[error("cooperative close refused: {0}")]
    CloseRefused(String),
}

/// The signer, shared.
pub type SharedSigner = Arc<dyn Signer + Send + Sync>;

/// The channels this device pays on.
pub struct PayerChannels {
    pub(super) store: Arc<ChannelStore>,
    pub(super) wallet: Arc<BtcWallet>,
    pub(super) signer: SharedSigner,
    pub(super) channels: Mutex<HashMap<[u8; 32], BtcPayer>>,
    /// Channels closed (or being closed) cooperatively: no more payments on them.
    pub(super) closing: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for PayerChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayerChannels").finish_non_exhaustive()
    }
}

impl PayerChannels {
    /// Loads the payer channels in the store.
    pub fn load(
        store: Arc<ChannelStore>,
        wallet: Arc<BtcWallet>,
        signer: SharedSigner,
    ) -> Result<Self, BtcChannelsError> {
        let mut channels = HashMap::new();
        for (role, terms) in store.btc_channels()? {
            if role == BtcRole::Payer {
                let channel = TaprootChannel::new(terms)?;
                let signed = store.load_btc_signed(&ChannelId(channel.id()))?;
                channels.insert(channel.id(), BtcPayer::new(channel, signed)?);
            }
        }
        let closing = closing_set(&store)?;
        Ok(Self {
            store,
            wallet,
            signer,
            channels: Mutex::new(channels),
            closing: Mutex::new(closing),
        })
    }

    /// Funds a channel to `payee` with `capacity`, refundable from `expiry_height`. The close
    /// fee is fixed at `fee_rate`, which also pays for the funding transaction.
    pub async fn open(
        &self,
        payee: XOnlyPublicKey,
        capacity: Amount,
        expiry_height: u32,
        fee_rate: FeeRate,
    ) -> Result<TaprootChannel, BtcChannelsError> {
        let parties = ChannelParties {
            payer: self.signer.taproot_internal_key(),
            payee,
            expiry_height,
        };
        let close_fee = TaprootChannel::close_fee_at(parties, fee_rate)?;
        let script = m2m_contracts::btc::ChannelScript::new(parties)?.script_pubkey();
        let (funding_tx, vout) = self
            .wallet
            .build_funding(script, capacity, fee_rate)
            .await?;
        let channel = TaprootChannel::new(ChannelTermsBtc {
            parties,
            funding: ChannelFunding {
                outpoint: OutPoint::new(funding_tx.compute_txid(), vout),
                capacity,
            },
            close_fee,
        })?;
        self.store
            .save_btc_channel(BtcRole::Payer, channel.terms())?;
        self.wallet.broadcast(&funding_tx).await?;
        self.channels
            .lock()
            .await
            .insert(channel.id(), BtcPayer::new(channel.clone(), Amount::ZERO)?);
        Ok(channel)
    }

    /// A voucher paying `price` more; durable before it is returned.
    pub async fn pay(&self, id: &[u8; 32], price: Amount) -> Result<BtcVoucher, BtcChannelsError> {
        self.pay_from(id, None, price).await
    }

    /// A voucher paying `price` on top of `charged` (what the payee reported holding), or on
    /// top of the highest signed when `None`; durable before it is returned.
    pub async fn pay_from(
        &self,
        id: &[u8; 32],
        charged: Option<Amount>,
        price: Amount,
    ) -> Result<BtcVoucher, BtcChannelsError> {
        if self.closing.lock().await.contains(id) {
            return Err(BtcChannelsError::Closing);
        }
        let mut channels = self.channels.lock().await;
        let payer = channels
            .get_mut(id)
            .ok_or_else(|| BtcChannelsError::Unknown(hex(id)))?;
        let prepared = payer.prepare_from(charged.unwrap_or(payer.signed()), price)?;
        let signature = self
            .signer
            .sign_schnorr(&prepared.sighash, SchnorrKey::ScriptPath)?;
        // "Highest signed" never goes down, even for a voucher re-signed from a lower base.
        let highest = payer.signed().max(prepared.cumulative);
        self.store
            .submit(RecordWrite::BtcPayer(ChannelId(*id), highest))
            .durable()
            .await?;
        Ok(payer.commit(prepared, signature))
    }

    /// A channel to `payee` with at least `price` left, if any.
    pub async fn usable(&self, payee: &XOnlyPublicKey, price: Amount) -> Option<[u8; 32]> {
        let closing = self.closing.lock().await.clone();
        self.channels
            .lock()
            .await
            .iter()
            .find(|(id, payer)| {
                payer.channel().terms().parties.payee == *payee
                    && payer.remaining() >= price
                    && !closing.contains(*id)
            })
            .map(|(id, _)| *id)
    }

    /// Every channel: its terms and the highest amount signed on it.
    pub async fn all(&self) -> Vec<(ChannelTermsBtc, Amount)> {
        self.channels
            .lock()
            .await
            .values()
            .map(|payer| (*payer.channel().terms(), payer.signed()))
            .collect()
    }

    /// The terms of a channel.
    pub async fn terms(&self, id: &[u8; 32]) -> Option<ChannelTermsBtc> {
        self.channels
            .lock()
            .await
            .get(id)
            .map(|payer| *payer.channel().terms())
    }

    /// Takes back a voucher of ours that the payee holds and we forgot (see
    /// [`BtcPayer::adopt`]); the next voucher persists the raised highest before it leaves.
    pub async fn adopt(
        &self,
        id: &[u8; 32],
        voucher: &BtcVoucher,
    ) -> Result<Amount, BtcChannelsError> {
        let mut channels = self.channels.lock().await;
        let payer = channels
            .get_mut(id)
            .ok_or_else(|| BtcChannelsError::Unknown(hex(id)))?;
        Ok(payer.adopt(voucher)?)
    }

    /// The highest amount ever signed on a channel (its exposure).
    pub async fn signed(&self, id: &[u8; 32]) -> Option<Amount> {
        self.channels.lock().await.get(id).map(BtcPayer::signed)
    }

    /// What is left to spend on a channel.
    pub async fn remaining(&self, id: &[u8; 32]) -> Option<Amount> {
        self.channels.lock().await.get(id).map(BtcPayer::remaining)
    }

    /// Takes the whole output back through the refund leaf (from the expiry height on),
    /// paying `fee`.
    pub async fn refund(&self, id: &[u8; 32], fee: Amount) -> Result<Txid, BtcChannelsError> {
        let channel = {
            let channels = self.channels.lock().await;
            let payer = channels
                .get(id)
                .ok_or_else(|| BtcChannelsError::Unknown(hex(id)))?;
            payer.channel().clone()
        };
        let height = self.wallet.rpc().block_count().await?;
        let expiry = channel.terms().parties.expiry_height;
        // Lock time `expiry` makes the refund final in blocks above `expiry`: the next block
        // (`height + 1`) must be one, so the tip must have reached the expiry.
        if height < expiry {
            return Err(BtcChannelsError::NotExpired { expiry, height });
        }
        let refund = channel.refund(fee)?;
        let signature = self
            .signer
            .sign_schnorr(&channel.refund_sighash(&refund), SchnorrKey::ScriptPath)?;
        let refund = channel.finalize_refund(refund, signature)?;
        Ok(self.wallet.broadcast(&refund).await?)
    }

    /// Signs a refund without the expiry check (for tests that show bitcoind refusing it).
    pub async fn signed_refund(
        &self,
        id: &[u8; 32],
        fee: Amount,
    ) -> Result<bitcoin::Transaction, BtcChannelsError> {
        let channels = self.channels.lock().await;
        let channel = channels
            .get(id)
            .ok_or_else(|| BtcChannelsError::Unknown(hex(id)))?
            .channel();
        let refund = channel.refund(fee)?;
        let signature = self
            .signer
            .sign_schnorr(&channel.refund_sighash(&refund), SchnorrKey::ScriptPath)?;
        Ok(channel.finalize_refund(refund, signature)?)
    }
}

/// What a payee asks of new channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayeePolicy {
    /// Confirmations the funding output needs before vouchers count (0 accepts the mempool).
    pub min_confirmations: u32,
    /// Blocks that must remain before expiry when a channel is registered.
    pub min_blocks_to_expiry: u32,
    /// The watcher closes a channel when this many blocks remain before its expiry.
    pub close_margin_blocks: u32,
    /// The lowest close-fee rate accepted (so the close confirms in time).
    pub min_close_fee_rate: FeeRate,
}

impl Default for PayeePolicy {
    fn default() -> Self {
        Self {
            min_confirmations: 1,
            min_blocks_to_expiry: 144,
            close_margin_blocks: 12,
            min_close_fee_rate: FeeRate::from_sat_per_vb_u32(1),
        }
    }
}

/// The channels this device is paid on.
pub struct PayeeChannels {
    pub(super) store: Arc<ChannelStore>,
    pub(super) rpc: BitcoinRpc,
    pub(super) signer: SharedSigner,
    policy: PayeePolicy,
    channels: Mutex<HashMap<[u8; 32], Arc<Mutex<BtcPayee>>>>,
    /// Channels co-signed for a cooperative close: no voucher is accepted on them any more.
    pub(super) closing: Mutex<HashSet<[u8; 32]>>,
    /// Closes before expiry go here once an agent attaches its bus.
    pub events: crate::events::EventLink,
}

impl std::fmt::Debug for PayeeChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayeeChannels")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl PayeeChannels {
    /// Loads the payee channels in the store (each stored voucher is checked again).
    pub fn load(
        store: Arc<ChannelStore>,
        rpc: BitcoinRpc,
        signer: SharedSigner,
        policy: PayeePolicy,
    ) -> Result<Self, BtcChannelsError> {
        let mut channels = HashMap::new();
        for (role, terms) in store.btc_channels()? {
            if role == BtcRole::Payee {
                let channel = TaprootChannel::new(terms)?;
                let latest = store.load_btc_voucher(&ChannelId(channel.id()))?;
                let id = channel.id();
                channels.insert(id, Arc::new(Mutex::new(BtcPayee::new(channel, latest)?)));
            }
        }
        let closing = closing_set(&store)?;
        Ok(Self {
            store,
            rpc,
            signer,
            policy,
            channels: Mutex::new(channels),
            closing: Mutex::new(closing),
            events: crate::events::EventLink::default(),
        })
    }

    /// Our key: what payers put in the cooperative leaf.
    pub fn payee_key(&self) -> XOnlyPublicKey {
        self.signer.taproot_internal_key()
    }

    /// Checks a new channel's terms and funding on chain, then saves it. Idempotent: a known
    /// channel (by funding outpoint) keeps the terms it was registered with, and vouchers are
    /// checked against those — so the per-payment call costs one map lookup, not a script
    /// compile and a key aggregation.
    pub async fn register(&self, terms: ChannelTermsBtc) -> Result<[u8; 32], BtcChannelsError> {
        let id = m2m_contracts::btc::channel_id(&terms.funding.outpoint);
        if self.channels.lock().await.contains_key(&id) {
            return Ok(id);
        }
        let channel = TaprootChannel::new(terms)?;
        if terms.parties.payee != self.payee_key() {
            return Err(BtcChannelsError::Terms(
                "the channel pays another key".into(),
            ));
        }
        let min_fee = TaprootChannel::close_fee_at(terms.parties, self.policy.min_close_fee_rate)?;
        if terms.close_fee < min_fee {
            return Err(BtcChannelsError::Terms(format!(
                "close fee {} is below {min_fee}",
                terms.close_fee
            )));
        }
        let height = self.rpc.block_count().await?;
        if terms.parties.expiry_height < height + self.policy.min_blocks_to_expiry {
            return Err(BtcChannelsError::Terms(format!(
                "expiry {} is less than {} blocks after the tip {height}",
                terms.parties.expiry_height, self.policy.min_blocks_to_expiry
            )));
        }
        let outpoint = terms.funding.outpoint;
        let funding = |problem: String| BtcChannelsError::Funding { outpoint, problem };
        let found = self
            .rpc
            .tx_out(&outpoint)
            .await?
            .ok_or_else(|| funding("not an unspent output".into()))?;
        if found.script_pubkey != channel.script().script_pubkey() {
            return Err(funding("pays another script".into()));
        }
        if found.value != terms.funding.capacity {
            return Err(funding(format!(
                "holds {}, the terms say {}",
                found.value, terms.funding.capacity
            )));
        }
        if found.confirmations < self.policy.min_confirmations {
            return Err(funding(format!(
                "{} confirmations, {} needed",
                found.confirmations, self.policy.min_confirmations
            )));
        }
        self.store.save_btc_channel(BtcRole::Payee, &terms)?;
        self.channels.lock().await.entry(id).or_insert_with(|| {
            Arc::new(Mutex::new(
                BtcPayee::new(channel, None).expect("no voucher"),
            ))
        });
        Ok(id)
    }

    /// Accepts a voucher paying `price` more; durable before it returns. Returns the new total.
    pub async fn accept(
        &self,
        id: &[u8; 32],
        voucher: &BtcVoucher,
        price: Amount,
    ) -> Result<Amount, BtcChannelsError> {
        let payee = self.channel(id).await?;
        let mut payee = payee.lock().await;
        // Checked under the channel lock, which a co-signed close also takes.
        if self.closing.lock().await.contains(id) {
            return Err(BtcChannelsError::Closing);
        }
        let accepted = payee.accept(voucher, price)?;
        self.store
            .submit(RecordWrite::BtcPayee(ChannelId(*id), accepted.voucher))
            .durable()
            .await?;
        payee.commit(accepted);
        Ok(accepted.charged)
    }

    /// The charged total and newest voucher of a channel.
    pub async fn state(
        &self,
        id: &[u8; 32],
    ) -> Result<(Amount, Option<BtcVoucher>), BtcChannelsError> {
        let payee = self.channel(id).await?;
        let payee = payee.lock().await;
        Ok((payee.charged(), payee.latest().copied()))
    }

    /// The ids of every channel.
    pub async fn channel_ids(&self) -> Vec<[u8; 32]> {
        self.channels.lock().await.keys().copied().collect()
    }

    /// Whether a channel's funding output is still unspent (not closed or refunded yet).
    pub async fn funding_unspent(&self, id: &[u8; 32]) -> Result<bool, BtcChannelsError> {
        let outpoint = self
            .channel(id)
            .await?
            .lock()
            .await
            .channel()
            .terms()
            .funding
            .outpoint;
        Ok(self.rpc.tx_out(&outpoint).await?.is_some())
    }

    /// Broadcasts the newest commitment, co-signed.
    pub async fn close(&self, id: &[u8; 32]) -> Result<Txid, BtcChannelsError> {
        let payee = self.channel(id).await?;
        let payee = payee.lock().await;
        let voucher = *payee.latest().ok_or(BtcChannelsError::NoVoucher)?;
        let channel = payee.channel();
        let sighash = channel.commitment_sighash(voucher.cumulative)?;
        let signature = self.signer.sign_schnorr(&sighash, SchnorrKey::ScriptPath)?;
        let close = channel.close_transaction(&voucher, signature)?;
        Ok(self.rpc.broadcast(&close).await?)
    }

    /// Watches for ever: a [`Self::watch`] pass at once (channels that came near their expiry
    /// while this process was down are closed at start), then every `period`; after a failed
    /// pass or close, again sooner (5 s, doubling up to `period`).
    pub async fn run_watcher(self: Arc<Self>, period: std::time::Duration) {
        let retry_floor = std::time::Duration::from_secs(5).min(period);
        let mut retry = retry_floor;
        loop {
            let healthy = match self.watch().await {
                Ok(report) => {
                    for txid in &report.closed {
                        tracing::info!(%txid, "closed a channel before its expiry");
                        self.events
                            .publish(|| crate::events::AgentEvent::ChannelClosed {
                                leg: crate::events::Leg::Btc,
                                txid: txid.to_string(),
                            });
                    }
                    for (id, error) in &report.failed {
                        tracing::warn!(channel = %hex(id), %error, "closing before expiry failed; retrying");
                    }
                    report.failed.is_empty()
                }
                Err(error) => {
                    tracing::warn!(%error, "watching channel expiries");
                    false
                }
            };
            let wait = if healthy {
                retry = retry_floor;
                period
            } else {
                let wait = retry;
                retry = (retry * 2).min(period);
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Closes every open channel within the close margin of its expiry; a failed close does not
    /// stop the others (call again to retry). Fails only if the chain height cannot be read.
    pub async fn watch(&self) -> Result<WatchReport, BtcChannelsError> {
        let height = self.rpc.block_count().await?;
        let due: Vec<[u8; 32]> = {
            let channels = self.channels.lock().await;
            let mut due = Vec::new();
            for (id, payee) in channels.iter() {
                let payee = payee.lock().await;
                let expiry = payee.channel().terms().parties.expiry_height;
                if payee.latest().is_some() && height + self.policy.close_margin_blocks >= expiry {
                    due.push(*id);
                }
            }
            due
        };
        let mut closed = Vec::new();
        let mut failed = Vec::new();
        for id in due {
            // One channel that cannot be closed now (bitcoind busy, a fee too low) must not
            // leave the channels after it to expire: try each, report the failures.
            let attempt = async {
                // Already spent (closed, or refunded): nothing left to do.
                if self.funding_unspent(&id).await? {
                    return self.close(&id).await.map(Some);
                }
                Ok(None)
            };
            match attempt.await {
                Ok(Some(txid)) => closed.push(txid),
                Ok(None) => {}
                Err(error) => failed.push((id, error)),
            }
        }
        Ok(WatchReport { closed, failed })
    }

    pub(super) async fn channel(
        &self,
        id: &[u8; 32],
    ) -> Result<Arc<Mutex<BtcPayee>>, BtcChannelsError> {
        self.channels
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| BtcChannelsError::Unknown(hex(id)))
    }
}

/// What one [`PayeeChannels::watch`] pass did.
#[derive(Debug, Default)]
pub struct WatchReport {
    /// Close transactions broadcast.
    pub closed: Vec<Txid>,
    /// Channels due for a close that failed (id, why); the next pass retries them.
    pub failed: Vec<([u8; 32], BtcChannelsError)>,
}

fn closing_set(store: &ChannelStore) -> Result<HashSet<[u8; 32]>, StoreError> {
    Ok(store
        .btc_closing()?
        .into_iter()
        .map(|(id, _)| id.0)
        .collect())
}

pub(super) fn hex(id: &[u8; 32]) -> String {
    crate::x402::btc::channel_id_hex(id)
}
