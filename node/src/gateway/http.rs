//! The gateway's HTTP side: the offer, sessions, ticks, `/cover`, and CONNECT tunnels.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use m2m_core::ticks::{TickCommitment, TickStream};
use m2m_core::{Amount, Asset, ChannelId};
use serde_json::json;
use tokio::net::TcpListener;

use super::wire::{self, OpenSession, TickBody};
use super::{COVER_PATH, Gateway, Metering, Session, egress, lock};
use crate::seller::ServerHandle;
use crate::seller::batch::Refusal;
use crate::seller::http::payment_required;
use crate::x402::headers::{self, PAYMENT_RESPONSE, PAYMENT_SIGNATURE};
use crate::x402::types::PaymentPayload;

/// How often open tunnels are checked against their session's payments.
const WATCHDOG: Duration = Duration::from_millis(100);

/// Serves the gateway on its configured address (or `listener`).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: Option<TcpListener>,
    tls: crate::tls::ServerTls,
) -> std::io::Result<ServerHandle> {
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(gateway.config.listen).await?,
    };
    let limits = gateway.config.limits.clone();
    let timer = gateway.requests.timer();
    let router = Router::new()
        .route("/", get(offer))
        .route("/sessions", post(open_session))
        .route("/sessions/{id}/ticks", post(tick))
        .route("/sessions/{id}/cover", get(cover))
        .fallback(connect)
        .with_state(gateway);
    crate::seller::serve_router_timed(router, listener, &limits, tls, timer)
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

/// `GET /`: the price, in the gateway's terms and as the x402 offer of `/cover`.
async fn offer(State(gateway): State<Arc<Gateway>>) -> Response {
    let config = &gateway.config;
    axum::Json(json!({
        "pricePerMinute": config.price_per_minute.to_string(),
        "tickSecs": config.tick_secs,
        "ticksPerVoucher": config.ticks_per_voucher,
        "tickPrice": config.tick_price().unwrap_or_default().to_string(),
        "asset": config.asset,
        "network": config.network,
        "lightning": gateway.lightning_offer(),
    }))
    .into_response()
}

/// Session ids are random: the id is what `Proxy-Authorization: M2M <id>` presents, so a
/// sequential one would let anyone ride another client's paid time. 53 bits keep it exact in
/// JavaScript numbers and out of reach of guessing.
///
/// Sessions are bounded: idle ones are forgotten first, and at `max_sessions` a new one is
/// refused (unpaid requests must not grow the gateway's memory without limit).
fn insert_session(gateway: &Gateway, session: Session) -> Result<u64, Box<Response>> {
    let mut sessions = lock(&gateway.sessions);
    if sessions.len() >= gateway.config.max_sessions
        && gateway.prune(&mut sessions) >= gateway.config.max_sessions
    {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            "the gateway holds as many sessions as it may; try again later",
        );
        if let Ok(value) = HeaderValue::from_str(&gateway.config.session_idle_secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Err(Box::new(response));
    }
    loop {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).map_err(|e| Box::new(no_session(e)))?;
        let id = u64::from_le_bytes(bytes) & ((1 << 53) - 1);
        if id != 0 && !sessions.contains_key(&id) {
            sessions.insert(id, Arc::new(std::sync::Mutex::new(session)));
            return Ok(id);
        }
    }
}

fn no_session(cause: getrandom::Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_randomness",
        format!("session id: {cause}"),
    )
}

async fn open_session(
    State(gateway): State<Arc<Gateway>>,
    axum::Json(request): axum::Json<OpenSession>,
) -> Response {
    let (anchor, length) = match request {
        OpenSession::Ticks { anchor, length } => (anchor, length),
        OpenSession::Lightning { lightning: true } => {
            let Some(offer) = gateway.lightning_offer() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "lightning_not_offered",
                    "this gateway takes no Lightning payments",
                );
            };
            let id = match insert_session(
                &gateway,
                Session::new(Metering::Lightning {
                    paid_until: None,
                    received_msat: 0,
                }),
            ) {
                Ok(id) => id,
                Err(refused) => return *refused,
            };
            return axum::Json(json!({ "session": id, "lightning": offer })).into_response();
        }
        OpenSession::Lightning { lightning: false } => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_session",
                "give a tick chain (anchor, length) or lightning: true",
            );
        }
    };
    let config = &gateway.config;
    let chain_id = crate::evm::parse_eip155(&config.network).unwrap_or_default();
    let asset = Asset::Erc20 {
        chain_id,
        token: config.asset.0.0,
    };
    let commitment = TickCommitment {
        channel_id: ChannelId([0; 32]), // bound by the first voucher
        anchor: anchor.0,
        tick_price: Amount::new(asset, config.tick_price().unwrap_or_default()),
        length,
    };
    let interval = config.tick_secs * u64::from(config.ticks_per_voucher);
    let id = match insert_session(
        &gateway,
        Session::new(Metering::Ticks {
            stream: Box::new(TickStream::new(
                commitment,
                config.ticks_per_voucher,
                interval,
            )),
            channel: None,
            last_tick: None,
        }),
    ) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    axum::Json(json!({ "session": id, "cover": format!("/sessions/{id}/cover") })).into_response()
}

