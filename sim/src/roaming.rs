//! Hotspots and roaming clients: connectivity gateways sold by the minute, and devices that
//! move from one to the next — each visit a paid session with traffic, ended by simply stopping
//! the payments, after which the gateway must cut the tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use m2m_node::buyer::Buyer;
use m2m_node::gateway::{self, Gateway, GatewayConfig};
use m2m_node::seller::ServerHandle;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::SimError;

/// A running hotspot.
pub struct Hotspot {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Its address.
    pub url: String,
    server: ServerHandle,
    claimer: tokio::task::JoinHandle<()>,
}

impl Hotspot {
    /// Starts a gateway with `config` on the device `keys` and store in `dir`.
    pub async fn start(
        config: GatewayConfig,
        keys: Arc<m2m_wallet::DeviceKeys>,
        dir: &std::path::Path,
    ) -> Result<Self, SimError> {
        let store = crate::fleet::open_store(dir)?;
        let gateway = Gateway::start(config, keys, store)
            .await
            .map_err(SimError::Setup)?;
        let server = gateway::serve(gateway.clone(), None, m2m_node::tls::ServerTls::Plain)
            .await
            .map_err(|e| SimError::Setup(format!("gateway: {e}")))?;
        let claimer = tokio::spawn(gateway.seller().clone().run_claimer());
        Ok(Self {
            url: format!("http://{}", server.local_addr),
            gateway,
            server,
            claimer,
        })
    }

    /// Stops serving and claiming.
    pub async fn stop(self) {
        self.claimer.abort();
        self.server.shutdown().await;
    }
}

/// "The internet" behind the hotspots: answers every request with 2 KiB.
pub async fn upstream() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(|| async { "x".repeat(2048) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Opens a tunnel to `target` through a CONNECT proxy; the stream after `200`, else the
/// proxy's answer.
pub async fn tunnel(proxy: SocketAddr, target: SocketAddr) -> Result<TcpStream, String> {
    tunnel_with(proxy, target, "").await
}

/// [`tunnel`] with extra header lines (each ending in `\r\n`), e.g. `Proxy-Authorization`.
pub async fn tunnel_with(
    proxy: SocketAddr,
    target: SocketAddr,
    headers: &str,
) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return Err(String::from_utf8_lossy(&head).into_owned());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(stream)
    } else {
        Err(head)
    }
}

/// One HTTP GET through an open tunnel; returns the bytes of the first read of the answer.
pub async fn get_through(stream: &mut TcpStream) -> std::io::Result<String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n")
        .await?;
    let mut buffer = vec![0u8; 4096];
    let n = stream.read(&mut buffer).await?;
    Ok(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// What one roaming client did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoamingFigures {
    /// Sessions opened.
    pub sessions: u64,
    /// Requests answered through tunnels.
    pub requests: u64,
    /// Sessions that could not be opened or carried no traffic.
    pub failed: u64,
    /// Time from stopping payment to the gateway closing the tunnel, per session (ms).
    pub cutoffs_ms: Vec<u64>,
    /// Sessions whose tunnel stayed open 5 s after payments stopped (violations).
    pub not_cut: u64,
    /// Each request answered through a paid tunnel (for the report's plots).
    #[serde(skip)]
    pub timeline: crate::events::Timeline,
}

/// Roams until `deadline`: a random hotspot, a session of `session` with a request a second,
/// then payments stop and the cut-off is timed. Times in the timeline count from `started`.
pub async fn roam(
    buyer: Arc<Buyer>,
    hotspots: Vec<String>,
    target: SocketAddr,
    session: Duration,
    (started, deadline): (Instant, Instant),
    seed: u64,
) -> RoamingFigures {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut figures = RoamingFigures::default();
    while Instant::now() + session < deadline {
        let hotspot = &hotspots[rng.random_range(0..hotspots.len())];
        let Ok(client) = gateway::client::connect(
            hotspot,
            buyer.clone(),
            "127.0.0.1:0".parse().unwrap_or(target),
        )
        .await
        else {
            figures.failed += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        figures.sessions += 1;
        let Ok(mut stream) = tunnel(client.local_addr, target).await else {
            figures.failed += 1;
            continue;
        };
        let ends = Instant::now() + session;
        while Instant::now() < ends {
            let sent = Instant::now();
            if get_through(&mut stream)
                .await
                .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
            {
                figures.requests += 1;
                let took = sent.elapsed().as_secs_f64() * 1e3;
                figures.timeline.push(started.elapsed().as_secs_f64(), took);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        client.stop_paying();
        let stopped = Instant::now();
        let mut sink = vec![0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        match closed {
            Ok(()) => figures
                .cutoffs_ms
                .push(stopped.elapsed().as_millis() as u64),
            Err(_) => figures.not_cut += 1,
        }
    }
    figures
}
