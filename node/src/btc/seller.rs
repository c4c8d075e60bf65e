//! Readings priced in satoshi behind HTTP 402, paid over Taproot channels (`btc-channel`).
//!
//! Per paid request: decode the payment, check it names this route's offer, register the channel
//! (first time: funding checked on chain), accept the voucher (durable before this returns),
//! then serve the reading with a `PAYMENT-RESPONSE` receipt. Any refusal is a 402 with the offer
//! and an error code; nothing is recorded for it. The server shares the EVM seller's connection
//! handling (timeouts, head and connection caps, graceful stop).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bitcoin::Amount;
use m2m_contracts::btc::BtcChannelError;
use serde_json::json;
use tokio::net::TcpListener;

use super::channels::{BtcChannelsError, PayeeChannels, PayeePolicy};
use crate::events::{AgentEvent, EventLink, Leg, Payment};
use crate::seller::config::LimitsConfig;
use crate::seller::sensor::{SensorKind, SensorSource};
use crate::seller::{ServerHandle, serve_router_timed};
use crate::x402::btc::{
    BTC_ASSET, BTC_CHANNEL, BTC_CLOSING, BTC_CUMULATIVE_MISMATCH, BTC_EXCEEDS_CAPACITY,
    BTC_FUNDING, BTC_SIGNATURE, BTC_TERMS, BtcChannelPayload, BtcOfferExtra, BtcVoucherWire,
    CLOSE_PATH, CloseAnswerWire, CloseRequestWire, channel_id_hex,
};
use crate::x402::codes;
use crate::x402::headers::{self, PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE};
use crate::x402::types::{
    PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettlementResponse,
    X402_VERSION,
};

/// A route priced in satoshi.
#[derive(Debug, Clone)]
pub struct BtcRoute {
    /// URL path.
    pub path: String,
    /// Price per reading.
    pub price: Amount,
    /// What the sensor measures.
    pub sensor: SensorKind,
    /// Where its readings come from; `None` = the seller's fallback source.
    pub source: Option<Arc<dyn SensorSource>>,
}

/// What a payee holds on a channel: the charged total and the voucher that pays it.
type Held = (Amount, Option<m2m_contracts::btc::BtcVoucher>);

/// Counters for logs and the simulator.
#[derive(Debug, Default)]
pub struct BtcSellerStats {
    /// Readings served against a voucher.
    pub paid: AtomicU64,
    /// Payments refused.
    pub refused: AtomicU64,
}

/// The seller.
pub struct BtcSeller {
    payee: Arc<PayeeChannels>,
    network: String,
    routes: HashMap<String, (BtcRoute, PaymentRequirements)>,
    sensor: Arc<dyn SensorSource>,
    /// L402 over the device's Lightning node, when it has one.
    #[cfg(feature = "lightning")]
    l402: Option<Arc<crate::ln::l402::L402Issuer>>,
    /// Counters.
    pub stats: BtcSellerStats,
    /// Payments received go here once an agent attaches its bus.
    pub events: EventLink,
    /// Its requests' latency, once an agent attaches its metrics.
    pub requests: crate::metrics::RequestTiming,
}

