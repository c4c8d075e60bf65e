//! The `exact` scheme's payload (x402 v2, EVM): one EIP-3009 `transferWithAuthorization`.

use alloy::primitives::{Address, B256, Bytes, U256};
use m2m_contracts::eip712::TransferWithAuthorization;
use serde::{Deserialize, Serialize};

/// The scheme's name in `PaymentRequirements.scheme`.
pub const SCHEME: &str = "exact";

/// The EIP-3009 authorization, with amounts and times as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactAuthorization {
    /// Payer.
    pub from: Address,
    /// Recipient (the seller's `payTo`).
    pub to: Address,
    /// Atomic units.
    pub value: String,
    /// Seconds.
    pub valid_after: String,
    /// Seconds.
    pub valid_before: String,
    /// Random 32-byte nonce.
    pub nonce: B256,
}

/// `PaymentPayload.payload` for `exact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactPayload {
    /// 65-byte signature over the authorization (token's EIP-712 domain).
    pub signature: Bytes,
    /// The authorization.
    pub authorization: ExactAuthorization,
}

impl ExactAuthorization {
    /// The typed struct the token hashes; `None` if a number is malformed.
    pub fn to_typed(&self) -> Option<TransferWithAuthorization> {
        let number = |text: &str| -> Option<U256> {
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())
                .flatten()
        };
        Some(TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: number(&self.value)?,
            validAfter: number(&self.valid_after)?,
            validBefore: number(&self.valid_before)?,
            nonce: self.nonce,
        })
    }
}
