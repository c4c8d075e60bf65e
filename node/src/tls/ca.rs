//! Trusting one server's own CA (a device's MQTT broker, its XMPP server): a rustls client
//! configuration whose only roots are the CA certificates an operator configured, on the
//! process's ring provider.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The CA certificates could not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The PEM holds no usable certificate.
    #[error("the CA certificates (PEM) hold no usable certificate")]
    NoCertificate(#[source] Option<rustls::pki_types::pem::Error>),
    /// A certificate was not accepted as a trust root.
    #[error("the CA certificate")]
    Trust(#[source] rustls::Error),
}

/// A client configuration that trusts exactly the CAs in `ca_pem` (TLS 1.2 and 1.3).
pub fn client_config_trusting(ca_pem: &str) -> Result<rustls::ClientConfig, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| CaError::NoCertificate(Some(e)))?;
        roots.add(cert).map_err(CaError::Trust)?;
    }
    if roots.is_empty() {
        return Err(CaError::NoCertificate(None));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(CaError::Trust)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
