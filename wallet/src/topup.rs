//! Top-up requests: payment URIs a user's wallet understands, for funding the device.
//!
//! - Bitcoin: BIP-21 (`bitcoin:<address>?amount=<btc>&label=…`), built with the `bip21` crate;
//!   with `&lightning=<BOLT11>` a "unified" request any Lightning or on-chain wallet can pay.
//! - Ethereum: EIP-681, native value (`ethereum:<address>@<chainId>?value=<wei>`) or an ERC-20
//!   transfer (`ethereum:<token>@<chainId>/transfer?address=<to>&uint256=<base units>`).
//!   Written by hand: no maintained Rust crate builds EIP-681 URIs, and the format is two lines.

use core::fmt;

use alloy_primitives::utils::{ParseUnits, parse_units};
use alloy_primitives::{Address as EvmAddress, U256};
use bitcoin::{Address as BtcAddress, Amount, Denomination};

/// An amount the user typed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AmountError {
    /// Not a decimal number in the expected unit, negative, or too precise.
    #[error("invalid amount {input:?}: {reason}")]
    Invalid {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Parses a decimal bitcoin amount (`"0.001"`) into an [`Amount`]; refuses zero and sub-satoshi.
pub fn parse_btc_amount(input: &str) -> Result<Amount, AmountError> {
    let amount = Amount::from_str_in(input.trim(), Denomination::Bitcoin).map_err(|e| {
        AmountError::Invalid {
            input: input.into(),
            reason: e.to_string(),
        }
    })?;
    if amount == Amount::ZERO {
        return Err(AmountError::Invalid {
            input: input.into(),
            reason: "amount must be above zero".into(),
        });
    }
    Ok(amount)
}

/// Parses a decimal amount of a token with `decimals` decimals (18 for ether) into base units.
pub fn parse_evm_amount(input: &str, decimals: u8) -> Result<U256, AmountError> {
    let invalid = |reason: String| AmountError::Invalid {
        input: input.into(),
        reason,
    };
    match parse_units(input.trim(), decimals).map_err(|e| invalid(e.to_string()))? {
        ParseUnits::U256(value) if !value.is_zero() => Ok(value),
        ParseUnits::U256(_) => Err(invalid("amount must be above zero".into())),
        ParseUnits::I256(_) => Err(invalid("amount must not be negative".into())),
    }
}

/// A BIP-21 request to pay `address`, optionally a fixed `amount`, with a label for the wallet.
pub fn bitcoin_uri(address: &BtcAddress, amount: Option<Amount>, label: Option<&str>) -> String {
    let mut uri: bip21::Uri<'_> = bip21::Uri::new(address.clone());
    uri.amount = amount;
    uri.label = label.map(Into::into);
    uri.to_string()
}

/// Reads a BIP-21 request for `network`: the address to pay and the amount, if fixed. (What the
/// owner's wallet does with the URI a device shows.)
pub fn parse_bitcoin_uri(
    text: &str,
    network: bitcoin::Network,
) -> Result<(BtcAddress, Option<Amount>), TopUpParseError> {
    let uri: bip21::Uri<'_, bitcoin::address::NetworkUnchecked> = text
        .trim()
        .parse()
        .map_err(|_| TopUpParseError("not a BIP-21 bitcoin: URI"))?;
    let uri = uri
        .require_network(network)
        .map_err(|_| TopUpParseError("the address is for another network"))?;
    Ok((uri.address, uri.amount))
}

/// A BIP-21 request that also carries a BOLT11 invoice (`lightning=`): Lightning wallets pay the
/// invoice, on-chain wallets the address. The invoice is bech32, so it needs no escaping.
pub fn unified_uri(
    address: &BtcAddress,
    amount: Option<Amount>,
    label: Option<&str>,
    bolt11: &str,
) -> String {
    let base = bitcoin_uri(address, amount, label);
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}lightning={bolt11}")
}

/// The BOLT11 invoice of a unified BIP-21 request, if it has one (what a Lightning wallet reads).
pub fn lightning_of_uri(text: &str) -> Option<&str> {
    let (scheme, rest) = text.trim().split_once(':')?;
    if !scheme.eq_ignore_ascii_case("bitcoin") {
        return None;
    }
    let (_, query) = rest.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.eq_ignore_ascii_case("lightning").then_some(value)
    })
}

