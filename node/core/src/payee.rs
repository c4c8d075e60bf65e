//! The payee side of a channel: accept a voucher only if it is the payer's, for this channel,
//! exactly `charged + price`, and within the deposit; persist it before serving; decide when to
//! claim on chain.
//!
//! Flow per paid request: [`PayeeChannel::accept`] (checks; changes nothing) → the shell
//! persists [`AcceptedPayment::record`] → [`PayeeChannel::commit`] → serve. A crash between
//! persist and serve costs the payer at most that one request, which the corrective 402
//! ([`PayeeChannel::corrective_state`]) lets it see and reconcile.

use crate::amount::Amount;
use crate::channel::{ChannelError, ChannelTerms};
use crate::voucher::{Voucher, VoucherVerifier, voucher_digest};

/// Record format version written by this build.
pub const PAYEE_RECORD_VERSION: u8 = 1;

/// What the payee must persist: the newest voucher is all it ever needs to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayeeRecord {
    /// Format version.
    pub version: u8,
    /// On-chain deposit as last seen.
    pub deposit_units: u128,
    /// Total charged for delivered service.
    pub charged_units: u128,
    /// Total claimed on chain, as last seen.
    pub claimed_units: u128,
    /// The newest voucher (its ceiling is always ≥ `charged_units`).
    pub latest: Option<Voucher>,
    /// When a payer's timed withdrawal started (seconds), if one is pending on chain.
    pub withdraw_pending_since: Option<u64>,
    /// When the last claim was sent (seconds).
    pub last_claim_at: u64,
}

/// A voucher that passed every check: persist `record`, then [`PayeeChannel::commit`], then serve.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the payment counts only after the record is persisted and committed"]
pub struct AcceptedPayment {
    /// The state to persist before serving.
    pub record: PayeeRecord,
    /// What this request was charged.
    pub charge: Amount,
}

/// When to claim on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimPolicy {
    /// Claim once this much charged value is unclaimed.
    pub threshold_units: u128,
    /// Claim at least this often while anything is unclaimed (seconds).
    pub max_interval_secs: u64,
}

/// A claim to submit: the newest voucher with the total charged so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The voucher (ceiling ≥ `total_claimed_units`).
    pub voucher: Voucher,
    /// The new cumulative total to claim.
    pub total_claimed_units: u128,
    /// Why now.
    pub reason: ClaimReason,
}

/// Why a claim is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimReason {
    /// The payer started a timed withdrawal: claim before it completes.
    WithdrawPending,
    /// Unclaimed value reached the threshold.
    Threshold,
    /// The interval elapsed.
    Periodic,
}

/// The payee's view of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayeeChannel {
    terms: ChannelTerms,
    record: PayeeRecord,
}

impl PayeeChannel {
    /// A channel just seen funded on chain with `deposit`.
    pub fn open(terms: ChannelTerms, deposit: Amount, now_secs: u64) -> Result<Self, ChannelError> {
        let record = PayeeRecord {
            version: PAYEE_RECORD_VERSION,
            deposit_units: terms.units_of(deposit)?,
            charged_units: 0,
            claimed_units: 0,
            latest: None,
            withdraw_pending_since: None,
            last_claim_at: now_secs,
        };
        Ok(Self { terms, record })
    }

    /// Resumes from a persisted record.
    pub fn restore(terms: ChannelTerms, record: PayeeRecord) -> Result<Self, ChannelError> {
        if record.version != PAYEE_RECORD_VERSION {
            return Err(ChannelError::UnsupportedRecordVersion(record.version));
        }
        Ok(Self { terms, record })
    }

    /// The fixed terms.
    pub fn terms(&self) -> &ChannelTerms {
        &self.terms
    }

    /// The current record.
    pub fn record(&self) -> &PayeeRecord {
        &self.record
    }

