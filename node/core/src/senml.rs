//! Fractional encryption of a reading (seed 000; ITU-T X.1362): a SenML pack (RFC 8428, CBOR
//! representation) in which the fields a relay or an unpaid subscriber may see travel in clear —
//! by default the name, unit, time and price — and the masked ones (by default the value) travel
//! inside a COSE_Encrypt0 (RFC 9052, ChaCha20-Poly1305) carried as the record's data value
//! `vd`, with content format `ct` = "16" (`application/cose; cose-type="cose-encrypt0"`, as RFC
//! 9193 lets a record say what its `vd` holds).
//!
//! The clear fields, re-encoded in one canonical order, are the AEAD's external associated data:
//! anyone can read them, nobody can change them (the price, the time, whose reading it is)
//! without decryption failing. The key id (COSE `kid`) and the algorithm are in the protected
//! header; the nonce in the unprotected one. The price is the must-understand field `price_`
//! (atomic units of the offer's asset, a decimal string), so a SenML processor that does not
//! know it rejects the pack rather than showing a reading without its price.
//!
//! The key and the nonce are inputs (this crate draws no randomness). Signing the pack is the
//! shell's (it holds the device key).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use coset::CoseEncrypt0;
use coset::cbor::value::Value;

/// SenML CBOR labels (RFC 8428 §6).
const NAME: i64 = 0;
const UNIT: i64 = 1;
const VALUE: i64 = 2;
const TIME: i64 = 6;
const DATA_VALUE: i64 = 8;
/// Fields without a CBOR label are keyed by their name.
const CONTENT_FORMAT: &str = "ct";
const PRICE: &str = "price_";
/// CoAP content format of `application/cose; cose-type="cose-encrypt0"`.
const COSE_ENCRYPT0: &str = "16";
/// Largest pack accepted (a reading is tens of bytes; this bounds a hostile one's cost).
pub const MAX_PACK_BYTES: usize = 4096;

/// One reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// SenML name (`urn:dev:…:temperature`, or the topic).
    pub name: String,
    /// SenML unit (`Cel`, `%RH`), if any.
    pub unit: Option<String>,
    /// Time (seconds since the Unix epoch), if any.
    pub time: Option<f64>,
    /// The value.
    pub value: f64,
}

/// Which fields are encrypted (the seed's mask). The value by default; any of the others too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mask {
    /// Encrypt the name.
    pub name: bool,
    /// Encrypt the unit.
    pub unit: bool,
    /// Encrypt the time.
    pub time: bool,
    /// Encrypt the value.
    pub value: bool,
}

impl Default for Mask {
    fn default() -> Self {
        Self {
            name: false,
            unit: false,
            time: false,
            value: true,
        }
    }
}

/// A pack could not be made, read or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackError {
    /// Longer than [`MAX_PACK_BYTES`].
    TooLong(usize),
    /// Not CBOR, not a SenML pack of one record, or a field of the wrong type.
    Malformed(&'static str),
    /// A field this implementation does not know (must-understand fields end in `_`).
    UnknownField,
    /// The encrypted part is not a ChaCha20-Poly1305 COSE_Encrypt0 with a key id and a nonce.
    NotEncrypt0(&'static str),
    /// Wrong key, or a clear field or the ciphertext was changed.
    Decrypt,
}

impl core::fmt::Display for PackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PackError::TooLong(n) => write!(f, "pack of {n} bytes (at most {MAX_PACK_BYTES})"),
            PackError::Malformed(what) => write!(f, "malformed SenML pack: {what}"),
            PackError::UnknownField => {
                f.write_str("SenML pack has a field this reader does not know")
            }
            PackError::NotEncrypt0(what) => write!(f, "encrypted part: {what}"),
            PackError::Decrypt => {
                f.write_str("decryption failed: wrong key, or the pack was changed")
            }
        }
    }
}

impl core::error::Error for PackError {}

