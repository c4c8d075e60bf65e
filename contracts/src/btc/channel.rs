//! A funded channel: its commitment transactions (the vouchers sign these), the payee's close and
//! the payer's refund.
//!
//! A commitment for cumulative amount `c` spends the funding output through the cooperative leaf
//! and pays `c` to the payee's BIP-86 address and `capacity − c − close_fee` back to the payer's.
//! The close fee is fixed when the channel opens (fee rate × the size of a signed two-output
//! commitment), so every commitment of a channel pays the same fee and balances are exact to the
//! satoshi. An output below the dust limit is left out (its value goes to the miners), as relay
//! policy requires.
//!
//! Signatures are BIP-341 script-path signatures with `SIGHASH_DEFAULT`: they commit to the whole
//! transaction, the funding output's amount and script, and the leaf. That binds a voucher to one
//! channel (its funding outpoint) and one amount — the domain separation comes from Bitcoin's own
//! tagged sighash.

use std::collections::BTreeMap;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{Message, XOnlyPublicKey, schnorr};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::taproot::{self, TapLeafHash};
use bitcoin::transaction::Version;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use miniscript::Satisfier;

use super::BtcChannelError;
use super::script::{ChannelParties, ChannelScript, device_script_pubkey};

/// Outputs below this are non-standard for P2TR (Bitcoin Core's dust threshold at 3 sat/vB).
pub const DUST_LIMIT: Amount = Amount::from_sat(330);

/// The on-chain side of a channel: which output funds it and with how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelFunding {
    /// The funding transaction output.
    pub outpoint: OutPoint,
    /// Its value.
    pub capacity: Amount,
}

/// Everything both sides agree on when a channel opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelTermsBtc {
    /// Keys and expiry.
    pub parties: ChannelParties,
    /// The funding output.
    pub funding: ChannelFunding,
    /// The fee every commitment (and so the close) pays.
    pub close_fee: Amount,
}

/// A payer's voucher: its signature over the commitment paying `cumulative` to the payee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtcVoucher {
    /// What the payee may take in total.
    pub cumulative: Amount,
    /// BIP-340 signature (64 bytes, `SIGHASH_DEFAULT`) under the payer key.
    pub signature: schnorr::Signature,
}

/// A channel with its script compiled.
#[derive(Debug, Clone)]
pub struct TaprootChannel {
    terms: ChannelTermsBtc,
    script: ChannelScript,
    funding_txout: TxOut,
    payer_script: ScriptBuf,
    payee_script: ScriptBuf,
}

impl TaprootChannel {
    /// The fee a close pays at `fee_rate`: the virtual size of a signed two-output commitment.
    pub fn close_fee_at(
        parties: ChannelParties,
        fee_rate: FeeRate,
    ) -> Result<Amount, BtcChannelError> {
        let probe = Self::new(ChannelTermsBtc {
            parties,
            funding: ChannelFunding {
                outpoint: OutPoint::null(),
                capacity: Amount::MAX_MONEY,
            },
            close_fee: Amount::ZERO,
        })?;
        let mut tx = probe.commitment(Amount::ONE_BTC)?;
        let dummy = taproot::Signature {
            signature: schnorr::Signature::from_slice(&[1; 64]).expect("64 bytes"),
            sighash_type: TapSighashType::Default,
        };
        let leaf = probe.script.cooperative_leaf().hash;
        let sigs = BTreeMap::from([
            ((parties.payer, leaf), dummy),
            ((parties.payee, leaf), dummy),
        ]);
        probe.satisfy(&mut tx, &sigs)?;
        fee_rate
            .fee_vb(tx.vsize() as u64)
            .ok_or(BtcChannelError::FeeOverflow)
    }

    /// Compiles the channel for `terms`.
    pub fn new(terms: ChannelTermsBtc) -> Result<Self, BtcChannelError> {
        let script = ChannelScript::new(terms.parties)?;
        if terms.funding.capacity <= terms.close_fee + DUST_LIMIT {
            return Err(BtcChannelError::CapacityTooSmall {
                capacity: terms.funding.capacity,
                close_fee: terms.close_fee,
            });
        }
        Ok(Self {
            funding_txout: TxOut {
                value: terms.funding.capacity,
                script_pubkey: script.script_pubkey(),
            },
            payer_script: device_script_pubkey(terms.parties.payer),
            payee_script: device_script_pubkey(terms.parties.payee),
            script,
            terms,
        })
    }

    /// The agreed terms.
    pub fn terms(&self) -> &ChannelTermsBtc {
        &self.terms
    }

    /// The compiled script.
    pub fn script(&self) -> &ChannelScript {
        &self.script
    }

    /// A 32-byte id for stores and messages: a tagged hash of the funding outpoint.
    pub fn id(&self) -> [u8; 32] {
        channel_id(&self.terms.funding.outpoint)
    }

    /// The most a commitment can pay the payee: the capacity less the close fee.
    pub fn max_payable(&self) -> Amount {
        self.terms.funding.capacity - self.terms.close_fee
    }

    /// The unsigned commitment paying `cumulative` to the payee.
    pub fn commitment(&self, cumulative: Amount) -> Result<Transaction, BtcChannelError> {
        let max = self.max_payable();
        if cumulative > max {
            return Err(BtcChannelError::ExceedsCapacity {
                requested: cumulative,
                max,
            });
        }
        let payer_back = max - cumulative;
        let output: Vec<TxOut> = [
            (cumulative, &self.payee_script),
            (payer_back, &self.payer_script),
        ]
        .into_iter()
        .filter(|(value, _)| *value >= DUST_LIMIT)
        .map(|(value, script)| TxOut {
            value,
            script_pubkey: script.clone(),
        })
        .collect();
        if output.is_empty() {
            return Err(BtcChannelError::NothingToClose);
        }
        Ok(self.spend(LockTime::ZERO, Sequence::ENABLE_RBF_NO_LOCKTIME, output))
    }

