//! The device's on-chain Bitcoin wallet: BDK over the seed's BIP-86 descriptors.
//!
//! BDK does the wallet work (address derivation, UTXO tracking, coin selection, fee math,
//! signing); this module only binds it to the device seed and keeps it IO-free. The caller
//! feeds it blocks and mempool transactions (the node's bitcoind sync) and persists the
//! [`WalletChanges`] that [`OnChainWallet::take_changes`] hands out — BDK's staged-changeset
//! contract: write them before relying on the new state.
//!
//! External index 0 of `tr(m/86'/coin'/0'/0/*)` is the device's [`DeviceKeys::bitcoin_address`],
//! so coins sent to the address the device shows (top-up QR, `m2m address`) are found here, and
//! channel closes that pay the device's BIP-86 key land here too.

use bdk_wallet::template::Bip86;
use bdk_wallet::{KeychainKind, LoadParams, SignOptions, Wallet};
use bitcoin::{Address, Amount, Block, FeeRate, ScriptBuf, Transaction, Txid};

use crate::keys::DeviceKeys;

pub use bdk_wallet::chain::Merge;
pub use bdk_wallet::{Balance, ChangeSet as WalletChanges, LocalOutput};

/// An on-chain wallet operation failed; the wallet is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum OnChainError {
    /// The BIP-86 descriptors could not be built from the seed.
    #[error("wallet descriptor: {0}")]
    Descriptor(#[source] Box<bdk_wallet::descriptor::DescriptorError>),
    /// Stored wallet state does not belong to this seed or network.
    #[error("stored wallet state does not match this device: {0}")]
    Load(#[source] Box<bdk_wallet::LoadError>),
    /// A block does not connect to the wallet's chain (a reorganisation to resolve first).
    #[error("block does not connect to the wallet's chain: {0}")]
    Connect(#[from] bdk_wallet::chain::local_chain::CannotConnectError),
    /// BDK could not build the transaction (for example: not enough confirmed coins).
    #[error("cannot build transaction: {0}")]
    Build(#[source] Box<bdk_wallet::error::CreateTxError>),
    /// Signing failed.
    #[error("cannot sign transaction: {0}")]
    Sign(#[from] bdk_wallet::signer::SignerError),
    /// The signed transaction was not complete.
    #[error("transaction not fully signed")]
    NotFinalized,
    /// The funding transaction does not pay the channel script.
    #[error("funding transaction has no output to the channel script")]
    NoChannelOutput,
}

/// The device's BDK wallet.
#[derive(Debug)]
pub struct OnChainWallet {
    inner: Wallet,
}

impl OnChainWallet {
    /// Opens the wallet of `keys`: from stored changes if any, else a new one at genesis.
    pub fn open(keys: &DeviceKeys, stored: Option<WalletChanges>) -> Result<Self, OnChainError> {
        let network = keys.network();
        let external = Bip86(*keys.master(), KeychainKind::External);
        let internal = Bip86(*keys.master(), KeychainKind::Internal);
        if let Some(changes) = stored {
            let loaded = LoadParams::new()
                .descriptor(KeychainKind::External, Some(external.clone()))
                .descriptor(KeychainKind::Internal, Some(internal.clone()))
                .extract_keys()
                .check_network(network)
                .load_wallet_no_persist(changes)
                .map_err(|e| OnChainError::Load(Box::new(e)))?;
            if let Some(inner) = loaded {
                return Ok(Self { inner });
            }
        }
        let inner = Wallet::create(external, internal)
            .network(network)
            .create_wallet_no_persist()
            .map_err(|e| OnChainError::Descriptor(Box::new(e)))?;
        Ok(Self { inner })
    }

    /// Changes since the last call, to persist (merged into what is stored).
    pub fn take_changes(&mut self) -> Option<WalletChanges> {
        self.inner.take_staged()
    }

    /// The last block the wallet has seen: `(height, hash)`.
    pub fn tip(&self) -> (u32, bitcoin::BlockHash) {
        let tip = self.inner.latest_checkpoint();
        (tip.height(), tip.hash())
    }

    /// The hash the wallet holds for `height`, if it has a checkpoint there (for reorg checks).
    pub fn checkpoint_hash(&self, height: u32) -> Option<bitcoin::BlockHash> {
        self.inner
            .latest_checkpoint()
            .get(height)
            .map(|cp| cp.hash())
    }

    /// Heights of the wallet's checkpoints, newest first.
    pub fn checkpoint_heights(&self) -> Vec<u32> {
        self.inner.checkpoints().map(|cp| cp.height()).collect()
    }

    /// Applies a block at `height`; it must extend or replace the wallet's chain at its parent.
    pub fn apply_block(&mut self, block: &Block, height: u32) -> Result<(), OnChainError> {
        Ok(self.inner.apply_block(block, height)?)
    }

    /// Records transactions seen unconfirmed at `seen_at` (Unix seconds): the mempool, or our
    /// own broadcasts.
    pub fn apply_unconfirmed(&mut self, txs: impl IntoIterator<Item = Transaction>, seen_at: u64) {
        self.inner
            .apply_unconfirmed_txs(txs.into_iter().map(|tx| (tx, seen_at)));
    }

    /// Confirmed, pending and immature coins.
    pub fn balance(&self) -> Balance {
        self.inner.balance()
    }

    /// Unspent outputs.
    pub fn utxos(&self) -> Vec<LocalOutput> {
        self.inner.list_unspent().collect()
    }

    /// The device's receive address (BIP-86 external index 0).
    pub fn receive_address(&self) -> Address {
        self.inner.peek_address(KeychainKind::External, 0).address
    }

    /// Whether an output script is the wallet's.
    pub fn is_mine(&self, script: ScriptBuf) -> bool {
        self.inner.is_mine(script)
    }

    /// Builds and signs a transaction paying `amount` to `script` (a channel output), change to
    /// the wallet. Returns it with the index of the paying output. Not broadcast: the caller
    /// broadcasts, then reports it with [`OnChainWallet::apply_unconfirmed`].
    pub fn fund(
        &mut self,
        script: ScriptBuf,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<(Transaction, u32), OnChainError> {
        let mut builder = self.inner.build_tx();
        builder
            .add_recipient(script.clone(), amount)
            .fee_rate(fee_rate);
        let psbt = builder
            .finish()
            .map_err(|e| OnChainError::Build(Box::new(e)))?;
        let tx = self.sign(psbt)?;
        let vout = tx
            .output
            .iter()
            .position(|out| out.script_pubkey == script && out.value == amount)
            .ok_or(OnChainError::NoChannelOutput)?;
        Ok((tx, vout as u32))
    }

    /// Builds and signs a transaction sending every coin to `to` (the owner's sweep).
    pub fn sweep(&mut self, to: &Address, fee_rate: FeeRate) -> Result<Transaction, OnChainError> {
        let mut builder = self.inner.build_tx();
        builder
            .drain_wallet()
            .drain_to(to.script_pubkey())
            .fee_rate(fee_rate);
        let psbt = builder
            .finish()
            .map_err(|e| OnChainError::Build(Box::new(e)))?;
        self.sign(psbt)
    }

    /// The fee a transaction of ours paid, if the wallet knows all its inputs.
    pub fn fee_of(&self, tx: &Transaction) -> Option<Amount> {
        self.inner.calculate_fee(tx).ok()
    }

    /// Whether the wallet knows a transaction.
    pub fn knows(&self, txid: Txid) -> bool {
        self.inner.get_tx(txid).is_some()
    }

    fn sign(&mut self, mut psbt: bitcoin::Psbt) -> Result<Transaction, OnChainError> {
        if !self.inner.sign(&mut psbt, SignOptions::default())? {
            return Err(OnChainError::NotFinalized);
        }
        psbt.extract_tx().map_err(|_| OnChainError::NotFinalized)
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::Network;

    use super::*;
    use crate::seed::{DeviceSeed, SeedLength};

    #[test]
    fn receive_address_is_the_devices_bip86_address_and_state_reloads() {
        let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
        let keys = DeviceKeys::derive(&seed, Network::Regtest).unwrap();
        let mut wallet = OnChainWallet::open(&keys, None).unwrap();
        assert_eq!(wallet.receive_address(), keys.bitcoin_address());
        let changes = wallet
            .take_changes()
            .expect("a new wallet has state to store");
        let reopened = OnChainWallet::open(&keys, Some(changes.clone())).unwrap();
        assert_eq!(reopened.tip(), wallet.tip());

        // Another seed's state is refused, not silently used.
        let other = DeviceKeys::derive(
            &DeviceSeed::generate(SeedLength::Words12).unwrap(),
            Network::Regtest,
        )
        .unwrap();
        assert!(matches!(
            OnChainWallet::open(&other, Some(changes)),
            Err(OnChainError::Load(_))
        ));
    }
}
