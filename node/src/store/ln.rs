//! Lightning records.
//!
//! - Stream credits: each keysend that paid a gateway session, keyed by its payment hash,
//!   recorded before ldk-node's event is acknowledged. The hash makes a replayed event (after a
//!   crash between the record and the acknowledgement) a no-op, and the rows rebuild the paid
//!   sessions when the gateway starts again.
//! - Hold invoices of priced topics ([`HoldRecord`]): recorded before the invoice is handed out,
//!   so a payment that arrives after a restart is still claimed. A record holds the invoice's
//!   nonce, not its preimage: the preimage is derived again from a secret of the device seed.

use m2m_core::records::RecordError;
use redb::TableDefinition;

use super::{ChannelStore, StoreError};

/// Payment hash → [`LnCredit`].
pub(crate) const LN_CREDITS_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("ln_credits");

const CREDIT_VERSION: u8 = 1;

/// Payment hash → [`HoldRecord`].
pub(crate) const LN_HOLDS_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("ln_holds");

const HOLD_VERSION: u8 = 1;
/// The fixed part; the topic follows.
const HOLD_LEN: usize = 1 + 16 + 8 + 8 + 1;

/// A hold invoice handed out for a reading key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    /// The nonce its preimage is derived from.
    pub nonce: [u8; 16],
    /// What it asks, msat.
    pub amount_msat: u64,
    /// When it stops being payable (Unix seconds).
    pub expires_at_secs: u64,
    /// Whether the payment was claimed (the key sold).
    pub claimed: bool,
    /// The priced topic it sells a key of.
    pub topic: String,
}

impl HoldRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HOLD_LEN];
        out[0] = HOLD_VERSION;
        out[1..17].copy_from_slice(&self.nonce);
        out[17..25].copy_from_slice(&self.amount_msat.to_be_bytes());
        out[25..33].copy_from_slice(&self.expires_at_secs.to_be_bytes());
        out[33] = u8::from(self.claimed);
        out.extend_from_slice(self.topic.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (bytes, topic) = bytes
            .split_at_checked(HOLD_LEN)
            .ok_or(RecordError::Corrupt("ln hold length"))?;
        check_version(bytes[0], HOLD_VERSION)?;
        let topic = std::str::from_utf8(topic)
            .map_err(|_| RecordError::Corrupt("ln hold topic"))?
            .to_owned();
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&bytes[1..17]);
        Ok(Self {
            nonce,
            amount_msat: word(bytes, 17),
            expires_at_secs: word(bytes, 25),
            claimed: match bytes[33] {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Corrupt("ln hold flag").into()),
            },
            topic,
        })
    }
}

fn check_version(found: u8, supported: u8) -> Result<(), StoreError> {
    if found == supported {
        Ok(())
    } else {
        Err(RecordError::UnsupportedVersion { found, supported }.into())
    }
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// One payment credited to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LnCredit {
    /// The gateway session it paid.
    pub session: u64,
    /// What arrived, msat.
    pub amount_msat: u64,
    /// When it was credited (Unix milliseconds).
    pub at_ms: u64,
}

impl LnCredit {
    pub(crate) fn encode(&self) -> [u8; 25] {
        let mut out = [0u8; 25];
        out[0] = CREDIT_VERSION;
        out[1..9].copy_from_slice(&self.session.to_be_bytes());
        out[9..17].copy_from_slice(&self.amount_msat.to_be_bytes());
        out[17..25].copy_from_slice(&self.at_ms.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let bytes: &[u8; 25] = bytes
            .try_into()
            .map_err(|_| RecordError::Corrupt("ln credit length"))?;
        check_version(bytes[0], CREDIT_VERSION)?;
        Ok(Self {
            session: word(bytes, 1),
            amount_msat: word(bytes, 9),
            at_ms: word(bytes, 17),
        })
    }
}

impl ChannelStore {
    /// Whether the payment with `hash` was credited already.
    pub fn ln_credited(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.read(LN_CREDITS_TABLE, hash)?.is_some())
    }

    /// Every credit, in no particular order.
    pub fn ln_credits(&self) -> Result<Vec<LnCredit>, StoreError> {
        self.entries(LN_CREDITS_TABLE)?
            .iter()
            .map(|(_, value)| LnCredit::decode(value))
            .collect()
    }

    /// The hold invoice for payment hash `hash`, if one was handed out here.
    pub fn ln_hold(&self, hash: &[u8; 32]) -> Result<Option<HoldRecord>, StoreError> {
        self.read(LN_HOLDS_TABLE, hash)?
            .map(|value| HoldRecord::decode(&value))
            .transpose()
    }

    /// Every hold invoice still kept: (payment hash, record).
    pub fn ln_holds(&self) -> Result<Vec<([u8; 32], HoldRecord)>, StoreError> {
        self.entries(LN_HOLDS_TABLE)?
            .iter()
            .map(|(hash, value)| Ok((*hash, HoldRecord::decode(value)?)))
            .collect()
    }

    /// Forgets hold invoices that expired before `before_secs` (no payment for them can arrive
    /// any more); returns how many.
    pub fn prune_ln_holds(&self, before_secs: u64) -> Result<usize, StoreError> {
        let stale: Vec<[u8; 32]> = self
            .ln_holds()?
            .into_iter()
            .filter(|(_, hold)| hold.expires_at_secs < before_secs)
            .map(|(hash, _)| hash)
            .collect();
        self.remove_all(LN_HOLDS_TABLE, &stale)?;
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credit_reads_back_and_bad_bytes_are_refused() {
        let credit = LnCredit {
            session: 7,
            amount_msat: 1_000,
            at_ms: 99,
        };
        assert_eq!(LnCredit::decode(&credit.encode()).unwrap(), credit);
        assert!(LnCredit::decode(&[2; 25]).is_err());
        assert!(LnCredit::decode(&[1; 24]).is_err());
    }

    #[test]
    fn a_hold_reads_back_and_bad_bytes_are_refused() {
        let hold = HoldRecord {
            nonce: [4; 16],
            amount_msat: 30_000,
            expires_at_secs: 1_800_000_000,
            claimed: true,
            topic: "a/b".into(),
        };
        assert_eq!(HoldRecord::decode(&hold.encode()).unwrap(), hold);
        let mut topic = hold.encode();
        topic.push(0xff);
        assert!(HoldRecord::decode(&topic).is_err(), "not UTF-8");
        let mut flag = hold.encode();
        flag[33] = 2;
        assert!(HoldRecord::decode(&flag).is_err());
        let mut version = hold.encode();
        version[0] = 9;
        assert!(HoldRecord::decode(&version).is_err());
        assert!(HoldRecord::decode(&[1; 33]).is_err());
    }
}
