//! A fault-injecting TCP proxy in front of each seller: it adds delay and, at a given rate, drops
//! a connection right after the seller answered (the seller has persisted the payment, the
//! buyer never hears of it) — the "lost response" case the channel rules must absorb.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where buyers connect.
    pub addr: SocketAddr,
    /// Responses dropped so far.
    pub dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies 127.0.0.1:<free port> to `upstream`.
    pub async fn start(
        upstream: SocketAddr,
        lost_rate: f64,
        delay: Duration,
        seed: u64,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let task = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let connection_seed = rng.random::<u64>();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = relay(
                        client,
                        upstream,
                        lost_rate,
                        delay,
                        connection_seed,
                        &counter,
                    )
                    .await;
                });
            }
        });
        Ok(Self {
            addr,
            dropped,
            task,
        })
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    lost_rate: f64,
    delay: Duration,
    seed: u64,
    dropped: &AtomicU64,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?; // seller down: the buyer sees a reset
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            server_write.write_all(&buffer[..n]).await?;
        }
    };
    let responses = async {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = server_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if rng.random::<f64>() < lost_rate {
                dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(()); // the seller answered; the buyer never hears it
            }
            client_write.write_all(&buffer[..n]).await?;
        }
    };
    tokio::select! {
        result = requests => result,
        result = responses => result,
    }
}
