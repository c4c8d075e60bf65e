//! What both sides of a channel agree on, and the errors their state machines report.

use core::fmt;

use crate::amount::{Amount, AmountError, Asset};
use crate::voucher::{ChannelId, EvmAddress};

/// A channel's fixed terms, known to payer and payee alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTerms {
    /// The channel id (EIP-712 hash of the on-chain config).
    pub channel_id: ChannelId,
    /// The asset of the deposit.
    pub asset: Asset,
    /// The settlement contract's EIP-712 domain separator (chain id + contract bound).
    pub domain_separator: [u8; 32],
    /// Who signs vouchers (the config's payer authorizer).
    pub payer_authorizer: EvmAddress,
}

impl ChannelTerms {
    /// `units` of this channel's asset.
    pub fn amount(&self, units: u128) -> Amount {
        Amount::new(self.asset, units)
    }

    /// The base units of `amount`, refusing another asset.
    pub(crate) fn units_of(&self, amount: Amount) -> Result<u128, ChannelError> {
        if amount.asset() == self.asset {
            Ok(amount.base_units())
        } else {
            Err(ChannelError::Amount(AmountError::AssetMismatch {
                left: self.asset,
                right: amount.asset(),
            }))
        }
    }
}

/// Why a payer or payee refused an operation. The state is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// Arithmetic or asset mismatch.
    Amount(AmountError),
    /// A voucher or frame names another channel.
    WrongChannel {
        /// This channel.
        expected: ChannelId,
        /// What was presented.
        found: ChannelId,
    },
    /// The voucher's ceiling is not `charged + price`; the payer must resynchronise.
    CumulativeMismatch {
        /// The ceiling the payee expected.
        expected_units: u128,
        /// The ceiling presented.
        found_units: u128,
    },
    /// The voucher would exceed the deposit.
    ExceedsDeposit {
        /// The ceiling asked for.
        requested_units: u128,
        /// The deposit.
        deposit_units: u128,
    },
    /// The signature is not the payer authorizer's.
    InvalidSignature,
    /// The charge exceeds the price the voucher covered.
    ChargeExceedsPrice {
        /// The charge.
        charge_units: u128,
        /// The price ceiling.
        price_units: u128,
    },
    /// A price of zero buys nothing and would make vouchers non-monotonic.
    ZeroPrice,
    /// The payee reported state the payer never signed (a lying or confused payee).
    UntrustedPayeeState {
        /// The charged total the payee claims.
        claimed_units: u128,
        /// The most the payer ever signed.
        highest_signed_units: u128,
    },
    /// The signer capability failed.
    Signer,
    /// A stored record is from an unknown format version.
    UnsupportedRecordVersion(u8),
}

impl From<AmountError> for ChannelError {
    fn from(error: AmountError) -> Self {
        ChannelError::Amount(error)
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Amount(e) => write!(f, "amount: {e}"),
            ChannelError::WrongChannel { .. } => f.write_str("voucher is for another channel"),
            ChannelError::CumulativeMismatch {
                expected_units,
                found_units,
            } => {
                write!(
                    f,
                    "voucher ceiling {found_units} but {expected_units} expected; resynchronise"
                )
            }
            ChannelError::ExceedsDeposit {
                requested_units,
                deposit_units,
            } => {
                write!(
                    f,
                    "ceiling {requested_units} exceeds the deposit {deposit_units}; top up"
                )
            }
            ChannelError::InvalidSignature => {
                f.write_str("voucher signature is not the payer authorizer's")
            }
            ChannelError::ChargeExceedsPrice {
                charge_units,
                price_units,
            } => {
                write!(f, "charge {charge_units} exceeds the price {price_units}")
            }
            ChannelError::ZeroPrice => f.write_str("price must be above zero"),
            ChannelError::UntrustedPayeeState {
                claimed_units,
                highest_signed_units,
            } => write!(
                f,
                "payee claims {claimed_units} charged but the payer signed at most {highest_signed_units}"
            ),
            ChannelError::Signer => f.write_str("signer failed"),
            ChannelError::UnsupportedRecordVersion(v) => {
                write!(f, "record version {v} is not supported")
            }
        }
    }
}

impl core::error::Error for ChannelError {}
