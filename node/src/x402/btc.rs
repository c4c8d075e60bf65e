//! `btc-channel`: our x402-style scheme for Taproot script channels on `bip122:` networks (an
//! extension; x402 itself names no Bitcoin scheme). Documented in `docs/protocols/btc-channel.md`.
//!
//! - Offer (`accepts[]`): `scheme` "btc-channel", `network` "bip122:<genesis prefix>", `amount`
//!   the price in satoshi, `asset` "BTC", `payTo` the payee's x-only key (hex); `extra` carries
//!   the payee's rules for new channels ([`BtcOfferExtra`]).
//! - Payment (`payload`): the channel terms (so a seller that restarted, or sees the channel for
//!   the first time, can check the funding on chain) and the voucher ([`BtcChannelPayload`]).
//! - Refusal: a 402 whose `error` is one of the codes below; for a cumulative mismatch the offer's
//!   `extra.chargedAmount` says what the seller holds, so the payer can sign the next voucher
//!   from there.
//! - Receipt (`PAYMENT-RESPONSE.extra`): `channelId`, `chargedAmount`.

use bitcoin::secp256k1::{XOnlyPublicKey, schnorr};
use bitcoin::{Amount, FeeRate, OutPoint, Txid};
use m2m_contracts::btc::{BtcVoucher, ChannelFunding, ChannelParties, ChannelTermsBtc};
use serde::{Deserialize, Serialize};

/// The scheme's name.
pub const BTC_CHANNEL: &str = "btc-channel";
/// The asset name in offers.
pub const BTC_ASSET: &str = "BTC";

/// The voucher signature is not the payer's over this commitment.
pub const BTC_SIGNATURE: &str = "invalid_btc_channel_signature";
/// The voucher is not `charged + price` (the offer's `extra.chargedAmount` says the charged total).
pub const BTC_CUMULATIVE_MISMATCH: &str = "invalid_btc_channel_cumulative_amount_mismatch";
/// The voucher exceeds what the channel can pay.
pub const BTC_EXCEEDS_CAPACITY: &str = "invalid_btc_channel_cumulative_exceeds_capacity";
/// The funding output is missing, different, or not confirmed enough.
pub const BTC_FUNDING: &str = "invalid_btc_channel_funding";
/// The channel terms are not acceptable (another payee key, too close to expiry, low close fee).
pub const BTC_TERMS: &str = "invalid_btc_channel_terms";

/// The channel is being closed cooperatively: open a new one.
pub const BTC_CLOSING: &str = "invalid_btc_channel_closing";
/// Where a payee takes cooperative close requests (POST, JSON).
pub const CLOSE_PATH: &str = "/btc-channel/close";

/// A cooperative close request on the wire (`POST /btc-channel/close`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseRequestWire {
    /// Channel id, hex.
    pub channel_id: String,
    /// The payer's MuSig2 public nonce, hex (66 bytes).
    pub payer_nonce: String,
    /// The payer's BIP-340 signature over the close request digest, hex.
    pub payer_signature: String,
}

/// The payee's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseAnswerWire {
    /// What the close pays the payee, satoshi.
    pub cumulative_amount: String,
    /// The payee's public nonce, hex.
    pub payee_nonce: String,
    /// The payee's partial signature, hex (32 bytes).
    pub payee_partial_signature: String,
}

impl CloseRequestWire {
    /// From a request.
    pub fn from_request(request: &crate::btc::close::CloseRequest) -> Self {
        use musig2::BinaryEncoding;
        Self {
            channel_id: hex(&request.channel_id),
            payer_nonce: hex(&request.payer_nonce.to_bytes()),
            payer_signature: hex(request.payer_signature.as_ref()),
        }
    }

    /// To a request.
    pub fn to_request(&self) -> Result<crate::btc::close::CloseRequest, BtcWireError> {
        let channel_id = unhex(&self.channel_id)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(BtcWireError("channel id"))?;
        let payer_nonce = unhex(&self.payer_nonce)
            .and_then(|b| musig2::PubNonce::from_bytes(&b).ok())
            .ok_or(BtcWireError("payer nonce"))?;
        let payer_signature = unhex(&self.payer_signature)
            .and_then(|b| schnorr::Signature::from_slice(&b).ok())
            .ok_or(BtcWireError("payer signature"))?;
        Ok(crate::btc::close::CloseRequest {
            channel_id,
            payer_nonce,
            payer_signature,
        })
    }
}

impl CloseAnswerWire {
    /// From an answer.
    pub fn from_answer(answer: &m2m_contracts::btc::musig::PayeeCloseSignature) -> Self {
        use musig2::BinaryEncoding;
        Self {
            cumulative_amount: answer.cumulative.to_sat().to_string(),
            payee_nonce: hex(&answer.nonce.to_bytes()),
            payee_partial_signature: hex(&answer.partial.serialize()),
        }
    }

