//! `m2m connect`: the client side of a metered session. It opens a session with a hash-chain
//! commitment, sends one tick per `tick_secs`, pays a voucher (through [`Buyer`], so deposits,
//! persistence and budget apply) for every K ticks, and offers applications a local proxy
//! (HTTP CONNECT and SOCKS5: [`serve_local_proxy`]) that forwards through the gateway with the
//! session's credentials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use m2m_core::ticks::TickChain;
use serde_json::{Value, json};

pub use super::local_proxy::serve_local_proxy;
use crate::buyer::Buyer;
use crate::events::{AgentEvent, EventBus, Leg, Payment};

/// Ticks in a session's chain (a day at one tick per second).
pub const CHAIN_LENGTH: u32 = 86_400;

/// The session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Talking to the gateway failed.
    #[error("gateway: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway's answer was not understood.
    #[error("gateway: {0}")]
    Protocol(String),
    /// Binding the local proxy failed.
    #[error("local proxy: {0}")]
    Listen(#[from] std::io::Error),
    /// Randomness for the chain seed was unavailable.
    #[error("randomness: {0}")]
    Entropy(#[from] getrandom::Error),
}

/// A running client session.
#[derive(Debug)]
pub struct ConnectClient {
    /// Where applications connect (an HTTP CONNECT proxy).
    pub local_addr: SocketAddr,
    /// The gateway's current session id (a new one after a gateway restart).
    pub session: Arc<AtomicU64>,
    /// Ticks sent.
    pub ticks: Arc<AtomicU64>,
    /// Vouchers paid.
    pub covers: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
    proxy: tokio::task::JoinHandle<()>,
}

impl ConnectClient {
    /// Stops paying (the gateway cuts the session shortly after); the local proxy stays.
    pub fn stop_paying(&self) {
        self.ticker.abort();
    }
}

impl Drop for ConnectClient {
    fn drop(&mut self) {
        self.ticker.abort();
        self.proxy.abort();
    }
}

/// Opens a session with the gateway at `gateway` (e.g. `http://127.0.0.1:8118`), sends the first
/// tick, and serves a local proxy on `listen`.
pub async fn connect(
    gateway: &str,
    buyer: Arc<Buyer>,
    listen: SocketAddr,
) -> Result<ConnectClient, ConnectError> {
    connect_reporting(gateway, buyer, listen, None).await
}

/// [`connect`], publishing each voucher paid (`payment_sent`) and each that failed
/// (`buy_failed`) on `events`: an agent's connectivity is accounted like its other buys.
pub async fn connect_reporting(
    gateway: &str,
    buyer: Arc<Buyer>,
    listen: SocketAddr,
    events: Option<Arc<EventBus>>,
) -> Result<ConnectClient, ConnectError> {
    let publish = move |event: AgentEvent| {
        if let Some(events) = &events {
            events.publish(event);
        }
    };
    let trust = buyer.trust().clone();
    let http = crate::http_client::client_trusting(crate::http_client::RESPONSE_TIMEOUT, 4, &trust);
    let offer: Value = http.get(format!("{gateway}/")).send().await?.json().await?;
    let field = |key: &str| {
        offer[key]
            .as_u64()
            .ok_or_else(|| ConnectError::Protocol(format!("offer lacks {key}")))
    };
    let (tick_secs, per_voucher) = (field("tickSecs")?, field("ticksPerVoucher")?);
    let (id, mut chain) = open_session(&http, gateway).await?;
    let session = Arc::new(AtomicU64::new(id));
    let ticks = Arc::new(AtomicU64::new(0));
    let covers = Arc::new(AtomicU64::new(0));
    send_tick(&http, gateway, id, &mut chain)
        .await
        .map_err(|e| ConnectError::Protocol(format!("first tick: {e}")))?; // paid ahead from the start
    ticks.fetch_add(1, Ordering::Relaxed);
    let ticker = {
        let (ticks, covers, session) = (ticks.clone(), covers.clone(), session.clone());
        let gateway = gateway.to_owned();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(tick_secs));
            every.tick().await; // the first tick went out above
            let mut since_cover = 1u64;
            loop {
                if since_cover == per_voucher {
                    let cover = format!(
                        "{gateway}/sessions/{}/cover",
                        session.load(Ordering::Relaxed)
                    );
                    match buyer.get(&cover).await {
                        Ok(crate::buyer::Fetched {
                            paid: Some((scheme, amount)),
                            ..
                        }) => {
                            covers.fetch_add(1, Ordering::Relaxed);
                            since_cover = 0;
                            publish(AgentEvent::PaymentSent(Payment {
                                leg: Leg::Evm,
                                scheme,
                                amount,
                                resource: cover,
                            }));
                        }
                        Ok(unpaid) => {
                            tracing::warn!(status = unpaid.status, "the gateway took no voucher");
                            publish(AgentEvent::BuyFailed {
                                url: cover,
                                reason: format!("the gateway answered {}", unpaid.status),
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "paying for connectivity");
                            publish(AgentEvent::BuyFailed {
                                url: cover,
                                reason: crate::events::error_line(&error),
                            });
                        }
                    }
                }
                every.tick().await;
                let id = session.load(Ordering::Relaxed);
                match send_tick(&http, &gateway, id, &mut chain).await {
                    Ok(()) => {
                        ticks.fetch_add(1, Ordering::Relaxed);
                        since_cover += 1;
                    }
                    Err(TickFailure::UnknownSession) => {
                        // The gateway restarted: its sessions are gone, its vouchers are not.
                        // Start a new session (a new chain) and go on paying.
                        match open_session(&http, &gateway).await {
                            Ok((id, fresh)) => {
                                tracing::info!(session = id, "gateway restarted; new session");
                                session.store(id, Ordering::Relaxed);
                                chain = fresh;
                                if send_tick(&http, &gateway, id, &mut chain).await.is_ok() {
                                    ticks.fetch_add(1, Ordering::Relaxed);
                                    since_cover = 1;
                                }
                            }
                            Err(error) => tracing::warn!(%error, "reopening the session"),
                        }
                    }
                    Err(error) => tracing::warn!(%error, "tick refused"),
                }
            }
        })
    };
    let (local_addr, proxy) = serve_local_proxy(listen, gateway, trust, session.clone()).await?;
    Ok(ConnectClient {
        local_addr,
        session,
        ticks,
        covers,
        ticker,
        proxy,
    })
}

