//! TLS for every server the device exposes beyond loopback, and for the buyers that reach them.
//!
//! - The device's **identity**: an Ed25519 key derived from the seed ([`m2m_wallet::TLS_PATH`])
//!   and a self-signed certificate made from it. Both are derived again at each start, so no TLS
//!   key is ever written to disk, and a device restored from its seed words presents the same
//!   key. Buyers **pin** that key: [`Pin`] is the SHA-256 of its SubjectPublicKeyInfo in curl's
//!   `--pinnedpubkey` form (`sha256//…`), which `m2m address` prints.
//! - **Servers**: [`TlsMode`] (per listener in the configuration) resolves to a [`ServerTls`];
//!   plain HTTP beyond loopback is refused unless the configuration says
//!   `tls = "plaintext-beyond-loopback"` in so many words.
//! - **Clients** ([`client`]): a host with a pin is checked against it; any other https host
//!   against the system's roots.

pub mod ca;
pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use m2m_wallet::DeviceKeys;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;

pub use client::{Trust, TrustError};

/// How a listener speaks (`tls = …` next to its `listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// TLS unless the address is loopback (the default).
    #[default]
    Auto,
    /// TLS on any address, loopback too.
    On,
    /// Plain HTTP; refused on an address beyond loopback.
    Off,
    /// Plain HTTP even beyond loopback: for a device behind a TLS-terminating proxy on a private
    /// network. Gateway session ids and payment headers then travel in clear.
    PlaintextBeyondLoopback,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The TLS key could not be derived from the seed.
    #[error("deriving the TLS key")]
    Derive(#[source] m2m_wallet::SeedError),
    /// The certificate could not be made.
    #[error("making the device certificate")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the key or the settings.
    #[error("setting up TLS")]
    Config(#[source] rustls::Error),
    /// A listener beyond loopback was configured without TLS.
    #[error(
        "{addr} is beyond loopback: serve it with TLS (tls = \"auto\" or \"on\"), or say tls = \"plaintext-beyond-loopback\""
    )]
    PlaintextBeyondLoopback {
        /// The address.
        addr: SocketAddr,
    },
}

/// A pinned public key: SHA-256 of a certificate's SubjectPublicKeyInfo (RFC 7469's pin, in
/// curl's `sha256//<base64>` spelling).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

/// The prefix of a pin's text form.
pub const PIN_PREFIX: &str = "sha256//";

impl Pin {
    /// The pin of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki: &[u8]) -> Self {
        use bitcoin::hashes::{Hash, sha256};
        Self(sha256::Hash::hash(spki).to_byte_array())
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = base64::engine::general_purpose::STANDARD.encode(self.0);
        write!(f, "{PIN_PREFIX}{text}")
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A pin's text was not `sha256//` and 32 bytes of base64.
#[derive(Debug, thiserror::Error)]
#[error("a pin is sha256// and the base64 of 32 bytes (as `m2m address` prints it)")]
pub struct BadPin;

impl std::str::FromStr for Pin {
    type Err = BadPin;
    fn from_str(text: &str) -> Result<Self, BadPin> {
        let encoded = text.trim().strip_prefix(PIN_PREFIX).ok_or(BadPin)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| BadPin)?;
        Ok(Self(bytes.try_into().map_err(|_| BadPin)?))
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The device's TLS identity: certificate, pin and the server settings that present them.
#[derive(Clone)]
pub struct DeviceIdentity {
    certificate: CertificateDer<'static>,
    pin: Pin,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// RFC 8410's PKCS#8 v1 wrapping of a raw Ed25519 private key: this fixed prefix, then the 32
/// bytes. Written out because ring makes Ed25519 keys from PKCS#8 only, and rcgen takes them
/// from ring.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl DeviceIdentity {
    /// Derives the identity from the device keys. The same keys give the same certificate.
    pub fn derive(keys: &DeviceKeys) -> Result<Self, TlsError> {
        let secret = keys.tls_secret().map_err(TlsError::Derive)?;
        let mut pkcs8 = zeroize::Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(&secret[..]);
        let key_der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
            .map_err(TlsError::Certificate)?;
        // The name is informative only: buyers check the pinned key, not a name.
        let mut params = rcgen::CertificateParams::new(vec!["m2m-device".to_owned()])
            .map_err(TlsError::Certificate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            keys.addresses().ethereum.as_str(),
        );
        let certificate = params
            .self_signed(&key_pair)
            .map_err(TlsError::Certificate)?
            .der()
            .clone();
        let pin = Pin::of_spki(
            rustls::server::ParsedCertificate::try_from(&certificate)
                .map_err(TlsError::Config)?
                .subject_public_key_info()
                .as_ref(),
        );
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], PrivateKeyDer::Pkcs8(key_der))
            .map_err(TlsError::Config)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            certificate,
            pin,
            server: Arc::new(server),
        })
    }

    /// The pin buyers configure for this device.
    pub fn pin(&self) -> Pin {
        self.pin
    }

    /// The certificate (DER), for tools that want it whole.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }
}

