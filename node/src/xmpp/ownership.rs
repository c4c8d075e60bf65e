//! The device's side of being owned: the tags it registers and shows as its QR code, with a
//! claim `KEY` derived from the seed (generation `g`: a new one for each new owner, none ever
//! written to a file), and its ownership record in the data directory (`ownership.json`:
//! generation, registry, owner — public facts only), replaced durably.

use std::path::{Path, PathBuf};

use base64::Engine;
use m2m_core::discovery::{KEY, MetaTag, TagError};
use m2m_wallet::{DeviceKeys, SeedError};
use serde::{Deserialize, Serialize};

/// File name of the ownership record inside a data directory.
pub const OWNERSHIP_FILE: &str = "ownership.json";
/// The manufacturer tag of devices running this agent.
pub const MANUFACTURER: &str = "m2m";

/// The claim tags or the record failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The claim secret could not be derived.
    #[error("deriving the claim key")]
    Seed(#[from] SeedError),
    /// A tag breaks XEP-0347's rules (a model name with spaces, say).
    #[error("a claim tag: {0}")]
    Tag(TagError),
    /// Reading or writing the record.
    #[error("ownership record {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The record does not parse.
    #[error("ownership record {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Who owns the device, as it knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ownership {
    /// The claim-key generation in use (raised when the device changes hands).
    pub generation: u32,
    /// The registry it registered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Its owner's bare JID, once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Ownership {
    /// The record in `data_dir`, or a fresh one (generation 0, unowned).
    pub fn load(data_dir: &Path) -> Result<Self, OwnershipError> {
        let path = data_dir.join(OWNERSHIP_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| OwnershipError::Corrupt { path, source }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(OwnershipError::Io { path, source }),
        }
    }

    /// Writes the record durably.
    pub fn save(&self, data_dir: &Path) -> Result<(), OwnershipError> {
        let path = data_dir.join(OWNERSHIP_FILE);
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::datadir::write_durably(&path, &bytes)
            .map_err(|source| OwnershipError::Io { path, source })
    }
}

/// The claim `KEY` of `generation`: 128 bits of the seed-derived claim secret, base64url
/// (22 characters).
pub fn claim_key(keys: &DeviceKeys, generation: u32) -> Result<String, OwnershipError> {
    let secret = keys.claim_secret(generation)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..16]))
}

/// The tags the device registers and shows: manufacturer, `model`, its Ethereum address as
/// serial number, and the claim `KEY` of `generation`.
pub fn claim_tags(
    keys: &DeviceKeys,
    generation: u32,
    model: &str,
) -> Result<Vec<MetaTag>, OwnershipError> {
    let serial = keys.addresses().ethereum;
    [
        ("MAN", MANUFACTURER.to_owned()),
        ("MODEL", model.to_owned()),
        ("SN", serial),
        (KEY, claim_key(keys, generation)?),
    ]
    .into_iter()
    .map(|(name, value)| MetaTag::str(name, &value).map_err(OwnershipError::Tag))
    .collect()
}