    /// To an answer.
    pub fn to_answer(
        &self,
    ) -> Result<m2m_contracts::btc::musig::PayeeCloseSignature, BtcWireError> {
        Ok(m2m_contracts::btc::musig::PayeeCloseSignature {
            cumulative: sats(&self.cumulative_amount, "cumulative amount")?,
            nonce: unhex(&self.payee_nonce)
                .and_then(|b| musig2::PubNonce::from_bytes(&b).ok())
                .ok_or(BtcWireError("payee nonce"))?,
            partial: unhex(&self.payee_partial_signature)
                .and_then(|b| musig2::PartialSignature::from_slice(&b).ok())
                .ok_or(BtcWireError("payee partial signature"))?,
        })
    }
}

/// A payee's rules for new channels, in the offer's `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BtcOfferExtra {
    /// Confirmations the funding needs before vouchers count.
    pub min_confirmations: u32,
    /// Blocks that must remain before expiry when a channel is first used.
    pub min_blocks_to_expiry: u32,
    /// Lowest close-fee rate accepted, sat/kvB.
    pub min_close_fee_rate_sat_per_kvb: u64,
    /// With a cumulative-mismatch refusal: the total the seller has charged on the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_amount: Option<String>,
}

impl BtcOfferExtra {
    /// The minimum close-fee rate as a `FeeRate`.
    pub fn min_close_fee_rate(&self) -> FeeRate {
        FeeRate::from_sat_per_kwu(self.min_close_fee_rate_sat_per_kvb.div_ceil(4))
    }
}

/// Channel terms on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BtcChannelWire {
    /// Payer x-only key, hex.
    pub payer: String,
    /// Payee x-only key, hex.
    pub payee: String,
    /// Refund height.
    pub expiry_height: u32,
    /// Funding transaction id.
    pub funding_txid: String,
    /// Funding output index.
    pub funding_vout: u32,
    /// Funding value, satoshi.
    pub capacity: String,
    /// The fee every commitment pays, satoshi.
    pub close_fee: String,
}

/// A voucher on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BtcVoucherWire {
    /// Cumulative satoshi for the payee.
    pub cumulative_amount: String,
    /// BIP-340 signature, hex (64 bytes).
    pub signature: String,
}

/// The `payload` of a `btc-channel` payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BtcChannelPayload {
    /// The channel.
    pub channel: BtcChannelWire,
    /// The voucher.
    pub voucher: BtcVoucherWire,
}

/// A wire field does not parse.
#[derive(Debug, thiserror::Error)]
#[error("btc-channel payload: bad {0}")]
pub struct BtcWireError(pub &'static str);

impl BtcChannelWire {
    /// From channel terms.
    pub fn from_terms(terms: &ChannelTermsBtc) -> Self {
        Self {
            payer: terms.parties.payer.to_string(),
            payee: terms.parties.payee.to_string(),
            expiry_height: terms.parties.expiry_height,
            funding_txid: terms.funding.outpoint.txid.to_string(),
            funding_vout: terms.funding.outpoint.vout,
            capacity: terms.funding.capacity.to_sat().to_string(),
            close_fee: terms.close_fee.to_sat().to_string(),
        }
    }

    /// To channel terms.
    pub fn to_terms(&self) -> Result<ChannelTermsBtc, BtcWireError> {
        let key = |text: &str, what| {
            text.parse::<XOnlyPublicKey>()
                .map_err(|_| BtcWireError(what))
        };
        Ok(ChannelTermsBtc {
            parties: ChannelParties {
                payer: key(&self.payer, "payer key")?,
                payee: key(&self.payee, "payee key")?,
                expiry_height: self.expiry_height,
            },
            funding: ChannelFunding {
                outpoint: OutPoint {
                    txid: self
                        .funding_txid
                        .parse::<Txid>()
                        .map_err(|_| BtcWireError("funding txid"))?,
                    vout: self.funding_vout,
                },
                capacity: sats(&self.capacity, "capacity")?,
            },
            close_fee: sats(&self.close_fee, "close fee")?,
        })
    }
}

impl BtcVoucherWire {
    /// From a voucher.
    pub fn from_voucher(voucher: &BtcVoucher) -> Self {
        Self {
            cumulative_amount: voucher.cumulative.to_sat().to_string(),
            signature: hex(voucher.signature.as_ref()),
        }
    }

    /// To a voucher.
    pub fn to_voucher(&self) -> Result<BtcVoucher, BtcWireError> {
        let bytes = unhex(&self.signature).ok_or(BtcWireError("signature hex"))?;
        Ok(BtcVoucher {
            cumulative: sats(&self.cumulative_amount, "cumulative amount")?,
            signature: schnorr::Signature::from_slice(&bytes)
                .map_err(|_| BtcWireError("signature"))?,
        })
    }
}

/// A satoshi amount written as a decimal string.
pub fn sats(text: &str, what: &'static str) -> Result<Amount, BtcWireError> {
    text.parse::<u64>()
        .map(Amount::from_sat)
        .map_err(|_| BtcWireError(what))
}

/// Lower-case hex of a channel id.
pub fn channel_id_hex(id: &[u8; 32]) -> String {
    hex(id)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex (at most 128 bytes; any bad digit refuses the whole input).
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Exactly 32 bytes from 64 hex digits.
pub(crate) fn unhex32(text: &str) -> Option<[u8; 32]> {
    unhex(text.trim())?.try_into().ok()
}