/// How one server speaks, resolved from its [`TlsMode`] and address.
#[derive(Debug, Clone)]
pub enum ServerTls {
    /// Plain HTTP: loopback only.
    Plain,
    /// Plain HTTP beyond loopback, because the configuration said so.
    PlainBeyondLoopback,
    /// TLS with the device identity.
    Tls(Arc<ServerConfig>),
}

impl ServerTls {
    /// What `mode` means for a listener on `listen`.
    pub fn resolve(
        mode: TlsMode,
        listen: SocketAddr,
        identity: &DeviceIdentity,
    ) -> Result<Self, TlsError> {
        let tls = Self::Tls(identity.server.clone());
        match mode {
            TlsMode::On => Ok(tls),
            TlsMode::Auto if beyond_loopback(listen) => Ok(tls),
            TlsMode::Auto => Ok(Self::Plain),
            TlsMode::Off => Self::Plain.checked(listen),
            TlsMode::PlaintextBeyondLoopback => Ok(Self::PlainBeyondLoopback),
        }
    }

    /// `self`, if it may serve on `local`: plain HTTP beyond loopback needs the explicit mode.
    pub fn checked(self, local: SocketAddr) -> Result<Self, TlsError> {
        match self {
            Self::Plain if beyond_loopback(local) => {
                Err(TlsError::PlaintextBeyondLoopback { addr: local })
            }
            other => Ok(other),
        }
    }

    /// The acceptor, when this is TLS.
    pub(crate) fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        match self {
            Self::Tls(config) => Some(tokio_rustls::TlsAcceptor::from(config.clone())),
            Self::Plain | Self::PlainBeyondLoopback => None,
        }
    }

    /// The URL scheme clients use.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Tls(_) => "https",
            Self::Plain | Self::PlainBeyondLoopback => "http",
        }
    }
}

/// Whether `addr` is reachable from beyond this machine (the unspecified address is: it listens
/// on every interface).
pub fn beyond_loopback(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// The one crypto provider (ring: already in the Lightning build; no second one is compiled).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_crypto_provider();
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes ring the process's default rustls provider, if none is set yet. reqwest (and alloy's
/// HTTP transport on it) is built without a provider of its own, so that only ring is
/// compiled; a reqwest client built before any provider is installed panics. The command
/// line, the agent and every client made here call this first; a program embedding this crate
/// that builds reqwest clients of its own should call it at start. Idempotent.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Err means another provider was installed first: that one is then the default.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(words: &str) -> DeviceKeys {
        let seed = m2m_wallet::DeviceSeed::from_phrase(words).unwrap();
        DeviceKeys::derive(&seed, bitcoin::Network::Regtest).unwrap()
    }

    const WORDS: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    #[test]
    fn the_same_seed_gives_the_same_certificate_and_pin() {
        let (a, b) = (
            DeviceIdentity::derive(&keys(WORDS)).unwrap(),
            DeviceIdentity::derive(&keys(WORDS)).unwrap(),
        );
        assert_eq!(a.pin(), b.pin());
        assert_eq!(a.certificate(), b.certificate());
        let other = DeviceIdentity::derive(&keys(
            "legal winner thank year wave sausage worth useful legal winner thank yellow",
        ))
        .unwrap();
        assert_ne!(a.pin(), other.pin());
    }

    #[test]
    fn pins_read_back_what_they_print_and_refuse_anything_else() {
        let pin = DeviceIdentity::derive(&keys(WORDS)).unwrap().pin();
        let text = pin.to_string();
        assert!(text.starts_with("sha256//"));
        assert_eq!(text.parse::<Pin>().unwrap(), pin);
        for bad in [
            "",
            "sha256//",
            "sha1//AAAA",
            &text[8..],
            "sha256//AAAA",
            "sha256//!!",
        ] {
            assert!(bad.parse::<Pin>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn plain_http_beyond_loopback_needs_the_explicit_mode() {
        let identity = DeviceIdentity::derive(&keys(WORDS)).unwrap();
        let (local, public): (SocketAddr, SocketAddr) = (
            "127.0.0.1:8402".parse().unwrap(),
            "0.0.0.0:8402".parse().unwrap(),
        );
        let resolve = |mode, addr| ServerTls::resolve(mode, addr, &identity);
        assert!(matches!(
            resolve(TlsMode::Auto, local),
            Ok(ServerTls::Plain)
        ));
        assert!(matches!(
            resolve(TlsMode::Auto, public),
            Ok(ServerTls::Tls(_))
        ));
        assert!(matches!(resolve(TlsMode::On, local), Ok(ServerTls::Tls(_))));
        assert!(matches!(resolve(TlsMode::Off, local), Ok(ServerTls::Plain)));
        assert!(matches!(
            resolve(TlsMode::Off, public),
            Err(TlsError::PlaintextBeyondLoopback { .. })
        ));
        assert!(matches!(
            resolve(TlsMode::PlaintextBeyondLoopback, public),
            Ok(ServerTls::PlainBeyondLoopback)
        ));
        assert!(ServerTls::Plain.checked("[::1]:1".parse().unwrap()).is_ok());
        assert!(ServerTls::Plain.checked("[::]:1".parse().unwrap()).is_err());
        assert!(
            ServerTls::Plain
                .checked("192.168.1.2:1".parse().unwrap())
                .is_err()
        );
    }
}
