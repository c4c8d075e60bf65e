//! The `batch-settlement` scheme's payloads (x402 v2, EVM), typed.
//!
//! Amounts travel as decimal strings and addresses/hashes as 0x-hex, as the reference client
//! writes them; [`VoucherFields::to_core`] turns a voucher into the channel core's form.

use alloy::primitives::{Address, B256, Bytes};
use m2m_contracts::bindings::ChannelConfig;
use m2m_core::{ChannelId, Signature65, Voucher};
use serde::{Deserialize, Serialize};

/// The scheme's name in `PaymentRequirements.scheme`.
pub const SCHEME: &str = "batch-settlement";

/// `ChannelConfig` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConfigJson {
    /// Payer.
    pub payer: Address,
    /// Voucher signer (or zero for EIP-1271 via the payer).
    pub payer_authorizer: Address,
    /// Receiver.
    pub receiver: Address,
    /// Claim/refund authorizer.
    pub receiver_authorizer: Address,
    /// Token.
    pub token: Address,
    /// Seconds.
    pub withdraw_delay: u64,
    /// Salt.
    pub salt: B256,
}

impl ChannelConfigJson {
    /// The contract's struct (for channel ids and calls).
    pub fn to_contract(&self) -> Result<ChannelConfig, BatchPayloadError> {
        let delay = alloy::primitives::aliases::U40::try_from(self.withdraw_delay)
            .map_err(|_| BatchPayloadError::Field("withdrawDelay"))?;
        Ok(ChannelConfig {
            payer: self.payer,
            payerAuthorizer: self.payer_authorizer,
            receiver: self.receiver,
            receiverAuthorizer: self.receiver_authorizer,
            token: self.token,
            withdrawDelay: delay,
            salt: self.salt,
        })
    }
}

/// A voucher as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoucherFields {
    /// Channel id.
    pub channel_id: B256,
    /// Cumulative ceiling, decimal.
    pub max_claimable_amount: String,
    /// 65-byte signature.
    pub signature: Bytes,
}

impl VoucherFields {
    /// The core's voucher; refuses non-numeric amounts and signatures that are not 65 bytes.
    pub fn to_core(&self) -> Result<Voucher, BatchPayloadError> {
        let max = self
            .max_claimable_amount
            .parse::<u128>()
            .map_err(|_| BatchPayloadError::Field("maxClaimableAmount"))?;
        let signature: [u8; 65] = self
            .signature
            .as_ref()
            .try_into()
            .map_err(|_| BatchPayloadError::Field("signature"))?;
        Ok(Voucher {
            channel_id: ChannelId(self.channel_id.0),
            max_claimable_units: max,
            signature: Signature65(signature),
        })
    }
}

/// EIP-3009 authorization of a deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Erc3009Authorization {
    /// Decimal seconds.
    pub valid_after: String,
    /// Decimal seconds.
    pub valid_before: String,
    /// Nonce salt (decimal or hex string, as the client made it).
    pub salt: String,
    /// Signature.
    pub signature: Bytes,
}

/// How a deposit is authorized (exactly one member set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepositAuthorization {
    /// EIP-3009 `receiveWithAuthorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erc3009_authorization: Option<Erc3009Authorization>,
}

/// A deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deposit {
    /// Decimal amount.
    pub amount: String,
    /// Authorization.
    pub authorization: DepositAuthorization,
}

/// The scheme's `PaymentPayload.payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum BatchPayload {
    /// Open or top up a channel, with the first voucher.
    #[serde(rename_all = "camelCase")]
    Deposit {
        /// The channel.
        channel_config: ChannelConfigJson,
        /// The voucher for this request.
        voucher: VoucherFields,
        /// The deposit.
        deposit: Deposit,
    },
    /// Pay from an open channel.
    #[serde(rename_all = "camelCase")]
    Voucher {
        /// The channel.
        channel_config: ChannelConfigJson,
        /// The voucher.
        voucher: VoucherFields,
    },
    /// Ask for a cooperative refund (zero-charge voucher).
    #[serde(rename_all = "camelCase")]
    Refund {
        /// The channel.
        channel_config: ChannelConfigJson,
        /// The zero-charge voucher.
        voucher: VoucherFields,
        /// Partial refund amount; absent = everything unclaimed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<String>,
    },
}

/// A batch-settlement payload field is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchPayloadError {
    /// The named field is out of range or malformed.
    #[error("invalid_batch_settlement_evm_voucher_payload: bad {0}")]
    Field(&'static str),
}