impl std::fmt::Debug for BtcSeller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtcSeller")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl BtcSeller {
    /// A seller on `network` (the CAIP-2 id of the node `payee` talks to).
    pub fn new(
        payee: Arc<PayeeChannels>,
        policy: &PayeePolicy,
        network: String,
        routes: Vec<BtcRoute>,
        sensor: Arc<dyn SensorSource>,
    ) -> Self {
        let extra = BtcOfferExtra {
            min_confirmations: policy.min_confirmations,
            min_blocks_to_expiry: policy.min_blocks_to_expiry,
            min_close_fee_rate_sat_per_kvb: policy.min_close_fee_rate.to_sat_per_kwu() * 4,
            charged_amount: None,
        };
        let routes = routes
            .into_iter()
            .map(|route| {
                let offer = PaymentRequirements {
                    scheme: BTC_CHANNEL.into(),
                    network: network.clone(),
                    amount: route.price.to_sat().to_string(),
                    asset: BTC_ASSET.into(),
                    pay_to: payee.payee_key().to_string(),
                    max_timeout_seconds: 60,
                    extra: serde_json::to_value(&extra).ok(),
                };
                (route.path.clone(), (route, offer))
            })
            .collect();
        Self {
            payee,
            network,
            routes,
            sensor,
            #[cfg(feature = "lightning")]
            l402: None,
            stats: BtcSellerStats::default(),
            events: EventLink::default(),
            requests: Default::default(),
        }
    }

    /// Also sells every route over L402 (Lightning), through `issuer`.
    #[cfg(feature = "lightning")]
    pub fn with_l402(mut self, issuer: Arc<crate::ln::l402::L402Issuer>) -> Self {
        self.l402 = Some(issuer);
        self
    }

    /// The channels it is paid on.
    pub fn payee(&self) -> &Arc<PayeeChannels> {
        &self.payee
    }

    /// Readings served against vouchers.
    pub fn paid_readings(&self) -> u64 {
        self.stats.paid.load(Ordering::Relaxed)
    }

    async fn handle(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response {
        let Some((route, offer)) = self.routes.get(path) else {
            return (StatusCode::NOT_FOUND, "no such reading\n").into_response();
        };
        if *method != Method::GET && *method != Method::HEAD {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
            )
                .into_response();
        }
        let url = format!("http://{}{path}", host(headers));
        // HEAD serves no body, so it never takes a payment (voucher or L402): price only.
        if *method == Method::HEAD {
            return self.required(route, offer, &url, None, None);
        }
        // Sampled before any payment is taken (or an L402 token redeemed): no reading, no charge.
        let reading = match route
            .source
            .as_ref()
            .unwrap_or(&self.sensor)
            .read(route.sensor)
        {
            Ok(pack) => serde_json::to_vec(&pack).unwrap_or_default(),
            Err(error) => return crate::seller::http::sensor_unavailable(&error, 1),
        };
        #[cfg(feature = "lightning")]
        if let (Some(issuer), Some(authorization)) = (
            &self.l402,
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        ) {
            return match issuer.redeem(path, authorization, crate::now_secs()) {
                Ok(hash) => {
                    self.stats.paid.fetch_add(1, Ordering::Relaxed);
                    self.received(
                        Leg::Lightning,
                        "l402",
                        u128::from(route.price.to_sat()) * 1000,
                        path,
                    );
                    self.serve(reading, &hash, route.price)
                }
                Err(crate::ln::l402::L402Error::Store(error)) => {
                    tracing::error!(%error, "L402 redemption not recorded");
                    (StatusCode::INTERNAL_SERVER_ERROR, "payment not recorded\n").into_response()
                }
                Err(error) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "L402 token refused");
                    self.required(route, offer, &url, Some("invalid_l402_token"), None)
                }
            };
        }
        let Some(value) = headers.get(PAYMENT_SIGNATURE) else {
            return self.required(route, offer, &url, None, None);
        };
        match self.pay(route, offer, value).await {
            Ok((id, charged)) => {
                self.stats.paid.fetch_add(1, Ordering::Relaxed);
                self.received(Leg::Btc, BTC_CHANNEL, route.price.to_sat().into(), path);
                self.serve(reading, &id, charged)
            }
            Err((code, charged)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                if code == codes::UNEXPECTED {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "payment not recorded\n")
                        .into_response();
                }
                self.required(route, offer, &url, Some(code), charged)
            }
        }
    }

    fn received(&self, leg: Leg, scheme: &str, amount: u128, path: &str) {
        self.events.publish(|| {
            AgentEvent::PaymentReceived(Payment {
                leg,
                scheme: scheme.into(),
                amount,
                resource: path.into(),
            })
        });
    }

    /// Checks and records a payment: `(channel id, charged total)` or `(error code, charged)`.
    async fn pay(
        &self,
        route: &BtcRoute,
        offer: &PaymentRequirements,
        value: &HeaderValue,
    ) -> Result<([u8; 32], Amount), (&'static str, Option<Held>)> {
        let refused = |code| (code, None);
        let text = value
            .to_str()
            .map_err(|_| refused(codes::INVALID_PAYLOAD))?;
        let payment: PaymentPayload =
            headers::decode(text).map_err(|_| refused(codes::INVALID_PAYLOAD))?;
        let accepted = &payment.accepted;
        if accepted.scheme != offer.scheme
            || accepted.network != offer.network
            || accepted.amount != offer.amount
            || accepted.pay_to != offer.pay_to
        {
            return Err(refused(codes::INVALID_PAYMENT_REQUIREMENTS));
        }
        let payload: BtcChannelPayload =
            serde_json::from_value(payment.payload).map_err(|_| refused(codes::INVALID_PAYLOAD))?;
        let terms = payload
            .channel
            .to_terms()
            .map_err(|_| refused(codes::INVALID_PAYLOAD))?;
        let voucher = payload
            .voucher
            .to_voucher()
            .map_err(|_| refused(codes::INVALID_PAYLOAD))?;
        let id = self.payee.register(terms).await.map_err(|e| {
            tracing::debug!(error = %e, "btc channel refused");
            refused(code_of(&e))
        })?;
        match self.payee.accept(&id, &voucher, route.price).await {
            Ok(charged) => Ok((id, charged)),
            Err(error) => {
                let code = code_of(&error);
                let charged = match code {
                    BTC_CUMULATIVE_MISMATCH => self.payee.state(&id).await.ok(),
                    _ => None,
                };
                Err((code, charged))
            }
        }
    }

    fn serve(&self, body: Vec<u8>, id: &[u8; 32], charged: Amount) -> Response {
        let receipt = SettlementResponse {
            success: true,
            error_reason: None,
            payer: None,
            transaction: String::new(),
            network: self.network.clone(),
            amount: None,
            extra: Some(json!({
                "channelId": channel_id_hex(id),
                "chargedAmount": charged.to_sat().to_string(),
            })),
            extensions: None,
        };
        let mut response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/senml+json")],
            body,
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&headers::encode(&receipt)) {
            response.headers_mut().insert(PAYMENT_RESPONSE, value);
        }
        response
    }

    fn required(
        &self,
        #[cfg_attr(not(feature = "lightning"), allow(unused_variables))] route: &BtcRoute,
        offer: &PaymentRequirements,
        url: &str,
        error: Option<&str>,
        charged: Option<Held>,
    ) -> Response {
        let mut offer = offer.clone();
        if let (Some((charged, held)), Some(extra)) = (charged, offer.extra.as_mut()) {
            extra["chargedAmount"] = json!(charged.to_sat().to_string());
            // The payer's own signature on what we hold: proof for a payer that forgot it.
            if let Some(held) = held {
                extra["chargedVoucher"] = json!(BtcVoucherWire::from_voucher(&held));
            }
        }
        let required = PaymentRequired {
            x402_version: X402_VERSION,
            error: error.map(str::to_owned),
            resource: ResourceInfo {
                url: url.to_owned(),
                description: None,
                mime_type: Some("application/senml+json".into()),
            },
            accepts: vec![offer],
            extensions: None,
        };
        let mut response = (
            StatusCode::PAYMENT_REQUIRED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&required).unwrap_or_default(),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&headers::encode(&required)) {
            response.headers_mut().insert(PAYMENT_REQUIRED, value);
        }
        #[cfg(feature = "lightning")]
        if let Some(issuer) = &self.l402 {
            match issuer.challenge(&route.path, route.price) {
                Ok(challenge) => {
                    if let Ok(value) = HeaderValue::from_str(&challenge) {
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, value);
                    }
                }
                Err(error) => tracing::warn!(%error, "no L402 challenge (invoice failed)"),
            }
        }
        response
    }
}

