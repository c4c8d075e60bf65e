//! The seller's HTTP server: axum routes on hyper 1.x connections with explicit limits.
//!
//! hyper is driven directly (rather than `axum::serve`) to set what a public device needs: a
//! header-read timeout (with a timer), a cap on the request head, TCP_NODELAY, a connection cap,
//! and the client address for the per-client rate limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::batch::Refusal;
use super::limits::RateLimiter;
use super::sensor::SensorError;
use super::{Route, Seller, SellerError, facilitator};
use crate::tls::ServerTls;
use crate::x402::codes;
use crate::x402::headers::{
    self, HeaderError, PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE,
};
use crate::x402::types::PaymentPayload;

/// How long requests in flight may take to finish when the server stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) seller: Arc<Seller>,
}

/// A running server; [`ServerHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The server's base URL, e.g. `https://127.0.0.1:8402`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// Stops accepting, gives requests in flight [`SHUTDOWN_GRACE`] to finish, cuts off the
    /// rest, and returns once every connection is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds the configured address (or uses `listener`) and serves until shut down, speaking as
/// `tls` says (see [`ServerTls::resolve`]).
pub async fn serve(
    seller: Arc<Seller>,
    listener: Option<TcpListener>,
    tls: ServerTls,
) -> Result<ServerHandle, SellerError> {
    let addr = seller.config.listen;
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(addr)
            .await
            .map_err(|source| SellerError::Listen { addr, source })?,
    };
    let limits = seller.config.limits.clone();
    let timer = seller.requests.timer();
    let state = AppState { seller };
    serve_router_timed(router(state), listener, &limits, tls, timer)
        .map_err(|source| SellerError::Listen { addr, source })
}

/// Serves `router` on `listener` with `limits`: the one hardened setup of every server the device
/// runs (EVM seller, satoshi seller and L402, gateway with its CONNECT upgrades): a connection
/// cap, a deadline for the request head and a cap on its size, a body cap, and a per-client
/// rate limit answered with `429` before any route sees the request.
pub fn serve_router(
    router: Router,
    listener: TcpListener,
    limits: &super::config::LimitsConfig,
    tls: ServerTls,
) -> std::io::Result<ServerHandle> {
    serve_router_timed(router, listener, limits, tls, None)
}