/// A pack as anyone sees it: the clear fields, the price, the key id, and the sealed rest.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedReading {
    /// Name, if in clear.
    pub name: Option<String>,
    /// Unit, if in clear.
    pub unit: Option<String>,
    /// Time, if in clear.
    pub time: Option<f64>,
    /// Value, if in clear.
    pub value: Option<f64>,
    /// Price of the key, atomic units.
    pub price: u128,
    /// The key id the seller sells the key under.
    pub key_id: Vec<u8>,
    encrypted: CoseEncrypt0,
}

fn clear_map(fields: &SealedReading) -> Vec<(Value, Value)> {
    // One canonical order: the AEAD's associated data is this map, re-encoded on reading.
    let mut map = Vec::new();
    if let Some(name) = &fields.name {
        map.push((Value::from(NAME), Value::Text(name.clone())));
    }
    if let Some(unit) = &fields.unit {
        map.push((Value::from(UNIT), Value::Text(unit.clone())));
    }
    if let Some(value) = fields.value {
        map.push((Value::from(VALUE), Value::Float(value)));
    }
    if let Some(time) = fields.time {
        map.push((Value::from(TIME), Value::Float(time)));
    }
    map.push((
        Value::Text(PRICE.into()),
        Value::Text(fields.price.to_string()),
    ));
    map
}

fn encode(value: Value) -> Result<Vec<u8>, PackError> {
    let mut bytes = Vec::new();
    coset::cbor::ser::into_writer(&value, &mut bytes)
        .map_err(|_| PackError::Malformed("unencodable"))?;
    Ok(bytes)
}

/// The associated data: the clear record, canonically encoded.
fn associated_data(fields: &SealedReading) -> Result<Vec<u8>, PackError> {
    encode(Value::Map(clear_map(fields)))
}

/// Seals `reading`: the fields `mask` names are encrypted under `key` (known to the seller and
/// sold under `key_id`) with `nonce` (never twice under one key), the rest stay in clear with
/// `price`. Returns the SenML CBOR pack.
pub fn seal(
    reading: &Reading,
    mask: Mask,
    price: u128,
    key_id: &[u8],
    key: &[u8; 32],
    nonce: [u8; 12],
) -> Result<Vec<u8>, PackError> {
    let mut hidden = Vec::new();
    let mut clear = SealedReading {
        name: None,
        unit: None,
        time: None,
        value: None,
        price,
        key_id: key_id.to_vec(),
        encrypted: CoseEncrypt0::default(),
    };
    if mask.name {
        hidden.push((Value::from(NAME), Value::Text(reading.name.clone())));
    } else {
        clear.name = Some(reading.name.clone());
    }
    match (&reading.unit, mask.unit) {
        (Some(unit), true) => hidden.push((Value::from(UNIT), Value::Text(unit.clone()))),
        (unit, _) => clear.unit = unit.clone(),
    }
    if mask.value {
        hidden.push((Value::from(VALUE), Value::Float(reading.value)));
    } else {
        clear.value = Some(reading.value);
    }
    match (reading.time, mask.time) {
        (Some(time), true) => hidden.push((Value::from(TIME), Value::Float(time))),
        (time, _) => clear.time = time,
    }
    let plaintext = encode(Value::Map(hidden))?;
    let aad = associated_data(&clear)?;
    let sealed = crate::cose::encrypt(key, key_id, nonce, &plaintext, &aad)?;
    let mut record = clear_map(&clear);
    record.push((Value::from(DATA_VALUE), Value::Bytes(sealed)));
    record.push((
        Value::Text(CONTENT_FORMAT.into()),
        Value::Text(COSE_ENCRYPT0.into()),
    ));
    encode(Value::Array(alloc::vec![Value::Map(record)]))
}

/// A pack of `reading` with every field in clear and no encrypted part: what a topic sold without
/// fractional encryption would publish (the reference the wire-size figures compare with).
/// [`read`] refuses it: it has no key to sell.
pub fn clear(reading: &Reading, price: u128) -> Result<Vec<u8>, PackError> {
    let fields = SealedReading {
        name: Some(reading.name.clone()),
        unit: reading.unit.clone(),
        time: reading.time,
        value: Some(reading.value),
        price,
        key_id: Vec::new(),
        encrypted: CoseEncrypt0::default(),
    };
    encode(Value::Array(alloc::vec![Value::Map(clear_map(&fields))]))
}

