//! Binary encodings of the channel records (what a store keeps per channel).
//!
//! Fixed layouts, big-endian, first byte = record version, so a reader can refuse what it does
//! not know instead of misreading it. Written by hand: the records are a handful of integers and
//! a voucher; a general serializer would add a dependency and an indirection on the hot path.

use crate::payee::PayeeRecord;
use crate::payer::PayerRecord;
use crate::voucher::{ChannelId, Signature65, Voucher};

/// A stored record cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes do not have the record's layout.
    Corrupt(&'static str),
    /// The record was written by another format version.
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecordError::Corrupt(what) => write!(f, "corrupted record: {what}"),
            RecordError::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "record version {found}; this build reads version {supported}"
                )
            }
        }
    }
}

impl core::error::Error for RecordError {}

/// Encoded size of a [`PayerRecord`].
pub const PAYER_RECORD_LEN: usize = 1 + 16 * 3;
/// Encoded size of a [`PayeeRecord`].
pub const PAYEE_RECORD_LEN: usize = 1 + 16 * 3 + 1 + 16 + 65 + 1 + 8 + 8;

/// Encodes a payer record.
pub fn encode_payer(record: &PayerRecord) -> [u8; PAYER_RECORD_LEN] {
    let mut out = [0u8; PAYER_RECORD_LEN];
    out[0] = record.version;
    out[1..17].copy_from_slice(&record.deposit_units.to_be_bytes());
    out[17..33].copy_from_slice(&record.charged_units.to_be_bytes());
    out[33..49].copy_from_slice(&record.highest_signed_units.to_be_bytes());
    out
}

/// Decodes a payer record.
pub fn decode_payer(bytes: &[u8]) -> Result<PayerRecord, RecordError> {
    let bytes: &[u8; PAYER_RECORD_LEN] = bytes
        .try_into()
        .map_err(|_| RecordError::Corrupt("payer record length"))?;
    check_version(bytes[0], crate::payer::PAYER_RECORD_VERSION)?;
    Ok(PayerRecord {
        version: bytes[0],
        deposit_units: u128_at(bytes, 1),
        charged_units: u128_at(bytes, 17),
        highest_signed_units: u128_at(bytes, 33),
    })
}

/// Encodes a payee record; the voucher's channel id is the record's key, so it is not repeated.
pub fn encode_payee(record: &PayeeRecord) -> [u8; PAYEE_RECORD_LEN] {
    let mut out = [0u8; PAYEE_RECORD_LEN];
    out[0] = record.version;
    out[1..17].copy_from_slice(&record.deposit_units.to_be_bytes());
    out[17..33].copy_from_slice(&record.charged_units.to_be_bytes());
    out[33..49].copy_from_slice(&record.claimed_units.to_be_bytes());
    if let Some(voucher) = record.latest {
        out[49] = 1;
        out[50..66].copy_from_slice(&voucher.max_claimable_units.to_be_bytes());
        out[66..131].copy_from_slice(&voucher.signature.0);
    }
    if let Some(since) = record.withdraw_pending_since {
        out[131] = 1;
        out[132..140].copy_from_slice(&since.to_be_bytes());
    }
    out[140..148].copy_from_slice(&record.last_claim_at.to_be_bytes());
    out
}

/// Decodes a payee record stored under `channel_id`.
pub fn decode_payee(channel_id: ChannelId, bytes: &[u8]) -> Result<PayeeRecord, RecordError> {
    let bytes: &[u8; PAYEE_RECORD_LEN] = bytes
        .try_into()
        .map_err(|_| RecordError::Corrupt("payee record length"))?;
    check_version(bytes[0], crate::payee::PAYEE_RECORD_VERSION)?;
    let latest = match bytes[49] {
        0 => None,
        1 => {
            let mut signature = [0u8; 65];
            signature.copy_from_slice(&bytes[66..131]);
            Some(Voucher {
                channel_id,
                max_claimable_units: u128_at(bytes, 50),
                signature: Signature65(signature),
            })
        }
        _ => return Err(RecordError::Corrupt("payee voucher flag")),
    };
    let withdraw_pending_since = match bytes[131] {
        0 => None,
        1 => Some(u64_at(bytes, 132)),
        _ => return Err(RecordError::Corrupt("payee withdraw flag")),
    };
    Ok(PayeeRecord {
        version: bytes[0],
        deposit_units: u128_at(bytes, 1),
        charged_units: u128_at(bytes, 17),
        claimed_units: u128_at(bytes, 33),
        latest,
        withdraw_pending_since,
        last_claim_at: u64_at(bytes, 140),
    })
}

fn check_version(found: u8, supported: u8) -> Result<(), RecordError> {
    if found == supported {
        Ok(())
    } else {
        Err(RecordError::UnsupportedVersion { found, supported })
    }
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    let mut buf = [0u8; 16];
    buf.copy_from_slice(&bytes[at..at + 16]);
    u128::from_be_bytes(buf)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(buf)
}
