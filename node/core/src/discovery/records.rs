//! A registry's state as bytes, for the shell to keep durably (written before the answer that
//! follows from a change leaves): version 1, then the things and the claimants' failed
//! attempts. Strings are a big-endian `u16` length and UTF-8; every tag is checked again on
//! decoding, so a damaged file cannot bring back a tag the rules refuse.

use alloc::string::String;
use alloc::vec::Vec;

use super::{Attempts, MetaTag, Registry, TagValue, Thing};
use crate::records::RecordError;

const VERSION: u8 = 1;

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the encoded form front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(RecordError::Corrupt("registry state truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(word))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes)
            .map(String::from)
            .map_err(|_| RecordError::Corrupt("registry string not UTF-8"))
    }
}

impl Registry {
    /// The state as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = alloc::vec![VERSION];
        out.extend_from_slice(&(self.things.len() as u32).to_be_bytes());
        for thing in self.things.values() {
            put_str(&mut out, &thing.jid);
            put_str(&mut out, &thing.contact);
            let flags = u8::from(thing.key_hash.is_some())
                | (u8::from(thing.owner.is_some()) << 1)
                | (u8::from(thing.public) << 2);
            out.push(flags);
            if let Some(hash) = &thing.key_hash {
                out.extend_from_slice(hash);
            }
            if let Some(owner) = &thing.owner {
                put_str(&mut out, owner);
            }
            out.push(thing.tags.len().min(u8::MAX as usize) as u8);
            for tag in thing.tags.iter().take(u8::MAX as usize) {
                out.push(u8::from(matches!(tag.value, TagValue::Num(_))));
                put_str(&mut out, &tag.name);
                put_str(&mut out, tag.value.text());
            }
        }
        out.extend_from_slice(&(self.attempts.len() as u32).to_be_bytes());
        for (claimant, attempts) in &self.attempts {
            put_str(&mut out, claimant);
            out.extend_from_slice(&attempts.failures.to_be_bytes());
            out.extend_from_slice(&attempts.locked_until.to_be_bytes());
        }
        out
    }

    /// The state of [`Registry::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut reader = Reader(bytes);
        let version = reader.u8()?;
        if version != VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let mut registry = Registry::default();
        for _ in 0..reader.u32()? {
            let jid = reader.string()?;
            let contact = reader.string()?;
            let flags = reader.u8()?;
            if flags > 7 {
                return Err(RecordError::Corrupt("registry thing flags"));
            }
            let key_hash = match flags & 1 {
                0 => None,
                _ => Some(<[u8; 32]>::try_from(reader.take(32)?).expect("32 bytes")),
            };
            let owner = match flags & 2 {
                0 => None,
                _ => Some(reader.string()?),
            };
            let mut tags = Vec::new();
            for _ in 0..reader.u8()? {
                let numeric = reader.u8()?;
                let (name, value) = (reader.string()?, reader.string()?);
                let value = match numeric {
                    0 => TagValue::Str(value),
                    1 => TagValue::Num(value),
                    _ => return Err(RecordError::Corrupt("registry tag kind")),
                };
                tags.push(
                    MetaTag::new(&name, value).map_err(|_| RecordError::Corrupt("registry tag"))?,
                );
            }
            let thing = Thing {
                jid: jid.clone(),
                contact,
                tags,
                key_hash,
                owner,
                public: flags & 4 != 0,
            };
            registry.things.insert(jid, thing);
        }
        for _ in 0..reader.u32()? {
            let claimant = reader.string()?;
            let attempts = Attempts {
                failures: reader.u32()?,
                locked_until: reader.u64()?,
            };
            registry.attempts.insert(claimant, attempts);
        }
        if !reader.0.is_empty() {
            return Err(RecordError::Corrupt("registry state has trailing bytes"));
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{STRONG_KEY, tags};
    use super::*;

    #[test]
    fn the_state_round_trips_and_damage_is_refused() {
        let mut registry = Registry::default();
        registry
            .register("a@x", "a@x/1", &tags(STRONG_KEY))
            .unwrap();
        registry
            .register("b@x", "b@x/1", &tags("another-long-key-00000001"))
            .unwrap();
        registry.claim("o@x", &tags(STRONG_KEY), false, 5).unwrap();
        let _ = registry.claim("eve@x", &tags("wrong-key-but-long-enough-1"), true, 5);
        let bytes = registry.encode();
        let back = Registry::decode(&bytes).unwrap();
        assert_eq!(back, registry);
        // The restored registry keeps the rules: a's owner, b still claimable, eve's count.
        assert_eq!(back.thing("a@x").unwrap().owner.as_deref(), Some("o@x"));
        let mut restored = back;
        assert!(
            restored
                .claim("p@x", &tags("another-long-key-00000001"), true, 6)
                .is_ok()
        );
        assert!(Registry::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Registry::decode(&longer).is_err());
        let mut version = bytes;
        version[0] = 2;
        assert!(Registry::decode(&version).is_err());
        assert_eq!(
            Registry::decode(&Registry::default().encode()).unwrap(),
            Registry::default()
        );
    }
}
