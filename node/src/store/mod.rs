//! The agent's channel store on redb, under the data directory's lock.
//!
//! Contract (the persistence half of the channel rules):
//! - the payer persists its record ("highest cumulative signed") before a voucher leaves;
//! - the payee persists an accepted voucher before the service is delivered;
//! - a write counts only once [`Ticket::wait`] returned `Ok`: it is then fsynced (redb's
//!   immediate durability), and group commit lets concurrent writes share that fsync;
//! - every record carries a version byte; unknown versions are refused, not misread.

pub mod btc;
mod group_commit;
pub mod ln;
pub mod mqtt;

use std::path::PathBuf;
use std::sync::Arc;

use m2m_contracts::btc::BtcVoucher;
use m2m_contracts::btc::records::encode_voucher;
use m2m_core::ChannelId;
use m2m_core::payee::PayeeRecord;
use m2m_core::payer::PayerRecord;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use group_commit::{GroupCommitter, MAX_BATCH, Ticket};

use crate::datadir::DataDir;

/// File name of the channel store inside a data directory.
pub const STORE_FILE: &str = "channels.redb";
pub(crate) const PAYER_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("payer_channels");
pub(crate) const PAYEE_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("payee_channels");
/// What a channel's records do not hold but settling needs (e.g. the on-chain config), written
/// once when the channel is first seen. Opaque bytes to the store.
const TERMS_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("channel_terms");
/// What each budget spent (rolling windows), keyed by a hash of the row's name.
const BUDGET_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("budgets");

/// A table's rows as (key, value).
pub(crate) type Entries = Vec<([u8; 32], Vec<u8>)>;

/// A store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, a second opener).
    #[error("channel store: {0}")]
    Database(Arc<redb::Error>),
    /// A stored record does not decode (damaged, or from another format version).
    #[error("channel store: {0}")]
    Record(#[from] m2m_core::records::RecordError),
    /// A Bitcoin channel or wallet record does not decode.
    #[error("channel store: {0}")]
    BtcRecord(&'static str),
    /// A Bitcoin channel or wallet record is damaged.
    #[error("channel store: {0}")]
    Btc(String),
    /// The committer thread stopped.
    #[error("channel store committer stopped; the write may not be durable")]
    CommitterGone,
    /// Opening the file failed.
    #[error("opening channel store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<redb::DatabaseError>,
    },
}

impl StoreError {
    fn from_redb(error: impl Into<redb::Error>) -> Self {
        StoreError::Database(Arc::new(error.into()))
    }
}

/// A record to write.
#[derive(Debug, Clone)]
pub enum RecordWrite {
    /// The payer side of a channel.
    Payer(ChannelId, PayerRecord),
    /// The payee side of a channel.
    Payee(ChannelId, PayeeRecord),
    /// The payer side of a Bitcoin channel: the highest cumulative amount signed.
    BtcPayer(ChannelId, bitcoin::Amount),
    /// The payee side of a Bitcoin channel: the newest voucher.
    BtcPayee(ChannelId, BtcVoucher),
    /// A budget row (see [`crate::budget`]): keyed by a hash of its name, carrying the name.
    Budget(ChannelId, Vec<u8>),
    /// A Lightning stream credit, keyed by the payment hash.
    LnCredit(ChannelId, ln::LnCredit),
    /// A hold invoice of a priced topic, keyed by its payment hash.
    LnHold(ChannelId, ln::HoldRecord),
}

impl RecordWrite {
    fn channel(&self) -> ChannelId {
        match self {
            RecordWrite::Payer(id, _)
            | RecordWrite::Payee(id, _)
            | RecordWrite::BtcPayer(id, _)
            | RecordWrite::BtcPayee(id, _)
            | RecordWrite::Budget(id, _)
            | RecordWrite::LnCredit(id, _)
            | RecordWrite::LnHold(id, _) => *id,
        }
    }

    /// Which table the record goes to, as a small number (one per variant).
    fn kind(&self) -> usize {
        match self {
            RecordWrite::Payer(..) => 0,
            RecordWrite::Payee(..) => 1,
            RecordWrite::BtcPayer(..) => 2,
            RecordWrite::BtcPayee(..) => 3,
            RecordWrite::Budget(..) => 4,
            RecordWrite::LnCredit(..) => 5,
            RecordWrite::LnHold(..) => 6,
        }
    }

    fn table(&self) -> TableDefinition<'static, &'static [u8; 32], &'static [u8]> {
        match self {
            RecordWrite::Payer(..) => PAYER_TABLE,
            RecordWrite::Payee(..) => PAYEE_TABLE,
            RecordWrite::BtcPayer(..) => btc::BTC_PAYER_TABLE,
            RecordWrite::BtcPayee(..) => btc::BTC_PAYEE_TABLE,
            RecordWrite::Budget(..) => BUDGET_TABLE,
            RecordWrite::LnCredit(..) => ln::LN_CREDITS_TABLE,
            RecordWrite::LnHold(..) => ln::LN_HOLDS_TABLE,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            RecordWrite::Payer(_, record) => m2m_core::records::encode_payer(record).to_vec(),
            RecordWrite::Payee(_, record) => m2m_core::records::encode_payee(record).to_vec(),
            RecordWrite::BtcPayer(_, signed) => btc::encode_signed(*signed).to_vec(),
            RecordWrite::BtcPayee(_, voucher) => encode_voucher(voucher).to_vec(),
            RecordWrite::Budget(_, row) => row.clone(),
            RecordWrite::LnCredit(_, credit) => credit.encode().to_vec(),
            RecordWrite::LnHold(_, hold) => hold.encode(),
        }
    }
}

