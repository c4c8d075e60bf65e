//! The encrypted keystore file: the only place the device seed is ever written.
//!
//! Layout (format version 1), all integers big-endian:
//!
//! ```text
//! "M2MKEYS\0" | version: u16 | header_len: u32 | header: JSON | ciphertext | sha256(all before)
//! ```
//!
//! - The JSON header holds the Argon2id parameters and salt, the XChaCha20-Poly1305 nonce and the
//!   device metadata (network, owner address, creation time). It is not secret, but it is bound to
//!   the ciphertext as AEAD associated data, so it cannot be altered without detection.
//! - The ciphertext holds `payload_version: u8 | BIP-39 entropy`.
//! - The trailing SHA-256 is not a security measure: it tells accidental damage (a truncated or
//!   bit-flipped file, reported as [`KeystoreError::Corrupted`]) apart from a wrong passphrase.
//!
//! Files are written to a temporary file with mode 0600, fsynced, then linked into place without
//! ever replacing an existing keystore.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use alloy_primitives::{Address as EvmAddress, B256, Signature as EvmSignature, hex};
use argon2::{Algorithm, Argon2, Params, Version};
use bitcoin::Network;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{XOnlyPublicKey, schnorr};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{KeystoreError, SignerError};
use crate::keys::{Addresses, DeviceKeys};
use crate::seed::DeviceSeed;
use crate::signer::{SchnorrKey, Signer};

/// The keystore format this build writes and reads.
pub const KEYSTORE_FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"M2MKEYS\0";
const PREFIX_LEN: usize = MAGIC.len() + 2 + 4;
const CHECKSUM_LEN: usize = 32;
const TAG_LEN: usize = 16;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const PAYLOAD_VERSION: u8 = 1;
/// Headers are small; a larger length field means damage, not a real header.
const MAX_HEADER_LEN: usize = 64 * 1024;
/// New keystores need passphrases at least this long (in characters).
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The floor we accept: OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane).
    pub const MINIMUM: KdfParams = KdfParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    /// The ceiling we accept, so a tampered header cannot make a device allocate unbounded memory.
    pub const MAXIMUM: KdfParams = KdfParams {
        memory_kib: 1024 * 1024,
        iterations: 64,
        parallelism: 16,
    };

    /// Checks the parameters lie within [`Self::MINIMUM`] and [`Self::MAXIMUM`].
    pub fn validate(&self) -> Result<(), KeystoreError> {
        let (min, max) = (Self::MINIMUM, Self::MAXIMUM);
        let within = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        if !within(self.memory_kib, min.memory_kib, max.memory_kib)
            || !within(self.iterations, min.iterations, max.iterations)
            || !within(self.parallelism, min.parallelism, max.parallelism)
        {
            return Err(KeystoreError::WeakKdf(format!(
                "memory {} KiB, {} passes, {} lanes; allowed: {}..={} KiB, {}..={} passes, {}..={} lanes",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                min.memory_kib,
                max.memory_kib,
                min.iterations,
                max.iterations,
                min.parallelism,
                max.parallelism
            )));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    /// The minimum: it fits small devices and costs an attacker ~19 MiB per guess.
    fn default() -> Self {
        Self::MINIMUM
    }
}

/// A passphrase, wiped from memory on drop, never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase; a single trailing newline (from a file or a pipe) is dropped.
    pub fn new(mut text: String) -> Result<Self, KeystoreError> {
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        let text = Zeroizing::new(text);
        if text.is_empty() {
            return Err(KeystoreError::BadPassphrase("it is empty"));
        }
        Ok(Self(text))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(redacted)")
    }
}

/// Public facts about the device, stored in the (authenticated, unencrypted) header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMetadata {
    /// Bitcoin network the device's addresses are for.
    pub network: Network,
    /// Owner mode: the address of the person or organisation that owns this device, if any.
    pub owner: Option<EvmAddress>,
    /// When the keystore was created, seconds since the Unix epoch (the caller's clock).
    pub created_at_unix: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    kdf: KdfHeader,
    cipher: CipherHeader,
    device: DeviceHeader,
}

