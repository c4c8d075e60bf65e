//! The cooperative close by key path: payer and payee sign one BIP-340 signature together with
//! MuSig2 (BIP-327), so the close is a plain key-path spend (154 vB with two outputs) instead of
//! the 204 vB script-path commitment.
//!
//! The channel's internal key is the MuSig2 aggregate of `[payer, payee]` (each x-only key lifted
//! to its even-y point, in that fixed order). The output key is that aggregate tweaked with the
//! script tree (BIP-341), so the leaves still work without the other side: the payee's
//! commitment close and the payer's refund are unchanged.
//!
//! One round trip: the payer sends its public nonce; the payee, as the last signer, makes a fresh
//! nonce, signs its partial signature at once and returns both; the payer checks the payee's
//! part, adds its own, and checks the aggregate against the output key before broadcasting.

use bitcoin::hashes::Hash;
use bitcoin::key::TapTweak;
use bitcoin::secp256k1::{Message, XOnlyPublicKey, schnorr};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::{Amount, Transaction, Witness};
use musig2::secp::Point;
use musig2::{AggNonce, KeyAggContext, PartialSignature, PubNonce, SecNonce, SecNonceBuilder};

use super::BtcChannelError;
use super::channel::TaprootChannel;
use super::script::ChannelParties;

/// Virtual size of a signed cooperative close with two outputs.
pub const COOPERATIVE_CLOSE_VBYTES: u64 = 154;
/// Virtual size of a signed commitment (script path) with two outputs.
pub const COMMITMENT_VBYTES: u64 = 204;

/// A party's key as MuSig2 takes it: the even-y point of the x-only key.
pub fn party_point(key: &XOnlyPublicKey) -> Point {
    Point::lift_x(key.serialize()).expect("an x-only key is a valid x coordinate")
}

/// The untweaked aggregate of `[payer, payee]`.
pub fn key_agg(parties: &ChannelParties) -> Result<KeyAggContext, BtcChannelError> {
    KeyAggContext::new([party_point(&parties.payer), party_point(&parties.payee)])
        .map_err(|e| BtcChannelError::Script(format!("musig2 key aggregation: {e}")))
}

/// The channel's Taproot internal key: the x-only aggregate of payer and payee.
pub fn internal_key(parties: &ChannelParties) -> Result<XOnlyPublicKey, BtcChannelError> {
    let point: Point = key_agg(parties)?.aggregated_pubkey_untweaked();
    XOnlyPublicKey::from_slice(&point.serialize_xonly())
        .map_err(|e| BtcChannelError::Script(e.to_string()))
}

/// A fresh secret nonce for `own` key, bound to `message` when it is known already. `seed` must
/// be 32 fresh random bytes: a nonce used twice gives the key away.
pub fn new_nonce(seed: [u8; 32], own: &XOnlyPublicKey, message: Option<&[u8; 32]>) -> SecNonce {
    let builder = SecNonceBuilder::from_pubkey(seed, party_point(own));
    match message {
        Some(message) => builder.with_message(message).build(),
        None => builder.build(),
    }
}

/// What the payer signs (with its channel key) to ask for a cooperative close, so that nobody
/// else can make a payee stop accepting vouchers on the channel:
/// `SHA-256("m2m/btc-channel/close/v1" ‖ channel id ‖ payer public nonce)`.
pub fn close_request_digest(channel_id: &[u8; 32], payer_nonce: &PubNonce) -> [u8; 32] {
    use musig2::BinaryEncoding;
    let mut bytes = Vec::with_capacity(24 + 32 + 66);
    bytes.extend_from_slice(b"m2m/btc-channel/close/v1");
    bytes.extend_from_slice(channel_id);
    bytes.extend_from_slice(&payer_nonce.to_bytes());
    bitcoin::hashes::sha256::Hash::hash(&bytes).to_byte_array()
}

/// The payee's answer to a cooperative close request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayeeCloseSignature {
    /// The amount the close pays the payee (its newest voucher).
    pub cumulative: Amount,
    /// The payee's public nonce.
    pub nonce: PubNonce,
    /// The payee's partial signature.
    pub partial: PartialSignature,
}

