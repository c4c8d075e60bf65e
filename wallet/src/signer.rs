//! The `Signer` trait: the one way the rest of the agent gets a signature.
//!
//! Contract: a signer signs exactly the 32-byte digest or message it is given and never exposes
//! the key. Callers compute domain-separated digests themselves (EIP-712 with chain id and
//! contract address; BIP-341 sighashes), so a signer cannot be tricked into signing for another
//! domain by anything but its caller. Implementations must not log their input keys.

use alloy_primitives::{Address as EvmAddress, B256, Signature as EvmSignature, U256};
use bitcoin::secp256k1::{Message, PublicKey, XOnlyPublicKey, ecdh, schnorr};

use crate::error::SignerError;
use crate::keys::DeviceKeys;

/// Which Taproot key signs a BIP-340 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchnorrKey {
    /// The untweaked BIP-86 key: the key named inside our channel script leaves.
    ScriptPath,
    /// The BIP-86 tweaked output key: spends the device's own Taproot address by key path.
    KeyPath,
}

/// Signs for the device. Implemented by [`crate::Keystore`] (and by [`DeviceKeys`]).
pub trait Signer {
    /// The Ethereum address whose key signs [`Signer::sign_evm_digest`].
    fn evm_address(&self) -> EvmAddress;

    /// Signs a 32-byte digest (an EIP-712 `hashStruct` digest, an EIP-191 hash) with recoverable
    /// secp256k1 ECDSA. Deterministic (RFC 6979), low-s, `v` encoded as 27/28 in the bytes.
    fn sign_evm_digest(&self, digest: &B256) -> Result<EvmSignature, SignerError>;

    /// The public key of the EVM key (its address is [`Signer::evm_address`]), which peers use
    /// for key agreement with this device.
    fn evm_public_key(&self) -> PublicKey;

    /// ECDH between the EVM key and `peer`: SHA-256 of the shared point (libsecp256k1's ECDH).
    /// The result is key material for a KDF with a purpose label, never a key by itself; the
    /// secret key never leaves the signer.
    fn evm_key_agreement(&self, peer: &PublicKey) -> [u8; 32];

    /// The Taproot internal (untweaked) x-only public key.
    fn taproot_internal_key(&self) -> XOnlyPublicKey;

    /// Signs a 32-byte message (a BIP-341 sighash) with BIP-340 Schnorr, with fresh auxiliary
    /// randomness as BIP-340 recommends.
    fn sign_schnorr(
        &self,
        message: &[u8; 32],
        key: SchnorrKey,
    ) -> Result<schnorr::Signature, SignerError>;

    /// A MuSig2 (BIP-327) partial signature over `message` with the untweaked Taproot key (as
    /// its even-y point, the way channel scripts aggregate it). `secnonce` is consumed: a nonce
    /// is never used twice.
    fn sign_musig2_partial(
        &self,
        key_agg: &musig2::KeyAggContext,
        secnonce: musig2::SecNonce,
        aggnonce: &musig2::AggNonce,
        message: &[u8; 32],
    ) -> Result<musig2::PartialSignature, SignerError>;
}

impl Signer for DeviceKeys {
    fn evm_address(&self) -> EvmAddress {
        DeviceKeys::evm_address(self)
    }

    fn sign_evm_digest(&self, digest: &B256) -> Result<EvmSignature, SignerError> {
        let message = Message::from_digest(digest.0);
        let signature = self
            .secp()
            .sign_ecdsa_recoverable(&message, self.evm_secret());
        let (recovery_id, compact) = signature.serialize_compact();
        let r = U256::from_be_slice(&compact[..32]);
        let s = U256::from_be_slice(&compact[32..]);
        Ok(EvmSignature::new(r, s, recovery_id.to_i32() == 1))
    }

    fn evm_public_key(&self) -> PublicKey {
        self.evm_secret().public_key(self.secp())
    }

    fn evm_key_agreement(&self, peer: &PublicKey) -> [u8; 32] {
        ecdh::SharedSecret::new(peer, self.evm_secret()).secret_bytes()
    }

    fn taproot_internal_key(&self) -> XOnlyPublicKey {
        DeviceKeys::taproot_internal_key(self)
    }

