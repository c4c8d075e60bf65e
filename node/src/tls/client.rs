//! The buyer's side of TLS: which servers it trusts, and how.
//!
//! A [`Trust`] maps hosts to pins. A host with a pin must present exactly that key (any name,
//! any issuer: the pin is the identity, as with SSH host keys); every other https host is
//! checked against the system's roots by the platform verifier, as a browser would.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Pin, provider};

/// Why a trust could not be built or a connection made.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A pinned URL is not an `https://` URL with a host.
    #[error("{url}: a pin needs an https:// URL with a host")]
    NotHttps {
        /// The URL.
        url: String,
    },
    /// Two different pins for one host.
    #[error("{host} has two different pins")]
    Conflict {
        /// The host.
        host: String,
    },
}

/// The server presented a key other than the pinned one.
#[derive(thiserror::Error)]
#[error("{host} presented key {presented}, not the pinned {expected}")]
pub struct PinMismatch {
    host: String,
    expected: Pin,
    presented: Pin,
}

/// rustls shows a custom certificate error with `Debug`: make that the sentence too.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The system's roots could not be loaded for a host without a pin.
#[derive(thiserror::Error)]
#[error("no pin for {host} and the system's certificate roots are unavailable")]
struct NoSystemRoots {
    host: String,
}

impl std::fmt::Debug for NoSystemRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Hosts and their pins; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pins: Arc<HashMap<String, Pin>>,
}

impl Trust {
    /// Pins `url`'s host to `pin`. The same pin twice is fine; two different ones are refused.
    pub fn pin(&mut self, url: &str, pin: Pin) -> Result<(), TrustError> {
        let host = pinned_host(url)?;
        let pins = Arc::make_mut(&mut self.pins);
        match pins.get(&host) {
            Some(existing) if *existing != pin => Err(TrustError::Conflict { host }),
            _ => {
                pins.insert(host, pin);
                Ok(())
            }
        }
    }

    /// A trust with one pin.
    pub fn pinned(url: &str, pin: Pin) -> Result<Self, TrustError> {
        let mut trust = Self::default();
        trust.pin(url, pin)?;
        Ok(trust)
    }

    /// The rustls settings of a client holding this trust.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        if self.pins.is_empty() {
            static SYSTEM: OnceLock<Arc<ClientConfig>> = OnceLock::new();
            return SYSTEM.get_or_init(|| build(Self::default())).clone();
        }
        build(self.clone())
    }

    /// Opens a byte stream to `url`'s host and port: TLS for `https://`, plain TCP for
    /// `http://` (the gateway's CONNECT tunnels ride on it).
    pub async fn connect(&self, url: &str) -> std::io::Result<Box<dyn Stream>> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid("not a URL"))?;
        let host = parsed.host_str().ok_or_else(|| invalid("no host"))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| invalid("no port"))?;
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        tcp.set_nodelay(true)?;
        match parsed.scheme() {
            "http" => Ok(Box::new(tcp)),
            "https" => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|_| invalid("bad host name"))?;
                let connector = tokio_rustls::TlsConnector::from(self.client_config());
                Ok(Box::new(connector.connect(name, tcp).await?))
            }
            _ => Err(invalid("the scheme is neither http nor https")),
        }
    }
}

/// A connection to a server, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The host a pin is stored under: as rustls will name it (an IPv6 address without brackets).
fn pinned_host(url: &str) -> Result<String, TrustError> {
    let not_https = || TrustError::NotHttps {
        url: url.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| not_https())?;
    if parsed.scheme() != "https" {
        return Err(not_https());
    }
    let host = parsed.host_str().ok_or_else(not_https)?;
    Ok(host.trim_matches(['[', ']']).to_ascii_lowercase())
}

fn build(trust: Trust) -> Arc<ClientConfig> {
    let verifier = PinningVerifier {
        pins: trust.pins,
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous() // a verifier of our own: pins first, the system roots for the rest
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The platform verifier, made once (it reads the system's roots).
fn system_roots() -> Option<&'static rustls_platform_verifier::Verifier> {
    static VERIFIER: OnceLock<Option<rustls_platform_verifier::Verifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| rustls_platform_verifier::Verifier::new(provider()).ok())
        .as_ref()
}

#[derive(Debug)]
struct PinningVerifier {
    pins: Arc<HashMap<String, Pin>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn host_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_ascii_lowercase(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn other(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let host = host_of(server_name);
        let Some(expected) = self.pins.get(&host) else {
            let roots = system_roots().ok_or_else(|| other(NoSystemRoots { host }))?;
            return roots.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        };
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        let presented = Pin::of_spki(parsed.subject_public_key_info().as_ref());
        if presented == *expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(other(PinMismatch {
                host,
                expected: *expected,
                presented,
            }))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_per_host_and_https_only() {
        let (a, b) = (Pin([1; 32]), Pin([2; 32]));
        let mut trust = Trust::pinned("https://10.0.0.5:8402/temperature", a).unwrap();
        trust.pin("https://10.0.0.5:8403/", a).unwrap(); // same device, another port
        assert!(matches!(
            trust.pin("https://10.0.0.5/", b),
            Err(TrustError::Conflict { .. })
        ));
        assert!(matches!(
            trust.pin("http://10.0.0.6/", b),
            Err(TrustError::NotHttps { .. })
        ));
        trust.pin("https://[::1]:9/", b).unwrap();
        assert_eq!(trust.pins.get("::1"), Some(&b));
        assert_eq!(trust.pins.get("10.0.0.5"), Some(&a));
    }
}
