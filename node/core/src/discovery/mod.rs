//! IoT discovery (XEP-0347) in sans-IO form: a thing's meta tags, the `IoTDisco` string its QR
//! code shows, and a thing registry's rules for registering and claiming.
//!
//! - Tags: names of 1 to 32 characters without `:`, `#` or white space (compared upper-cased, as
//!   the XEP says they are case-insensitive); string values of at most 128 characters; numeric
//!   values kept as written (a decimal number).
//! - The claim string: `IoTDisco` followed by `;NAME:value` per tag (`;#NAME:value` for a
//!   numeric one), `;` and `\` in values escaped with `\`.
//! - The registry: a thing registers its tags with a secret `KEY` (at least [`MIN_KEY_LEN`]
//!   characters: with the base64 of 16 random bytes, 128 bits a guesser must find); an owner
//!   claims it by presenting tags that match, `KEY` included. The registry keeps only a hash of
//!   the key and forgets it once the thing is claimed; `KEY` is never searchable. A claimant
//!   whose claims keep failing is locked out for a while that doubles with every further failure
//!   ([`LOCKOUT_AFTER`], [`LOCKOUT_FIRST_SECS`] up to [`LOCKOUT_MAX_SECS`]).
//!
//! Time comes in as `now_secs`; what the shell must do (tell a thing it was claimed, …) comes
//! out as [`RegistryEffect`]s; the state's bytes for the shell to keep are
//! [`Registry::encode`] / [`Registry::decode`].

mod records;

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use sha2::{Digest, Sha256};

/// The secret tag shared by a thing and its owner.
pub const KEY: &str = "KEY";
/// Shortest `KEY` a registry accepts.
pub const MIN_KEY_LEN: usize = 22;
/// Longest tag name.
pub const MAX_TAG_NAME: usize = 32;
/// Longest string value.
pub const MAX_STR_VALUE: usize = 128;
/// Most tags in one registration or claim.
pub const MAX_TAGS: usize = 32;
/// Failed claims before a claimant is locked out.
pub const LOCKOUT_AFTER: u32 = 3;
/// The first lock-out, seconds; each further failure doubles it.
pub const LOCKOUT_FIRST_SECS: u64 = 60;
/// The longest lock-out, seconds.
pub const LOCKOUT_MAX_SECS: u64 = 3_600;
const PREFIX: &str = "IoTDisco";

/// A tag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagValue {
    /// A string (`<str/>`).
    Str(String),
    /// A number as written (`<num/>`).
    Num(String),
}

impl TagValue {
    /// The value as text.
    pub fn text(&self) -> &str {
        match self {
            TagValue::Str(text) | TagValue::Num(text) => text,
        }
    }
}

/// One meta tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaTag {
    /// Upper-cased name.
    pub name: String,
    /// Value.
    pub value: TagValue,
}

/// A tag or claim string that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    /// A name that is empty, too long, or holds `:`, `#` or white space.
    BadName,
    /// A string value longer than [`MAX_STR_VALUE`].
    ValueTooLong,
    /// A value holding a character XML cannot carry (a control character).
    BadValue,
    /// A numeric value that is not a decimal number.
    NotNumeric,
    /// More than [`MAX_TAGS`] tags, or one name twice.
    BadTagSet,
    /// The claim string does not start with `IoTDisco`, or a tag has no `:`.
    BadClaimString,
}

impl core::fmt::Display for TagError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TagError::BadName => "a tag name must be 1-32 characters without ':', '#' or spaces",
            TagError::ValueTooLong => "a tag value must be at most 128 characters",
            TagError::BadValue => "a tag value must hold no control characters",
            TagError::NotNumeric => "a numeric tag's value must be a decimal number",
            TagError::BadTagSet => "at most 32 tags, each name once",
            TagError::BadClaimString => "not an IoTDisco string (IoTDisco;NAME:value;…)",
        })
    }
}

impl core::error::Error for TagError {}

/// A character XML 1.0 can carry (attribute values are XML).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{fffe}' | '\u{ffff}'))
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

