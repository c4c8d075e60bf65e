//! The buyer's local proxy: applications on the device reach the paid gateway through it, by
//! HTTP `CONNECT` or by SOCKS5 (RFC 1928, no authentication, TCP connect) on the same port; the
//! first byte tells them apart (SOCKS5 starts with its version, 5). Each tunnel is replayed to
//! the gateway as a `CONNECT` with the current session's credentials, over TLS when the gateway
//! is `https://`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client::ConnectError;
use crate::tls::Trust;
use crate::tls::client::Stream;

/// The SOCKS protocol version byte that opens a SOCKS5 greeting.
const SOCKS5: u8 = 5;

/// Serves the local proxy on `listen`: each application's tunnel is replayed to `gateway` with
/// the current `session`'s credentials.
pub async fn serve_local_proxy(
    listen: SocketAddr,
    gateway: &str,
    trust: Trust,
    session: Arc<AtomicU64>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ConnectError> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let gateway: Arc<str> = gateway.trim_end_matches('/').into();
    let proxy = tokio::spawn(async move {
        loop {
            let Ok((app, _)) = listener.accept().await else {
                continue;
            };
            let (gateway, trust) = (gateway.clone(), trust.clone());
            let id = session.load(Ordering::Relaxed);
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                let served = match app.peek(&mut first).await {
                    Ok(1) if first[0] == SOCKS5 => socks(app, &gateway, &trust, id).await,
                    Ok(_) => http_connect(app, &gateway, &trust, id).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = served {
                    tracing::debug!(%error, "tunnel");
                }
            });
        }
    });
    Ok((local_addr, proxy))
}

/// An application's `CONNECT host:port`: the gateway's answer is passed back as it is.
async fn http_connect(
    mut app: TcpStream,
    gateway: &str,
    trust: &Trust,
    session: u64,
) -> std::io::Result<()> {
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
    let (mut upstream, answer) = open_tunnel(gateway, trust, session, &target).await?;
    app.write_all(answer.as_bytes()).await?;
    if status_of(&answer) == Some(200) {
        tokio::io::copy_bidirectional(&mut app, &mut upstream).await?;
    }
    Ok(())
}

/// An application's SOCKS5 `CONNECT`: the gateway's status becomes a SOCKS reply.
async fn socks(app: TcpStream, gateway: &str, trust: &Trust, session: u64) -> std::io::Result<()> {
    let (protocol, command, target) = Socks5ServerProtocol::accept_no_auth(app)
        .await
        .map_err(std::io::Error::other)?
        .read_command()
        .await
        .map_err(std::io::Error::other)?;
    if command != Socks5Command::TCPConnect {
        let _ = protocol.reply_error(&ReplyError::CommandNotSupported).await;
        return Ok(());
    }
    let target = match target {
        TargetAddr::Ip(address) => address.to_string(),
        TargetAddr::Domain(host, port) => format!("{host}:{port}"),
    };
    let refusal = match open_tunnel(gateway, trust, session, &target).await {
        Ok((mut upstream, answer)) => match status_of(&answer) {
            Some(200) => {
                let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
                let mut app = protocol
                    .reply_success(unspecified)
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::io::copy_bidirectional(&mut app, &mut upstream).await?;
                return Ok(());
            }
            // Not allowed by the rules, not paid, no session: the rule set says no.
            Some(402 | 403 | 407) => ReplyError::ConnectionNotAllowed,
            Some(502) => ReplyError::HostUnreachable,
            _ => ReplyError::GeneralFailure,
        },
        Err(_) => ReplyError::NetworkUnreachable, // the gateway itself is out of reach
    };
    let _ = protocol.reply_error(&refusal).await;
    Ok(())
}

/// Asks the gateway for a tunnel to `target`; returns the stream and the gateway's answer head.
async fn open_tunnel(
    gateway: &str,
    trust: &Trust,
    session: u64,
    target: &str,
) -> std::io::Result<(Box<dyn Stream>, String)> {
    let mut upstream = trust.connect(gateway).await?;
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: M2M {session}\r\n\r\n"
    );
    upstream.write_all(request.as_bytes()).await?;
    let answer = read_head(&mut upstream).await?;
    Ok((upstream, answer))
}

fn status_of(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Reads an HTTP head (up to the blank line), at most 8 KiB.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
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