/// What an EIP-681 request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvmAsset {
    /// The chain's native coin (ether on anvil).
    Native,
    /// An ERC-20 token at `token`.
    Erc20 {
        /// The token contract.
        token: EvmAddress,
    },
}

/// An EIP-681 payment request; `Display` renders the URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmTopUp {
    /// The device's address (the payee).
    pub to: EvmAddress,
    /// EIP-155 chain id (31337 for anvil).
    pub chain_id: u64,
    /// Native coin or token.
    pub asset: EvmAsset,
    /// Requested amount in base units (wei, or the token's smallest unit); `None` lets the payer choose.
    pub amount: Option<U256>,
}

impl fmt::Display for EvmTopUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let to = self.to.to_checksum(None);
        match self.asset {
            EvmAsset::Native => {
                write!(f, "ethereum:{to}@{}", self.chain_id)?;
                if let Some(value) = self.amount {
                    write!(f, "?value={value}")?;
                }
            }
            EvmAsset::Erc20 { token } => {
                write!(
                    f,
                    "ethereum:{}@{}/transfer?address={to}",
                    token.to_checksum(None),
                    self.chain_id
                )?;
                if let Some(value) = self.amount {
                    write!(f, "&uint256={value}")?;
                }
            }
        }
        Ok(())
    }
}