impl MetaTag {
    /// A checked tag (the name upper-cased).
    pub fn new(name: &str, value: TagValue) -> Result<Self, TagError> {
        // The XEP forbids `:`, `#` and white space in names; `;` and `\\` would need escapes
        // that names do not get in the claim string, and what XML cannot carry is no tag.
        let bad_char = |c: char| {
            c == ':' || c == '#' || c == ';' || c == '\\' || c.is_whitespace() || !is_xml_char(c)
        };
        if name.is_empty() || name.chars().count() > MAX_TAG_NAME || name.chars().any(bad_char) {
            return Err(TagError::BadName);
        }
        if !value.text().chars().all(is_xml_char) {
            return Err(TagError::BadValue);
        }
        match &value {
            TagValue::Str(text) if text.chars().count() > MAX_STR_VALUE => {
                return Err(TagError::ValueTooLong);
            }
            TagValue::Num(text) if !is_decimal(text) => return Err(TagError::NotNumeric),
            _ => {}
        }
        Ok(Self {
            name: name.to_uppercase(),
            value,
        })
    }

    /// A string tag.
    pub fn str(name: &str, value: &str) -> Result<Self, TagError> {
        Self::new(name, TagValue::Str(value.to_string()))
    }
}

/// Checks a set of tags: at most [`MAX_TAGS`], each name once.
pub fn check_tags(tags: &[MetaTag]) -> Result<(), TagError> {
    let mut names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if tags.len() > MAX_TAGS || names.len() != tags.len() {
        return Err(TagError::BadTagSet);
    }
    Ok(())
}

/// The `IoTDisco` string of `tags`, in their order (what a QR code shows).
pub fn encode_claim(tags: &[MetaTag]) -> String {
    let mut out = String::from(PREFIX);
    for tag in tags {
        out.push(';');
        if matches!(tag.value, TagValue::Num(_)) {
            out.push('#');
        }
        out.push_str(&tag.name);
        out.push(':');
        for c in tag.value.text().chars() {
            if c == ';' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// The tags of an `IoTDisco` string, checked.
pub fn decode_claim(text: &str) -> Result<Vec<MetaTag>, TagError> {
    let rest = text
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(TagError::BadClaimString)?;
    // Split on unescaped `;`, unescaping as we go.
    let mut fields: Vec<String> = Vec::new();
    let mut chars = rest.chars();
    let mut current: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            ';' => fields.extend(current.replace(String::new())),
            '\\' => {
                let escaped = chars.next().ok_or(TagError::BadClaimString)?;
                current
                    .as_mut()
                    .ok_or(TagError::BadClaimString)?
                    .push(escaped);
            }
            c => current.as_mut().ok_or(TagError::BadClaimString)?.push(c),
        }
    }
    fields.extend(current);
    let tags = fields
        .iter()
        .map(|field| {
            let (name, value) = field.split_once(':').ok_or(TagError::BadClaimString)?;
            match name.strip_prefix('#') {
                Some(name) => MetaTag::new(name, TagValue::Num(value.to_string())),
                None => MetaTag::new(name, TagValue::Str(value.to_string())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_tags(&tags)?;
    Ok(tags)
}

/// A registered thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thing {
    /// Its bare JID.
    pub jid: String,
    /// Where to tell it things (the full JID it registered from).
    pub contact: String,
    /// Its tags, `KEY` excluded.
    pub tags: Vec<MetaTag>,
    /// The hash of its `KEY` while it is unclaimed.
    key_hash: Option<[u8; 32]>,
    /// Its owner, once claimed.
    pub owner: Option<String>,
    /// Whether searches may find it.
    pub public: bool,
}

/// What the shell must do after a registry operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEffect {
    /// Tell `thing` that `owner` claimed it (`<claimed jid='owner'/>`).
    NotifyClaimed {
        /// The thing's contact address.
        thing: String,
        /// Its new owner.
        owner: String,
    },
    /// Tell `thing` that its owner removed it from the registry.
    NotifyRemoved {
        /// The thing's contact address.
        thing: String,
    },
    /// Persist the registry's state (every operation that changed it).
    Persist,
}

/// The outcome of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Registered (or its tags updated), waiting for its owner.
    Waiting,
    /// Already claimed: the thing learns its owner.
    Claimed {
        /// The owner.
        owner: String,
    },
}

/// A registry operation refused; nothing changed (a failed claim only counts the attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// The tags break the rules.
    Tags(TagError),
    /// A registration without a `KEY` of at least [`MIN_KEY_LEN`] characters.
    WeakKey,
    /// No unclaimed thing has these tags and this key, or no such thing of this owner.
    NotFound,
    /// Too many failed claims: try again at `until_secs`.
    LockedOut {
        /// When the claimant may try again.
        until_secs: u64,
    },
}

impl core::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegistryError::Tags(error) => write!(f, "{error}"),
            RegistryError::WeakKey => write!(f, "a KEY tag of at least {MIN_KEY_LEN} characters"),
            RegistryError::NotFound => f.write_str("no such thing"),
            RegistryError::LockedOut { until_secs } => {
                write!(f, "too many failed claims: locked out until {until_secs}")
            }
        }
    }
}

