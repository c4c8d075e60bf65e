//! x402 v2 over HTTP: each message travels as base64 (standard alphabet, padded) of its JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Header a server sends with `402`.
pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// Header a client pays with.
pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
/// Header a server answers a paid request with.
pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
/// Longest header value accepted (a batch-settlement deposit is about 2 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A header value is not a valid x402 message.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Longer than [`MAX_HEADER_BYTES`].
    #[error("x402 header of {0} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")]
    TooLong(usize),
    /// Not base64.
    #[error("x402 header is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not the expected JSON.
    #[error("x402 header is not a valid message: {0}")]
    Json(#[from] serde_json::Error),
    /// A message of another protocol version.
    #[error("x402 version {0} is not supported (this server speaks 2)")]
    Version(u64),
}

/// Encodes a message as a header value.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Serialising these plain structs cannot fail.
    STANDARD.encode(serde_json::to_vec(message).unwrap_or_default())
}

/// Decodes a header value, refusing oversized input before doing any work.
pub fn decode<T: DeserializeOwned>(value: &str) -> Result<T, HeaderError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLong(value.len()));
    }
    let json = STANDARD.decode(value.trim())?;
    let raw: serde_json::Value = serde_json::from_slice(&json)?;
    if let Some(version) = raw.get("x402Version").and_then(serde_json::Value::as_u64)
        && version != u64::from(super::types::X402_VERSION)
    {
        return Err(HeaderError::Version(version));
    }
    Ok(serde_json::from_value(raw)?)
}