impl TaprootChannel {
    /// The MuSig2 context whose aggregate key is the channel's output key.
    pub fn signing_context(&self) -> Result<KeyAggContext, BtcChannelError> {
        let merkle_root = self
            .script()
            .merkle_root()
            .ok_or_else(|| BtcChannelError::Script("no script tree".into()))?;
        key_agg(&self.terms().parties)?
            .with_taproot_tweak(&merkle_root.to_byte_array())
            .map_err(|e| BtcChannelError::Script(format!("taproot tweak: {e}")))
    }

    /// The fee of a cooperative close: the commitment fee scaled to the key-path size.
    pub fn cooperative_fee(&self) -> Amount {
        let fee = self.terms().close_fee.to_sat();
        Amount::from_sat((fee * COOPERATIVE_CLOSE_VBYTES).div_ceil(COMMITMENT_VBYTES))
    }

    /// The unsigned cooperative close paying `cumulative` to the payee and the rest, less the
    /// cooperative fee, to the payer (dust outputs left out).
    pub fn cooperative_close(&self, cumulative: Amount) -> Result<Transaction, BtcChannelError> {
        let mut tx = self.commitment(cumulative)?;
        // The commitment's payer output carries `capacity − c − close_fee`; the cheaper key-path
        // spend gives the payer the difference.
        let saved = self.terms().close_fee - self.cooperative_fee();
        let payer_script = super::script::device_script_pubkey(self.terms().parties.payer);
        match tx
            .output
            .iter_mut()
            .find(|o| o.script_pubkey == payer_script)
        {
            Some(payer) => payer.value += saved,
            None if saved >= super::channel::DUST_LIMIT => tx.output.push(bitcoin::TxOut {
                value: saved,
                script_pubkey: payer_script,
            }),
            None => {}
        }
        Ok(tx)
    }

    /// The BIP-341 key-path sighash of a cooperative close (`SIGHASH_DEFAULT`).
    pub fn cooperative_sighash(&self, close: &Transaction) -> [u8; 32] {
        let funding = bitcoin::TxOut {
            value: self.terms().funding.capacity,
            script_pubkey: self.script().script_pubkey(),
        };
        SighashCache::new(close)
            .taproot_key_spend_signature_hash(
                0,
                &Prevouts::All(std::slice::from_ref(&funding)),
                TapSighashType::Default,
            )
            .expect("one input, one prevout: the sighash is defined")
            .to_byte_array()
    }

    /// Checks a payee's partial signature (payer side). Changes nothing.
    pub fn verify_payee_partial(
        &self,
        answer: &PayeeCloseSignature,
        payer_nonce: &PubNonce,
    ) -> Result<(), BtcChannelError> {
        let close = self.cooperative_close(answer.cumulative)?;
        let message = self.cooperative_sighash(&close);
        let aggnonce = AggNonce::sum([payer_nonce, &answer.nonce]);
        musig2::verify_partial(
            &self.signing_context()?,
            answer.partial,
            &aggnonce,
            party_point(&self.terms().parties.payee),
            &answer.nonce,
            message,
        )
        .map_err(|_| BtcChannelError::BadSignature)
    }

    /// Aggregates both partial signatures, checks the result against the output key, and puts it
    /// in the close's witness.
    pub fn finalize_cooperative(
        &self,
        cumulative: Amount,
        aggnonce: &AggNonce,
        partials: [PartialSignature; 2],
    ) -> Result<Transaction, BtcChannelError> {
        let mut close = self.cooperative_close(cumulative)?;
        let message = self.cooperative_sighash(&close);
        let signature: [u8; 64] = musig2::aggregate_partial_signatures(
            &self.signing_context()?,
            aggnonce,
            partials,
            message,
        )
        .map_err(|_| BtcChannelError::BadSignature)?;
        let signature = schnorr::Signature::from_slice(&signature)
            .map_err(|_| BtcChannelError::BadSignature)?;
        let secp = &*super::SECP;
        let output_key = self
            .script()
            .internal_key()
            .tap_tweak(secp, self.script().merkle_root())
            .0
            .to_x_only_public_key();
        secp.verify_schnorr(&signature, &Message::from_digest(message), &output_key)
            .map_err(|_| BtcChannelError::BadSignature)?;
        close.input[0].witness = Witness::from_slice(&[signature.as_ref()]);
        Ok(close)
    }
}
