//! Lightning stream credits: each keysend that paid a gateway session, keyed by its payment
//! hash, recorded before ldk-node's event is acknowledged. The hash makes a replayed event
//! (after a crash between the record and the acknowledgement) a no-op, and the rows rebuild the
//! paid sessions when the gateway starts again.

use m2m_core::records::RecordError;
use redb::TableDefinition;

use super::{ChannelStore, StoreError};

/// Payment hash → [`LnCredit`].
pub(crate) const LN_CREDITS_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("ln_credits");

const CREDIT_VERSION: u8 = 1;

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
        if bytes[0] != CREDIT_VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: bytes[0],
                supported: CREDIT_VERSION,
            }
            .into());
        }
        let word = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(word)
        };
        Ok(Self {
            session: word(1),
            amount_msat: word(9),
            at_ms: word(17),
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
}
