//! The compact binary wire form of vouchers and ticks (beside the x402 JSON form the HTTP layer
//! speaks): a voucher in ~70 bytes, a tick in ~35.
//!
//! ```text
//! voucher:    0x01 | channel_ref: varint u32 | max_claimable: varint u128 | signature: 64 (EIP-2098)
//! ticks:      0x02 | channel_ref: varint u32 | count: varint u32 | preimage: 32
//! commitment: 0x03 | channel_ref: varint u32 | length: varint u32 | tick_price: varint u128 | anchor: 32
//! ```
//!
//! `channel_ref` is a small number the payee assigns to a channel when the stream opens, so the
//! 32-byte channel id is not repeated on every frame; signatures still cover the full id. Varints
//! are unsigned LEB128 and must be minimal, so every value has exactly one encoding. Decoding
//! never panics: every malformed input is a [`DecodeError`].

use alloc::vec::Vec;

use crate::voucher::{ChannelId, Signature65, Voucher};

const TAG_VOUCHER: u8 = 0x01;
const TAG_TICKS: u8 = 0x02;
const TAG_COMMITMENT: u8 = 0x03;

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A cumulative voucher.
    Voucher(VoucherFrame),
    /// One preimage proving `count` ticks.
    Ticks(TicksFrame),
    /// A tick-chain commitment.
    Commitment(CommitmentFrame),
}

/// A voucher on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherFrame {
    /// Payee-assigned channel number.
    pub channel_ref: u32,
    /// Cumulative ceiling in base units.
    pub max_claimable_units: u128,
    /// The payer's signature.
    pub signature: Signature65,
}

impl VoucherFrame {
    /// The voucher, once `channel_ref` is resolved to its channel id.
    pub fn into_voucher(self, channel_id: ChannelId) -> Voucher {
        Voucher {
            channel_id,
            max_claimable_units: self.max_claimable_units,
            signature: self.signature,
        }
    }
}

/// Ticks on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicksFrame {
    /// Payee-assigned channel number.
    pub channel_ref: u32,
    /// How many ticks the preimage proves (≥ 1).
    pub count: u32,
    /// The revealed link.
    pub preimage: [u8; 32],
}

/// A tick-chain commitment on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitmentFrame {
    /// Payee-assigned channel number.
    pub channel_ref: u32,
    /// Chain length.
    pub length: u32,
    /// Price per tick in base units.
    pub tick_price_units: u128,
    /// The anchor `c_n`.
    pub anchor: [u8; 32],
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended early.
    Truncated,
    /// The first byte names no known frame.
    UnknownTag(u8),
    /// A varint does not fit its type.
    VarintOverflow,
    /// A varint has redundant trailing zero groups.
    NonMinimalVarint,
    /// Bytes follow a complete frame.
    TrailingBytes(usize),
    /// A tick frame with a count of zero.
    ZeroTickCount,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("frame truncated"),
            DecodeError::UnknownTag(tag) => write!(f, "unknown frame tag {tag:#04x}"),
            DecodeError::VarintOverflow => f.write_str("varint overflows its type"),
            DecodeError::NonMinimalVarint => f.write_str("varint is not minimally encoded"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the frame"),
            DecodeError::ZeroTickCount => f.write_str("tick count of zero"),
        }
    }
}

impl core::error::Error for DecodeError {}

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Voucher(v) => {
                out.push(TAG_VOUCHER);
                put_varint(out, u128::from(v.channel_ref));
                put_varint(out, v.max_claimable_units);
                out.extend_from_slice(&v.signature.to_compact());
            }
            Frame::Ticks(t) => {
                out.push(TAG_TICKS);
                put_varint(out, u128::from(t.channel_ref));
                put_varint(out, u128::from(t.count));
                out.extend_from_slice(&t.preimage);
            }
            Frame::Commitment(c) => {
                out.push(TAG_COMMITMENT);
                put_varint(out, u128::from(c.channel_ref));
                put_varint(out, u128::from(c.length));
                put_varint(out, c.tick_price_units);
                out.extend_from_slice(&c.anchor);
            }
        }
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one frame from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let mut reader = Reader { bytes, at: 0 };
        let frame = match reader.byte()? {
            TAG_VOUCHER => Frame::Voucher(VoucherFrame {
                channel_ref: reader.varint_u32()?,
                max_claimable_units: reader.varint()?,
                signature: Signature65::from_compact(&reader.array::<64>()?),
            }),
            TAG_TICKS => {
                let channel_ref = reader.varint_u32()?;
                let count = reader.varint_u32()?;
                if count == 0 {
                    return Err(DecodeError::ZeroTickCount);
                }
                Frame::Ticks(TicksFrame {
                    channel_ref,
                    count,
                    preimage: reader.array::<32>()?,
                })
            }
            TAG_COMMITMENT => Frame::Commitment(CommitmentFrame {
                channel_ref: reader.varint_u32()?,
                length: reader.varint_u32()?,
                tick_price_units: reader.varint()?,
                anchor: reader.array::<32>()?,
            }),
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        match bytes.len() - reader.at {
            0 => Ok(frame),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(byte)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.at.checked_add(N).ok_or(DecodeError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn varint(&mut self) -> Result<u128, DecodeError> {
        let mut value: u128 = 0;
        for group in 0..19 {
            let byte = self.byte()?;
            let bits = u128::from(byte & 0x7f);
            if group == 18 && bits > 0x03 {
                return Err(DecodeError::VarintOverflow); // 18 groups hold 126 bits; 2 more fit
            }
            value |= bits << (7 * group);
            if byte & 0x80 == 0 {
                if byte == 0 && group > 0 {
                    return Err(DecodeError::NonMinimalVarint);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    fn varint_u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::VarintOverflow)
    }
}
