//! The one COSE_Encrypt0 shape of this crate (RFC 9052): ChaCha20-Poly1305, the key id in the
//! protected header, a 12-byte nonce in the unprotected one, external associated data given by
//! the caller. Sealed readings (`senml`) and wrapped keys (`key_wrap`) both use it.

use alloc::vec::Vec;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use coset::{CborSerializable, CoseEncrypt0, CoseEncrypt0Builder, HeaderBuilder, iana};

use crate::senml::PackError;

/// Encrypts `plaintext` under `key` with `nonce` (never twice under one key), naming `key_id`
/// and binding `aad`; the encoded COSE_Encrypt0.
pub(crate) fn encrypt(
    key: &[u8; 32],
    key_id: &[u8],
    nonce: [u8; 12],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, PackError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut failed = false;
    let encrypted = CoseEncrypt0Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ChaCha20Poly1305)
                .key_id(key_id.to_vec())
                .build(),
        )
        .unprotected(HeaderBuilder::new().iv(nonce.to_vec()).build())
        .create_ciphertext(plaintext, aad, |message, aad| {
            cipher
                .encrypt(Nonce::from_slice(&nonce), Payload { msg: message, aad })
                .unwrap_or_else(|_| {
                    failed = true;
                    Vec::new()
                })
        })
        .build();
    if failed {
        return Err(PackError::NotEncrypt0("plaintext too long to encrypt"));
    }
    encrypted
        .to_vec()
        .map_err(|_| PackError::NotEncrypt0("unencodable COSE_Encrypt0"))
}

/// Decodes a COSE_Encrypt0 of this shape (algorithm, nonce and a non-empty key id checked);
/// decrypt it with [`decrypt`].
pub(crate) fn decode(bytes: &[u8]) -> Result<CoseEncrypt0, PackError> {
    let encrypted = CoseEncrypt0::from_slice(bytes)
        .map_err(|_| PackError::NotEncrypt0("not a COSE_Encrypt0"))?;
    if encrypted.protected.header.alg
        != Some(coset::Algorithm::Assigned(
            iana::Algorithm::ChaCha20Poly1305,
        ))
    {
        return Err(PackError::NotEncrypt0("not ChaCha20-Poly1305"));
    }
    if encrypted.unprotected.iv.len() != 12 {
        return Err(PackError::NotEncrypt0("no 12-byte nonce"));
    }
    if encrypted.protected.header.key_id.is_empty() {
        return Err(PackError::NotEncrypt0("no key id"));
    }
    Ok(encrypted)
}

/// Decrypts a [`decode`]d COSE_Encrypt0 with `key` and `aad`.
pub(crate) fn decrypt(
    encrypted: &CoseEncrypt0,
    key: &[u8; 32],
    aad: &[u8],
) -> Result<Vec<u8>, PackError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let nonce = Nonce::clone_from_slice(&encrypted.unprotected.iv);
    encrypted.decrypt_ciphertext(
        aad,
        || PackError::NotEncrypt0("no ciphertext"),
        |ciphertext, aad| {
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: ciphertext,
                        aad,
                    },
                )
                .map_err(|_| PackError::Decrypt)
        },
    )
}