/// [`serve_router`], each request's latency observed by `timer` (the agent's metrics) when
/// there is one, refusals by the rate limit included.
pub fn serve_router_timed(
    router: Router,
    listener: TcpListener,
    limits: &super::config::LimitsConfig,
    tls: ServerTls,
    timer: Option<crate::metrics::RequestTimer>,
) -> std::io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let tls = tls
        .checked(local_addr)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let acceptor = tls.acceptor();
    let limits = limits.clone();
    let (stop, mut stopped) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let limiter = Arc::new(RateLimiter::new(
        limits.rate_per_client,
        limits.burst_per_client,
    ));
    let router = router.layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes));
    let task = tokio::spawn(async move {
        let mut open = tokio::task::JoinSet::new();
        loop {
            while open.try_join_next().is_some() {} // reap finished connections
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                continue; // over the connection cap: close at once
            };
            let _ = stream.set_nodelay(true);
            let (router, limiter, timer) = (router.clone(), limiter.clone(), timer.clone());
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (router, limiter, timer) = (router.clone(), limiter.clone(), timer.clone());
                    async move {
                        let (begun, method) = (Instant::now(), request.method().clone());
                        let response = if limiter.allow(peer.ip()) {
                            router.oneshot(request.map(Body::new)).await?
                        } else {
                            too_many_requests()
                        };
                        if let Some(timer) = &timer {
                            timer.observe(&method, response.status().as_u16(), begun.elapsed());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            let head_timeout = Duration::from_millis(limits.header_read_timeout_ms);
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .max_buf_size(limits.max_header_bytes);
            let stopped = stopped.clone();
            let acceptor = acceptor.clone();
            open.spawn(async move {
                match acceptor {
                    None => drive(builder, stream, service, stopped).await,
                    // The handshake shares the head's deadline: a client that opens a
                    // connection and stalls holds a permit no longer either way.
                    Some(acceptor) => {
                        match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => drive(builder, stream, service, stopped).await,
                            Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
                drop(permit);
            });
        }
        // Requests in flight get a grace period, then are cut off (a request cut off after its
        // payment was persisted is a lost response, which the channel rules absorb).
        let drain = async { while open.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            open.abort_all();
            while open.join_next().await.is_some() {}
        }
    });
    Ok(ServerHandle {
        local_addr,
        scheme: tls.scheme(),
        stop,
        task,
    })
}

/// Serves one connection (plain or TLS) until it ends, or the server stops and its grace ends.
async fn drive<S, I>(
    builder: hyper::server::conn::http1::Builder,
    stream: I,
    service: S,
    mut stopped: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn router(state: AppState) -> Router {
    let mut router = Router::new().route("/", get(catalogue));
    if state.seller.config.facilitator {
        router = router.merge(facilitator::routes(state.clone()));
    }
    router.fallback(paid_reading).with_state(state)
}

/// `GET /`: the price list, free.
async fn catalogue(State(state): State<AppState>) -> Response {
    let seller = &state.seller;
    let mut routes: Vec<&Route> = seller.routes().collect();
    routes.sort_by(|a, b| a.config.path.cmp(&b.config.path));
    let routes: Vec<_> = routes
        .iter()
        .map(|route| {
            json!({
                "path": route.config.path,
                "price": route.price.to_string(),
                "asset": route.config.asset,
                "schemes": route.config.schemes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "description": route.config.description,
            })
        })
        .collect();
    axum::Json(json!({
        "network": seller.config.network,
        "payTo": seller.receiver(),
        "routes": routes,
    }))
    .into_response()
}

/// What a client over its rate gets.
fn too_many_requests() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        "rate limit\n",
    )
        .into_response()
}

/// Any other path: a priced reading, or 404.
async fn paid_reading(State(state): State<AppState>, request: Request) -> Response {
    let seller = &state.seller;
    // hyper bounds its read buffer; this bounds the head itself, whatever the buffer did.
    let head_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if head_bytes > seller.config.limits.max_header_bytes {
        return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
    }
    let Some(route) = seller.route(request.uri().path()) else {
        return (StatusCode::NOT_FOUND, "no such reading\n").into_response();
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let url = resource_url(request.headers(), request.uri().path());
    // HEAD serves no body, so it never takes a payment: it shows the price, whatever it carries.
    if request.method() == Method::HEAD {
        return payment_required(seller, route, &url, None);
    }
    // Sampled before any payment is taken, so a reading that cannot be served is never charged.
    let reading = match seller.reading(route) {
        Ok(reading) => reading,
        Err(error) => return sensor_unavailable(&error, route.config.sensor.every_secs),
    };
    let Some(value) = request.headers().get(PAYMENT_SIGNATURE) else {
        return payment_required(seller, route, &url, None);
    };
    let payload = match value
        .to_str()
        .map_err(|_| None)
        .and_then(|text| headers::decode::<PaymentPayload>(text).map_err(Some))
    {
        Ok(payload) => payload,
        Err(error) => {
            let code = match error {
                Some(HeaderError::Version(_)) => codes::INVALID_X402_VERSION,
                _ => codes::INVALID_PAYLOAD,
            };
            let message = error.map_or("header is not text".into(), |e| e.to_string());
            return payment_required(seller, route, &url, Some(&Refusal::new(code, message)));
        }
    };
    let outcome = seller.accept_payment(route, &payload).await;
    match outcome {
        Ok(settlement) => {
            let mut response = Response::new(Body::from(reading));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/senml+json"),
            );
            if let Ok(value) = HeaderValue::from_str(&headers::encode(&settlement)) {
                headers.insert(PAYMENT_RESPONSE, value);
            }
            response
        }
        Err(refusal) => payment_required(seller, route, &url, Some(&refusal)),
    }
}

/// `402` with `PAYMENT-REQUIRED` (and the same JSON as the body, for humans and v1 tooling),
/// carrying a refusal's corrective state; `500` if the server itself failed. Reading routes and
/// the gateway's `/cover` answer through this one function.
pub(crate) fn payment_required(
    seller: &Seller,
    route: &Route,
    url: &str,
    refusal: Option<&Refusal>,
) -> Response {
    let Some(required) = seller.terms_after(route, url, refusal) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "payment could not be recorded\n",
        )
            .into_response();
    };
    let encoded = headers::encode(&required);
    let mut response = (
        StatusCode::PAYMENT_REQUIRED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&required).unwrap_or_default(),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        response.headers_mut().insert(PAYMENT_REQUIRED, value);
    }
    response
}

/// `503` for a route whose sensor has no reading: the error code and cause as JSON, and when to
/// try again. Every seller (EVM, Bitcoin, L402) answers a sensor failure this way, unpaid.
pub(crate) fn sensor_unavailable(error: &SensorError, retry_secs: u64) -> Response {
    let message = crate::events::error_line(error);
    tracing::debug!(%message, "reading unavailable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::RETRY_AFTER, retry_secs.to_string()),
        ],
        serde_json::to_vec(&json!({ "error": codes::SENSOR_UNAVAILABLE, "message": message }))
            .unwrap_or_default(),
    )
        .into_response()
}

/// The resource URL as the client addressed it.
fn resource_url(headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.len() < 256 && !h.contains(['/', ' ']))
        .unwrap_or("localhost");
    format!("http://{host}{path}")
}
