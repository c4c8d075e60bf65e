//! EIP-712 digests, computed off chain exactly as the contracts compute them.
//!
//! Domain separation: every settlement digest is bound to the "x402 Batch Settlement" v1 domain
//! with the chain id and the settlement contract's address, and each message kind has its own
//! type hash, so a signature for one channel, chain, contract or message kind is worthless for
//! any other. Integration tests compare each function with the contract's own view on anvil.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::{Eip712Domain, SolStruct, SolValue, eip712_domain};

use crate::bindings::ChannelConfig;

alloy::sol! {
    /// A cumulative ceiling the payer signs (`Voucher(bytes32 channelId,uint128 maxClaimableAmount)`).
    #[derive(Debug, PartialEq, Eq)]
    struct Voucher {
        bytes32 channelId;
        uint128 maxClaimableAmount;
    }

    /// A cooperative refund the receiver authorizer signs.
    #[derive(Debug, PartialEq, Eq)]
    struct Refund {
        bytes32 channelId;
        uint256 nonce;
        uint128 amount;
    }

    /// One row of a claim batch.
    #[derive(Debug, PartialEq, Eq)]
    struct ClaimEntry {
        bytes32 channelId;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
    }

    /// The receiver authorizer's approval of a whole claim batch.
    #[derive(Debug, PartialEq, Eq)]
    struct ClaimBatch {
        ClaimEntry[] claims;
    }

    /// EIP-3009 authorization pulled by the payee itself (the deposit collector).
    #[derive(Debug, PartialEq, Eq)]
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    /// EIP-3009 authorization any relayer may submit (the x402 `exact` scheme).
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The settlement contract's EIP-712 domain on `chain_id` at `settlement`.
pub fn settlement_domain(chain_id: u64, settlement: Address) -> Eip712Domain {
    eip712_domain! {
        name: "x402 Batch Settlement",
        version: "1",
        chain_id: chain_id,
        verifying_contract: settlement,
    }
}

/// A token's EIP-712 domain (for EIP-3009 and EIP-2612), from its `name()` and `version()`.
pub fn token_domain(name: String, version: String, chain_id: u64, token: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.into()),
        Some(version.into()),
        Some(U256::from(chain_id)),
        Some(token),
        None,
    )
}

/// The channel id: the EIP-712 hash of the immutable config under the settlement domain.
pub fn channel_id(domain: &Eip712Domain, config: &ChannelConfig) -> B256 {
    config.eip712_signing_hash(domain)
}

/// The digest a payer signs for a cumulative ceiling on a channel.
pub fn voucher_digest(domain: &Eip712Domain, channel_id: B256, max_claimable_amount: u128) -> B256 {
    Voucher {
        channelId: channel_id,
        maxClaimableAmount: max_claimable_amount,
    }
    .eip712_signing_hash(domain)
}

/// The digest a receiver authorizer signs to refund `amount` with refund nonce `nonce`.
pub fn refund_digest(domain: &Eip712Domain, channel_id: B256, nonce: U256, amount: u128) -> B256 {
    Refund {
        channelId: channel_id,
        nonce,
        amount,
    }
    .eip712_signing_hash(domain)
}

/// The digest a receiver authorizer signs to approve a batch of claims.
pub fn claim_batch_digest(domain: &Eip712Domain, claims: Vec<ClaimEntry>) -> B256 {
    ClaimBatch { claims }.eip712_signing_hash(domain)
}

/// The EIP-3009 nonce of a channel deposit: `keccak256(abi.encode(channelId, salt))`.
pub fn deposit_nonce(channel_id: B256, salt: U256) -> B256 {
    keccak256((channel_id, salt).abi_encode())
}

/// The `collectorData` the ERC-3009 collector decodes:
/// `abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`.
pub fn erc3009_collector_data(
    valid_after: U256,
    valid_before: U256,
    salt: U256,
    signature: &[u8],
) -> Bytes {
    (
        valid_after,
        valid_before,
        salt,
        Bytes::copy_from_slice(signature),
    )
        .abi_encode_params()
        .into()
}

#[cfg(test)]
mod tests {
    use alloy::primitives::address;

    use super::*;

    #[test]
    fn type_strings_are_the_schemes() {
        assert_eq!(
            Voucher::eip712_encode_type(),
            "Voucher(bytes32 channelId,uint128 maxClaimableAmount)"
        );
        assert_eq!(
            Refund::eip712_encode_type(),
            "Refund(bytes32 channelId,uint256 nonce,uint128 amount)"
        );
        assert_eq!(
            ClaimBatch::eip712_encode_type(),
            "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
        );
        assert_eq!(
            ChannelConfig::eip712_encode_type(),
            "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
        );
    }

    #[test]
    fn digests_are_domain_separated() {
        let settlement = address!("4020074e9dF2ce1deE5A9C1b5c3f541D02a10003");
        let a = settlement_domain(31337, settlement);
        let other_chain = settlement_domain(1, settlement);
        let other_contract = settlement_domain(31337, Address::repeat_byte(1));
        let id = B256::repeat_byte(7);
        let digest = voucher_digest(&a, id, 5);
        assert_ne!(digest, voucher_digest(&other_chain, id, 5));
        assert_ne!(digest, voucher_digest(&other_contract, id, 5));
        assert_ne!(digest, voucher_digest(&a, B256::repeat_byte(8), 5));
        assert_ne!(digest, refund_digest(&a, id, U256::ZERO, 5));
    }
}