/// An EIP-681 request this module cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a supported EIP-681 request ({0}): expected ethereum:<address>@<chain>[?value=N] or ethereum:<token>@<chain>/transfer?address=<to>[&uint256=N]"
)]
pub struct TopUpParseError(&'static str);

impl core::str::FromStr for EvmTopUp {
    type Err = TopUpParseError;

    /// Reads the requests [`EvmTopUp`]'s `Display` writes (the payer's side of a top-up): plain
    /// value transfers and ERC-20 `transfer`, with a chain id. Numbers must be plain decimal.
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let rest = uri
            .strip_prefix("ethereum:")
            .ok_or(TopUpParseError("scheme"))?;
        let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (target, function) = match target.split_once('/') {
            Some((target, function)) => (target, Some(function)),
            None => (target, None),
        };
        let (address, chain) = target.split_once('@').ok_or(TopUpParseError("chain id"))?;
        let address: EvmAddress = address.parse().map_err(|_| TopUpParseError("address"))?;
        let chain_id: u64 = chain.parse().map_err(|_| TopUpParseError("chain id"))?;
        let mut fields = std::collections::HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or(TopUpParseError("query"))?;
            if fields.insert(key, value).is_some() {
                return Err(TopUpParseError("repeated parameter"));
            }
        }
        let number = |key: &str| -> Result<Option<U256>, TopUpParseError> {
            match fields.get(key) {
                None => Ok(None),
                Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| TopUpParseError("amount")),
                Some(_) => Err(TopUpParseError("amount")),
            }
        };
        match function {
            None => Ok(EvmTopUp {
                to: address,
                chain_id,
                asset: EvmAsset::Native,
                amount: number("value")?,
            }),
            Some("transfer") => Ok(EvmTopUp {
                to: fields
                    .get("address")
                    .ok_or(TopUpParseError("recipient"))?
                    .parse()
                    .map_err(|_| TopUpParseError("recipient"))?,
                chain_id,
                asset: EvmAsset::Erc20 { token: address },
                amount: number("uint256")?,
            }),
            Some(_) => Err(TopUpParseError("function")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn bip21_uri_has_amount_in_btc_and_encoded_label() {
        let address =
            BtcAddress::from_str("bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr")
                .unwrap()
                .assume_checked();
        let amount = parse_btc_amount("0.0015").unwrap();
        assert_eq!(amount.to_sat(), 150_000);
        assert_eq!(
            bitcoin_uri(&address, Some(amount), Some("m2m device")),
            "bitcoin:bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr?amount=0.0015&label=m2m%20device"
        );
        let uri = bitcoin_uri(&address, Some(amount), Some("m2m device"));
        assert_eq!(
            parse_bitcoin_uri(&uri, bitcoin::Network::Bitcoin).unwrap(),
            (address.clone(), Some(amount))
        );
        assert!(parse_bitcoin_uri(&uri, bitcoin::Network::Regtest).is_err());
        assert!(parse_bitcoin_uri("ethereum:0x00", bitcoin::Network::Bitcoin).is_err());
        assert_eq!(
            bitcoin_uri(&address, None, None),
            "bitcoin:bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
        );
    }

    #[test]
    fn unified_uri_carries_the_invoice_beside_the_address() {
        let address =
            BtcAddress::from_str("bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr")
                .unwrap()
                .assume_checked();
        let amount = parse_btc_amount("0.0001").unwrap();
        let uri = unified_uri(
            &address,
            Some(amount),
            Some("m2m device"),
            "lnbcrt10u1pexample",
        );
        assert!(uri.ends_with("&label=m2m%20device&lightning=lnbcrt10u1pexample"));
        assert_eq!(lightning_of_uri(&uri), Some("lnbcrt10u1pexample"));
        assert_eq!(
            parse_bitcoin_uri(&uri, bitcoin::Network::Bitcoin).unwrap(),
            (address.clone(), Some(amount)),
            "on-chain wallets still read the address and amount"
        );
        let bare = unified_uri(&address, None, None, "lnbc1x");
        assert!(bare.ends_with("?lightning=lnbc1x"));
        assert_eq!(lightning_of_uri(&bare), Some("lnbc1x"));
        assert_eq!(lightning_of_uri(&bitcoin_uri(&address, None, None)), None);
        assert_eq!(lightning_of_uri("ethereum:0x00?lightning=x"), None);
    }

    #[test]
    fn amounts_are_checked() {
        assert!(parse_btc_amount("0").is_err());
        assert!(parse_btc_amount("0.000000001").is_err(), "sub-satoshi");
        assert!(parse_btc_amount("-1").is_err());
        assert!(parse_btc_amount("lots").is_err());
        assert_eq!(
            parse_evm_amount("1.5", 18).unwrap(),
            U256::from(1_500_000_000_000_000_000u128)
        );
        assert_eq!(parse_evm_amount("2", 6).unwrap(), U256::from(2_000_000u64));
        assert!(parse_evm_amount("-1", 18).is_err());
        assert!(parse_evm_amount("0", 18).is_err());
        assert!(
            parse_evm_amount("0.0000001", 6).is_err(),
            "more decimals than the token has"
        );
    }

    #[test]
    fn eip681_native_and_token() {
        let to = EvmAddress::from_str("0x9858EfFD232B4033E47d90003D41EC34EcaEda94").unwrap();
        let native = EvmTopUp {
            to,
            chain_id: 31337,
            asset: EvmAsset::Native,
            amount: Some(U256::from(10u64).pow(U256::from(16))),
        };
        assert_eq!(
            native.to_string(),
            "ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94@31337?value=10000000000000000"
        );
        let token = EvmAddress::from_str("0x5FbDB2315678afecb367f032d93F642f64180aa3").unwrap();
        let erc20 = EvmTopUp {
            to,
            chain_id: 1,
            asset: EvmAsset::Erc20 { token },
            amount: Some(U256::from(2_000_000u64)),
        };
        assert_eq!(
            erc20.to_string(),
            "ethereum:0x5FbDB2315678afecb367f032d93F642f64180aa3@1/transfer?address=0x9858EfFD232B4033E47d90003D41EC34EcaEda94&uint256=2000000"
        );
        assert_eq!(
            EvmTopUp {
                amount: None,
                ..native
            }
            .to_string(),
            "ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94@31337"
        );
    }

    #[test]
    fn eip681_requests_read_back_what_display_writes() {
        let token: EvmAddress = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
            .parse()
            .unwrap();
        let to: EvmAddress = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
            .parse()
            .unwrap();
        for request in [
            EvmTopUp {
                to,
                chain_id: 31337,
                asset: EvmAsset::Native,
                amount: Some(U256::from(5u8)),
            },
            EvmTopUp {
                to,
                chain_id: 1,
                asset: EvmAsset::Erc20 { token },
                amount: Some(U256::from(250_000u32)),
            },
            EvmTopUp {
                to,
                chain_id: 8453,
                asset: EvmAsset::Erc20 { token },
                amount: None,
            },
        ] {
            assert_eq!(request.to_string().parse::<EvmTopUp>().unwrap(), request);
        }
        for bad in [
            "bitcoin:abc",
            "ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
            "ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94@1?value=1e18",
            "ethereum:0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0@1/approve?address=0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
            "ethereum:0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0@1/transfer?uint256=5",
            "ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94@1?value=1&value=2",
        ] {
            assert!(bad.parse::<EvmTopUp>().is_err(), "{bad}");
        }
    }
}