impl core::error::Error for RegistryError {}

/// Failed claims of one claimant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Attempts {
    failures: u32,
    locked_until: u64,
}

/// A thing registry's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    things: BTreeMap<String, Thing>,
    attempts: BTreeMap<String, Attempts>,
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `tags` split into the key (if any) and the rest.
fn split_key(tags: &[MetaTag]) -> (Option<&str>, Vec<MetaTag>) {
    let key = tags.iter().find(|t| t.name == KEY).map(|t| t.value.text());
    let rest = tags.iter().filter(|t| t.name != KEY).cloned().collect();
    (key, rest)
}

impl Registry {
    /// The thing registered as `jid`.
    pub fn thing(&self, jid: &str) -> Option<&Thing> {
        self.things.get(jid)
    }

    /// `thing` registers (or updates) its tags, which must hold a strong `KEY`, from `contact`
    /// (where it is told when claimed).
    pub fn register(
        &mut self,
        thing: &str,
        contact: &str,
        tags: &[MetaTag],
    ) -> Result<(Registered, Vec<RegistryEffect>), RegistryError> {
        check_tags(tags).map_err(RegistryError::Tags)?;
        if let Some(owner) = self.things.get(thing).and_then(|t| t.owner.clone()) {
            return Ok((Registered::Claimed { owner }, Vec::new()));
        }
        let (key, rest) = split_key(tags);
        let key = key
            .filter(|k| k.chars().count() >= MIN_KEY_LEN)
            .ok_or(RegistryError::WeakKey)?;
        self.things.insert(
            thing.to_string(),
            Thing {
                jid: thing.to_string(),
                contact: contact.to_string(),
                tags: rest,
                key_hash: Some(key_hash(key)),
                owner: None,
                public: true,
            },
        );
        Ok((Registered::Waiting, alloc::vec![RegistryEffect::Persist]))
    }

    /// `claimant` claims the unclaimed thing whose tags include all of `tags` and whose key is
    /// their `KEY`; `public` says whether searches may find it afterwards. Returns its JID.
    pub fn claim(
        &mut self,
        claimant: &str,
        tags: &[MetaTag],
        public: bool,
        now_secs: u64,
    ) -> Result<(String, Vec<RegistryEffect>), RegistryError> {
        let attempts = self.attempts.get(claimant).copied().unwrap_or_default();
        if attempts.locked_until > now_secs {
            return Err(RegistryError::LockedOut {
                until_secs: attempts.locked_until,
            });
        }
        check_tags(tags).map_err(RegistryError::Tags)?;
        let (key, rest) = split_key(tags);
        let wanted = key.map(key_hash);
        let found = self
            .things
            .values()
            .find(|thing| {
                thing.owner.is_none()
                    && wanted.is_some()
                    && thing.key_hash == wanted
                    && rest.iter().all(|tag| thing.tags.contains(tag))
            })
            .map(|thing| thing.jid.clone());
        let Some(jid) = found else {
            let failures = attempts.failures + 1;
            let locked_until = if failures >= LOCKOUT_AFTER {
                let doublings = (failures - LOCKOUT_AFTER).min(16);
                let wait = (LOCKOUT_FIRST_SECS << doublings).min(LOCKOUT_MAX_SECS);
                now_secs + wait
            } else {
                0
            };
            self.attempts.insert(
                claimant.to_string(),
                Attempts {
                    failures,
                    locked_until,
                },
            );
            return Err(RegistryError::NotFound);
        };
        self.attempts.remove(claimant);
        let mut contact = String::new();
        if let Some(thing) = self.things.get_mut(&jid) {
            thing.owner = Some(claimant.to_string());
            thing.key_hash = None; // claimed: the key has done its work
            thing.public = public;
            contact.clone_from(&thing.contact);
        }
        let effects = alloc::vec![
            RegistryEffect::Persist,
            RegistryEffect::NotifyClaimed {
                thing: contact,
                owner: claimant.to_string(),
            },
        ];
        Ok((jid, effects))
    }

