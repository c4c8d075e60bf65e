//! `m2m-wallet`: the device wallet.
//!
//! A device owns one BIP-39 seed. From it we derive, by BIP-32:
//! - a Bitcoin Taproot key (BIP-86, `m/86'/coin'/0'/0/0`), used for the Taproot channel and
//!   on-chain top-ups;
//! - an Ethereum key (`m/44'/60'/0'/0/0`), used for EIP-712 vouchers and deposits.
//!
//! The seed lives only inside an encrypted [`Keystore`] file (Argon2id + XChaCha20-Poly1305).
//! Everything that needs a key goes through the [`Signer`] trait, so keys never leave the
//! keystore and no type here prints key material (their `Debug` output is redacted).
//!
//! Top-up requests (BIP-21, EIP-681) are built in [`topup`]; the on-chain Bitcoin wallet (BDK over
//! the seed's BIP-86 descriptors) is [`onchain::OnChainWallet`].

mod error;
mod keys;
mod keystore;
pub mod onchain;
mod seed;
mod signer;
pub mod topup;

pub use error::{KeystoreError, SeedError, SignerError};
pub use keys::{Addresses, DeviceKeys, evm_address_of};
pub use keystore::{DeviceMetadata, KEYSTORE_FORMAT_VERSION, KdfParams, Keystore, Passphrase};
pub use seed::{DeviceSeed, SeedLength};
pub use signer::{SchnorrKey, Signer};

/// Re-exported so callers name networks, addresses and signatures with the same types we use.
pub use alloy_primitives::{Address as EvmAddress, B256, Signature as EvmSignature};
pub use bitcoin::{Network, secp256k1::XOnlyPublicKey};