/// The error code a refusal travels as.
fn code_of(error: &BtcChannelsError) -> &'static str {
    match error {
        BtcChannelsError::Channel(BtcChannelError::BadSignature) => BTC_SIGNATURE,
        BtcChannelsError::Channel(BtcChannelError::CumulativeMismatch { .. }) => {
            BTC_CUMULATIVE_MISMATCH
        }
        BtcChannelsError::Channel(BtcChannelError::ExceedsCapacity { .. }) => BTC_EXCEEDS_CAPACITY,
        BtcChannelsError::Channel(_) | BtcChannelsError::Terms(_) => BTC_TERMS,
        BtcChannelsError::Funding { .. } => BTC_FUNDING,
        BtcChannelsError::Closing => BTC_CLOSING,
        BtcChannelsError::Unknown(_)
        | BtcChannelsError::NoVoucher
        | BtcChannelsError::CloseRefused(_) => codes::INVALID_PAYLOAD,
        BtcChannelsError::Wallet(_)
        | BtcChannelsError::Rpc(_)
        | BtcChannelsError::Store(_)
        | BtcChannelsError::Signer(_)
        | BtcChannelsError::NotExpired { .. } => codes::UNEXPECTED,
    }
}

fn host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.len() < 256 && !h.contains(['/', ' ']))
        .unwrap_or("localhost")
}

/// `POST /btc-channel/close`: co-signs a cooperative close for the channel's payer.
async fn close(
    State(seller): State<Arc<BtcSeller>>,
    Json(request): Json<CloseRequestWire>,
) -> Response {
    let refused = |status: StatusCode, error: String| {
        (status, Json(json!({ "error": error }))).into_response()
    };
    let request = match request.to_request() {
        Ok(request) => request,
        Err(error) => return refused(StatusCode::BAD_REQUEST, error.to_string()),
    };
    match seller.payee.cosign_close(&request).await {
        Ok(answer) => Json(CloseAnswerWire::from_answer(&answer)).into_response(),
        Err(error @ (BtcChannelsError::Store(_) | BtcChannelsError::Signer(_))) => {
            tracing::error!(%error, "cooperative close");
            refused(StatusCode::INTERNAL_SERVER_ERROR, "close not signed".into())
        }
        Err(error) => refused(StatusCode::CONFLICT, error.to_string()),
    }
}

/// Serves `seller` on `listener` until the handle is shut down.
pub fn serve_btc(
    seller: Arc<BtcSeller>,
    listener: TcpListener,
    limits: &LimitsConfig,
    tls: crate::tls::ServerTls,
) -> std::io::Result<ServerHandle> {
    let timer = seller.requests.timer();
    let router = Router::new()
        .route(CLOSE_PATH, axum::routing::post(close))
        .fallback(
            |State(seller): State<Arc<BtcSeller>>, request: Request<Body>| async move {
                let path = request.uri().path().to_owned();
                seller
                    .handle(request.method(), &path, request.headers())
                    .await
            },
        )
        .with_state(seller);
    serve_router_timed(router, listener, limits, tls, timer)
}
