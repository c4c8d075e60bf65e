//! The Bitcoin leg's tables in the channel store: channel terms (with our role), payer and payee
//! records (written through the group committer like the EVM ones), and the on-chain wallet's
//! BDK state (its staged changes merged into one stored changeset).

use bitcoin::Amount;
use m2m_contracts::btc::records::{decode_terms, decode_voucher, encode_terms};
use m2m_contracts::btc::{BtcVoucher, ChannelTermsBtc};
use m2m_core::ChannelId;
use m2m_wallet::onchain::{Merge, WalletChanges};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{ChannelStore, StoreError};

pub(crate) const BTC_PAYER_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("btc_payer");
pub(crate) const BTC_PAYEE_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("btc_payee");
const BTC_CHANNELS_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("btc_channels");
/// Channels this device has agreed to close cooperatively, with the amount the close pays the
/// payee: a payee accepts no voucher on them any more, a payer pays on them no more.
const BTC_CLOSING_TABLE: TableDefinition<'_, &[u8; 32], u64> = TableDefinition::new("btc_closing");
/// L402 tokens already redeemed (payment hash → Unix seconds): each one pays for one reading.
const L402_USED_TABLE: TableDefinition<'_, &[u8; 32], u64> = TableDefinition::new("l402_used");
const BTC_WALLET_TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("btc_wallet");
const WALLET_KEY: &str = "bdk_changeset";
const SIGNED_VERSION: u8 = 1;

/// Which side of a Bitcoin channel this device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BtcRole {
    /// We fund and sign vouchers.
    Payer,
    /// We collect vouchers and close.
    Payee,
}

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(BTC_PAYER_TABLE)
        .map_err(StoreError::from_redb)?;
    txn.open_table(BTC_PAYEE_TABLE)
        .map_err(StoreError::from_redb)?;
    txn.open_table(BTC_CHANNELS_TABLE)
        .map_err(StoreError::from_redb)?;
    txn.open_table(BTC_WALLET_TABLE)
        .map_err(StoreError::from_redb)?;
    txn.open_table(BTC_CLOSING_TABLE)
        .map_err(StoreError::from_redb)?;
    txn.open_table(L402_USED_TABLE)
        .map_err(StoreError::from_redb)?;
    Ok(())
}

pub(crate) fn encode_signed(signed: Amount) -> [u8; 9] {
    let mut out = [SIGNED_VERSION; 9];
    out[1..].copy_from_slice(&signed.to_sat().to_le_bytes());
    out
}

fn decode_signed(bytes: &[u8]) -> Result<Amount, StoreError> {
    match bytes {
        [SIGNED_VERSION, rest @ ..] if rest.len() == 8 => Ok(Amount::from_sat(u64::from_le_bytes(
            rest.try_into().expect("8 bytes"),
        ))),
        _ => Err(StoreError::BtcRecord(
            "btc payer record: unknown version or length",
        )),
    }
}

