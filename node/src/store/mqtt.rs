//! Answers to a buyer's priced-topic payments that came when no purchase was waiting for them
//! (after its timeout, or while its process was down and the broker kept them in its
//! persistent session): kept here, keyed by a hash of the key id, before the broker is told
//! they arrived, so a restart never loses a key that was paid for. Buying the reading again
//! opens it from here with no second payment, and removes the row. At most [`MAX_ANSWERS`] are
//! kept (the oldest go first).

use m2m_core::records::RecordError;
use redb::TableDefinition;
use sha2::{Digest, Sha256};

use super::{ChannelStore, StoreError};

/// sha256(key id) → [`KeptAnswer`].
pub(crate) const MQTT_ANSWERS_TABLE: TableDefinition<'_, &[u8; 32], &[u8]> =
    TableDefinition::new("mqtt_answers");

const ANSWER_VERSION: u8 = 1;
/// Most answers kept.
pub const MAX_ANSWERS: usize = 1024;

/// A seller's answer to a payment for one reading's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    /// The key id it pays for.
    pub key_id: Vec<u8>,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
    /// The `PAYMENT-RESPONSE` it carried, as sent.
    pub settlement: Option<String>,
    /// It answered a tick.
    pub by_tick: bool,
    /// When it arrived (Unix seconds).
    pub at_secs: u64,
}

fn row_key(key_id: &[u8]) -> [u8; 32] {
    Sha256::digest(key_id).into()
}

impl KeptAnswer {
    fn encode(&self) -> Vec<u8> {
        let settlement = self.settlement.as_deref().unwrap_or_default().as_bytes();
        let mut out = Vec::with_capacity(16 + self.key_id.len() + self.wrapped.len());
        out.push(ANSWER_VERSION);
        out.push(u8::from(self.by_tick) | (u8::from(self.settlement.is_some()) << 1));
        out.extend_from_slice(&self.at_secs.to_be_bytes());
        for part in [&self.key_id[..], &self.wrapped[..], settlement] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::from(RecordError::Corrupt("kept mqtt answer"));
        let (&version, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if version != ANSWER_VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: version,
                supported: ANSWER_VERSION,
            }
            .into());
        }
        let (&flags, rest) = rest.split_first().ok_or_else(corrupt)?;
        let (at, mut rest) = rest.split_at_checked(8).ok_or_else(corrupt)?;
        let mut part = || -> Result<Vec<u8>, StoreError> {
            let (len, tail) = rest.split_at_checked(4).ok_or_else(corrupt)?;
            let len = u32::from_be_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
            let (value, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
            rest = tail;
            Ok(value.to_vec())
        };
        let (key_id, wrapped, settlement) = (part()?, part()?, part()?);
        if !rest.is_empty() || flags > 3 {
            return Err(corrupt());
        }
        let settlement = match flags & 2 {
            0 => None,
            _ => Some(String::from_utf8(settlement).map_err(|_| corrupt())?),
        };
        Ok(Self {
            key_id,
            wrapped,
            settlement,
            by_tick: flags & 1 == 1,
            at_secs: u64::from_be_bytes(at.try_into().map_err(|_| corrupt())?),
        })
    }
}

impl ChannelStore {
    /// Keeps `answer` durably (replacing one for the same key id); beyond [`MAX_ANSWERS`] the
    /// oldest is dropped.
    pub fn keep_mqtt_answer(&self, answer: &KeptAnswer) -> Result<(), StoreError> {
        let mut kept = self.mqtt_answers()?;
        let mut stale = Vec::new();
        if kept.len() >= MAX_ANSWERS {
            kept.sort_by_key(|kept| kept.at_secs);
            let excess = kept.len() + 1 - MAX_ANSWERS;
            stale.extend(kept.iter().take(excess).map(|kept| row_key(&kept.key_id)));
        }
        self.remove_all(MQTT_ANSWERS_TABLE, &stale)?;
        self.write_row(
            MQTT_ANSWERS_TABLE,
            &row_key(&answer.key_id),
            &answer.encode(),
        )
    }

    /// Every kept answer; rows that do not decode are skipped with a warning.
    pub fn mqtt_answers(&self) -> Result<Vec<KeptAnswer>, StoreError> {
        let mut all = Vec::new();
        for (_, value) in self.entries(MQTT_ANSWERS_TABLE)? {
            match KeptAnswer::decode(&value) {
                Ok(answer) => all.push(answer),
                Err(error) => tracing::warn!(%error, "skipping a kept MQTT answer"),
            }
        }
        Ok(all)
    }

    /// Forgets the answer for `key_id` (it was used).
    pub fn forget_mqtt_answer(&self, key_id: &[u8]) -> Result<(), StoreError> {
        self.remove_all(MQTT_ANSWERS_TABLE, &[row_key(key_id)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reads_back_and_damage_is_refused() {
        let answer = KeptAnswer {
            key_id: b"k-7".to_vec(),
            wrapped: vec![9; 80],
            settlement: Some("eyJzdWNjZXNzIjp0cnVlfQ".into()),
            by_tick: true,
            at_secs: 1_800_000_000,
        };
        let bytes = answer.encode();
        assert_eq!(KeptAnswer::decode(&bytes).unwrap(), answer);
        let without = KeptAnswer {
            settlement: None,
            by_tick: false,
            ..answer.clone()
        };
        assert_eq!(KeptAnswer::decode(&without.encode()).unwrap(), without);
        assert!(KeptAnswer::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(KeptAnswer::decode(&longer).is_err());
        let mut version = bytes;
        version[0] = 2;
        assert!(KeptAnswer::decode(&version).is_err());
    }
}
