//! `m2m connect`: the client side of a metered session. It opens a session with a hash-chain
//! commitment, sends one tick per `tick_secs`, pays a voucher (through [`Buyer`], so deposits,
//! persistence and budget apply) for every K ticks, and offers applications a local CONNECT
//! proxy that forwards through the gateway with the session's credentials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use m2m_core::ticks::TickChain;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::buyer::Buyer;

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
    /// The gateway's session id.
    pub session: u64,
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
    let http = reqwest::Client::new();
    let offer: Value = http.get(format!("{gateway}/")).send().await?.json().await?;
    let field = |key: &str| {
        offer[key]
            .as_u64()
            .ok_or_else(|| ConnectError::Protocol(format!("offer lacks {key}")))
    };
    let (tick_secs, per_voucher) = (field("tickSecs")?, field("ticksPerVoucher")?);
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)?;
    let mut chain = TickChain::new(seed, CHAIN_LENGTH);
    let opened: Value = http
        .post(format!("{gateway}/sessions"))
        .json(&json!({ "anchor": alloy::primitives::B256::from(chain.anchor()), "length": CHAIN_LENGTH }))
        .send()
        .await?
        .json()
        .await?;
    let session = opened["session"]
        .as_u64()
        .ok_or_else(|| ConnectError::Protocol("no session id".into()))?;
    let ticks = Arc::new(AtomicU64::new(0));
    let covers = Arc::new(AtomicU64::new(0));
    let tick_url = format!("{gateway}/sessions/{session}/ticks");
    let cover_url = format!("{gateway}/sessions/{session}/cover");
    send_tick(&http, &tick_url, &mut chain).await?; // paid ahead from the start
    ticks.fetch_add(1, Ordering::Relaxed);
    let ticker = {
        let (ticks, covers) = (ticks.clone(), covers.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(tick_secs));
            every.tick().await; // the first tick went out above
            loop {
                if ticks.load(Ordering::Relaxed) % per_voucher == 0 {
                    match buyer.get(&cover_url).await {
                        Ok(_) => {
                            covers.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => tracing::warn!(%error, "paying for connectivity"),
                    }
                }
                every.tick().await;
                match send_tick(&http, &tick_url, &mut chain).await {
                    Ok(()) => {
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => tracing::warn!(%error, "tick refused"),
                }
            }
        })
    };
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let gateway_addr = gateway
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = tokio::spawn(async move {
        loop {
            let Ok((app, _)) = listener.accept().await else {
                continue;
            };
            let gateway_addr = gateway_addr.clone();
            tokio::spawn(async move {
                let _ = forward(app, &gateway_addr, session).await;
            });
        }
    });
    Ok(ConnectClient {
        local_addr,
        session,
        ticks,
        covers,
        ticker,
        proxy,
    })
}

async fn send_tick(
    http: &reqwest::Client,
    url: &str,
    chain: &mut TickChain,
) -> Result<(), ConnectError> {
    let tick = chain
        .next_tick()
        .ok_or_else(|| ConnectError::Protocol("tick chain exhausted".into()))?;
    let response = http
        .post(url)
        .json(&json!({ "preimage": alloy::primitives::B256::from(tick.preimage) }))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ConnectError::Protocol(
            response.text().await.unwrap_or_default(),
        ));
    }
    Ok(())
}

/// Reads an application's `CONNECT host:port` and replays it to the gateway with the session's
/// credentials, then relays bytes both ways.
async fn forward(mut app: TcpStream, gateway: &str, session: u64) -> std::io::Result<()> {
    let head = read_head(&mut app).await?;
    let target = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("CONNECT "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    let Some(target) = target else {
        app.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut upstream = TcpStream::connect(gateway).await?;
    upstream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: M2M {session}\r\n\r\n").as_bytes())
        .await?;
    let answer = read_head(&mut upstream).await?;
    app.write_all(answer.as_bytes()).await?;
    if answer.starts_with("HTTP/1.1 200") {
        tokio::io::copy_bidirectional(&mut app, &mut upstream).await?;
    }
    Ok(())
}

/// Reads an HTTP head (up to the blank line), at most 8 KiB.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad HTTP head",
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
