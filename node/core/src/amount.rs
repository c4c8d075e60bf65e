//! Money: an amount is always an asset plus base units, with checked arithmetic.

use core::fmt;

/// What an amount is denominated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Asset {
    /// An ERC-20 token on an EVM chain (base units: the token's smallest unit).
    Erc20 {
        /// EIP-155 chain id.
        chain_id: u64,
        /// Token contract address.
        token: [u8; 20],
    },
    /// Bitcoin (base units: satoshi).
    Bitcoin,
}

/// Arithmetic on amounts failed; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    /// The two amounts are in different assets.
    AssetMismatch {
        /// Left-hand asset.
        left: Asset,
        /// Right-hand asset.
        right: Asset,
    },
    /// The result does not fit in 128 bits.
    Overflow,
    /// The result would be negative.
    Underflow,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::AssetMismatch { left, right } => {
                write!(f, "cannot combine {left:?} with {right:?}")
            }
            AmountError::Overflow => f.write_str("amount overflows 128 bits"),
            AmountError::Underflow => f.write_str("amount would be negative"),
        }
    }
}

impl core::error::Error for AmountError {}

/// A non-negative quantity of one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    asset: Asset,
    base_units: u128,
}

impl Amount {
    /// `base_units` of `asset`.
    pub const fn new(asset: Asset, base_units: u128) -> Self {
        Self { asset, base_units }
    }

    /// Zero of `asset`.
    pub const fn zero(asset: Asset) -> Self {
        Self {
            asset,
            base_units: 0,
        }
    }

    /// The asset.
    pub const fn asset(&self) -> Asset {
        self.asset
    }

    /// The quantity in base units.
    pub const fn base_units(&self) -> u128 {
        self.base_units
    }

    /// Whether this is zero.
    pub const fn is_zero(&self) -> bool {
        self.base_units == 0
    }

    /// `self + other`, refusing other assets and overflow.
    pub fn checked_add(self, other: Amount) -> Result<Amount, AmountError> {
        self.same_asset(other)?;
        let base_units = self
            .base_units
            .checked_add(other.base_units)
            .ok_or(AmountError::Overflow)?;
        Ok(Amount { base_units, ..self })
    }

    /// `self - other`, refusing other assets and negative results.
    pub fn checked_sub(self, other: Amount) -> Result<Amount, AmountError> {
        self.same_asset(other)?;
        let base_units = self
            .base_units
            .checked_sub(other.base_units)
            .ok_or(AmountError::Underflow)?;
        Ok(Amount { base_units, ..self })
    }

    /// `self * factor` (e.g. a tick price times a tick count), refusing overflow.
    pub fn checked_mul(self, factor: u64) -> Result<Amount, AmountError> {
        let base_units = self
            .base_units
            .checked_mul(u128::from(factor))
            .ok_or(AmountError::Overflow)?;
        Ok(Amount { base_units, ..self })
    }

    fn same_asset(self, other: Amount) -> Result<(), AmountError> {
        if self.asset == other.asset {
            Ok(())
        } else {
            Err(AmountError::AssetMismatch {
                left: self.asset,
                right: other.asset,
            })
        }
    }
}

impl PartialOrd for Amount {
    /// Amounts of different assets are unordered.
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        (self.asset == other.asset).then(|| self.base_units.cmp(&other.base_units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USD: Asset = Asset::Erc20 {
        chain_id: 31337,
        token: [1; 20],
    };

    #[test]
    fn arithmetic_is_checked_and_asset_bound() {
        let a = Amount::new(USD, 10);
        assert_eq!(a.checked_add(Amount::new(USD, 5)).unwrap().base_units(), 15);
        assert_eq!(
            a.checked_sub(Amount::new(USD, 10)).unwrap(),
            Amount::zero(USD)
        );
        assert_eq!(
            a.checked_sub(Amount::new(USD, 11)),
            Err(AmountError::Underflow)
        );
        assert_eq!(
            Amount::new(USD, u128::MAX).checked_add(Amount::new(USD, 1)),
            Err(AmountError::Overflow)
        );
        assert!(matches!(
            a.checked_add(Amount::new(Asset::Bitcoin, 1)),
            Err(AmountError::AssetMismatch { .. })
        ));
        assert_eq!(a.checked_mul(3).unwrap().base_units(), 30);
        assert!(a.partial_cmp(&Amount::new(Asset::Bitcoin, 1)).is_none());
        assert!(a < Amount::new(USD, 11));
    }
}
