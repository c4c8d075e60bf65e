//! Both ends of a Bitcoin channel as plain state machines, like the core's EVM ones: check,
//! let the caller persist, then commit. Nothing here does IO or holds a key.
//!
//! - Payer: [`BtcPayer::prepare`] → sign the returned sighash → persist "highest signed" →
//!   [`BtcPayer::commit`] → send the voucher.
//! - Payee: [`BtcPayee::accept`] (exactly `charged + price`, within capacity, the payer's
//!   signature) → persist the record → [`BtcPayee::commit`] → serve. The payee keeps only the
//!   newest voucher: it pays the payee the most, so no older one is worth broadcasting.

use bitcoin::Amount;
use bitcoin::secp256k1::schnorr;

use super::BtcChannelError;
use super::channel::{BtcVoucher, TaprootChannel};

/// A payment the payer may send once it has signed `sighash` and persisted `cumulative`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "nothing is paid until the voucher is signed, persisted and committed"]
pub struct PreparedBtcPayment {
    /// The new cumulative total.
    pub cumulative: Amount,
    /// The commitment sighash to sign with the payer key (script path).
    pub sighash: [u8; 32],
}

/// The payer's view of a channel.
#[derive(Debug, Clone)]
pub struct BtcPayer {
    channel: TaprootChannel,
    signed: Amount,
}

impl BtcPayer {
    /// A channel with `signed` already promised (zero for a new one, the stored value on restart).
    pub fn new(channel: TaprootChannel, signed: Amount) -> Result<Self, BtcChannelError> {
        if signed > channel.max_payable() {
            return Err(BtcChannelError::ExceedsCapacity {
                requested: signed,
                max: channel.max_payable(),
            });
        }
        Ok(Self { channel, signed })
    }

    /// The channel.
    pub fn channel(&self) -> &TaprootChannel {
        &self.channel
    }

    /// The highest cumulative amount signed so far.
    pub fn signed(&self) -> Amount {
        self.signed
    }

    /// What is left to spend.
    pub fn remaining(&self) -> Amount {
        self.channel.max_payable() - self.signed
    }

    /// Takes back a voucher of ours the payee shows (its signature over this channel's
    /// commitment) as the highest signed, if it is above what we remember: a record restored
    /// from an old backup forgot it, and the payee can broadcast it whatever we remember.
    /// Returns the (possibly raised) highest; the caller persists it before signing on top.
    pub fn adopt(&mut self, voucher: &BtcVoucher) -> Result<Amount, BtcChannelError> {
        self.channel.verify_voucher(voucher)?;
        if voucher.cumulative > self.channel.max_payable() {
            return Err(BtcChannelError::ExceedsCapacity {
                requested: voucher.cumulative,
                max: self.channel.max_payable(),
            });
        }
        self.signed = self.signed.max(voucher.cumulative);
        Ok(self.signed)
    }

    /// The next voucher's amount and message for a payment of `price`. Changes nothing.
    pub fn prepare(&self, price: Amount) -> Result<PreparedBtcPayment, BtcChannelError> {
        self.prepare_from(self.signed, price)
    }

    /// Like [`BtcPayer::prepare`], but on top of `charged`, what the payee says it holds, when
    /// that is less than what was signed (a voucher that never arrived). Signing less than the
    /// highest voucher already out adds no exposure; a payee claiming to hold more than was
    /// ever signed is refused.
    pub fn prepare_from(
        &self,
        charged: Amount,
        price: Amount,
    ) -> Result<PreparedBtcPayment, BtcChannelError> {
        if price == Amount::ZERO {
            return Err(BtcChannelError::ZeroPrice);
        }
        if charged > self.signed {
            return Err(BtcChannelError::CumulativeMismatch {
                expected: self.signed,
                found: charged,
            });
        }
        let cumulative = charged
            .checked_add(price)
            .ok_or(BtcChannelError::FeeOverflow)?;
        let sighash = self.channel.commitment_sighash(cumulative)?;
        Ok(PreparedBtcPayment {
            cumulative,
            sighash,
        })
    }

    /// Records the signed payment (after the caller persisted `prepared.cumulative`).
    pub fn commit(
        &mut self,
        prepared: PreparedBtcPayment,
        signature: schnorr::Signature,
    ) -> BtcVoucher {
        self.signed = self.signed.max(prepared.cumulative);
        BtcVoucher {
            cumulative: prepared.cumulative,
            signature,
        }
    }
}

/// A voucher that passed every check: persist `charged` and `voucher`, then commit, then serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the payment counts only after it is persisted and committed"]
pub struct AcceptedBtcPayment {
    /// The new charged total (equal to the voucher's cumulative amount).
    pub charged: Amount,
    /// The voucher to keep.
    pub voucher: BtcVoucher,
}

/// The payee's view of a channel.
#[derive(Debug, Clone)]
pub struct BtcPayee {
    channel: TaprootChannel,
    latest: Option<BtcVoucher>,
}

impl BtcPayee {
    /// A channel with its newest stored voucher (none for a new one). A stored voucher is
    /// checked again: a damaged store must not turn into a close that bitcoind rejects.
    pub fn new(
        channel: TaprootChannel,
        latest: Option<BtcVoucher>,
    ) -> Result<Self, BtcChannelError> {
        if let Some(voucher) = &latest {
            channel.verify_voucher(voucher)?;
        }
        Ok(Self { channel, latest })
    }

    /// The channel.
    pub fn channel(&self) -> &TaprootChannel {
        &self.channel
    }

    /// Total charged so far (the newest voucher's amount).
    pub fn charged(&self) -> Amount {
        self.latest.map_or(Amount::ZERO, |v| v.cumulative)
    }

    /// The newest voucher: what a close broadcasts.
    pub fn latest(&self) -> Option<&BtcVoucher> {
        self.latest.as_ref()
    }

    /// Checks a voucher paying `price` more than charged so far. Changes nothing.
    pub fn accept(
        &self,
        voucher: &BtcVoucher,
        price: Amount,
    ) -> Result<AcceptedBtcPayment, BtcChannelError> {
        let expected = self
            .charged()
            .checked_add(price)
            .ok_or(BtcChannelError::FeeOverflow)?;
        if voucher.cumulative != expected {
            return Err(BtcChannelError::CumulativeMismatch {
                expected,
                found: voucher.cumulative,
            });
        }
        self.channel.verify_voucher(voucher)?;
        Ok(AcceptedBtcPayment {
            charged: expected,
            voucher: *voucher,
        })
    }

    /// Makes an accepted (and persisted) payment the newest.
    pub fn commit(&mut self, accepted: AcceptedBtcPayment) {
        if accepted.charged > self.charged() {
            self.latest = Some(accepted.voucher);
        }
    }
}
