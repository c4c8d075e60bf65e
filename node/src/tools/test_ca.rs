//! Throwaway TLS material for the servers tests start (mosquitto, prosody): a CA made for one
//! server and a certificate for the names it answers to, signed by that CA. Clients trust the
//! CA's certificate for that server only.

use super::ToolError;

/// A CA and a certificate for `names` (DNS names or IP addresses) signed by it:
/// (CA PEM, certificate PEM, key PEM). `tool` names the server in errors.
pub(super) fn certificates(
    tool: &'static str,
    names: &[&str],
) -> Result<(String, String, String), ToolError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let failed = |error: rcgen::Error| ToolError::Start {
        tool,
        detail: format!("making its test certificates: {error}"),
    };
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("m2m throwaway {tool} CA"));
    let ca_pem = ca.self_signed(&ca_key).map_err(failed)?.pem();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().map_err(failed)?;
    let names = names
        .iter()
        .map(|name| (*name).to_owned())
        .collect::<Vec<_>>();
    let server = CertificateParams::new(names).map_err(failed)?;
    let cert_pem = server.signed_by(&key, &issuer).map_err(failed)?.pem();
    Ok((ca_pem, cert_pem, key.serialize_pem()))
}