#[derive(Serialize, Deserialize)]
struct KdfHeader {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct CipherHeader {
    algorithm: String,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct DeviceHeader {
    network: String,
    owner: Option<String>,
    created_at_unix: u64,
}

/// An opened keystore: the device seed, its keys and metadata, in memory.
pub struct Keystore {
    path: PathBuf,
    metadata: DeviceMetadata,
    seed: DeviceSeed,
    keys: DeviceKeys,
}

impl Keystore {
    /// Encrypts `seed` into a new keystore file at `path`. Fails if any file is already there.
    pub fn create(
        path: &Path,
        passphrase: &Passphrase,
        kdf: KdfParams,
        metadata: DeviceMetadata,
        seed: DeviceSeed,
    ) -> Result<Self, KeystoreError> {
        if passphrase.0.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(KeystoreError::BadPassphrase("use at least 8 characters"));
        }
        kdf.validate()?;
        if path.exists() {
            return Err(KeystoreError::AlreadyExists(path.to_owned()));
        }
        let keys = DeviceKeys::derive(&seed, metadata.network)?;

        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut salt).map_err(|e| KeystoreError::Crypto(e.to_string()))?;
        getrandom::getrandom(&mut nonce).map_err(|e| KeystoreError::Crypto(e.to_string()))?;
        let header = Header {
            kdf: KdfHeader {
                algorithm: "argon2id".into(),
                memory_kib: kdf.memory_kib,
                iterations: kdf.iterations,
                parallelism: kdf.parallelism,
                salt: hex::encode(salt),
            },
            cipher: CipherHeader {
                algorithm: "xchacha20poly1305".into(),
                nonce: hex::encode(nonce),
            },
            device: DeviceHeader {
                network: metadata.network.to_string(),
                owner: metadata.owner.map(|owner| owner.to_checksum(None)),
                created_at_unix: metadata.created_at_unix,
            },
        };
        let header_json =
            serde_json::to_vec(&header).map_err(|e| KeystoreError::Crypto(e.to_string()))?;
        let mut file = Vec::with_capacity(PREFIX_LEN + header_json.len() + 64 + CHECKSUM_LEN);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&KEYSTORE_FORMAT_VERSION.to_be_bytes());
        file.extend_from_slice(
            &u32::try_from(header_json.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        file.extend_from_slice(&header_json);

        let entropy = seed.entropy();
        let mut plaintext = Zeroizing::new(Vec::with_capacity(1 + entropy.len()));
        plaintext.push(PAYLOAD_VERSION);
        plaintext.extend_from_slice(&entropy);
        let cipher = cipher_for(passphrase, &salt, kdf)?;
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &file,
                },
            )
            .map_err(|_| KeystoreError::Crypto("encryption failed".into()))?;
        file.extend_from_slice(&ciphertext);
        let checksum = sha256::Hash::hash(&file);
        file.extend_from_slice(checksum.as_byte_array());

        write_new_private_file(path, &file)?;
        Ok(Self {
            path: path.to_owned(),
            metadata,
            seed,
            keys,
        })
    }

    /// Opens and decrypts the keystore at `path`. Changes nothing on disk, whatever happens.
    pub fn open(path: &Path, passphrase: &Passphrase) -> Result<Self, KeystoreError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => KeystoreError::NotFound(path.to_owned()),
            _ => KeystoreError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
        check_private_mode(path)?;
        let corrupted = |reason: &str| KeystoreError::Corrupted {
            path: path.to_owned(),
            reason: reason.into(),
        };

        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(KeystoreError::NotAKeystore(path.to_owned()));
        }
        if bytes.len() < PREFIX_LEN + CHECKSUM_LEN {
            return Err(corrupted("file is truncated"));
        }
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version != KEYSTORE_FORMAT_VERSION {
            return Err(KeystoreError::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: KEYSTORE_FORMAT_VERSION,
            });
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if sha256::Hash::hash(body).as_byte_array() != checksum {
            return Err(corrupted(
                "checksum mismatch: the file was truncated or altered",
            ));
        }
        let header_len = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
        if header_len > MAX_HEADER_LEN || PREFIX_LEN + header_len + TAG_LEN > body.len() {
            return Err(corrupted("header length out of range"));
        }
        let (aad, ciphertext) = body.split_at(PREFIX_LEN + header_len);
        let header: Header = serde_json::from_slice(&aad[PREFIX_LEN..])
            .map_err(|e| corrupted(&format!("unreadable header: {e}")))?;
        let (kdf, salt, nonce, metadata) =
            parse_header(&header).map_err(|reason| corrupted(&reason))?;
        kdf.validate()?;

        let cipher = cipher_for(passphrase, &salt, kdf)?;
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: ciphertext,
                        aad,
                    },
                )
                .map_err(|_| KeystoreError::WrongPassphrase(path.to_owned()))?,
        );
        match plaintext.split_first() {
            Some((&PAYLOAD_VERSION, entropy)) => {
                let seed = DeviceSeed::from_entropy(entropy)?;
                let keys = DeviceKeys::derive(&seed, metadata.network)?;
                Ok(Self {
                    path: path.to_owned(),
                    metadata,
                    seed,
                    keys,
                })
            }
            _ => Err(corrupted("unknown payload version")),
        }
    }

    /// Where the keystore file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device metadata recorded at creation.
    pub fn metadata(&self) -> &DeviceMetadata {
        &self.metadata
    }

    /// The device's public addresses.
    pub fn addresses(&self) -> Addresses {
        self.keys.addresses()
    }

    /// The derived keys (for address and script building; they sign only through [`Signer`]).
    pub fn keys(&self) -> &DeviceKeys {
        &self.keys
    }

    /// The seed words, for a paper backup shown to the owner. Never log them.
    pub fn backup_words(&self) -> Zeroizing<String> {
        self.seed.words()
    }
}

