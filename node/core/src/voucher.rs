//! Vouchers: a payer's signature over a channel's cumulative ceiling.
//!
//! The EVM form is the x402 batch-settlement EIP-712 message
//! `Voucher(bytes32 channelId,uint128 maxClaimableAmount)`. The domain separator (name
//! "x402 Batch Settlement", version, chain id, contract) is computed once per channel by the
//! shell and passed in, so the per-voucher work here is two keccak calls. Signing and signature
//! checking are capabilities the shell provides ([`VoucherSigner`], [`VoucherVerifier`]), so this
//! crate needs no elliptic-curve code and a device can plug in a hardware signer.

use tiny_keccak::{Hasher, Keccak};

/// A channel's identity: for EVM channels, the EIP-712 hash of its config (the contract's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 32]);

/// A 20-byte EVM address (of a voucher signer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvmAddress(pub [u8; 20]);

/// A 65-byte recoverable ECDSA signature `r ‖ s ‖ v` (v = 27 or 28).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature65(pub [u8; 65]);

impl core::fmt::Debug for Signature65 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Signature65(r={:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Signature65 {
    /// The EIP-2098 compact form: `r ‖ (yParity << 255 | s)`, 64 bytes.
    pub fn to_compact(&self) -> [u8; 64] {
        let mut compact = [0u8; 64];
        compact.copy_from_slice(&self.0[..64]);
        if self.0[64] == 28 || self.0[64] == 1 {
            compact[32] |= 0x80;
        }
        compact
    }

    /// Back from the EIP-2098 compact form. A set top bit of `s` means v = 28.
    pub fn from_compact(compact: &[u8; 64]) -> Self {
        let mut full = [0u8; 65];
        full[..64].copy_from_slice(compact);
        let odd = full[32] & 0x80 != 0;
        full[32] &= 0x7f;
        full[64] = if odd { 28 } else { 27 };
        Self(full)
    }
}

/// A signed cumulative voucher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voucher {
    /// The channel it is for.
    pub channel_id: ChannelId,
    /// The cumulative ceiling the payee may claim, in the channel asset's base units.
    pub max_claimable_units: u128,
    /// The payer authorizer's signature over [`voucher_digest`].
    pub signature: Signature65,
}

/// Produces voucher signatures. Implemented in the shell by the device wallet's `Signer`.
pub trait VoucherSigner {
    /// Why signing failed.
    type Error: core::fmt::Debug;
    /// Signs a 32-byte EIP-712 digest (recoverable ECDSA, low-s, v = 27/28).
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature65, Self::Error>;
}

/// Checks voucher signatures. Implemented in the shell over libsecp256k1.
pub trait VoucherVerifier {
    /// Whether `signature` over `digest` was made by `signer`. Must reject high-s signatures.
    fn is_valid(&self, digest: &[u8; 32], signature: &Signature65, signer: &EvmAddress) -> bool;
}

/// keccak256 of `data`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak::v256();
    hasher.update(data);
    let mut out = [0u8; 32];
    hasher.finalize(&mut out);
    out
}

/// `keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)")`.
pub fn voucher_typehash() -> [u8; 32] {
    keccak256(b"Voucher(bytes32 channelId,uint128 maxClaimableAmount)")
}

/// The EIP-712 digest of a voucher under `domain_separator`.
pub fn voucher_digest(
    domain_separator: &[u8; 32],
    channel_id: &ChannelId,
    max_claimable_units: u128,
) -> [u8; 32] {
    let mut struct_data = [0u8; 96];
    struct_data[..32].copy_from_slice(&VOUCHER_TYPEHASH);
    struct_data[32..64].copy_from_slice(&channel_id.0);
    struct_data[80..96].copy_from_slice(&max_claimable_units.to_be_bytes());
    let struct_hash = keccak256(&struct_data);
    let mut message = [0u8; 66];
    message[..2].copy_from_slice(b"\x19\x01");
    message[2..34].copy_from_slice(domain_separator);
    message[34..].copy_from_slice(&struct_hash);
    keccak256(&message)
}

/// Precomputed [`voucher_typehash`] (checked by a test).
const VOUCHER_TYPEHASH: [u8; 32] = [
    0x1e, 0x1b, 0xd6, 0xff, 0x84, 0xc3, 0xe0, 0xd9, 0x02, 0x9a, 0x29, 0x2b, 0x21, 0x2e, 0x03, 0x9c,
    0x0c, 0xa9, 0x7e, 0xc4, 0x97, 0xc5, 0x51, 0x91, 0xa4, 0xa5, 0x87, 0x42, 0x94, 0x60, 0x9a, 0x69,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typehash_constant_matches_the_type_string() {
        assert_eq!(VOUCHER_TYPEHASH, voucher_typehash());
    }

    #[test]
    fn compact_signatures_round_trip() {
        for v in [27u8, 28] {
            let mut bytes = [0x11u8; 65];
            bytes[32] = 0x7f;
            bytes[64] = v;
            let signature = Signature65(bytes);
            assert_eq!(
                Signature65::from_compact(&signature.to_compact()),
                signature
            );
        }
    }

    #[test]
    fn digest_depends_on_every_input() {
        let domain = [1u8; 32];
        let id = ChannelId([2u8; 32]);
        let digest = voucher_digest(&domain, &id, 5);
        assert_ne!(digest, voucher_digest(&[3u8; 32], &id, 5));
        assert_ne!(digest, voucher_digest(&domain, &ChannelId([4u8; 32]), 5));
        assert_ne!(digest, voucher_digest(&domain, &id, 6));
    }
}
