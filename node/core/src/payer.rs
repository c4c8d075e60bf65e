//! The payer side of a channel: sign the next cumulative voucher, never beyond the deposit, and
//! persist the highest ceiling signed before the voucher may leave.
//!
//! Flow per paid request: [`PayerChannel::prepare_payment`] → the shell persists
//! [`PreparedPayment::record`] → [`PayerChannel::commit`] releases the voucher → the payee answers
//! with what it charged → [`PayerChannel::on_charged`]. If the payee says our cumulative total is
//! off (a corrective 402), [`PayerChannel::resync`] adopts its total only when it shows our own
//! signature over it.

use crate::amount::Amount;
use crate::channel::{ChannelError, ChannelTerms};
use crate::voucher::{Voucher, VoucherSigner, VoucherVerifier, voucher_digest};

/// Record format version written by this build.
pub const PAYER_RECORD_VERSION: u8 = 1;

/// What the payer must persist; restoring it resumes the channel safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayerRecord {
    /// Format version.
    pub version: u8,
    /// On-chain deposit as last seen.
    pub deposit_units: u128,
    /// Total the payee has charged, as the payer last confirmed it.
    pub charged_units: u128,
    /// The highest ceiling the payer ever signed: its maximum exposure.
    pub highest_signed_units: u128,
}

/// A voucher signed but not yet released: persist `record`, then [`PayerChannel::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the voucher is released only by PayerChannel::commit after the record is persisted"]
pub struct PreparedPayment {
    voucher: Voucher,
    /// The state to persist before the voucher leaves.
    pub record: PayerRecord,
}

/// The payer's view of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerChannel {
    terms: ChannelTerms,
    record: PayerRecord,
}

impl PayerChannel {
    /// A freshly funded channel.
    pub fn open(terms: ChannelTerms, deposit: Amount) -> Result<Self, ChannelError> {
        let deposit_units = terms.units_of(deposit)?;
        let record = PayerRecord {
            version: PAYER_RECORD_VERSION,
            deposit_units,
            charged_units: 0,
            highest_signed_units: 0,
        };
        Ok(Self { terms, record })
    }

    /// Resumes from a persisted record.
    pub fn restore(terms: ChannelTerms, record: PayerRecord) -> Result<Self, ChannelError> {
        if record.version != PAYER_RECORD_VERSION {
            return Err(ChannelError::UnsupportedRecordVersion(record.version));
        }
        Ok(Self { terms, record })
    }

    /// The fixed terms.
    pub fn terms(&self) -> &ChannelTerms {
        &self.terms
    }

    /// The current record.
    pub fn record(&self) -> &PayerRecord {
        &self.record
    }

    /// What is left to spend: deposit minus what the payee charged.
    pub fn remaining(&self) -> Amount {
        self.terms.amount(
            self.record
                .deposit_units
                .saturating_sub(self.record.charged_units),
        )
    }

    /// Signs a voucher for `charged + price` (x402: the per-request maximum). Changes nothing.
    pub fn prepare_payment<S: VoucherSigner>(
        &self,
        price: Amount,
        signer: &S,
    ) -> Result<PreparedPayment, ChannelError> {
        let price_units = self.terms.units_of(price)?;
        if price_units == 0 {
            return Err(ChannelError::ZeroPrice);
        }
        let ceiling = self
            .record
            .charged_units
            .checked_add(price_units)
            .ok_or(crate::AmountError::Overflow)?;
        if ceiling > self.record.deposit_units {
            return Err(ChannelError::ExceedsDeposit {
                requested_units: ceiling,
                deposit_units: self.record.deposit_units,
            });
        }
        let digest = voucher_digest(
            &self.terms.domain_separator,
            &self.terms.channel_id,
            ceiling,
        );
        let signature = signer
            .sign_digest(&digest)
            .map_err(|_| ChannelError::Signer)?;
        let voucher = Voucher {
            channel_id: self.terms.channel_id,
            max_claimable_units: ceiling,
            signature,
        };
        let record = PayerRecord {
            highest_signed_units: self.record.highest_signed_units.max(ceiling),
            ..self.record
        };
        Ok(PreparedPayment { voucher, record })
    }

    /// Adopts a persisted [`PreparedPayment`] and releases its voucher for sending.
    pub fn commit(&mut self, prepared: PreparedPayment) -> Voucher {
        self.record.highest_signed_units = self
            .record
            .highest_signed_units
            .max(prepared.record.highest_signed_units);
        prepared.voucher
    }

    /// The payee charged `charge` for a request priced at most `price`. Returns the new record.
    pub fn on_charged(
        &mut self,
        charge: Amount,
        price: Amount,
    ) -> Result<PayerRecord, ChannelError> {
        let (charge_units, price_units) =
            (self.terms.units_of(charge)?, self.terms.units_of(price)?);
        if charge_units > price_units {
            return Err(ChannelError::ChargeExceedsPrice {
                charge_units,
                price_units,
            });
        }
        let charged = self
            .record
            .charged_units
            .checked_add(charge_units)
            .ok_or(crate::AmountError::Overflow)?;
        if charged > self.record.highest_signed_units {
            return Err(ChannelError::UntrustedPayeeState {
                claimed_units: charged,
                highest_signed_units: self.record.highest_signed_units,
            });
        }
        self.record.charged_units = charged;
        Ok(self.record)
    }

    /// Corrective 402: the payee says it has charged `payee_charged` and shows the voucher it
    /// holds. Adopted only if that voucher is ours, for this channel, and covers the total. A
    /// voucher of ours above the highest we remember (this record came back from an old backup)
    /// raises that highest: the payee can claim it whatever we remember, and paying on from the
    /// older total would pay the readings after the backup twice.
    pub fn resync<V: VoucherVerifier>(
        &mut self,
        payee_charged: Amount,
        payee_voucher: &Voucher,
        verifier: &V,
    ) -> Result<PayerRecord, ChannelError> {
        let charged = self.terms.units_of(payee_charged)?;
        if payee_voucher.channel_id != self.terms.channel_id {
            return Err(ChannelError::WrongChannel {
                expected: self.terms.channel_id,
                found: payee_voucher.channel_id,
            });
        }
        let digest = voucher_digest(
            &self.terms.domain_separator,
            &self.terms.channel_id,
            payee_voucher.max_claimable_units,
        );
        if !verifier.is_valid(
            &digest,
            &payee_voucher.signature,
            &self.terms.payer_authorizer,
        ) {
            return Err(ChannelError::InvalidSignature);
        }
        if charged > payee_voucher.max_claimable_units {
            return Err(ChannelError::UntrustedPayeeState {
                claimed_units: charged,
                highest_signed_units: payee_voucher.max_claimable_units,
            });
        }
        self.record.highest_signed_units = self
            .record
            .highest_signed_units
            .max(payee_voucher.max_claimable_units);
        self.record.charged_units = charged;
        Ok(self.record)
    }

    /// The on-chain deposit changed (top-up seen, or refund/withdrawal).
    pub fn set_deposit(&mut self, deposit: Amount) -> Result<PayerRecord, ChannelError> {
        self.record.deposit_units = self.terms.units_of(deposit)?;
        Ok(self.record)
    }
}
