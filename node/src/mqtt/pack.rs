//! A reading as it is published on a priced topic: the SenML pack of `m2m_core::senml` (clear
//! fields, value encrypted) signed by the seller's device key as a COSE_Sign1 (RFC 9052, ES256K:
//! ECDSA over secp256k1 with SHA-256), so a subscriber knows whose reading it is before paying
//! for its key.
//!
//! The key is the one the seller is paid with (its x402 `payTo` address): a buyer checks a pack
//! against the address it would pay, recovering the signer from the signature (a 64-byte ES256K
//! signature leaves two candidate keys; the one whose address matches is the signer). COSE's
//! `Signature1` structure is what is hashed, so no pack signature can pass for a voucher or any
//! other EIP-712 message the same key signs.

use alloy::primitives::{Address, B256};
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};
use m2m_core::senml::{self, MAX_PACK_BYTES, SealedReading};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey};
use sha2::{Digest, Sha256};

/// A signed reading as checked: its pack (without any key) and the seller's public key, with
/// which a buyer agrees the key that wraps what it buys.
#[derive(Debug, Clone)]
pub struct SignedReading {
    /// The pack.
    pub sealed: SealedReading,
    /// The key that signed it (its address is the seller's).
    pub seller_key: PublicKey,
}

/// A signed pack could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum PackSignatureError {
    /// The device key did not sign.
    #[error("signing the pack")]
    Sign(#[source] m2m_wallet::SignerError),
    /// Not a COSE_Sign1 with ES256K, or too long.
    #[error("not a signed reading: {0}")]
    Malformed(&'static str),
    /// Signed, but not by the expected seller.
    #[error("the reading is not signed by {expected:#x}")]
    WrongSigner {
        /// Who should have signed.
        expected: Address,
    },
    /// The SenML pack inside does not read.
    #[error("the reading inside")]
    Pack(#[source] senml::PackError),
}

fn digest(to_be_signed: &[u8]) -> B256 {
    B256::from_slice(&Sha256::digest(to_be_signed))
}

/// Signs `pack` (SenML CBOR) with the device's EVM key; the COSE_Sign1 bytes.
pub fn sign(pack: Vec<u8>, signer: &dyn m2m_wallet::Signer) -> Result<Vec<u8>, PackSignatureError> {
    let mut failure = None;
    let signed = CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES256K)
                .build(),
        )
        .payload(pack)
        .create_signature(b"", |to_be_signed| {
            match signer.sign_evm_digest(&digest(to_be_signed)) {
                Ok(signature) => {
                    let mut bytes = Vec::with_capacity(64);
                    bytes.extend_from_slice(&signature.r().to_be_bytes::<32>());
                    bytes.extend_from_slice(&signature.s().to_be_bytes::<32>());
                    bytes
                }
                Err(error) => {
                    failure = Some(error);
                    Vec::new()
                }
            }
        })
        .build();
    if let Some(error) = failure {
        return Err(PackSignatureError::Sign(error));
    }
    signed
        .to_vec()
        .map_err(|_| PackSignatureError::Malformed("unencodable"))
}

/// Checks that `bytes` is a reading signed by `seller` and reads its pack (without any key).
pub fn verify(bytes: &[u8], seller: Address) -> Result<SignedReading, PackSignatureError> {
    if bytes.len() > MAX_PACK_BYTES + 256 {
        return Err(PackSignatureError::Malformed("too long"));
    }
    let signed = CoseSign1::from_slice(bytes)
        .map_err(|_| PackSignatureError::Malformed("not COSE_Sign1"))?;
    if signed.protected.header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::ES256K)) {
        return Err(PackSignatureError::Malformed("not ES256K"));
    }
    let mut seller_key = None;
    signed.verify_signature(b"", |signature, to_be_signed| {
        if signature.len() != 64 {
            return Err(PackSignatureError::Malformed("not a 64-byte signature"));
        }
        let message = Message::from_digest(digest(to_be_signed).0);
        let secp = secp256k1::Secp256k1::verification_only();
        // A 64-byte signature leaves two candidate keys: the signer is the one whose address is
        // the seller's (libsecp256k1 recovery rejects high-s, as verification would).
        seller_key = [0, 1].into_iter().find_map(|id| {
            let id = RecoveryId::from_i32(id).ok()?;
            let recoverable = RecoverableSignature::from_compact(signature, id).ok()?;
            let key = secp.recover_ecdsa(&message, &recoverable).ok()?;
            (m2m_wallet::evm_address_of(&key) == seller).then_some(key)
        });
        match seller_key {
            Some(_) => Ok(()),
            None => Err(PackSignatureError::WrongSigner { expected: seller }),
        }
    })?;
    let seller_key = seller_key.ok_or(PackSignatureError::WrongSigner { expected: seller })?;
    let pack = signed
        .payload
        .ok_or(PackSignatureError::Malformed("no payload"))?;
    Ok(SignedReading {
        sealed: senml::read(&pack).map_err(PackSignatureError::Pack)?,
        seller_key,
    })
}

/// The key id of a signed reading, read without checking anything (to tell readings apart
/// before [`verify`]).
pub fn key_id_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let signed = CoseSign1::from_slice(bytes).ok()?;
    Some(senml::read(&signed.payload?).ok()?.key_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::senml::{Mask, Reading};

    fn keys(words: &str) -> m2m_wallet::DeviceKeys {
        let seed = m2m_wallet::DeviceSeed::from_phrase(words).unwrap();
        m2m_wallet::DeviceKeys::derive(&seed, bitcoin::Network::Regtest).unwrap()
    }

    #[test]
    fn a_signed_reading_verifies_against_its_seller_only() {
        let seller = keys(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        );
        let other = keys("zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong");
        let reading = Reading {
            name: "building1/floor1/room1/temperature".into(),
            unit: Some("Cel".into()),
            time: Some(1_796_354_833.0),
            value: 21.5,
        };
        let key = [9u8; 32];
        let pack = senml::seal(&reading, Mask::default(), 1_000, b"w1", &key, [3; 12]).unwrap();
        let signed = sign(pack, &seller).unwrap();
        let address = m2m_wallet::Signer::evm_address(&seller);
        let checked = verify(&signed, address).unwrap();
        assert_eq!(
            checked.seller_key,
            m2m_wallet::Signer::evm_public_key(&seller)
        );
        let sealed = checked.sealed;
        assert_eq!(sealed.price, 1_000);
        assert_eq!(sealed.open(&key).unwrap(), reading);
        let stranger = m2m_wallet::Signer::evm_address(&other);
        assert!(matches!(
            verify(&signed, stranger),
            Err(PackSignatureError::WrongSigner { .. })
        ));
        // Signed by someone else, claimed for the seller.
        let forged = sign(
            senml::seal(&reading, Mask::default(), 1, b"w1", &key, [3; 12]).unwrap(),
            &other,
        )
        .unwrap();
        assert!(matches!(
            verify(&forged, address),
            Err(PackSignatureError::WrongSigner { .. })
        ));
        // One flipped bit anywhere.
        for index in [0, signed.len() / 2, signed.len() - 1] {
            let mut bent = signed.clone();
            bent[index] ^= 0x01;
            assert!(verify(&bent, address).is_err(), "bit flipped at {index}");
        }
    }
}
