//! IoT discovery (XEP-0347) on the wire: the `urn:xmpp:iot:discovery` payloads, a thing
//! registry serving them over an XMPP session (its rules are the core's
//! [`m2m_core::discovery::Registry`]), and the thing's and the owner's calls.
//!
//! | request (IQ set) | from  | answer                                                   |
//! |------------------|-------|----------------------------------------------------------|
//! | `<register>` tags | thing | empty result (waiting), or `<claimed jid=owner/>`       |
//! | `<mine>` tags     | owner | `<claimed jid=thing/>`; `item-not-found`; `policy-violation` when locked out |
//! | `<remove jid/>`   | owner | empty result; `item-not-found` if not its thing          |
//! | `<unregister/>`   | thing | empty result; `item-not-found` if claimed or unknown     |
//!
//! The registry is addressed by a full JID (an account's resource; the server itself answers
//! IQs sent to a bare account JID) or, as a component of the server, by its domain.
//!
//! When a claim succeeds, the registry tells the thing with an IQ set `<claimed jid=owner/>`
//! (to the full JID it registered from); a removal, with `<removed/>`.

use std::path::PathBuf;

use futures::StreamExt;
use m2m_core::discovery::{MetaTag, Registered, Registry, RegistryEffect, RegistryError, TagValue};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::NcName;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::{Event, IqRequest, IqResponse, Stanza};

use super::XmppSession;

/// The namespace of XEP-0347.
pub const NS: &str = "urn:xmpp:iot:discovery";

/// A discovery call failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The registry answered with an error (its condition and text).
    #[error("the registry refused: {condition:?} {text}")]
    Refused {
        /// The XMPP error condition.
        condition: DefinedCondition,
        /// Its text, if any.
        text: String,
    },
    /// The answer did not read.
    #[error("the registry's answer: {0}")]
    Answer(&'static str),
    /// The session failed before an answer came.
    #[error("the XMPP session")]
    Session(#[source] std::io::Error),
    /// The session ended.
    #[error("the XMPP session ended")]
    Ended,
}

impl DiscoveryError {
    /// Whether the registry said it has no such thing (wrong tags or key).
    pub fn is_not_found(&self) -> bool {
        matches!(self, DiscoveryError::Refused { condition, .. } if *condition == DefinedCondition::ItemNotFound)
    }

    /// Whether the registry locked this claimant out for a while.
    pub fn is_locked_out(&self) -> bool {
        matches!(self, DiscoveryError::Refused { condition, .. } if *condition == DefinedCondition::PolicyViolation)
    }
}

fn name(text: &'static str) -> NcName {
    NcName::try_from(text).expect("a constant XML name")
}

/// `<{what} xmlns=NS>` with one `<str/>` or `<num/>` per tag.
pub fn tags_element(what: &str, tags: &[MetaTag]) -> Element {
    let mut builder = Element::builder(what, NS);
    for tag in tags {
        let kind = match tag.value {
            TagValue::Str(_) => "str",
            TagValue::Num(_) => "num",
        };
        builder = builder.append(
            Element::builder(kind, NS)
                .attr(name("name"), tag.name.as_str())
                .attr(name("value"), tag.value.text())
                .build(),
        );
    }
    builder.build()
}

/// The tags of a `<register>`/`<mine>` element, checked; `None` if one does not read.
pub fn parse_tags(element: &Element) -> Option<Vec<MetaTag>> {
    element
        .children()
        .map(|child| {
            let (tag_name, value) = (child.attr("name")?, child.attr("value")?.to_owned());
            let value = match child.name() {
                "str" => TagValue::Str(value),
                "num" => TagValue::Num(value),
                _ => return None,
            };
            MetaTag::new(tag_name, value).ok()
        })
        .collect()
}

fn claimed_element(jid: &str) -> Element {
    Element::builder("claimed", NS)
        .attr(name("jid"), jid)
        .build()
}

fn error(condition: DefinedCondition, text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Cancel, condition, "en", text)
}

fn refusal(error: &RegistryError) -> StanzaError {
    let condition = match error {
        RegistryError::NotFound => DefinedCondition::ItemNotFound,
        RegistryError::LockedOut { .. } => DefinedCondition::PolicyViolation,
        RegistryError::Tags(_) | RegistryError::WeakKey => DefinedCondition::BadRequest,
    };
    self::error(condition, &error.to_string())
}

/// The registry's state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryFileError {
    /// Reading or writing it.
    #[error("registry state {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Its bytes do not decode.
    #[error("registry state {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: m2m_core::records::RecordError,
    },
}

