//! Facilitator endpoints for other sellers: `GET /supported`, `POST /verify`, `POST /settle`
//! (x402 v2). This device settles `exact` payments on its chain, paying the gas itself, so the
//! endpoints are off unless configured, and then answer only callers presenting one of the
//! configured API keys (`Authorization: Bearer <key>`, as the x402 reference
//! `HTTPFacilitatorClient` sends through `createAuthHeaders`), within the per-client rate.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::AppState;
use crate::x402::types::{PaymentPayload, PaymentRequirements, SettlementResponse, VerifyResponse};

/// The request body of `/verify` and `/settle`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FacilitatorRequest {
    payment_payload: PaymentPayload,
    payment_requirements: PaymentRequirements,
}

pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/supported", get(supported))
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route_layer(middleware::from_fn_with_state(state, guard))
}

/// The API key (a guessing client is throttled by the server's per-client rate limit first).
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !key.is_some_and(|key| state.seller.config.facilitator_key_allowed(key)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this facilitator answers only callers with an API key\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn supported(State(state): State<AppState>) -> Json<Value> {
    let seller = &state.seller;
    Json(json!({
        "kinds": [{ "x402Version": 2, "scheme": "exact", "network": seller.config.network }],
        "extensions": [],
        "signers": { "eip155:*": [seller.chain.provider_address()] },
    }))
}

fn usable(request: &FacilitatorRequest) -> Result<(), &'static str> {
    if request.payment_requirements.scheme != "exact"
        || request.payment_payload.accepted.scheme != "exact"
    {
        return Err(crate::x402::codes::UNSUPPORTED_SCHEME);
    }
    Ok(())
}

async fn verify(
    State(state): State<AppState>,
    Json(request): Json<FacilitatorRequest>,
) -> Json<VerifyResponse> {
    let payer = request.payment_payload.payload["authorization"]["from"]
        .as_str()
        .map(str::to_owned);
    let outcome = match usable(&request) {
        Err(code) => Err(code),
        Ok(()) => state
            .seller
            .verify_exact(
                &request.payment_requirements,
                &request.payment_payload.payload,
            )
            .await
            .map_err(|refusal| refusal.code),
    };
    Json(VerifyResponse {
        is_valid: outcome.is_ok(),
        invalid_reason: outcome.err().map(str::to_owned),
        payer,
    })
}

async fn settle(
    State(state): State<AppState>,
    Json(request): Json<FacilitatorRequest>,
) -> Json<SettlementResponse> {
    let seller = &state.seller;
    let outcome = match usable(&request) {
        Err(code) => Err(code),
        Ok(()) => seller
            .settle_exact(
                &request.payment_requirements,
                &request.payment_payload.payload,
            )
            .await
            .map_err(|refusal| refusal.code),
    };
    Json(outcome.unwrap_or_else(|code| {
        SettlementResponse {
            success: false,
            error_reason: Some(code.to_owned()),
            payer: request.payment_payload.payload["authorization"]["from"]
                .as_str()
                .map(str::to_owned),
            transaction: String::new(),
            network: request.payment_requirements.network.clone(),
            amount: None,
            extra: None,
            extensions: None,
        }
    }))
}
