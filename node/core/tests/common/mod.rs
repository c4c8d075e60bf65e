//! Test doubles for the core's capabilities, over real libsecp256k1 signatures.

#![allow(dead_code)]

use m2m_core::{
    Amount, Asset, ChannelId, ChannelTerms, EvmAddress, Signature65, VoucherSigner,
    VoucherVerifier, keccak256,
};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};

pub const USD: Asset = Asset::Erc20 {
    chain_id: 31337,
    token: [0xAA; 20],
};

pub fn usd(units: u128) -> Amount {
    Amount::new(USD, units)
}

/// A payer key that signs like the device wallet (recoverable, low-s, v = 27/28).
pub struct TestKey {
    secp: Secp256k1<All>,
    secret: SecretKey,
}

impl TestKey {
    pub fn new(byte: u8) -> Self {
        Self {
            secp: Secp256k1::new(),
            secret: SecretKey::from_slice(&[byte; 32]).unwrap(),
        }
    }

    pub fn address(&self) -> EvmAddress {
        address_of(&PublicKey::from_secret_key(&self.secp, &self.secret))
    }
}

impl VoucherSigner for TestKey {
    type Error = ();
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature65, ()> {
        let signature = self
            .secp
            .sign_ecdsa_recoverable(&Message::from_digest(*digest), &self.secret);
        let (id, compact) = signature.serialize_compact();
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&compact);
        bytes[64] = 27 + id.to_i32() as u8;
        Ok(Signature65(bytes))
    }
}

/// Recovers the signer and compares addresses; rejects high-s like the contract.
pub struct TestVerifier(pub Secp256k1<All>);

impl Default for TestVerifier {
    fn default() -> Self {
        Self(Secp256k1::new())
    }
}

impl VoucherVerifier for TestVerifier {
    fn is_valid(&self, digest: &[u8; 32], signature: &Signature65, signer: &EvmAddress) -> bool {
        let Ok(id) = RecoveryId::from_i32(i32::from(signature.0[64]) - 27) else {
            return false;
        };
        let Ok(recoverable) = RecoverableSignature::from_compact(&signature.0[..64], id) else {
            return false;
        };
        let mut standard = recoverable.to_standard();
        let before = standard;
        standard.normalize_s();
        if standard != before {
            return false; // high-s
        }
        match self
            .0
            .recover_ecdsa(&Message::from_digest(*digest), &recoverable)
        {
            Ok(public) => address_of(&public) == *signer,
            Err(_) => false,
        }
    }
}

pub fn address_of(public: &PublicKey) -> EvmAddress {
    let hash = keccak256(&public.serialize_uncompressed()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    EvmAddress(address)
}

pub fn terms(payer: &TestKey, channel: u8) -> ChannelTerms {
    ChannelTerms {
        channel_id: ChannelId([channel; 32]),
        asset: USD,
        domain_separator: [0x42; 32],
        payer_authorizer: payer.address(),
    }
}
