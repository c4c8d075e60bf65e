//! A reading key bought over Lightning with a hold invoice: paying and getting the key are one
//! atomic step, and routing nodes learn nothing that opens the reading.
//!
//! The seller draws a nonce per invoice and derives the payment preimage `P` from it and a secret
//! of its device seed ([`preimage`]), so it keeps only the nonce and can still claim after a
//! restart. It sends the buyer, before any payment, the reading key wrapped (as in
//! [`crate::key_wrap`]) under [`bind`]`(ECDH secret, P)`, and a hold invoice for `SHA-256(P)`.
//! The buyer learns `P` only when its payment settles, which happens only when the seller claims
//! it — so the buyer gets the key exactly when the seller gets paid.
//!
//! What a routing node learns: the payment hash, the amount and, once the payment settles, `P`
//! (each hop needs it to claim from the hop before). That is why `P` itself is not the key: the
//! wrap also needs the ECDH secret of the seller's and the buyer's device keys, which no hop
//! has, and the wrap itself travels only on the buyer's own broker topic. A hop that learns
//! `P` can prove the payment happened, nothing more.
//!
//! Pure functions: no randomness drawn here (the nonce comes in), no ECDH (the shell's signer
//! does it).

use sha2::{Digest, Sha256};

use crate::key_wrap::hkdf32;

/// Purpose labels, versioned: a change of this scheme changes every derived value.
const PREIMAGE_PURPOSE: &[u8] = b"m2m/priced-topic/ln-hold-preimage/v1";
const BIND_PURPOSE: &[u8] = b"m2m/priced-topic/ln-hold-wrap/v1";

/// Bytes of an invoice's nonce.
pub const NONCE_LEN: usize = 16;

/// The preimage of the invoice drawn with `nonce`, from the seller's `secret`.
pub fn preimage(secret: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> [u8; 32] {
    hkdf32(Some(nonce), secret, PREIMAGE_PURPOSE)
}

/// The payment hash of `preimage` (what the invoice commits to).
pub fn payment_hash(preimage: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(preimage).into()
}

/// The secret a reading key is wrapped under for a hold-invoice sale: the buyer–seller ECDH
/// secret bound to the invoice's preimage, so neither alone opens the wrap.
pub fn bind(shared_secret: &[u8; 32], preimage: &[u8; 32]) -> [u8; 32] {
    hkdf32(Some(preimage), shared_secret, BIND_PURPOSE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_wrap::{WrapParties, unwrap, wrap};

    const PARTIES: WrapParties = WrapParties {
        seller: [1; 20],
        buyer: [2; 20],
    };

    #[test]
    fn preimages_differ_per_nonce_and_secret_and_are_stable() {
        let secret = [7u8; 32];
        let (a, b) = (preimage(&secret, &[1; 16]), preimage(&secret, &[2; 16]));
        assert_ne!(a, b);
        assert_eq!(a, preimage(&secret, &[1; 16]), "a restart derives it again");
        assert_ne!(a, preimage(&[8u8; 32], &[1; 16]));
        assert_eq!(payment_hash(&a), <[u8; 32]>::from(Sha256::digest(a)));
    }

    #[test]
    fn the_wrap_opens_with_the_preimage_and_the_ecdh_secret_together_only() {
        let (shared, reading_key) = ([5u8; 32], [9u8; 32]);
        let p = preimage(&[7u8; 32], &[1; 16]);
        let wrapped = wrap(&bind(&shared, &p), &PARTIES, b"k1", &reading_key, [3; 12]).unwrap();
        assert_eq!(
            unwrap(&bind(&shared, &p), &PARTIES, &wrapped).unwrap(),
            (b"k1".to_vec(), reading_key)
        );
        // A routing node knows P but not the ECDH secret; the buyer before paying knows the
        // ECDH secret but not P; another invoice's preimage does not fit.
        for secret in [
            bind(&[0u8; 32], &p),
            shared,
            p,
            bind(&shared, &preimage(&[7u8; 32], &[2; 16])),
        ] {
            assert!(unwrap(&secret, &PARTIES, &wrapped).is_err());
        }
    }
}
