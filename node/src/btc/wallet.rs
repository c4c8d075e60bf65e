//! The device's on-chain wallet, fed from bitcoind and kept in the store.
//!
//! Sync walks back from the wallet's newest checkpoint until bitcoind agrees on the block hash
//! (a reorganisation is replaced from there), applies each later block, then the mempool. BDK's
//! staged changes are written to the store at the end of every operation that made any, before
//! the caller sees the result.

use std::sync::Arc;

use bitcoin::{Address, Amount, FeeRate, ScriptBuf, Transaction, Txid};
use m2m_wallet::DeviceKeys;
use m2m_wallet::onchain::{Balance, OnChainError, OnChainWallet};
use tokio::sync::Mutex;

use super::rpc::{BitcoinRpc, RpcError};
use crate::store::{ChannelStore, StoreError};

/// A wallet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// bitcoind failed or refused.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// BDK refused.
    #[error(transparent)]
    Wallet(#[from] OnChainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// The wallet's tip afterwards.
    pub height: u32,
    /// Blocks applied.
    pub blocks: u32,
}

/// The on-chain wallet of this device.
#[derive(Debug)]
pub struct BtcWallet {
    inner: Mutex<OnChainWallet>,
    store: Arc<ChannelStore>,
    rpc: BitcoinRpc,
}

impl BtcWallet {
    /// Opens the wallet of `keys` from the store (or new at genesis).
    pub fn open(
        keys: &DeviceKeys,
        store: Arc<ChannelStore>,
        rpc: BitcoinRpc,
    ) -> Result<Self, WalletError> {
        let inner = OnChainWallet::open(keys, store.load_wallet_changes()?)?;
        Ok(Self {
            inner: Mutex::new(inner),
            store,
            rpc,
        })
    }

    /// The node it talks to.
    pub fn rpc(&self) -> &BitcoinRpc {
        &self.rpc
    }

    /// Brings the wallet up to bitcoind's best chain and mempool.
    pub async fn sync(&self) -> Result<SyncReport, WalletError> {
        let mut wallet = self.inner.lock().await;
        let node_tip = self.rpc.block_count().await?;
        let mut agreed = 0;
        for height in wallet.checkpoint_heights() {
            if height > node_tip {
                continue;
            }
            if Some(self.rpc.block_hash(height).await?) == wallet.checkpoint_hash(height) {
                agreed = height;
                break;
            }
        }
        let mut blocks = 0;
        for height in agreed + 1..=node_tip {
            let hash = self.rpc.block_hash(height).await?;
            let block = self.rpc.block(&hash).await?;
            wallet.apply_block(&block, height)?;
            blocks += 1;
        }
        let mempool = self.rpc.mempool().await?;
        wallet.apply_unconfirmed(mempool, crate::now_secs());
        self.persist(&mut wallet)?;
        Ok(SyncReport {
            height: wallet.tip().0,
            blocks,
        })
    }

    /// Coins by state (as of the last sync).
    pub async fn balance(&self) -> Balance {
        self.inner.lock().await.balance()
    }

    /// The receive address (the device's BIP-86 address).
    pub async fn receive_address(&self) -> Address {
        self.inner.lock().await.receive_address()
    }

    /// Builds and signs a funding transaction paying `amount` to `script`; not broadcast.
    pub async fn build_funding(
        &self,
        script: ScriptBuf,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<(Transaction, u32), WalletError> {
        let mut wallet = self.inner.lock().await;
        let built = wallet.fund(script, amount, fee_rate)?;
        self.persist(&mut wallet)?;
        Ok(built)
    }

    /// Sends every coin to `to` (the owner's sweep) and broadcasts it.
    pub async fn sweep(&self, to: &Address, fee_rate: FeeRate) -> Result<Txid, WalletError> {
        let tx = {
            let mut wallet = self.inner.lock().await;
            let tx = wallet.sweep(to, fee_rate)?;
            self.persist(&mut wallet)?;
            tx
        };
        self.broadcast(&tx).await
    }

    /// Broadcasts a transaction and records it as ours-unconfirmed.
    pub async fn broadcast(&self, tx: &Transaction) -> Result<Txid, WalletError> {
        let txid = self.rpc.broadcast(tx).await?;
        let mut wallet = self.inner.lock().await;
        wallet.apply_unconfirmed([tx.clone()], crate::now_secs());
        self.persist(&mut wallet)?;
        Ok(txid)
    }

    /// The fee a transaction of ours paid.
    pub async fn fee_of(&self, tx: &Transaction) -> Option<Amount> {
        self.inner.lock().await.fee_of(tx)
    }

    fn persist(&self, wallet: &mut OnChainWallet) -> Result<(), WalletError> {
        if let Some(changes) = wallet.take_changes() {
            self.store.save_wallet_changes(changes)?;
        }
        Ok(())
    }
}