/// Why a tick was not accepted.
#[derive(Debug, thiserror::Error)]
enum TickFailure {
    /// The gateway does not know the session (it restarted).
    #[error("unknown session")]
    UnknownSession,
    /// Anything else (network, refusal, exhausted chain).
    #[error("{0}")]
    Other(String),
}

/// Opens a session: a fresh random chain and its anchor.
async fn open_session(
    http: &reqwest::Client,
    gateway: &str,
) -> Result<(u64, TickChain), ConnectError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)?;
    let chain = TickChain::new(seed, CHAIN_LENGTH);
    let id = open_session_with(http, gateway, &chain, CHAIN_LENGTH).await?;
    Ok((id, chain))
}

/// Opens a session for `chain` (of `length` ticks) and returns its id.
pub async fn open_session_with(
    http: &reqwest::Client,
    gateway: &str,
    chain: &TickChain,
    length: u32,
) -> Result<u64, ConnectError> {
    let opened: Value = http
        .post(format!("{gateway}/sessions"))
        .json(&json!({ "anchor": alloy::primitives::B256::from(chain.anchor()), "length": length }))
        .send()
        .await?
        .json()
        .await?;
    opened["session"]
        .as_u64()
        .ok_or_else(|| ConnectError::Protocol("no session id".into()))
}

async fn send_tick(
    http: &reqwest::Client,
    gateway: &str,
    session: u64,
    chain: &mut TickChain,
) -> Result<(), TickFailure> {
    let tick = chain
        .next_tick()
        .ok_or_else(|| TickFailure::Other("tick chain exhausted".into()))?;
    let response = http
        .post(format!("{gateway}/sessions/{session}/ticks"))
        .json(&json!({ "preimage": alloy::primitives::B256::from(tick.preimage) }))
        .send()
        .await
        .map_err(|e| TickFailure::Other(e.to_string()))?;
    match response.status().as_u16() {
        200..=299 => Ok(()),
        404 => Err(TickFailure::UnknownSession),
        _ => Err(TickFailure::Other(
            response.text().await.unwrap_or_default(),
        )),
    }
}
