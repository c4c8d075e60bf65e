//! The device seed: a BIP-39 mnemonic, created from OS randomness or restored from words.

use core::fmt;

use bip39::{Language, Mnemonic};
use zeroize::Zeroizing;

use crate::error::SeedError;

/// How many words a new seed has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedLength {
    /// 12 words, 128 bits of entropy.
    Words12,
    /// 24 words, 256 bits of entropy (the default).
    #[default]
    Words24,
}

impl SeedLength {
    fn entropy_bytes(self) -> usize {
        match self {
            SeedLength::Words12 => 16,
            SeedLength::Words24 => 32,
        }
    }
}

/// A BIP-39 seed. Its memory is wiped on drop and its `Debug` output is redacted.
#[derive(Clone)]
pub struct DeviceSeed {
    mnemonic: Mnemonic,
}

impl DeviceSeed {
    /// A fresh seed from the operating system's randomness.
    pub fn generate(length: SeedLength) -> Result<Self, SeedError> {
        let mut entropy = Zeroizing::new([0u8; 32]);
        let entropy = &mut entropy[..length.entropy_bytes()];
        getrandom::getrandom(entropy).map_err(SeedError::Entropy)?;
        Self::from_entropy(entropy)
    }

    /// Restores a seed from its English words (spacing and case are normalised).
    pub fn from_phrase(phrase: &str) -> Result<Self, SeedError> {
        let normalised = Zeroizing::new(
            phrase
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase(),
        );
        let mnemonic = Mnemonic::parse_in_normalized(Language::English, &normalised)
            .map_err(SeedError::InvalidMnemonic)?;
        Ok(Self { mnemonic })
    }

    /// Rebuilds a seed from the raw BIP-39 entropy (what the keystore stores).
    pub(crate) fn from_entropy(entropy: &[u8]) -> Result<Self, SeedError> {
        let mnemonic = Mnemonic::from_entropy_in(Language::English, entropy)
            .map_err(SeedError::InvalidMnemonic)?;
        Ok(Self { mnemonic })
    }

    /// The raw BIP-39 entropy, for encryption into the keystore.
    pub(crate) fn entropy(&self) -> Zeroizing<Vec<u8>> {
        let (array, len) = self.mnemonic.to_entropy_array();
        let array = Zeroizing::new(array);
        Zeroizing::new(array[..len].to_vec())
    }

    /// The 64-byte BIP-39 seed (empty BIP-39 passphrase) that BIP-32 derivation starts from.
    pub(crate) fn bip32_seed(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.mnemonic.to_seed_normalized(""))
    }

    /// The words, for a paper backup. The caller must show them only to the owner.
    pub fn words(&self) -> Zeroizing<String> {
        Zeroizing::new(self.mnemonic.words().collect::<Vec<_>>().join(" "))
    }

    /// How many words the mnemonic has.
    pub fn word_count(&self) -> usize {
        self.mnemonic.word_count()
    }
}

impl fmt::Debug for DeviceSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceSeed({} words, redacted)", self.word_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_seeds_differ_and_round_trip_through_entropy() {
        let a = DeviceSeed::generate(SeedLength::Words24).unwrap();
        let b = DeviceSeed::generate(SeedLength::Words24).unwrap();
        assert_eq!(a.word_count(), 24);
        assert_ne!(*a.words(), *b.words());
        let restored = DeviceSeed::from_entropy(&a.entropy()).unwrap();
        assert_eq!(*restored.words(), *a.words());
        assert_eq!(
            DeviceSeed::generate(SeedLength::Words12)
                .unwrap()
                .word_count(),
            12
        );
    }

    #[test]
    fn phrase_is_normalised_and_checked() {
        let words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let messy = format!("  {}\n", words.to_uppercase().replace(' ', "   "));
        assert_eq!(*DeviceSeed::from_phrase(&messy).unwrap().words(), words);
        let bad_checksum = words.replace("about", "abandon");
        assert!(matches!(
            DeviceSeed::from_phrase(&bad_checksum),
            Err(SeedError::InvalidMnemonic(_))
        ));
        assert!(matches!(
            DeviceSeed::from_phrase("not a mnemonic"),
            Err(SeedError::InvalidMnemonic(_))
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
        assert_eq!(format!("{seed:?}"), "DeviceSeed(12 words, redacted)");
    }
}
