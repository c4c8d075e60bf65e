//! Misbehaving devices: a seller that reports charging more than its price, and a buyer that
//! sends forged and stale vouchers. The honest side must refuse both without losing anything.

use std::net::SocketAddr;
use std::sync::Arc;

use alloy::primitives::aliases::U40;
use alloy::primitives::{Address, B256, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use m2m_contracts::bindings::ChannelConfig;
use m2m_contracts::eip712;
use m2m_node::x402::headers;
use m2m_node::x402::types::{
    PaymentPayload, PaymentRequired, PaymentRequirements, SettlementResponse,
};
use m2m_wallet::Signer;
use serde_json::{Value, json};

/// Serves 402s copied from an honest seller's terms (but paid to itself), and answers every
/// payment with a `PAYMENT-RESPONSE` claiming three times the price.
pub struct OverchargingSeller {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OverchargingSeller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Terms(Arc<PaymentRequired>);

impl OverchargingSeller {
    /// Starts it with `terms` (an honest seller's 402 body, re-addressed by the caller).
    pub async fn start(terms: PaymentRequired) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Terms(Arc::new(terms)));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }
}

async fn answer(State(terms): State<Terms>, request: Request) -> Response {
    let required = &terms.0;
    let Some(payment) = request
        .headers()
        .get("PAYMENT-SIGNATURE")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| headers::decode::<PaymentPayload>(v).ok())
    else {
        let mut response = StatusCode::PAYMENT_REQUIRED.into_response();
        if let Ok(value) = HeaderValue::from_str(&headers::encode(required.as_ref())) {
            response.headers_mut().insert("PAYMENT-REQUIRED", value);
        }
        return response;
    };
    let price: u128 = payment.accepted.amount.parse().unwrap_or(1);
    let channel_id = payment.payload["voucher"]["channelId"].clone();
    let lie = SettlementResponse {
        success: true,
        error_reason: None,
        payer: None,
        transaction: String::new(),
        network: payment.accepted.network.clone(),
        amount: Some(String::new()),
        extra: Some(json!({
            "chargedAmount": (price * 3).to_string(),
            "channelState": { "channelId": channel_id, "balance": "0", "chargedCumulativeAmount": (price * 3).to_string() },
        })),
        extensions: None,
    };
    let mut response = (StatusCode::OK, "[]").into_response();
    if let Ok(value) = HeaderValue::from_str(&headers::encode(&lie)) {
        response.headers_mut().insert("PAYMENT-RESPONSE", value);
    }
    response
}

/// What a forging buyer tries, and what it must get: a 402 and no reading.
#[derive(Debug, Default, Clone, Copy)]
pub struct ForgeryOutcome {
    /// Attempts refused as they must be.
    pub refused: u64,
    /// Attempts that were served (each one is a violation).
    pub served: u64,
}

/// A voucher payload for the channel `payer` holds with a seller, signed by `signer`, for
/// `cumulative`.
pub fn voucher_payload(
    chain_id: u64,
    payer: Address,
    seller: &PaymentRequired,
    signer: &dyn Signer,
    cumulative: u128,
) -> Option<Value> {
    let offer = seller
        .accepts
        .iter()
        .find(|o| o.scheme == "batch-settlement")?;
    let extra = offer.extra.as_ref()?;
    let config = ChannelConfig {
        payer,
        payerAuthorizer: payer,
        receiver: offer.pay_to.parse().ok()?,
        receiverAuthorizer: extra.get("receiverAuthorizer")?.as_str()?.parse().ok()?,
        token: offer.asset.parse().ok()?,
        withdrawDelay: U40::from(extra.get("withdrawDelay")?.as_u64()?),
        salt: B256::ZERO,
    };
    signed_voucher_payload(chain_id, &config, signer, cumulative)
}

/// A `voucher` payload for `config`'s channel (settlement at the canonical address), signed by
/// `signer` — whoever that is.
pub fn signed_voucher_payload(
    chain_id: u64,
    config: &ChannelConfig,
    signer: &dyn Signer,
    cumulative: u128,
) -> Option<Value> {
    let domain = eip712::settlement_domain(chain_id, m2m_contracts::CANONICAL_SETTLEMENT);
    let id = eip712::channel_id(&domain, config);
    let signature = signer
        .sign_evm_digest(&eip712::voucher_digest(&domain, id, cumulative))
        .ok()?;
    Some(json!({
        "type": "voucher",
        "channelConfig": {
            "payer": config.payer, "payerAuthorizer": config.payerAuthorizer, "receiver": config.receiver,
            "receiverAuthorizer": config.receiverAuthorizer, "token": config.token,
            "withdrawDelay": config.withdrawDelay.to::<u64>(), "salt": config.salt,
        },
        "voucher": { "channelId": id, "maxClaimableAmount": cumulative.to_string(),
                     "signature": Bytes::from(signature.as_bytes().to_vec()) },
    }))
}

/// Sends `payload` to `url` as a payment under `accepted`, as any client could.
pub async fn send_payment(
    http: &reqwest::Client,
    url: &str,
    accepted: PaymentRequirements,
    payload: Value,
) -> reqwest::Result<reqwest::Response> {
    let message = PaymentPayload {
        x402_version: 2,
        resource: None,
        accepted,
        payload,
        extensions: None,
    };
    http.get(url)
        .header("PAYMENT-SIGNATURE", headers::encode(&message))
        .send()
        .await
}

/// Sends one crafted payment to `url` (under `required`); true if it was refused with a 402.
pub async fn attempt(
    http: &reqwest::Client,
    url: &str,
    required: &PaymentRequired,
    payload: Value,
) -> bool {
    let Some(accepted) = required
        .accepts
        .iter()
        .find(|o| o.scheme == "batch-settlement")
        .cloned()
    else {
        return true;
    };
    match send_payment(http, url, accepted, payload).await {
        Ok(response) => response.status() == StatusCode::PAYMENT_REQUIRED,
        Err(_) => true, // a dropped connection serves nothing either
    }
}
