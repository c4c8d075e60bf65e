//! Error types of the wallet. Each says what went wrong and, where it helps, what to do.

use std::path::PathBuf;

/// A seed could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The words are not a valid BIP-39 English mnemonic (unknown word, bad checksum, bad count).
    #[error("invalid BIP-39 mnemonic: {0}")]
    InvalidMnemonic(#[source] bip39::Error),
    /// The operating system gave us no randomness.
    #[error("cannot read randomness from the operating system: {0}")]
    Entropy(#[source] getrandom::Error),
    /// BIP-32 derivation failed (practically impossible for valid seeds; reported, not hidden).
    #[error("key derivation failed: {0}")]
    Derivation(#[source] bitcoin::bip32::Error),
}

/// A signature could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Auxiliary randomness for BIP-340 signing was unavailable.
    #[error("cannot read randomness for signing: {0}")]
    Entropy(#[source] getrandom::Error),
    /// A signer that is not local (a hardware device, a remote signer) is not reachable.
    #[error("signer unavailable: {0}")]
    Unavailable(String),
    /// MuSig2 signing refused (a nonce for another key, a context without our key).
    #[error("musig2 signing: {0}")]
    Musig2(String),
}

/// The keystore file could not be created, opened or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Reading or writing the file failed.
    #[error("keystore {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Creating a keystore where one exists would destroy a seed; we refuse.
    #[error("keystore {0} already exists; refusing to overwrite a seed (move it away first)")]
    AlreadyExists(PathBuf),
    /// No keystore at the path.
    #[error("no keystore at {0}; create one with `m2m init`")]
    NotFound(PathBuf),
    /// The file does not start with the keystore magic bytes.
    #[error("{0} is not an m2m keystore file")]
    NotAKeystore(PathBuf),
    /// The file was written by a newer (or unknown) format version.
    #[error("keystore {path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The file is damaged: truncated, its checksum does not match, or its header is unreadable.
    #[error(
        "keystore {path} is corrupted ({reason}); restore it from a backup or from the seed words"
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What exactly is damaged.
        reason: String,
    },
    /// The file is intact but the passphrase does not decrypt it.
    #[error("wrong passphrase for keystore {0}")]
    WrongPassphrase(PathBuf),
    /// Key-derivation parameters are outside what we accept.
    #[error("key-derivation parameters rejected: {0}")]
    WeakKdf(String),
    /// The passphrase is unusable (empty or too short).
    #[error("passphrase rejected: {0}")]
    BadPassphrase(&'static str),
    /// The seed inside could not be used.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The KDF or cipher library refused its input.
    #[error("keystore crypto failed: {0}")]
    Crypto(String),
}
