//! The dashboard: a web page the agent serves on its `[metrics]` listener (`GET /dashboard`),
//! showing balances per leg, the channel table, payments per minute, budget gauges, top-up
//! requests with their QR codes and the latest events (decision 0013).
//!
//! - The page, its script and its style sheet are compiled into the binary (`assets/`); the page
//!   fetches nothing from anywhere but this listener (its CSP says so), and no JavaScript
//!   framework: the chart is drawn as SVG by hand.
//! - The data comes from `/dashboard/api/summary` (status, channels, budget, activity; polled
//!   every 2 s) and `/dashboard/api/balance` (chain balances and top-up requests; slower, polled
//!   every 15 s), both answering only a bearer token. The token is 256 random bits made at
//!   start, kept in memory only, and given out by the control socket (`m2m dashboard`) as
//!   `…/dashboard#token=…`: a URL fragment never reaches a server log or a `Referer`.
//! - Read-only: the API answers through the control socket's own handlers, and only those that
//!   change nothing (no `get`, `withdraw` or `set_budget` over HTTP).

pub mod activity;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::control::{self, ControlRequest, ControlTarget};
use activity::Activity;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Only this listener's own assets and API; no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The path of the page.
pub const PATH: &str = "/dashboard";

/// The bearer token of one agent run.
pub(super) struct DashboardToken {
    text: String,
    digest: [u8; 32],
}

impl DashboardToken {
    /// 32 random bytes, hex.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        let text = alloy::hex::encode(bytes);
        let digest = Sha256::digest(text.as_bytes()).into();
        Ok(Self { text, digest })
    }

    /// The page's URL on `base` (`http://127.0.0.1:9464`) with the token in its fragment.
    pub fn url(&self, base: &str) -> String {
        format!("{base}{PATH}#token={}", self.text)
    }

    /// Whether `presented` is the token; compares digests, so the time taken says nothing
    /// about how much of a guess was right.
    fn admits(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest == self.digest
    }
}

/// What the dashboard's routes share.
pub(super) struct Dashboard {
    pub token: DashboardToken,
    pub target: Arc<ControlTarget>,
    pub activity: Arc<Activity>,
}

/// The page, its assets and its API, for merging into the `[metrics]` listener's router.
pub(super) fn router(dashboard: Arc<Dashboard>) -> Router {
    let asset = |kind: &'static str, body: &'static str| {
        get(move || async move { static_asset(kind, body) })
    };
    Router::new()
        .route(PATH, asset("text/html; charset=utf-8", INDEX_HTML))
        .route(
            "/dashboard/app.js",
            asset("text/javascript; charset=utf-8", APP_JS),
        )
        .route(
            "/dashboard/style.css",
            asset("text/css; charset=utf-8", STYLE_CSS),
        )
        .route("/dashboard/api/summary", get(summary))
        .route("/dashboard/api/balance", get(balance))
        .with_state(dashboard)
}

fn static_asset(kind: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    hardened(response.headers_mut());
    response
}

/// The headers every dashboard answer carries.
fn hardened(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Whether the request carries the token.
fn authorized(dashboard: &Dashboard, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| dashboard.token.admits(token.trim()))
}

/// The answer to a request without the token.
fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(json!({ "error": "the dashboard needs the token `m2m dashboard` prints" })),
    )
        .into_response();
    hardened(response.headers_mut());
    response
}

fn answer(value: Value) -> Response {
    let mut response = axum::Json(value).into_response();
    hardened(response.headers_mut());
    response
}

/// A control handler's result, or its error as `{ "error": … }` (one part of a page may fail
/// while the rest shows).
async fn part(request: ControlRequest, target: &ControlTarget) -> Value {
    control::handle(&request, target)
        .await
        .unwrap_or_else(|error| json!({ "error": error }))
}

async fn summary(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !authorized(&dashboard, &headers) {
        return unauthorized();
    }
    let target = &dashboard.target;
    answer(json!({
        "status": part(ControlRequest::Status, target).await,
        "channels": part(ControlRequest::Channels, target).await,
        "budget": part(ControlRequest::Budget, target).await,
        "activity": dashboard.activity.snapshot(crate::now_secs()),
    }))
}

async fn balance(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !authorized(&dashboard, &headers) {
        return unauthorized();
    }
    let target = &dashboard.target;
    let balance = part(ControlRequest::Balance, target).await;
    let topups = top_ups(&balance, &target.status);
    answer(json!({ "balance": balance, "topUps": topups }))
}

