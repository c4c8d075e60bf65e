//! A reading key wrapped for one buyer: what a seller sends back for a paid reading of a priced
//! topic, so that only the payer can use it even on a topic others can read.
//!
//! The wrapping key is HKDF-SHA256 (RFC 5869) of the ECDH secret between the seller's and the
//! buyer's device keys, with an `info` that names the purpose, both parties and the reading's key
//! id: each (seller, buyer, reading) has a key of its own, and a wrap made for one buyer or one
//! reading never opens as another. The wrap is a COSE_Encrypt0 (ChaCha20-Poly1305) whose
//! external associated data is that same `info`.
//!
//! The ECDH itself is the shell's (the signer holds the device key); this module takes its
//! 32-byte output and draws no randomness.

use alloc::vec::Vec;

use hkdf::Hkdf;
use sha2::Sha256;

use crate::senml::PackError;

/// Purpose label, versioned: a change of this scheme changes every derived key.
const PURPOSE: &[u8] = b"m2m/priced-topic/reading-key-wrap/v1";
/// Longest key id accepted.
pub const MAX_KEY_ID: usize = 64;

/// Who wraps for whom: the 20-byte EVM addresses of the seller and the buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapParties {
    /// The seller (the `payTo` it signs readings with).
    pub seller: [u8; 20],
    /// The buyer (the key that signed its vouchers).
    pub buyer: [u8; 20],
}

fn info(parties: &WrapParties, key_id: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(PURPOSE.len() + 41 + key_id.len());
    info.extend_from_slice(PURPOSE);
    info.extend_from_slice(&parties.seller);
    info.extend_from_slice(&parties.buyer);
    info.push(key_id.len() as u8);
    info.extend_from_slice(key_id);
    info
}

/// 32 bytes of HKDF-SHA256 (RFC 5869) of `ikm` with `salt` and `info`.
pub(crate) fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(salt, ikm).expand(info, &mut key);
    key
}

fn wrapping_key(shared_secret: &[u8; 32], info: &[u8]) -> [u8; 32] {
    hkdf32(None, shared_secret, info)
}

/// Wraps `reading_key` (sold under `key_id`) for the buyer of `parties`; `shared_secret` is the
/// ECDH output of the two device keys, `nonce` fresh.
pub fn wrap(
    shared_secret: &[u8; 32],
    parties: &WrapParties,
    key_id: &[u8],
    reading_key: &[u8; 32],
    nonce: [u8; 12],
) -> Result<Vec<u8>, PackError> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID {
        return Err(PackError::NotEncrypt0("key id of 1 to 64 bytes"));
    }
    let info = info(parties, key_id);
    crate::cose::encrypt(
        &wrapping_key(shared_secret, &info),
        key_id,
        nonce,
        reading_key,
        &info,
    )
}

/// Opens a wrap made by [`wrap`] for `parties`: the key id it names and the reading key.
pub fn unwrap(
    shared_secret: &[u8; 32],
    parties: &WrapParties,
    bytes: &[u8],
) -> Result<(Vec<u8>, [u8; 32]), PackError> {
    if bytes.len() > 256 {
        return Err(PackError::TooLong(bytes.len()));
    }
    let wrapped = crate::cose::decode(bytes)?;
    let key_id = wrapped.protected.header.key_id.clone();
    if key_id.len() > MAX_KEY_ID {
        return Err(PackError::NotEncrypt0("key id of 1 to 64 bytes"));
    }
    let info = info(parties, &key_id);
    let plaintext = crate::cose::decrypt(&wrapped, &wrapping_key(shared_secret, &info), &info)?;
    let key = <[u8; 32]>::try_from(plaintext.as_slice())
        .map_err(|_| PackError::Malformed("a wrapped key is not 32 bytes"))?;
    Ok((key_id, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coset::{CborSerializable, CoseEncrypt0, HeaderBuilder, iana};

    const PARTIES: WrapParties = WrapParties {
        seller: [1; 20],
        buyer: [2; 20],
    };

    #[test]
    fn a_wrap_opens_for_its_buyer_and_reading_only() {
        let (secret, key) = ([5u8; 32], [9u8; 32]);
        let wrapped = wrap(&secret, &PARTIES, b"w7", &key, [3; 12]).unwrap();
        assert_eq!(
            unwrap(&secret, &PARTIES, &wrapped).unwrap(),
            (b"w7".to_vec(), key)
        );
        assert_eq!(
            unwrap(&[6u8; 32], &PARTIES, &wrapped),
            Err(PackError::Decrypt),
            "another buyer's ECDH secret"
        );
        let other_buyer = WrapParties {
            buyer: [3; 20],
            ..PARTIES
        };
        assert_eq!(
            unwrap(&secret, &other_buyer, &wrapped),
            Err(PackError::Decrypt)
        );
        // The key id is bound: relabelling a wrap for another reading fails.
        let mut relabelled = CoseEncrypt0::from_slice(&wrapped).unwrap();
        relabelled.protected = coset::ProtectedHeader {
            original_data: None,
            header: HeaderBuilder::new()
                .algorithm(iana::Algorithm::ChaCha20Poly1305)
                .key_id(b"w8".to_vec())
                .build(),
        };
        let relabelled = relabelled.to_vec().unwrap();
        assert_eq!(
            unwrap(&secret, &PARTIES, &relabelled),
            Err(PackError::Decrypt)
        );
        assert!(unwrap(&secret, &PARTIES, &[0xff; 10]).is_err());
        assert!(wrap(&secret, &PARTIES, b"", &key, [0; 12]).is_err());
    }
}