impl Signer for Keystore {
    fn evm_address(&self) -> EvmAddress {
        self.keys.evm_address()
    }
    fn sign_evm_digest(&self, digest: &B256) -> Result<EvmSignature, SignerError> {
        self.keys.sign_evm_digest(digest)
    }
    fn evm_public_key(&self) -> bitcoin::secp256k1::PublicKey {
        self.keys.evm_public_key()
    }
    fn evm_key_agreement(&self, peer: &bitcoin::secp256k1::PublicKey) -> [u8; 32] {
        self.keys.evm_key_agreement(peer)
    }
    fn taproot_internal_key(&self) -> XOnlyPublicKey {
        self.keys.taproot_internal_key()
    }
    fn sign_schnorr(
        &self,
        message: &[u8; 32],
        key: SchnorrKey,
    ) -> Result<schnorr::Signature, SignerError> {
        self.keys.sign_schnorr(message, key)
    }

    fn sign_musig2_partial(
        &self,
        key_agg: &musig2::KeyAggContext,
        secnonce: musig2::SecNonce,
        aggnonce: &musig2::AggNonce,
        message: &[u8; 32],
    ) -> Result<musig2::PartialSignature, SignerError> {
        self.keys
            .sign_musig2_partial(key_agg, secnonce, aggnonce, message)
    }
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

type ParsedHeader = (KdfParams, [u8; SALT_LEN], [u8; NONCE_LEN], DeviceMetadata);

fn parse_header(header: &Header) -> Result<ParsedHeader, String> {
    if header.kdf.algorithm != "argon2id" || header.cipher.algorithm != "xchacha20poly1305" {
        return Err(format!(
            "unknown algorithms {} / {}",
            header.kdf.algorithm, header.cipher.algorithm
        ));
    }
    let kdf = KdfParams {
        memory_kib: header.kdf.memory_kib,
        iterations: header.kdf.iterations,
        parallelism: header.kdf.parallelism,
    };
    let salt = decode_fixed::<SALT_LEN>(&header.kdf.salt, "salt")?;
    let nonce = decode_fixed::<NONCE_LEN>(&header.cipher.nonce, "nonce")?;
    let network = Network::from_str(&header.device.network).map_err(|e| format!("network: {e}"))?;
    let owner = match &header.device.owner {
        Some(text) => Some(EvmAddress::from_str(text).map_err(|e| format!("owner address: {e}"))?),
        None => None,
    };
    Ok((
        kdf,
        salt,
        nonce,
        DeviceMetadata {
            network,
            owner,
            created_at_unix: header.device.created_at_unix,
        },
    ))
}

fn decode_fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = hex::decode(text).map_err(|e| format!("{what}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{what}: expected {N} bytes"))
}

fn cipher_for(
    passphrase: &Passphrase,
    salt: &[u8],
    kdf: KdfParams,
) -> Result<XChaCha20Poly1305, KeystoreError> {
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| KeystoreError::WeakKdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.bytes(), salt, &mut key[..])
        .map_err(|e| KeystoreError::Crypto(e.to_string()))?;
    Ok(XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(
        &key[..],
    )))
}

/// Writes `bytes` to a new file at `path` with mode 0600, durably, never replacing a file.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp); // a leftover from a crash mid-create holds no linked keystore
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // A hard link fails if `path` exists: no race can make us replace another keystore.
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(KeystoreError::AlreadyExists(path.to_owned()))
        }
        Err(e) => Err(io(e)),
        Ok(()) => sync_parent_dir(path).map_err(io),
    }
}

fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Like ssh with private keys, refuse a keystore that other users can read or write.
fn check_private_mode(path: &Path) -> Result<(), KeystoreError> {
    #[cfg(unix)]
    {
        let mode = fs::metadata(path)
            .map_err(|source| KeystoreError::Io {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeystoreError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "mode {:o} lets other users reach the keystore; run `chmod 600` on it",
                        mode & 0o777
                    ),
                ),
            });
        }
    }
    Ok(())
}