/// Payment requests a user's wallet can scan to fund the device: EIP-681 for the native coin
/// and each token shown, BIP-21 for the Bitcoin wallet (or, without one, the device's key
/// address, as `m2m topup --chain btc` gives). Each with its QR code as an SVG data URL.
fn top_ups(balance: &Value, status: &Value) -> Vec<Value> {
    use m2m_wallet::topup::{EvmAsset, EvmTopUp, bitcoin_uri};
    let mut requests = Vec::new();
    let evm = &balance["evm"];
    if let (Some(to), Some(chain_id)) = (
        evm["address"]
            .as_str()
            .and_then(|a| a.parse::<alloy::primitives::Address>().ok()),
        evm["chainId"].as_u64(),
    ) {
        let tokens = evm["tokens"].as_array().into_iter().flatten();
        let assets =
            std::iter::once(("ETH".to_owned(), EvmAsset::Native)).chain(tokens.filter_map(|t| {
                let token = t["token"].as_str()?.parse().ok()?;
                Some((
                    format!("token {}", t["token"].as_str()?),
                    EvmAsset::Erc20 { token },
                ))
            }));
        for (label, asset) in assets {
            let uri = EvmTopUp {
                to,
                chain_id,
                asset,
                amount: None,
            }
            .to_string();
            requests.push(request("evm", &label, uri));
        }
    }
    let address = balance["bitcoin"]["address"]
        .as_str()
        .or_else(|| status["bitcoin"].as_str())
        .and_then(|a| a.parse::<bitcoin::Address<_>>().ok())
        .map(bitcoin::Address::assume_checked);
    if let Some(address) = address {
        let uri = bitcoin_uri(&address, None, Some("m2m device"));
        requests.push(request("btc", "bitcoin", uri));
    }
    requests
}

fn request(leg: &str, label: &str, uri: String) -> Value {
    json!({ "leg": leg, "label": label, "qr": qr_svg_data_url(&uri), "uri": uri })
}

/// `data` as a QR code, an SVG image in a `data:` URL (the CSP allows `data:` images only).
fn qr_svg_data_url(data: &str) -> Option<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(180, 180)
        .quiet_zone(true)
        .build();
    let encoded = base64::engine::general_purpose::STANDARD.encode(svg);
    Some(format!("data:image/svg+xml;base64,{encoded}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_is_admitted_and_the_url_carries_it_in_the_fragment() {
        let token = DashboardToken::generate().unwrap();
        assert_eq!(token.text.len(), 64);
        assert!(token.admits(&token.text));
        assert!(!token.admits(""));
        assert!(!token.admits(&token.text[..63]));
        let other = DashboardToken::generate().unwrap();
        assert_ne!(token.text, other.text);
        assert!(!token.admits(&other.text));
        let url = token.url("http://127.0.0.1:9464");
        assert_eq!(
            url,
            format!("http://127.0.0.1:9464/dashboard#token={}", token.text)
        );
    }

    #[test]
    fn top_ups_name_each_asset_and_carry_a_qr_code() {
        let balance = json!({
            "evm": {
                "address": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                "chainId": 31337,
                "tokens": [{ "token": "0x5fbdb2315678afecb367f032d93f642f64180aa3", "balance": "0" }],
            },
            "bitcoin": null,
        });
        let words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let seed = m2m_wallet::DeviceSeed::from_phrase(words).unwrap();
        let keys = m2m_wallet::DeviceKeys::derive(&seed, bitcoin::Network::Regtest).unwrap();
        let address = keys.bitcoin_address().to_string();
        let status = json!({ "bitcoin": address });
        let requests = top_ups(&balance, &status);
        let uris: Vec<&str> = requests
            .iter()
            .map(|r| r["uri"].as_str().unwrap())
            .collect();
        assert_eq!(
            uris,
            [
                "ethereum:0x70997970C51812dc3A010C7d01b50e0d17dc79C8@31337",
                "ethereum:0x5FbDB2315678afecb367f032d93F642f64180aa3@31337/transfer?address=0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                &format!("bitcoin:{address}?label=m2m%20device"),
            ]
        );
        for request in &requests {
            let qr = request["qr"].as_str().unwrap();
            let svg = qr.strip_prefix("data:image/svg+xml;base64,").unwrap();
            let svg = base64::engine::general_purpose::STANDARD
                .decode(svg)
                .unwrap();
            assert!(String::from_utf8(svg).unwrap().contains("<svg"));
        }
    }
}