/// One tick (or several proven by one preimage): one SHA-256 per tick to check.
async fn tick(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<u64>,
    axum::Json(body): axum::Json<TickBody>,
) -> Response {
    let Some(session) = gateway.session(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "open a session first",
        );
    };
    let mut session = lock(&session);
    let Metering::Ticks {
        stream, last_tick, ..
    } = &mut session.metering
    else {
        return error(
            StatusCode::CONFLICT,
            "not_a_tick_session",
            "pay it over Lightning",
        );
    };
    match stream.on_ticks(&body.preimage.0, body.count, crate::now_secs()) {
        Ok(received) => {
            *last_tick = Some(Instant::now());
            axum::Json(json!({ "received": received, "uncovered": stream.uncovered() }))
                .into_response()
        }
        Err(refused) => error(StatusCode::PAYMENT_REQUIRED, "tick_refused", refused),
    }
}

/// `GET /sessions/{id}/cover`: an x402 `batch-settlement` payment for the next K ticks.
async fn cover(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<u64>,
    request: Request,
) -> Response {
    let seller = &gateway.seller;
    let Some(route) = seller.route(COVER_PATH) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(session) = gateway.session(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "open a session first",
        );
    };
    let url = format!("http://{}/sessions/{id}/cover", gateway.config.listen);
    let required = |refusal: Option<&Refusal>| payment_required(seller, route, &url, refusal);
    let Some(payload) = request
        .headers()
        .get(PAYMENT_SIGNATURE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| headers::decode::<PaymentPayload>(v).ok())
    else {
        return required(None);
    };
    // One voucher per session at a time, bound to one channel.
    let channel = payload.payload["voucher"]["channelId"]
        .as_str()
        .and_then(|id| id.parse::<alloy::primitives::B256>().ok())
        .map(|id| ChannelId(id.0));
    match &lock(&session).metering {
        Metering::Ticks { channel: bound, .. } if bound.is_some() && *bound != channel => {
            return required(Some(&Refusal::new(
                crate::x402::codes::BATCH_CHANNEL_ID_MISMATCH,
                "this session pays on another channel",
            )));
        }
        Metering::Ticks { .. } => {}
        Metering::Lightning { .. } => {
            return error(
                StatusCode::CONFLICT,
                "not_a_tick_session",
                "pay it over Lightning",
            );
        }
    }
    match seller.pay_batch(route, &payload.payload, route.price).await {
        Ok(settlement) => {
            seller.events.publish(|| {
                crate::events::AgentEvent::PaymentReceived(crate::events::Payment {
                    leg: crate::events::Leg::Evm,
                    scheme: crate::x402::batch::SCHEME.into(),
                    amount: route.price,
                    resource: COVER_PATH.into(),
                })
            });
            let mut session = lock(&session);
            if let Metering::Ticks {
                stream,
                channel: bound,
                ..
            } = &mut session.metering
            {
                *bound = channel;
                stream.on_covered();
            }
            session.covers += 1;
            let mut response = axum::Json(json!({ "covers": session.covers })).into_response();
            if let Ok(value) = HeaderValue::from_str(&headers::encode(&settlement)) {
                response.headers_mut().insert(PAYMENT_RESPONSE, value);
            }
            response
        }
        Err(refusal) => required(Some(&refusal)),
    }
}

/// `CONNECT host:port` with `Proxy-Authorization: M2M <session>`: a tunnel while paid ahead.
async fn connect(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    if request.method() != Method::CONNECT {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(authority) = request.uri().authority().map(|a| a.to_string()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_target",
            "CONNECT needs host:port",
        );
    };
    // Resolved and checked before the session is: a refusal tells nothing about sessions.
    let target = match gateway.config.upstreams.resolve(&authority).await {
        Ok(target) => target,
        Err(refusal @ egress::Refusal::BadTarget) => {
            return error(StatusCode::BAD_REQUEST, "bad_target", refusal);
        }
        Err(refusal @ egress::Refusal::Unresolvable { .. }) => {
            return error(StatusCode::BAD_GATEWAY, "upstream_unresolvable", refusal);
        }
        Err(refusal @ egress::Refusal::NotAllowed { .. }) => {
            return error(StatusCode::FORBIDDEN, "upstream_not_allowed", refusal);
        }
    };
    let session_id = request
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(wire::session_of_authorization);
    let Some((id, session)) = session_id.and_then(|id| Some((id, gateway.session(id)?))) else {
        let mut response = error(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "session_required",
            "open a paid session (GET / for the price)",
        );
        response
            .headers_mut()
            .insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("M2M"));
        return response;
    };
    if !gateway.paid_ahead(&lock(&session)) {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "session_not_paid",
            "tick and cover first",
        );
    }
    // The address that was checked, not the name again (no second resolution to rebind).
    let upstream = match tokio::net::TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(e) => return error(StatusCode::BAD_GATEWAY, "upstream_unreachable", e),
    };
    let bytes = lock(&session).bytes.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let relay = relay(TokioIo::new(upgraded), upstream, &bytes);
        tokio::pin!(relay);
        let mut watchdog = tokio::time::interval(WATCHDOG);
        loop {
            tokio::select! {
                _ = &mut relay => break,
                _ = watchdog.tick() => {
                    if !gateway.paid_ahead(&lock(&session)) {
                        lock(&session).cuts += 1;
                        tracing::info!(session = id, "payments stopped: tunnel cut");
                        break;
                    }
                }
            }
        }
    });
    Response::new(Body::empty())
}

/// Copies both ways until either side closes, counting every byte as it passes (metering).
async fn relay<C>(client: C, upstream: tokio::net::TcpStream, bytes: &std::sync::atomic::AtomicU64)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = upstream.into_split();
    let _ = tokio::join!(
        pump(client_read, upstream_write, bytes),
        pump(upstream_read, client_write, bytes),
    );
}

async fn pump<R, W>(
    mut from: R,
    mut to: W,
    bytes: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..n]).await?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