fn text(value: Value) -> Result<String, PackError> {
    value
        .into_text()
        .map_err(|_| PackError::Malformed("a text field is not text"))
}

fn float(value: Value) -> Result<f64, PackError> {
    match value {
        Value::Float(f) => Ok(f),
        Value::Integer(i) => Ok(i128::from(i) as f64),
        _ => Err(PackError::Malformed("a number field is not a number")),
    }
}

/// Reads a pack without any key: what every subscriber sees.
pub fn read(bytes: &[u8]) -> Result<SealedReading, PackError> {
    if bytes.len() > MAX_PACK_BYTES {
        return Err(PackError::TooLong(bytes.len()));
    }
    let value: Value =
        coset::cbor::de::from_reader(bytes).map_err(|_| PackError::Malformed("not CBOR"))?;
    let mut records = value
        .into_array()
        .map_err(|_| PackError::Malformed("not an array of records"))?;
    if records.len() != 1 {
        return Err(PackError::Malformed("not exactly one record"));
    }
    let record = records
        .pop()
        .and_then(|r| r.into_map().ok())
        .ok_or(PackError::Malformed("the record is not a map"))?;
    let (mut name, mut unit, mut time, mut value) = (None, None, None, None);
    let (mut price, mut data, mut format) = (None, None, None);
    for (label, field) in record {
        let seen = match &label {
            Value::Integer(i) => match i64::try_from(*i).ok() {
                Some(NAME) => name.replace(text(field)?).is_some(),
                Some(UNIT) => unit.replace(text(field)?).is_some(),
                Some(VALUE) => value.replace(float(field)?).is_some(),
                Some(TIME) => time.replace(float(field)?).is_some(),
                Some(DATA_VALUE) => data
                    .replace(
                        field
                            .into_bytes()
                            .map_err(|_| PackError::Malformed("vd is not bytes"))?,
                    )
                    .is_some(),
                _ => return Err(PackError::UnknownField),
            },
            Value::Text(t) if t == PRICE => price.replace(text(field)?).is_some(),
            Value::Text(t) if t == CONTENT_FORMAT => format.replace(text(field)?).is_some(),
            _ => return Err(PackError::UnknownField),
        };
        if seen {
            return Err(PackError::Malformed("a field appears twice"));
        }
    }
    if format.as_deref() != Some(COSE_ENCRYPT0) {
        return Err(PackError::Malformed("ct is not 16 (COSE_Encrypt0)"));
    }
    let price = price
        .ok_or(PackError::Malformed("no price_"))?
        .parse::<u128>()
        .map_err(|_| PackError::Malformed("price_ is not a decimal amount"))?;
    let encrypted = crate::cose::decode(&data.ok_or(PackError::Malformed("no vd"))?)?;
    let key_id = encrypted.protected.header.key_id.clone();
    Ok(SealedReading {
        name,
        unit,
        time,
        value,
        price,
        key_id,
        encrypted,
    })
}