impl ChannelStore {
    /// Durably records a Bitcoin channel's terms and our role. Call before the first voucher is
    /// signed (payer) or acknowledged (payee), and — payer — before the funding is broadcast.
    pub fn save_btc_channel(
        &self,
        role: BtcRole,
        terms: &ChannelTermsBtc,
    ) -> Result<(), StoreError> {
        let id = m2m_contracts::btc::channel_id(&terms.funding.outpoint);
        let mut bytes = vec![role as u8];
        bytes.extend_from_slice(&encode_terms(terms));
        let txn = self.db.begin_write().map_err(StoreError::from_redb)?;
        txn.open_table(BTC_CHANNELS_TABLE)
            .map_err(StoreError::from_redb)?
            .insert(&id, bytes.as_slice())
            .map_err(StoreError::from_redb)?;
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Every Bitcoin channel with our role in it.
    pub fn btc_channels(&self) -> Result<Vec<(BtcRole, ChannelTermsBtc)>, StoreError> {
        let mut all = Vec::new();
        for (_, bytes) in self.entries(BTC_CHANNELS_TABLE)? {
            let role = match bytes.first() {
                Some(0) => BtcRole::Payer,
                Some(1) => BtcRole::Payee,
                _ => return Err(StoreError::BtcRecord("btc channel: unknown role")),
            };
            let terms = decode_terms(&bytes[1..]).map_err(|e| StoreError::Btc(e.to_string()))?;
            all.push((role, terms));
        }
        Ok(all)
    }

    /// The highest amount we signed on a Bitcoin channel (zero if none yet).
    pub fn load_btc_signed(&self, id: &ChannelId) -> Result<Amount, StoreError> {
        match self.read(BTC_PAYER_TABLE, &id.0)? {
            Some(bytes) => decode_signed(&bytes),
            None => Ok(Amount::ZERO),
        }
    }

    /// The newest voucher we hold on a Bitcoin channel.
    pub fn load_btc_voucher(&self, id: &ChannelId) -> Result<Option<BtcVoucher>, StoreError> {
        self.read(BTC_PAYEE_TABLE, &id.0)?
            .map(|bytes| decode_voucher(&bytes).map_err(|e| StoreError::Btc(e.to_string())))
            .transpose()
    }

    /// Durably records that a channel is being closed cooperatively at `cumulative`.
    pub fn mark_btc_closing(&self, id: &ChannelId, cumulative: Amount) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from_redb)?;
        txn.open_table(BTC_CLOSING_TABLE)
            .map_err(StoreError::from_redb)?
            .insert(&id.0, cumulative.to_sat())
            .map_err(StoreError::from_redb)?;
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Channels being closed cooperatively, with the amount each close pays the payee.
    pub fn btc_closing(&self) -> Result<Vec<(ChannelId, Amount)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let table = txn
            .open_table(BTC_CLOSING_TABLE)
            .map_err(StoreError::from_redb)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(StoreError::from_redb)? {
            let (key, value) = entry.map_err(StoreError::from_redb)?;
            all.push((ChannelId(*key.value()), Amount::from_sat(value.value())));
        }
        Ok(all)
    }

    /// Durably marks an L402 token (by payment hash) redeemed; `false` if it already was.
    pub fn redeem_token(&self, payment_hash: &[u8; 32], now_secs: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from_redb)?;
        let fresh = {
            let mut table = txn
                .open_table(L402_USED_TABLE)
                .map_err(StoreError::from_redb)?;
            let fresh = table
                .get(payment_hash)
                .map_err(StoreError::from_redb)?
                .is_none();
            if fresh {
                table
                    .insert(payment_hash, now_secs)
                    .map_err(StoreError::from_redb)?;
            }
            fresh
        };
        txn.commit().map_err(StoreError::from_redb)?;
        Ok(fresh)
    }

    /// The on-chain wallet's stored state.
    pub fn load_wallet_changes(&self) -> Result<Option<WalletChanges>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let table = txn
            .open_table(BTC_WALLET_TABLE)
            .map_err(StoreError::from_redb)?;
        let Some(value) = table.get(WALLET_KEY).map_err(StoreError::from_redb)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| StoreError::Btc(format!("wallet state: {e}")))
    }

    /// Merges the wallet's staged changes into the stored state, durably.
    pub fn save_wallet_changes(&self, changes: WalletChanges) -> Result<(), StoreError> {
        let mut merged = self.load_wallet_changes()?.unwrap_or_default();
        merged.merge(changes);
        let bytes = serde_json::to_vec(&merged)
            .map_err(|e| StoreError::Btc(format!("wallet state: {e}")))?;
        let txn = self.db.begin_write().map_err(StoreError::from_redb)?;
        txn.open_table(BTC_WALLET_TABLE)
            .map_err(StoreError::from_redb)?
            .insert(WALLET_KEY, bytes.as_slice())
            .map_err(StoreError::from_redb)?;
        txn.commit().map_err(StoreError::from_redb)
    }

    pub(super) fn read(
        &self,
        table: TableDefinition<'_, &[u8; 32], &[u8]>,
        key: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let table = txn.open_table(table).map_err(StoreError::from_redb)?;
        Ok(table
            .get(key)
            .map_err(StoreError::from_redb)?
            .map(|value| value.value().to_vec()))
    }
}