    /// The message a voucher for `cumulative` signs.
    pub fn commitment_sighash(&self, cumulative: Amount) -> Result<[u8; 32], BtcChannelError> {
        let tx = self.commitment(cumulative)?;
        Ok(self.leaf_sighash(&tx, self.script.cooperative_leaf().hash))
    }

    /// Checks a voucher's signature under the payer key. Changes nothing.
    pub fn verify_voucher(&self, voucher: &BtcVoucher) -> Result<(), BtcChannelError> {
        let sighash = self.commitment_sighash(voucher.cumulative)?;
        super::SECP
            .verify_schnorr(
                &voucher.signature,
                &Message::from_digest(sighash),
                &self.terms.parties.payer,
            )
            .map_err(|_| BtcChannelError::BadSignature)
    }

    /// The payee's close: the voucher's commitment with both signatures, ready to broadcast.
    /// `payee_signature` is the payee's signature over the same sighash.
    pub fn close_transaction(
        &self,
        voucher: &BtcVoucher,
        payee_signature: schnorr::Signature,
    ) -> Result<Transaction, BtcChannelError> {
        self.verify_voucher(voucher)?;
        let mut tx = self.commitment(voucher.cumulative)?;
        let leaf = self.script.cooperative_leaf().hash;
        let parties = self.terms.parties;
        let sigs = BTreeMap::from([
            ((parties.payer, leaf), tap_signature(voucher.signature)),
            ((parties.payee, leaf), tap_signature(payee_signature)),
        ]);
        self.satisfy(&mut tx, &sigs)?;
        Ok(tx)
    }

    /// The payer's refund, unsigned: the whole output back to the payer once the expiry height
    /// is reached, less `fee`. Its lock time is the expiry, so no node relays it earlier.
    pub fn refund(&self, fee: Amount) -> Result<Transaction, BtcChannelError> {
        let capacity = self.terms.funding.capacity;
        let back = capacity
            .checked_sub(fee)
            .filter(|back| *back >= DUST_LIMIT)
            .ok_or(BtcChannelError::CapacityTooSmall {
                capacity,
                close_fee: fee,
            })?;
        let lock_time = LockTime::from_height(self.terms.parties.expiry_height)
            .map_err(|_| BtcChannelError::BadExpiry(self.terms.parties.expiry_height))?;
        Ok(self.spend(
            lock_time,
            Sequence::ENABLE_LOCKTIME_NO_RBF,
            vec![TxOut {
                value: back,
                script_pubkey: self.payer_script.clone(),
            }],
        ))
    }

    /// The message the payer signs for [`TaprootChannel::refund`].
    pub fn refund_sighash(&self, refund: &Transaction) -> [u8; 32] {
        self.leaf_sighash(refund, self.script.refund_leaf().hash)
    }

    /// Puts the payer's signature into a refund transaction.
    pub fn finalize_refund(
        &self,
        mut refund: Transaction,
        payer_signature: schnorr::Signature,
    ) -> Result<Transaction, BtcChannelError> {
        let leaf = self.script.refund_leaf().hash;
        let sigs = BTreeMap::from([(
            (self.terms.parties.payer, leaf),
            tap_signature(payer_signature),
        )]);
        let lock_time = refund.lock_time;
        self.satisfy(&mut refund, &(sigs, lock_time))?;
        Ok(refund)
    }

    fn spend(&self, lock_time: LockTime, sequence: Sequence, output: Vec<TxOut>) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time,
            input: vec![TxIn {
                previous_output: self.terms.funding.outpoint,
                script_sig: ScriptBuf::new(),
                sequence,
                witness: Witness::new(),
            }],
            output,
        }
    }

    fn leaf_sighash(&self, tx: &Transaction, leaf: TapLeafHash) -> [u8; 32] {
        SighashCache::new(tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(std::slice::from_ref(&self.funding_txout)),
                leaf,
                TapSighashType::Default,
            )
            .expect("one input, one prevout: the sighash is defined")
            .to_byte_array()
    }

    /// Fills the witness through miniscript, which picks the leaf the signatures satisfy.
    fn satisfy<S: Satisfier<XOnlyPublicKey>>(
        &self,
        tx: &mut Transaction,
        satisfier: &S,
    ) -> Result<(), BtcChannelError> {
        self.script
            .descriptor()
            .satisfy(&mut tx.input[0], satisfier)
            .map_err(|e| BtcChannelError::Unsatisfiable(e.to_string()))
    }
}

/// The channel id of a funding outpoint: `SHA-256("m2m/btc-channel/v1" ‖ txid ‖ vout LE)`.
pub fn channel_id(outpoint: &OutPoint) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(18 + 36);
    bytes.extend_from_slice(b"m2m/btc-channel/v1");
    bytes.extend_from_slice(outpoint.txid.as_byte_array());
    bytes.extend_from_slice(&outpoint.vout.to_le_bytes());
    sha256::Hash::hash(&bytes).to_byte_array()
}

fn tap_signature(signature: schnorr::Signature) -> taproot::Signature {
    taproot::Signature {
        signature,
        sighash_type: TapSighashType::Default,
    }
}
