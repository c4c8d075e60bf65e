//! L402's wire formats, without a Lightning node: macaroons ([`macaroon`]) and the two headers,
//! `WWW-Authenticate: L402 macaroon="…", invoice="…"` (the challenge) and
//! `Authorization: L402 <base64 macaroon>:<hex preimage>` (the redemption). Pure functions, so
//! every build has them and the fuzzer reaches them; the issuer and the paying client live in
//! `ln::l402`.

pub mod macaroon;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub use macaroon::Macaroon;

use crate::x402::btc::unhex32;

/// The schemes accepted in `Authorization` (L402 and its former name).
pub const SCHEMES: [&str; 2] = ["L402", "LSAT"];

fn is_scheme(text: &str) -> bool {
    SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(text))
}

/// The macaroon and preimage of an `Authorization` value; `None` unless it is
/// `L402 <base64 macaroon>:<64 hex digits>` with a macaroon that decodes.
pub fn parse_authorization(value: &str) -> Option<(Macaroon, [u8; 32])> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !is_scheme(scheme) {
        return None;
    }
    let (macaroon, preimage) = token.trim().split_once(':')?;
    let macaroon = Macaroon::decode(&STANDARD.decode(macaroon).ok()?).ok()?;
    Some((macaroon, unhex32(preimage)?))
}

/// The macaroon and invoice of an L402 (or LSAT) challenge.
pub fn parse_challenge(value: &str) -> Option<(String, String)> {
    let (scheme, params) = value.trim().split_once(' ')?;
    if !is_scheme(scheme) {
        return None;
    }
    let mut macaroon = None;
    let mut invoice = None;
    for part in params.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "macaroon" => macaroon = Some(value),
            "invoice" => invoice = Some(value),
            _ => {}
        }
    }
    Some((macaroon?, invoice?))
}
