//! Byte formats of a Bitcoin channel's stored terms and newest voucher. Fixed-size, versioned:
//! an unknown version or a wrong length is refused, never misread.

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{XOnlyPublicKey, schnorr};
use bitcoin::{Amount, OutPoint, Txid};

use super::BtcChannelError;
use super::channel::{BtcVoucher, ChannelFunding, ChannelTermsBtc};
use super::script::ChannelParties;

/// Format version of both records.
pub const BTC_RECORD_VERSION: u8 = 1;
/// Length of an encoded [`ChannelTermsBtc`].
pub const TERMS_LEN: usize = 1 + 32 + 32 + 4 + 32 + 4 + 8 + 8;
/// Length of an encoded [`BtcVoucher`].
pub const VOUCHER_LEN: usize = 1 + 8 + 64;

/// Encodes channel terms.
pub fn encode_terms(terms: &ChannelTermsBtc) -> [u8; TERMS_LEN] {
    let mut out = [0u8; TERMS_LEN];
    let mut at = Writer(&mut out, 0);
    at.put(&[BTC_RECORD_VERSION]);
    at.put(&terms.parties.payer.serialize());
    at.put(&terms.parties.payee.serialize());
    at.put(&terms.parties.expiry_height.to_le_bytes());
    at.put(terms.funding.outpoint.txid.as_byte_array());
    at.put(&terms.funding.outpoint.vout.to_le_bytes());
    at.put(&terms.funding.capacity.to_sat().to_le_bytes());
    at.put(&terms.close_fee.to_sat().to_le_bytes());
    out
}

/// Decodes channel terms.
pub fn decode_terms(bytes: &[u8]) -> Result<ChannelTermsBtc, BtcChannelError> {
    let mut r = Reader::new(bytes, TERMS_LEN)?;
    let key = |b: &[u8]| {
        XOnlyPublicKey::from_slice(b).map_err(|_| BtcChannelError::Record("bad x-only key"))
    };
    Ok(ChannelTermsBtc {
        parties: ChannelParties {
            payer: key(r.take(32))?,
            payee: key(r.take(32))?,
            expiry_height: r.u32(),
        },
        funding: ChannelFunding {
            outpoint: OutPoint {
                txid: Txid::from_byte_array(r.take(32).try_into().expect("32 bytes")),
                vout: r.u32(),
            },
            capacity: Amount::from_sat(r.u64()),
        },
        close_fee: Amount::from_sat(r.u64()),
    })
}

/// Encodes a voucher.
pub fn encode_voucher(voucher: &BtcVoucher) -> [u8; VOUCHER_LEN] {
    let mut out = [0u8; VOUCHER_LEN];
    let mut at = Writer(&mut out, 0);
    at.put(&[BTC_RECORD_VERSION]);
    at.put(&voucher.cumulative.to_sat().to_le_bytes());
    at.put(voucher.signature.as_ref());
    out
}

/// Decodes a voucher.
pub fn decode_voucher(bytes: &[u8]) -> Result<BtcVoucher, BtcChannelError> {
    let mut r = Reader::new(bytes, VOUCHER_LEN)?;
    let cumulative = Amount::from_sat(r.u64());
    let signature = schnorr::Signature::from_slice(r.take(64))
        .map_err(|_| BtcChannelError::Record("bad signature bytes"))?;
    Ok(BtcVoucher {
        cumulative,
        signature,
    })
}

struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0[self.1..self.1 + bytes.len()].copy_from_slice(bytes);
        self.1 += bytes.len();
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], len: usize) -> Result<Self, BtcChannelError> {
        match bytes {
            [BTC_RECORD_VERSION, rest @ ..] if bytes.len() == len => Ok(Self(rest)),
            [BTC_RECORD_VERSION, ..] => Err(BtcChannelError::Record("wrong length")),
            _ => Err(BtcChannelError::Record("unknown record version")),
        }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
}
