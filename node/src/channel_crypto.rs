//! The core's signing and checking capabilities, implemented with the device wallet and
//! libsecp256k1.
//!
//! [`Secp256k1Verifier`] recovers a voucher signer's public key once per signer, then checks later
//! vouchers with a plain ECDSA verify against the cached key — cheaper than a recovery, and
//! libsecp256k1's verify rejects high-s signatures as the contract does.

use std::collections::HashMap;
use std::sync::RwLock;

use m2m_core::{EvmAddress, Signature65, VoucherSigner, VoucherVerifier, keccak256};
use m2m_wallet::{B256, SignerError};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use secp256k1::{Message, PublicKey, Secp256k1, VerifyOnly};

/// Signs vouchers with the device wallet's EVM key.
#[derive(Debug)]
pub struct WalletVoucherSigner<'a, S: m2m_wallet::Signer + ?Sized>(pub &'a S);

impl<S: m2m_wallet::Signer + ?Sized> VoucherSigner for WalletVoucherSigner<'_, S> {
    type Error = SignerError;
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature65, SignerError> {
        Ok(Signature65(
            self.0.sign_evm_digest(&B256::from(*digest))?.as_bytes(),
        ))
    }
}

/// Checks voucher signatures, caching each signer's public key.
#[derive(Debug)]
pub struct Secp256k1Verifier {
    secp: Secp256k1<VerifyOnly>,
    keys: RwLock<HashMap<EvmAddress, PublicKey>>,
}

impl Default for Secp256k1Verifier {
    fn default() -> Self {
        Self {
            secp: Secp256k1::verification_only(),
            keys: RwLock::new(HashMap::new()),
        }
    }
}

impl Secp256k1Verifier {
    fn recover(&self, message: &Message, signature: &Signature65) -> Option<PublicKey> {
        let id = RecoveryId::from_i32(i32::from(signature.0[64]).checked_sub(27)?).ok()?;
        let recoverable = RecoverableSignature::from_compact(&signature.0[..64], id).ok()?;
        self.secp.recover_ecdsa(message, &recoverable).ok()
    }
}

/// The EVM address of a public key.
pub fn evm_address_of(key: &PublicKey) -> EvmAddress {
    let hash = keccak256(&key.serialize_uncompressed()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    EvmAddress(address)
}

impl VoucherVerifier for Secp256k1Verifier {
    fn is_valid(&self, digest: &[u8; 32], signature: &Signature65, signer: &EvmAddress) -> bool {
        if !matches!(signature.0[64], 27 | 28) {
            return false;
        }
        let message = Message::from_digest(*digest);
        let cached = self
            .keys
            .read()
            .map(|keys| keys.get(signer).copied())
            .unwrap_or(None);
        if let Some(key) = cached {
            let Ok(standard) = Signature::from_compact(&signature.0[..64]) else {
                return false;
            };
            // verify_ecdsa rejects high-s; the recovery id cannot matter for a known key.
            return self.secp.verify_ecdsa(&message, &standard, &key).is_ok();
        }
        let Some(key) = self.recover(&message, signature) else {
            return false;
        };
        let Ok(standard) = Signature::from_compact(&signature.0[..64]) else {
            return false;
        };
        if evm_address_of(&key) != *signer
            || self.secp.verify_ecdsa(&message, &standard, &key).is_err()
        {
            return false;
        }
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(*signer, key);
        }
        true
    }
}