/// The channel store of one data directory. Clones share one database and one committer, so
/// every leg of an agent writes through the same group commit; the last clone to drop finishes
/// the queued writes and closes the file.
#[derive(Debug, Clone)]
pub struct ChannelStore {
    db: Arc<Database>,
    committer: Arc<GroupCommitter>,
}

impl ChannelStore {
    /// Opens (or creates) `<data dir>/channels.redb`. The data directory's lock guarantees this
    /// process is the only writer.
    pub fn open(data_dir: &DataDir) -> Result<Self, StoreError> {
        let path = data_dir.path().join(STORE_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path,
            source: Arc::new(source),
        })?;
        let txn = db.begin_write().map_err(StoreError::from_redb)?;
        txn.open_table(PAYER_TABLE).map_err(StoreError::from_redb)?;
        txn.open_table(PAYEE_TABLE).map_err(StoreError::from_redb)?;
        txn.open_table(TERMS_TABLE).map_err(StoreError::from_redb)?;
        txn.open_table(ln::LN_CREDITS_TABLE)
            .map_err(StoreError::from_redb)?;
        txn.open_table(ln::LN_HOLDS_TABLE)
            .map_err(StoreError::from_redb)?;
        txn.open_table(mqtt::MQTT_ANSWERS_TABLE)
            .map_err(StoreError::from_redb)?;
        txn.open_table(BUDGET_TABLE)
            .map_err(StoreError::from_redb)?;
        btc::create_tables(&txn)?;
        txn.commit().map_err(StoreError::from_redb)?;
        let db = Arc::new(db);
        Ok(Self {
            committer: Arc::new(GroupCommitter::start(db.clone())),
            db,
        })
    }

    /// Queues a write; durable once the ticket resolves.
    pub fn submit(&self, write: RecordWrite) -> Ticket {
        self.committer.submit(write)
    }

    /// Writes and waits until durable.
    pub fn persist(&self, write: RecordWrite) -> Result<(), StoreError> {
        self.submit(write).wait()
    }

    /// The payer record of a channel, if any.
    pub fn load_payer(&self, id: &ChannelId) -> Result<Option<PayerRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let table = txn.open_table(PAYER_TABLE).map_err(StoreError::from_redb)?;
        match table.get(&id.0).map_err(StoreError::from_redb)? {
            Some(value) => Ok(Some(m2m_core::records::decode_payer(value.value())?)),
            None => Ok(None),
        }
    }

    /// The payee record of a channel, if any.
    pub fn load_payee(&self, id: &ChannelId) -> Result<Option<PayeeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let table = txn.open_table(PAYEE_TABLE).map_err(StoreError::from_redb)?;
        match table.get(&id.0).map_err(StoreError::from_redb)? {
            Some(value) => Ok(Some(m2m_core::records::decode_payee(*id, value.value())?)),
            None => Ok(None),
        }
    }

    /// Durably records a channel's terms (idempotent: the same id always has the same terms).
    /// Call before the channel's first record is acknowledged.
    pub fn save_terms(&self, id: &ChannelId, terms: &[u8]) -> Result<(), StoreError> {
        self.write_row(TERMS_TABLE, &id.0, terms)
    }

    /// Every channel's saved terms.
    pub fn all_terms(&self) -> Result<Vec<(ChannelId, Vec<u8>)>, StoreError> {
        Ok(self
            .entries(TERMS_TABLE)?
            .into_iter()
            .map(|(key, value)| (ChannelId(key), value))
            .collect())
    }

    /// Every (key, value) of `table`, read in one transaction.
    pub(crate) fn entries(
        &self,
        table: TableDefinition<'_, &[u8; 32], &[u8]>,
    ) -> Result<Entries, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let table = txn.open_table(table).map_err(StoreError::from_redb)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(StoreError::from_redb)? {
            let (key, value) = entry.map_err(StoreError::from_redb)?;
            all.push((*key.value(), value.value().to_vec()));
        }
        Ok(all)
    }

    /// Writes one row of `table` in its own durable transaction (for rare writes that need not
    /// share the group commit).
    pub(crate) fn write_row(
        &self,
        table: TableDefinition<'_, &[u8; 32], &[u8]>,
        key: &[u8; 32],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from_redb)?;
        txn.open_table(table)
            .map_err(StoreError::from_redb)?
            .insert(key, value)
            .map_err(StoreError::from_redb)?;
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Removes the rows of `keys` from `table` in one durable transaction (missing ones are
    /// fine).
    pub(crate) fn remove_all(
        &self,
        table: TableDefinition<'_, &[u8; 32], &[u8]>,
        keys: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(StoreError::from_redb)?;
        {
            let mut table = txn.open_table(table).map_err(StoreError::from_redb)?;
            for key in keys {
                table.remove(key).map_err(StoreError::from_redb)?;
            }
        }
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Every budget row as (name, data); rows that do not parse are skipped with a warning.
    pub fn budget_rows(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut all = Vec::new();
        for (_, value) in self.entries(BUDGET_TABLE)? {
            match crate::budget::split_row(&value) {
                Some(row) => all.push(row),
                None => tracing::warn!("skipping an unreadable budget row"),
            }
        }
        Ok(all)
    }
}
