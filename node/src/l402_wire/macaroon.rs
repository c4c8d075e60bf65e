//! Macaroons as L402 uses them: first-party caveats only, libmacaroons' V2 binary format,
//! HMAC-SHA256 chained signatures.
//!
//! Written here because the Rust `macaroon` crate needs libsodium (a C build and an unmaintained
//! binding) for two HMAC calls; what L402 needs is the format and the chain:
//! `sig₀ = HMAC(HMAC("macaroons-key-generator", root_key), identifier)`,
//! `sigᵢ = HMAC(sigᵢ₋₁, caveatᵢ)`. Third-party caveats are refused when decoding.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Field types of the V2 binary format.
const EOS: u8 = 0;
const LOCATION: u8 = 1;
const IDENTIFIER: u8 = 2;
const VID: u8 = 4;
const SIGNATURE: u8 = 6;
const VERSION_2: u8 = 2;
/// Longest field accepted when decoding (identifiers and caveats are short).
const MAX_FIELD: usize = 4096;

/// A macaroon with first-party caveats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macaroon {
    /// Where it was minted (informational).
    pub location: Option<Vec<u8>>,
    /// The identifier (for L402: version ‖ payment hash ‖ token id).
    pub identifier: Vec<u8>,
    /// First-party caveats, in order.
    pub caveats: Vec<Vec<u8>>,
    /// The chained HMAC.
    pub signature: [u8; 32],
}

/// Bytes are not a macaroon this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("macaroon: {0}")]
pub struct MacaroonError(pub &'static str);

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn chain(root_key: &[u8; 32], identifier: &[u8], caveats: &[Vec<u8>]) -> [u8; 32] {
    let key = hmac(b"macaroons-key-generator", root_key);
    caveats
        .iter()
        .fold(hmac(&key, identifier), |sig, caveat| hmac(&sig, caveat))
}

impl Macaroon {
    /// Mints a macaroon under `root_key`.
    pub fn mint(
        root_key: &[u8; 32],
        location: &str,
        identifier: Vec<u8>,
        caveats: Vec<Vec<u8>>,
    ) -> Self {
        Self {
            location: Some(location.as_bytes().to_vec()),
            signature: chain(root_key, &identifier, &caveats),
            identifier,
            caveats,
        }
    }

    /// Whether the signature is the chain of this identifier and these caveats under
    /// `root_key` (constant-time comparison).
    pub fn verify(&self, root_key: &[u8; 32]) -> bool {
        let expected = chain(root_key, &self.identifier, &self.caveats);
        expected
            .iter()
            .zip(self.signature.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }

    /// The V2 binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION_2];
        if let Some(location) = &self.location {
            field(&mut out, LOCATION, location);
        }
        field(&mut out, IDENTIFIER, &self.identifier);
        out.push(EOS);
        for caveat in &self.caveats {
            field(&mut out, IDENTIFIER, caveat);
            out.push(EOS);
        }
        out.push(EOS);
        field(&mut out, SIGNATURE, &self.signature);
        out
    }

    /// Reads the V2 binary encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, MacaroonError> {
        let mut reader = Reader(bytes);
        if reader.byte()? != VERSION_2 {
            return Err(MacaroonError("not a version 2 macaroon"));
        }
        let (mut tag, mut data) = reader.field()?;
        let location = if tag == LOCATION {
            let location = data.to_vec();
            (tag, data) = reader.field()?;
            Some(location)
        } else {
            None
        };
        if tag != IDENTIFIER {
            return Err(MacaroonError("no identifier"));
        }
        let identifier = data.to_vec();
        if reader.byte()? != EOS {
            return Err(MacaroonError("unexpected field after the identifier"));
        }
        let mut caveats = Vec::new();
        loop {
            match reader.peek()? {
                EOS => {
                    reader.byte()?;
                    break;
                }
                _ => {
                    let (tag, data) = reader.field()?;
                    if tag != IDENTIFIER {
                        return Err(MacaroonError("caveat without identifier"));
                    }
                    let caveat = data.to_vec();
                    match reader.byte()? {
                        EOS => caveats.push(caveat),
                        VID | LOCATION => {
                            return Err(MacaroonError("third-party caveats are not supported"));
                        }
                        _ => return Err(MacaroonError("malformed caveat")),
                    }
                }
            }
        }
        let (tag, data) = reader.field()?;
        if tag != SIGNATURE || !reader.0.is_empty() {
            return Err(MacaroonError("no signature at the end"));
        }
        let signature = data
            .try_into()
            .map_err(|_| MacaroonError("signature is not 32 bytes"))?;
        Ok(Self {
            location,
            identifier,
            caveats,
            signature,
        })
    }
}

fn field(out: &mut Vec<u8>, tag: u8, data: &[u8]) {
    out.push(tag);
    let mut len = data.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(data);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, MacaroonError> {
        let (first, rest) = self.0.split_first().ok_or(MacaroonError("truncated"))?;
        self.0 = rest;
        Ok(*first)
    }

    fn peek(&self) -> Result<u8, MacaroonError> {
        self.0.first().copied().ok_or(MacaroonError("truncated"))
    }

    fn field(&mut self) -> Result<(u8, &'a [u8]), MacaroonError> {
        let tag = self.byte()?;
        let mut len = 0usize;
        for shift in (0..28).step_by(7) {
            let byte = self.byte()?;
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if len > MAX_FIELD || len > self.0.len() {
                    return Err(MacaroonError("field too long"));
                }
                let (data, rest) = self.0.split_at(len);
                self.0 = rest;
                return Ok((tag, data));
            }
        }
        Err(MacaroonError("field length too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_encode_decode_verify() {
        let root = [7u8; 32];
        let m = Macaroon::mint(&root, "m2m", vec![0, 0, 1, 2], vec![b"route=/t".to_vec()]);
        let decoded = Macaroon::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert!(decoded.verify(&root));
        assert!(!decoded.verify(&[8u8; 32]));
        // A caveat removed or changed breaks the chain.
        let mut stripped = decoded.clone();
        stripped.caveats.clear();
        assert!(!stripped.verify(&root));
        // Garbage never panics and is refused.
        for cut in 0..m.encode().len() {
            assert!(Macaroon::decode(&m.encode()[..cut]).is_err());
        }
        assert!(Macaroon::decode(&[2, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