impl SealedReading {
    /// Decrypts with the key bought for [`SealedReading::key_id`] and returns the whole reading.
    pub fn open(&self, key: &[u8; 32]) -> Result<Reading, PackError> {
        let aad = associated_data(self)?;
        let plaintext = crate::cose::decrypt(&self.encrypted, key, &aad)?;
        let hidden: Value = coset::cbor::de::from_reader(plaintext.as_slice())
            .map_err(|_| PackError::Malformed("the encrypted fields are not CBOR"))?;
        let (mut name, mut unit, mut time, mut value) =
            (self.name.clone(), self.unit.clone(), self.time, self.value);
        for (label, field) in hidden
            .into_map()
            .map_err(|_| PackError::Malformed("the encrypted fields are not a map"))?
        {
            let clash = match label.as_integer().and_then(|i| i64::try_from(i).ok()) {
                Some(NAME) => name.replace(text(field)?).is_some(),
                Some(UNIT) => unit.replace(text(field)?).is_some(),
                Some(VALUE) => value.replace(float(field)?).is_some(),
                Some(TIME) => time.replace(float(field)?).is_some(),
                _ => return Err(PackError::UnknownField),
            };
            if clash {
                return Err(PackError::Malformed("a field is both clear and encrypted"));
            }
        }
        Ok(Reading {
            name: name.ok_or(PackError::Malformed("no name"))?,
            unit,
            time,
            value: value.ok_or(PackError::Malformed("no value"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            name: "building1/floor1/room1/temperature".into(),
            unit: Some("Cel".into()),
            time: Some(1_796_354_833.0),
            value: 21.5,
        }
    }

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn the_value_is_hidden_and_the_rest_is_readable_by_anyone() {
        let pack = seal(&reading(), Mask::default(), 1_000, b"k1", &KEY, [1; 12]).unwrap();
        let seen = read(&pack).unwrap();
        assert_eq!(
            seen.name.as_deref(),
            Some("building1/floor1/room1/temperature")
        );
        assert_eq!(seen.unit.as_deref(), Some("Cel"));
        assert_eq!(seen.value, None, "the value is not in clear");
        assert_eq!((seen.price, seen.key_id.as_slice()), (1_000, &b"k1"[..]));
        assert_eq!(seen.open(&KEY).unwrap(), reading());
        assert_eq!(seen.open(&[8; 32]), Err(PackError::Decrypt), "wrong key");
        // 21.5 as a CBOR float (half, single or double precision) is nowhere in the pack,
        // while a pack with the value in clear shows it.
        let shows_value = |pack: &[u8]| {
            let encodings: [&[u8]; 3] = [
                &[0xf9, 0x4d, 0x60],
                &[0xfa, 0x41, 0xac, 0x00, 0x00],
                &[0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0],
            ];
            encodings
                .iter()
                .any(|e| pack.windows(e.len()).any(|w| w == *e))
        };
        assert!(!shows_value(&pack));
        let clear = Mask {
            value: false,
            ..Mask::default()
        };
        let in_clear = seal(&reading(), clear, 1_000, b"k1", &KEY, [1; 12]).unwrap();
        assert!(shows_value(&in_clear));
    }

    #[test]
    fn any_mask_round_trips() {
        for bits in 0u8..16 {
            let mask = Mask {
                name: bits & 1 != 0,
                unit: bits & 2 != 0,
                time: bits & 4 != 0,
                value: bits & 8 != 0,
            };
            let pack = seal(&reading(), mask, 5, b"k", &KEY, [bits; 12]).unwrap();
            let seen = read(&pack).unwrap();
            assert_eq!(seen.name.is_none(), mask.name);
            assert_eq!(seen.value.is_none(), mask.value);
            assert_eq!(seen.open(&KEY).unwrap(), reading(), "{mask:?}");
        }
    }

    #[test]
    fn a_changed_clear_field_fails_decryption() {
        let pack = seal(&reading(), Mask::default(), 1_000, b"k1", &KEY, [1; 12]).unwrap();
        let mut seen = read(&pack).unwrap();
        seen.price = 1; // a relay lowering the price, or relabelling the time or name
        assert_eq!(seen.open(&KEY), Err(PackError::Decrypt));
        let mut seen = read(&pack).unwrap();
        seen.time = Some(0.0);
        assert_eq!(seen.open(&KEY), Err(PackError::Decrypt));
    }

    #[test]
    fn hostile_packs_are_refused() {
        assert!(matches!(read(&[0xff]), Err(PackError::Malformed(_))));
        assert!(
            matches!(read(&[0x80]), Err(PackError::Malformed(_))),
            "empty pack"
        );
        assert!(matches!(
            read(&alloc::vec![0u8; MAX_PACK_BYTES + 1]),
            Err(PackError::TooLong(_))
        ));
        // A field nobody here understands.
        let unknown = encode(Value::Array(alloc::vec![Value::Map(alloc::vec![(
            Value::Text("evil_".into()),
            Value::Text("x".into())
        )])]))
        .unwrap();
        assert_eq!(read(&unknown), Err(PackError::UnknownField));
    }
}