    fn sign_schnorr(
        &self,
        message: &[u8; 32],
        key: SchnorrKey,
    ) -> Result<schnorr::Signature, SignerError> {
        let mut aux = [0u8; 32];
        getrandom::getrandom(&mut aux).map_err(SignerError::Entropy)?;
        let keypair = self.taproot_keypair(key == SchnorrKey::KeyPath);
        let message = Message::from_digest(*message);
        Ok(self
            .secp()
            .sign_schnorr_with_aux_rand(&message, keypair, &aux))
    }

    fn sign_musig2_partial(
        &self,
        key_agg: &musig2::KeyAggContext,
        secnonce: musig2::SecNonce,
        aggnonce: &musig2::AggNonce,
        message: &[u8; 32],
    ) -> Result<musig2::PartialSignature, SignerError> {
        let keypair = self.taproot_keypair(false);
        let (_, parity) = keypair.x_only_public_key();
        // The aggregate uses the even-y point of our x-only key: sign with the matching scalar.
        let mut secret = keypair.secret_key();
        if parity == bitcoin::secp256k1::Parity::Odd {
            secret = secret.negate();
        }
        let scalar = musig2::secp::Scalar::from_slice(&secret.secret_bytes())
            .map_err(|_| SignerError::Musig2("secret key is not a scalar".into()))?;
        secret.non_secure_erase();
        musig2::sign_partial(key_agg, scalar, secnonce, aggnonce, message)
            .map_err(|e| SignerError::Musig2(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::Network;
    use bitcoin::key::TapTweak;
    use bitcoin::secp256k1::Secp256k1;
    use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};

    use super::*;
    use crate::keys::evm_address_of;
    use crate::seed::{DeviceSeed, SeedLength};

    fn keys() -> DeviceKeys {
        DeviceKeys::derive(
            &DeviceSeed::generate(SeedLength::Words12).unwrap(),
            Network::Regtest,
        )
        .unwrap()
    }

    /// secp256k1 group order / 2: a low-s signature has s at or below it (EIP-2).
    const HALF_ORDER: &str = "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0";

    #[test]
    fn evm_signature_recovers_to_our_address_and_is_low_s() {
        let keys = keys();
        let digest = alloy_primitives::keccak256(b"voucher digest stand-in");
        let signature = keys.sign_evm_digest(&digest).unwrap();
        let bytes = signature.as_bytes();
        assert!(bytes[64] == 27 || bytes[64] == 28);
        assert!(signature.s() <= U256::from_str_radix(HALF_ORDER, 16).unwrap());

        let recovery_id = RecoveryId::from_i32(i32::from(bytes[64] - 27)).unwrap();
        let recoverable = RecoverableSignature::from_compact(&bytes[..64], recovery_id).unwrap();
        let secp = Secp256k1::new();
        let public = secp
            .recover_ecdsa(&Message::from_digest(digest.0), &recoverable)
            .unwrap();
        assert_eq!(evm_address_of(&public), keys.evm_address());
        // Deterministic: the same digest gives the same signature.
        assert_eq!(keys.sign_evm_digest(&digest).unwrap(), signature);
    }

    #[test]
    fn key_agreement_is_symmetric_and_the_public_key_is_the_address_key() {
        let (alice, bob) = (keys(), keys());
        assert_eq!(evm_address_of(&alice.evm_public_key()), alice.evm_address());
        let shared = alice.evm_key_agreement(&bob.evm_public_key());
        assert_eq!(shared, bob.evm_key_agreement(&alice.evm_public_key()));
        assert_ne!(shared, alice.evm_key_agreement(&keys().evm_public_key()));
    }

    #[test]
    fn schnorr_signatures_verify_under_the_right_key() {
        let keys = keys();
        let secp = Secp256k1::verification_only();
        let message = [7u8; 32];
        let internal = keys.taproot_internal_key();
        let (output_key, _) = internal.tap_tweak(&secp, None);

        let script_sig = keys.sign_schnorr(&message, SchnorrKey::ScriptPath).unwrap();
        let key_sig = keys.sign_schnorr(&message, SchnorrKey::KeyPath).unwrap();
        let msg = Message::from_digest(message);
        secp.verify_schnorr(&script_sig, &msg, &internal).unwrap();
        secp.verify_schnorr(&key_sig, &msg, &output_key.to_x_only_public_key())
            .unwrap();
        assert!(
            secp.verify_schnorr(&script_sig, &msg, &output_key.to_x_only_public_key())
                .is_err()
        );
    }
}
