//! Keys derived from the device seed, and the public addresses they control.

use core::fmt;
use core::str::FromStr;

use alloy_primitives::{Address as EvmAddress, keccak256};
use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};
use bitcoin::{Address as BtcAddress, Network};
use serde::Serialize;

use crate::error::SeedError;
use crate::seed::DeviceSeed;

/// Hardened path prefix of the device's thing-registry claim secrets (XEP-0347): generation `g`
/// is at `m/347'/0'/g'`, so a new owner (after a transfer or a wipe) gets a new KEY while every
/// KEY is still re-derivable from the seed, with no secret file.
pub const CLAIM_PATH: &str = "m/347'/0'";

/// BIP-44 path of the Ethereum account key (`m/44'/60'/0'/0/0`), as MetaMask and most wallets use.
pub const EVM_PATH: &str = "m/44'/60'/0'/0/0";

/// Hardened path whose key material seeds the embedded Lightning node (9735: the Lightning
/// port). Hardened, so the Lightning keys reveal nothing about the others and vice versa.
pub const LIGHTNING_PATH: &str = "m/9735'/0'/0'";

/// Hardened path whose private key seeds the device's TLS identity (an Ed25519 key: its
/// certificate is the same after a restore from the seed words, so buyers' pins stay valid).
pub const TLS_PATH: &str = "m/443'/0'/0'";

/// BIP-86 path of the first Taproot receive key: coin type 0 on mainnet, 1 on test networks.
pub fn taproot_path(network: Network) -> String {
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    format!("m/86'/{coin}'/0'/0/0")
}

/// The device's secret keys. Wiped from memory on drop; `Debug` shows only public data.
pub struct DeviceKeys {
    secp: Secp256k1<All>,
    network: Network,
    /// BIP-86 key, untweaked: the internal key, and the key of our script-path leaves.
    taproot: Keypair,
    /// The same key tweaked per BIP-86 (no script tree): the key that spends the key path.
    taproot_tweaked: Keypair,
    evm: SecretKey,
    evm_address: EvmAddress,
    /// The BIP-32 master key: the on-chain wallet derives its BIP-86 descriptors from it.
    master: Xpriv,
}

/// The public side of [`DeviceKeys`]: what a user may see and share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addresses {
    /// Bitcoin network the Taproot address is for.
    #[serde(serialize_with = "serialize_display")]
    pub network: Network,
    /// BIP-86 Taproot address (`bc1p…` / `bcrt1p…`).
    pub bitcoin: String,
    /// The Taproot internal (untweaked) x-only key, hex.
    pub taproot_internal_key: String,
    /// EIP-55 checksummed Ethereum address.
    pub ethereum: String,
}

impl DeviceKeys {
    /// Derives the device keys from a seed for a Bitcoin network.
    pub fn derive(seed: &DeviceSeed, network: Network) -> Result<Self, SeedError> {
        let secp = Secp256k1::new();
        let bip32_seed = seed.bip32_seed();
        let master = Xpriv::new_master(network, &bip32_seed[..]).map_err(SeedError::Derivation)?;
        let taproot_secret = derive_secret(&secp, &master, &taproot_path(network))?;
        let evm = derive_secret(&secp, &master, EVM_PATH)?;

        let taproot = Keypair::from_secret_key(&secp, &taproot_secret);
        let taproot_tweaked = taproot.tap_tweak(&secp, None).to_keypair();
        let evm_address = evm_address_of(&PublicKey::from_secret_key(&secp, &evm));
        Ok(Self {
            secp,
            network,
            taproot,
            taproot_tweaked,
            evm,
            evm_address,
            master,
        })
    }

    /// The public addresses these keys control.
    pub fn addresses(&self) -> Addresses {
        let internal = self.taproot_internal_key();
        Addresses {
            network: self.network,
            bitcoin: self.bitcoin_address().to_string(),
            taproot_internal_key: internal.to_string(),
            ethereum: self.evm_address.to_checksum(None),
        }
    }

    /// The BIP-86 Taproot address.
    pub fn bitcoin_address(&self) -> BtcAddress {
        BtcAddress::p2tr(&self.secp, self.taproot_internal_key(), None, self.network)
    }

    /// The Bitcoin network these keys were derived for.
    pub fn network(&self) -> Network {
        self.network
    }

    pub(crate) fn taproot_internal_key(&self) -> XOnlyPublicKey {
        self.taproot.x_only_public_key().0
    }

    pub(crate) fn evm_address(&self) -> EvmAddress {
        self.evm_address
    }

    pub(crate) fn secp(&self) -> &Secp256k1<All> {
        &self.secp
    }

    /// The 64 bytes that seed the device's Lightning node (ldk-node's entropy): the private key
    /// and chain code at [`LIGHTNING_PATH`]. Derived from the device seed, so one backup covers
    /// Lightning too and no second seed file is written. Wiped when dropped.
    pub fn lightning_entropy(&self) -> Result<zeroize::Zeroizing<[u8; 64]>, SeedError> {
        let mut child = self.child(LIGHTNING_PATH)?;
        let mut entropy = zeroize::Zeroizing::new([0u8; 64]);
        entropy[..32].copy_from_slice(&child.private_key.secret_bytes());
        entropy[32..].copy_from_slice(child.chain_code.as_bytes());
        child.private_key.non_secure_erase();
        Ok(entropy)
    }

