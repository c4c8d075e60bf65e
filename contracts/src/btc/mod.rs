//! The Bitcoin settlement rules: a Taproot script channel.
//!
//! - [`script`]: the locking script (miniscript: a `payee & payer` commitment leaf and a
//!   `payer & after(expiry)` refund leaf under the MuSig2 aggregate of both keys).
//! - [`channel`]: commitment transactions (what vouchers sign), the payee's close and the payer's
//!   refund, with the close fee fixed at open so balances are exact.
//! - [`musig`]: the cooperative close by key path (MuSig2), the cheapest way out.
//! - [`state`]: payer and payee state machines (check → caller persists → commit).
//! - [`records`]: the stored byte formats.
//!
//! Everything here is pure: transactions are built and checked, never broadcast. The node's
//! `btc` module brings bitcoind, the wallet and the store.

pub mod channel;
pub mod musig;
pub mod records;
pub mod script;
pub mod state;

#[cfg(test)]
mod tests;

pub use channel::{
    BtcVoucher, ChannelFunding, ChannelTermsBtc, DUST_LIMIT, TaprootChannel, channel_id,
};
pub use script::{ChannelParties, ChannelScript, device_script_pubkey};
pub use state::{AcceptedBtcPayment, BtcPayee, BtcPayer, PreparedBtcPayment};

use std::sync::LazyLock;

use bitcoin::Amount;
use bitcoin::secp256k1::{Secp256k1, VerifyOnly};

/// One verification context for the process: creating one per check costs more than the check
/// (the context is randomised against side channels on creation).
pub static SECP: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

/// Why a Bitcoin channel operation was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtcChannelError {
    /// Payer and payee are the same key.
    #[error("payer and payee must be different keys")]
    SameParty,
    /// The expiry is not a block height CLTV can express.
    #[error("expiry {0} is not a block height between 1 and 499,999,999")]
    BadExpiry(u32),
    /// miniscript refused the script (not expected for valid keys).
    #[error("channel script: {0}")]
    Script(String),
    /// The funding cannot pay the close fee plus a non-dust output.
    #[error("capacity {capacity} cannot cover the fee {close_fee} and a non-dust output")]
    CapacityTooSmall {
        /// The funding value.
        capacity: Amount,
        /// The fee it would have to pay.
        close_fee: Amount,
    },
    /// A voucher would pay the payee more than the channel holds (after the close fee).
    #[error("{requested} exceeds what the channel can pay ({max}); top up or open a new channel")]
    ExceedsCapacity {
        /// The cumulative amount asked for.
        requested: Amount,
        /// The most the channel pays.
        max: Amount,
    },
    /// Both outputs of a commitment would be dust.
    #[error("nothing to close: both sides' outputs would be dust")]
    NothingToClose,
    /// A voucher's amount is not the payee's charged total plus the price.
    #[error("voucher pays {found} in total, expected {expected}")]
    CumulativeMismatch {
        /// Charged so far plus the price.
        expected: Amount,
        /// What the voucher says.
        found: Amount,
    },
    /// The signature is not the payer's over this commitment.
    #[error("voucher signature is not the payer's over this channel's commitment")]
    BadSignature,
    /// A payment of nothing.
    #[error("price must be above zero")]
    ZeroPrice,
    /// Amount arithmetic overflowed.
    #[error("amount or fee overflow")]
    FeeOverflow,
    /// The witness could not be built from the given signatures.
    #[error("cannot satisfy the channel script: {0}")]
    Unsatisfiable(String),
    /// A stored record does not decode.
    #[error("bitcoin channel record: {0}")]
    Record(&'static str),
}