    /// Checks a voucher paying for one request priced at most `price` and charged `charge`.
    /// Changes nothing; every refusal is a typed error.
    pub fn accept<V: VoucherVerifier>(
        &self,
        voucher: &Voucher,
        price: Amount,
        charge: Amount,
        verifier: &V,
    ) -> Result<AcceptedPayment, ChannelError> {
        let (price_units, charge_units) =
            (self.terms.units_of(price)?, self.terms.units_of(charge)?);
        if price_units == 0 {
            return Err(ChannelError::ZeroPrice);
        }
        if charge_units > price_units {
            return Err(ChannelError::ChargeExceedsPrice {
                charge_units,
                price_units,
            });
        }
        if voucher.channel_id != self.terms.channel_id {
            return Err(ChannelError::WrongChannel {
                expected: self.terms.channel_id,
                found: voucher.channel_id,
            });
        }
        let expected = self
            .record
            .charged_units
            .checked_add(price_units)
            .ok_or(crate::AmountError::Overflow)?;
        if voucher.max_claimable_units != expected {
            return Err(ChannelError::CumulativeMismatch {
                expected_units: expected,
                found_units: voucher.max_claimable_units,
            });
        }
        if expected > self.record.deposit_units {
            return Err(ChannelError::ExceedsDeposit {
                requested_units: expected,
                deposit_units: self.record.deposit_units,
            });
        }
        // The signature check is the expensive step, so it runs last.
        let digest = voucher_digest(
            &self.terms.domain_separator,
            &self.terms.channel_id,
            expected,
        );
        if !verifier.is_valid(&digest, &voucher.signature, &self.terms.payer_authorizer) {
            return Err(ChannelError::InvalidSignature);
        }
        let record = PayeeRecord {
            charged_units: self.record.charged_units + charge_units,
            latest: Some(*voucher),
            ..self.record
        };
        Ok(AcceptedPayment { record, charge })
    }

    /// Adopts a persisted [`AcceptedPayment`]; the request may now be served.
    pub fn commit(&mut self, accepted: AcceptedPayment) {
        self.record = accepted.record;
    }

    /// What a corrective 402 tells the payer: the total charged and the voucher that proves it.
    pub fn corrective_state(&self) -> (Amount, Option<Voucher>) {
        (
            self.terms.amount(self.record.charged_units),
            self.record.latest,
        )
    }

    /// Mirrors on-chain facts (deposit, claimed total, pending withdrawal).
    pub fn on_chain_update(
        &mut self,
        deposit: Amount,
        claimed: Amount,
        withdraw_pending_since: Option<u64>,
    ) -> Result<PayeeRecord, ChannelError> {
        self.record.deposit_units = self.terms.units_of(deposit)?;
        self.record.claimed_units = self.terms.units_of(claimed)?;
        self.record.withdraw_pending_since = withdraw_pending_since;
        Ok(self.record)
    }

    /// Whether (and why) to claim now.
    pub fn claim_decision(&self, policy: &ClaimPolicy, now_secs: u64) -> Option<ClaimRequest> {
        let unclaimed = self
            .record
            .charged_units
            .saturating_sub(self.record.claimed_units);
        let voucher = self.record.latest?;
        if unclaimed == 0 {
            return None;
        }
        let reason = if self.record.withdraw_pending_since.is_some() {
            ClaimReason::WithdrawPending
        } else if unclaimed >= policy.threshold_units {
            ClaimReason::Threshold
        } else if now_secs.saturating_sub(self.record.last_claim_at) >= policy.max_interval_secs {
            ClaimReason::Periodic
        } else {
            return None;
        };
        Some(ClaimRequest {
            voucher,
            total_claimed_units: self.record.charged_units,
            reason,
        })
    }

    /// A claim was confirmed on chain at `now_secs`.
    pub fn on_claimed(
        &mut self,
        total_claimed: Amount,
        now_secs: u64,
    ) -> Result<PayeeRecord, ChannelError> {
        self.record.claimed_units = self.terms.units_of(total_claimed)?;
        self.record.last_claim_at = now_secs;
        Ok(self.record)
    }
}