    /// The 32-byte Ed25519 seed of the device's TLS key, derived at [`TLS_PATH`]. Wiped when
    /// dropped.
    pub fn tls_secret(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, SeedError> {
        let mut child = self.child(TLS_PATH)?;
        let secret = zeroize::Zeroizing::new(child.private_key.secret_bytes());
        child.private_key.non_secure_erase();
        Ok(secret)
    }

    /// The 32-byte secret behind the thing-registry claim KEY of `generation` (see
    /// [`CLAIM_PATH`]). Wiped when dropped.
    pub fn claim_secret(&self, generation: u32) -> Result<zeroize::Zeroizing<[u8; 32]>, SeedError> {
        let generation = generation & 0x7fff_ffff; // a hardened index
        let mut child = self.child(&format!("{CLAIM_PATH}/{generation}'"))?;
        let secret = zeroize::Zeroizing::new(child.private_key.secret_bytes());
        child.private_key.non_secure_erase();
        Ok(secret)
    }

    /// The extended private key at the hardened `path` (the caller erases it).
    fn child(&self, path: &str) -> Result<Xpriv, SeedError> {
        let path = DerivationPath::from_str(path).map_err(SeedError::Derivation)?;
        self.master
            .derive_priv(&self.secp, &path)
            .map_err(SeedError::Derivation)
    }

    pub(crate) fn master(&self) -> &Xpriv {
        &self.master
    }

    pub(crate) fn evm_secret(&self) -> &SecretKey {
        &self.evm
    }

    pub(crate) fn taproot_keypair(&self, tweaked: bool) -> &Keypair {
        if tweaked {
            &self.taproot_tweaked
        } else {
            &self.taproot
        }
    }
}

/// The Ethereum address of a public key: the last 20 bytes of keccak256 of its uncompressed
/// coordinates (without the 0x04 prefix).
pub fn evm_address_of(public_key: &PublicKey) -> EvmAddress {
    let uncompressed = public_key.serialize_uncompressed();
    EvmAddress::from_slice(&keccak256(&uncompressed[1..])[12..])
}

fn serialize_display<S: serde::Serializer>(
    value: &Network,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn derive_secret(
    secp: &Secp256k1<All>,
    master: &Xpriv,
    path: &str,
) -> Result<SecretKey, SeedError> {
    let path = DerivationPath::from_str(path).map_err(SeedError::Derivation)?;
    let mut child = master
        .derive_priv(secp, &path)
        .map_err(SeedError::Derivation)?;
    let secret = child.private_key;
    child.private_key.non_secure_erase();
    Ok(secret)
}

impl Drop for DeviceKeys {
    fn drop(&mut self) {
        self.taproot.non_secure_erase();
        self.taproot_tweaked.non_secure_erase();
        self.evm.non_secure_erase();
        self.master.private_key.non_secure_erase();
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("network", &self.network)
            .field("evm_address", &self.evm_address)
            .field("secrets", &"redacted")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABANDON_ABOUT: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn keys(network: Network) -> DeviceKeys {
        DeviceKeys::derive(&DeviceSeed::from_phrase(ABANDON_ABOUT).unwrap(), network).unwrap()
    }

    /// BIP-86 test vector: first receiving address of account 0 for the "abandon … about" seed.
    #[test]
    fn bip86_vector_mainnet() {
        let keys = keys(Network::Bitcoin);
        assert_eq!(
            keys.bitcoin_address().to_string(),
            "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
        );
        assert_eq!(
            keys.taproot_internal_key().to_string(),
            "cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115"
        );
    }

    /// The well-known Ethereum address of the "abandon … about" seed at m/44'/60'/0'/0/0
    /// (MetaMask, Ledger, ethers all agree on it).
    #[test]
    fn ethereum_vector() {
        assert_eq!(
            keys(Network::Bitcoin).addresses().ethereum,
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
        );
        // The EVM key does not depend on the Bitcoin network.
        assert_eq!(
            keys(Network::Regtest).addresses().ethereum,
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
        );
    }

    #[test]
    fn regtest_uses_test_coin_type_and_bcrt_prefix() {
        let regtest = keys(Network::Regtest).addresses();
        assert!(regtest.bitcoin.starts_with("bcrt1p"), "{}", regtest.bitcoin);
        assert_ne!(
            regtest.taproot_internal_key,
            keys(Network::Bitcoin).addresses().taproot_internal_key
        );
    }

    #[test]
    fn claim_secrets_are_deterministic_per_generation_and_apart_from_other_keys() {
        let keys = keys(Network::Regtest);
        let first = keys.claim_secret(0).unwrap();
        assert_eq!(
            *first,
            *keys.claim_secret(0).unwrap(),
            "re-derived from the seed"
        );
        assert_ne!(
            *first,
            *keys.claim_secret(1).unwrap(),
            "a new owner, a new key"
        );
        assert_ne!(*first, *keys.tls_secret().unwrap());
        assert_ne!(first[..], keys.lightning_entropy().unwrap()[..32]);
    }

    #[test]
    fn lightning_entropy_is_deterministic_and_apart_from_other_keys() {
        let keys = keys(Network::Regtest);
        let entropy = keys.lightning_entropy().unwrap();
        assert_eq!(*entropy, *keys.lightning_entropy().unwrap());
        assert_ne!(&entropy[..32], &keys.evm_secret().secret_bytes()[..]);
        assert_ne!(
            &entropy[..32],
            &keys.taproot_keypair(false).secret_key().secret_bytes()[..]
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let keys = keys(Network::Bitcoin);
        let shown = format!("{keys:?}");
        let secret_hex = keys.evm_secret().display_secret().to_string();
        assert!(!shown.contains(&secret_hex));
        assert!(shown.contains("redacted"));
    }
}