    /// `owner` removes its `thing` from the registry.
    pub fn remove(
        &mut self,
        owner: &str,
        thing: &str,
    ) -> Result<Vec<RegistryEffect>, RegistryError> {
        match self.things.get(thing) {
            Some(found) if found.owner.as_deref() == Some(owner) => {
                let contact = found.contact.clone();
                self.things.remove(thing);
                Ok(alloc::vec![
                    RegistryEffect::Persist,
                    RegistryEffect::NotifyRemoved { thing: contact },
                ])
            }
            _ => Err(RegistryError::NotFound),
        }
    }

    /// An unclaimed `thing` withdraws its registration.
    pub fn unregister(&mut self, thing: &str) -> Result<Vec<RegistryEffect>, RegistryError> {
        match self.things.get(thing) {
            Some(found) if found.owner.is_none() => {
                self.things.remove(thing);
                Ok(alloc::vec![RegistryEffect::Persist])
            }
            _ => Err(RegistryError::NotFound),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    pub(crate) const STRONG_KEY: &str = "q3Jd9f0LkPz8sVb2mN4xWA";

    pub(crate) fn tags(key: &str) -> Vec<MetaTag> {
        vec![
            MetaTag::str("SN", "394872348732948723").unwrap(),
            MetaTag::str("MAN", "www.ktc.se").unwrap(),
            MetaTag::new("V", TagValue::Num("1.2".into())).unwrap(),
            MetaTag::str("key", key).unwrap(),
        ]
    }

    #[test]
    fn the_claim_string_round_trips_with_escapes_and_numbers() {
        let mut all = tags(STRONG_KEY);
        all.push(MetaTag::str("NAME", r"room;1\b").unwrap());
        let text = encode_claim(&all);
        assert!(text.starts_with("IoTDisco;SN:394872348732948723;MAN:www.ktc.se;#V:1.2;KEY:"));
        assert!(text.ends_with(r";NAME:room\;1\\b"));
        assert_eq!(decode_claim(&text).unwrap(), all);
        // The XEP's own example.
        let example =
            "IoTDisco;SN:394872348732948723;MAN:www.ktc.se;MODEL:IMC;#V:1.2;KEY:4857402340298342";
        let decoded = decode_claim(example).unwrap();
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded[3].value, TagValue::Num("1.2".into()));
        assert_eq!(encode_claim(&decoded), example);
    }

    #[test]
    fn bad_tags_and_strings_are_refused() {
        assert_eq!(MetaTag::str("A B", "x"), Err(TagError::BadName));
        assert_eq!(MetaTag::str("A:B", "x"), Err(TagError::BadName));
        assert_eq!(MetaTag::str("", "x"), Err(TagError::BadName));
        assert_eq!(MetaTag::str(&"N".repeat(33), "x"), Err(TagError::BadName));
        assert_eq!(
            MetaTag::str("N", &"v".repeat(129)),
            Err(TagError::ValueTooLong)
        );
        assert_eq!(
            MetaTag::new("V", TagValue::Num("1.2.3".into())),
            Err(TagError::NotNumeric)
        );
        assert_eq!(MetaTag::str(r"A\B", "x"), Err(TagError::BadName));
        assert_eq!(MetaTag::str("A\0B", "x"), Err(TagError::BadName));
        assert_eq!(MetaTag::str("A", "x\0"), Err(TagError::BadValue));
        // Found by the claim_strings fuzz target: a name with an escaped character decoded,
        // but its claim string (names are not escaped) decoded to another name.
        assert!(decode_claim(r"IoTDisco;\\I:x").is_err());
        for bad in [
            "SN:1",
            "IoTDisco;SN",
            "IoTDisco;SN:1;sn:2",
            "IoTDisco;SN:1\\",
        ] {
            assert!(decode_claim(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_thing_is_claimed_once_with_its_key_and_learns_its_owner() {
        let mut registry = Registry::default();
        assert_eq!(
            registry.register("t@x", "t@x/r", &tags("short")),
            Err(RegistryError::WeakKey)
        );
        let (registered, effects) = registry
            .register("t@x", "t@x/r", &tags(STRONG_KEY))
            .unwrap();
        assert_eq!(registered, Registered::Waiting);
        assert_eq!(effects, vec![RegistryEffect::Persist]);
        // Tags without the key, or with another key, claim nothing.
        let without_key: Vec<MetaTag> = tags(STRONG_KEY).into_iter().take(3).collect();
        assert_eq!(
            registry.claim("o@x", &without_key, true, 0),
            Err(RegistryError::NotFound)
        );
        let (jid, effects) = registry
            .claim("o@x", &tags(STRONG_KEY)[..], false, 10)
            .unwrap();
        assert_eq!(jid, "t@x");
        assert!(effects.contains(&RegistryEffect::NotifyClaimed {
            thing: "t@x/r".into(),
            owner: "o@x".into()
        }));
        let thing = registry.thing("t@x").unwrap();
        assert_eq!(thing.owner.as_deref(), Some("o@x"));
        assert!(!thing.public && thing.key_hash.is_none());
        assert!(!thing.tags.iter().any(|t| t.name == KEY), "KEY never kept");
        // Claimed: a second claim finds nothing, a new registration learns the owner.
        assert_eq!(
            registry.claim("eve@x", &tags(STRONG_KEY), true, 20),
            Err(RegistryError::NotFound)
        );
        assert_eq!(
            registry
                .register("t@x", "t@x/r", &tags(STRONG_KEY))
                .unwrap()
                .0,
            Registered::Claimed {
                owner: "o@x".into()
            }
        );
        // Only the owner removes it.
        assert_eq!(
            registry.remove("eve@x", "t@x"),
            Err(RegistryError::NotFound)
        );
        assert!(registry.remove("o@x", "t@x").is_ok());
        assert!(registry.thing("t@x").is_none());
    }

    #[test]
    fn repeated_wrong_claims_lock_the_claimant_out_with_a_doubling_wait() {
        let mut registry = Registry::default();
        registry
            .register("t@x", "t@x/r", &tags(STRONG_KEY))
            .unwrap();
        let wrong = tags("wrong-key-but-long-enough-1");
        for _ in 0..LOCKOUT_AFTER {
            assert_eq!(
                registry.claim("eve@x", &wrong, true, 100),
                Err(RegistryError::NotFound)
            );
        }
        let locked = RegistryError::LockedOut {
            until_secs: 100 + LOCKOUT_FIRST_SECS,
        };
        // Locked: even the right key is refused until then, and nothing changes.
        assert_eq!(
            registry.claim("eve@x", &tags(STRONG_KEY), true, 101),
            Err(locked)
        );
        assert!(registry.thing("t@x").unwrap().owner.is_none());
        // After the wait, one more failure doubles it.
        let later = 100 + LOCKOUT_FIRST_SECS;
        assert_eq!(
            registry.claim("eve@x", &wrong, true, later),
            Err(RegistryError::NotFound)
        );
        assert_eq!(
            registry.claim("eve@x", &wrong, true, later + 1),
            Err(RegistryError::LockedOut {
                until_secs: later + 2 * LOCKOUT_FIRST_SECS
            })
        );
        // Another claimant is not locked, and a success clears the count.
        assert!(registry.claim("o@x", &tags(STRONG_KEY), true, 101).is_ok());
    }
}