/// Where a registry keeps its state: one file, replaced atomically (written beside it, synced,
/// renamed, the directory synced) on every change, before the answer that follows from it.
#[derive(Debug, Clone)]
pub struct RegistryFile {
    path: PathBuf,
}

impl RegistryFile {
    /// The state kept at `path` (the file need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state, empty if the file does not exist.
    pub fn load(&self) -> Result<Registry, RegistryFileError> {
        let io = |source| RegistryFileError::Io {
            path: self.path.clone(),
            source,
        };
        match std::fs::read(&self.path) {
            Ok(bytes) => Registry::decode(&bytes).map_err(|source| RegistryFileError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(error) => Err(io(error)),
        }
    }

    /// Replaces the state durably.
    pub fn save(&self, registry: &Registry) -> Result<(), RegistryFileError> {
        crate::datadir::write_durably(&self.path, &registry.encode()).map_err(|source| {
            RegistryFileError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// A thing registry on its own XMPP account: answers discovery requests until the session ends.
pub struct RegistryService {
    session: XmppSession,
    registry: Registry,
    file: RegistryFile,
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl RegistryService {
    /// A registry on `session` whose state lives in `file` (loaded now).
    pub fn open(session: XmppSession, file: RegistryFile) -> Result<Self, RegistryFileError> {
        Ok(Self {
            session,
            registry: file.load()?,
            file,
        })
    }

    /// Serves until the session ends.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Serves until the session ends or `stop` completes; then ends the session cleanly (a
    /// dropped tokio-xmpp client would keep its connection, and its reconnections, alive).
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let request = tokio::select! {
                request = next_request(&mut self.session) => request,
                () = &mut stop => break,
            };
            let Some((from, id, payload)) = request else {
                break;
            };
            let before = self.registry.clone();
            let (mut answer, effects) = self.answer(&from, &payload);
            // Any change (a failed claim's count too) is durable before the answer leaves; if
            // it cannot be, nothing changed.
            if self.registry != before
                && let Err(error) = self.file.save(&self.registry)
            {
                tracing::error!(error = %crate::events::error_line(&error), "registry state not saved");
                self.registry = before;
                answer = Err(self::error(
                    DefinedCondition::InternalServerError,
                    "the registry could not record this",
                ));
            }
            let answer_was_ok = answer.is_ok();
            let reply = match answer {
                Ok(payload) => Iq::Result {
                    from: None,
                    to: Some(from.clone()),
                    id,
                    payload,
                },
                Err(error) => Iq::Error {
                    from: None,
                    to: Some(from.clone()),
                    id,
                    error,
                    payload: None,
                },
            };
            if let Err(error) = self.session.client.send_stanza(reply.into()).await {
                tracing::warn!(%error, "answering a discovery request");
            }
            if answer_was_ok {
                for effect in effects {
                    self.carry_out(effect).await;
                }
            }
        }
        self.session.close().await;
    }

    fn answer(
        &mut self,
        from: &Jid,
        payload: &Element,
    ) -> (Result<Option<Element>, StanzaError>, Vec<RegistryEffect>) {
        let sender = from.to_bare().to_string();
        let bad = || error(DefinedCondition::BadRequest, "malformed discovery request");
        match payload.name() {
            "register" => {
                let Some(tags) = parse_tags(payload) else {
                    return (Err(bad()), Vec::new());
                };
                match self.registry.register(&sender, &from.to_string(), &tags) {
                    Ok((Registered::Waiting, effects)) => (Ok(None), effects),
                    Ok((Registered::Claimed { owner }, effects)) => {
                        (Ok(Some(claimed_element(&owner))), effects)
                    }
                    Err(error) => (Err(refusal(&error)), Vec::new()),
                }
            }
            "mine" => {
                let Some(tags) = parse_tags(payload) else {
                    return (Err(bad()), Vec::new());
                };
                let public = payload.attr("public") != Some("false");
                match self
                    .registry
                    .claim(&sender, &tags, public, crate::now_secs())
                {
                    Ok((thing, effects)) => (Ok(Some(claimed_element(&thing))), effects),
                    Err(error) => (Err(refusal(&error)), Vec::new()),
                }
            }
            "remove" => match payload.attr("jid") {
                Some(thing) => match self.registry.remove(&sender, thing) {
                    Ok(effects) => (Ok(None), effects),
                    Err(error) => (Err(refusal(&error)), Vec::new()),
                },
                None => (Err(bad()), Vec::new()),
            },
            "unregister" => match self.registry.unregister(&sender) {
                Ok(effects) => (Ok(None), effects),
                Err(error) => (Err(refusal(&error)), Vec::new()),
            },
            _ => (
                Err(error(
                    DefinedCondition::FeatureNotImplemented,
                    "unknown request",
                )),
                Vec::new(),
            ),
        }
    }

    async fn carry_out(&mut self, effect: RegistryEffect) {
        let (thing, payload) = match effect {
            RegistryEffect::NotifyClaimed { thing, owner } => (thing, claimed_element(&owner)),
            RegistryEffect::NotifyRemoved { thing } => {
                (thing, Element::builder("removed", NS).build())
            }
            RegistryEffect::Persist => return, // (done before the answer)
        };
        let Ok(to) = Jid::new(&thing) else {
            return;
        };
        // The answer is not awaited: the thing acknowledges, or learns it at its next
        // registration.
        drop(
            self.session
                .client
                .send_iq(Some(to), IqRequest::Set(payload))
                .await,
        );
    }
}

/// The next discovery request (an IQ set in [`NS`]) `session` receives: (from, id, payload);
/// `None` once the session ends. Other stanzas are skipped.
async fn next_request(session: &mut XmppSession) -> Option<(Jid, String, Element)> {
    while let Some(event) = session.client.next().await {
        if let Event::Stanza(Stanza::Iq(Iq::Set {
            from: Some(from),
            id,
            payload,
            ..
        })) = event
            && payload.ns() == NS
        {
            return Some((from, id, payload));
        }
    }
    None
}

/// Sends `payload` to `registry` as an IQ set and waits for the answer's payload.
async fn ask(
    session: &mut XmppSession,
    registry: &Jid,
    payload: Element,
) -> Result<Option<Element>, DiscoveryError> {
    let token = session
        .client
        .send_iq(Some(registry.clone()), IqRequest::Set(payload))
        .await;
    match token.await {
        Ok(IqResponse::Result(payload)) => Ok(payload),
        Ok(IqResponse::Error(error)) => Err(DiscoveryError::Refused {
            condition: error.defined_condition,
            text: error.texts.values().next().cloned().unwrap_or_default(),
        }),
        Err(_) => Err(DiscoveryError::Ended),
    }
}

/// The thing registers its `tags` (with its `KEY`) at `registry`: `Ok(None)` while it waits for
/// its owner, `Ok(Some(owner))` if it was claimed already.
pub async fn register(
    session: &mut XmppSession,
    registry: &Jid,
    tags: &[MetaTag],
) -> Result<Option<BareJid>, DiscoveryError> {
    let answer = ask(session, registry, tags_element("register", tags)).await?;
    answer.map(|claimed| claimed_jid(&claimed)).transpose()
}

/// The owner claims the thing whose tags (with its `KEY`) are `tags`: the thing's JID.
pub async fn claim(
    session: &mut XmppSession,
    registry: &Jid,
    tags: &[MetaTag],
) -> Result<BareJid, DiscoveryError> {
    let answer = ask(session, registry, tags_element("mine", tags)).await?;
    claimed_jid(&answer.ok_or(DiscoveryError::Answer("no <claimed/>"))?)
}

/// The owner removes its `thing` from the registry.
pub async fn remove(
    session: &mut XmppSession,
    registry: &Jid,
    thing: &BareJid,
) -> Result<(), DiscoveryError> {
    let payload = Element::builder("remove", NS)
        .attr(name("jid"), thing.to_string())
        .build();
    ask(session, registry, payload).await.map(drop)
}

fn claimed_jid(element: &Element) -> Result<BareJid, DiscoveryError> {
    if !element.is("claimed", NS) {
        return Err(DiscoveryError::Answer("not a <claimed/>"));
    }
    element
        .attr("jid")
        .and_then(|jid| BareJid::new(jid).ok())
        .ok_or(DiscoveryError::Answer("<claimed/> without a JID"))
}

/// The thing waits for `registry`'s word that it was claimed, acknowledges it, and returns its
/// owner. Other stanzas meanwhile are skipped.
pub async fn wait_claimed(
    session: &mut XmppSession,
    registry: &Jid,
) -> Result<BareJid, DiscoveryError> {
    while let Some((from, id, payload)) = next_request(session).await {
        if from.to_bare() != registry.to_bare() || !payload.is("claimed", NS) {
            continue;
        }
        let owner = claimed_jid(&payload)?;
        let ack = Iq::Result {
            from: None,
            to: Some(from),
            id,
            payload: None,
        };
        session
            .client
            .send_stanza(ack.into())
            .await
            .map_err(DiscoveryError::Session)?;
        return Ok(owner);
    }
    Err(DiscoveryError::Ended)
}
