//! XMPP: the device and its owner as clients of an XMPP server (issue 18: owner mode, thing
//! registry, provisioning, paid readouts). No server of our own: deployments run prosody (or
//! any XMPP server) with SASL accounts; tests start one with `tools::start_prosody`.
//!
//! [`discovery`]: the thing registry and claims (XEP-0347); [`ownership`]: the device's claim
//! tags and ownership record. Here: the connection. `tokio-xmpp` speaks the protocol (stream, SASL, resource binding,
//! reconnection); the socket is ours ([`DirectTls`]): TCP to the configured address, then TLS at
//! once (XEP-0368) trusting only the server's CA, on the process's ring provider — written here
//! because tokio-xmpp's own connectors trust the system or webpki roots and resolve the domain
//! through DNS, where a device's server is configured by address and its own CA.

pub mod discovery;
pub mod ownership;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};
use tokio_xmpp::{Client, Event};

/// How long a login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and as whom a client logs in.
#[derive(Clone)]
pub struct XmppEndpoint {
    /// The server's client port (direct TLS).
    pub address: SocketAddr,
    /// The account (`user@domain`, or `user@domain/resource` to ask for that resource); the
    /// domain is also the name the server's certificate must carry.
    pub jid: Jid,
    /// The account's password.
    pub password: String,
    /// The server's CA certificates (PEM).
    pub ca_pem: String,
}

impl std::fmt::Debug for XmppEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppEndpoint")
            .field("address", &self.address)
            .field("jid", &self.jid)
            .finish_non_exhaustive() // never the password
    }
}

/// The connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum XmppError {
    /// The server's CA certificates are unusable.
    #[error("the XMPP server's CA")]
    Ca(#[from] crate::tls::ca::CaError),
    /// The server refused the login, or the stream failed before it was online.
    #[error("logging in to the XMPP server")]
    Login(#[source] tokio_xmpp::Error),
    /// The server did not finish the login in time.
    #[error("the XMPP server did not log us in within {0:?}")]
    Timeout(Duration),
}

/// A logged-in client.
pub struct XmppSession {
    /// The client: send with `send_stanza`, receive by polling it as a stream of events.
    pub client: Client,
    /// The full JID the server bound.
    pub bound: Jid,
    /// What the server offered after login.
    pub features: StreamFeatures,
    /// The SASL mechanisms the server offered before login.
    pub mechanisms: BTreeSet<String>,
}

impl XmppSession {
    /// Ends the stream cleanly and stops the client's tasks (dropping the session would leave
    /// them running, reconnecting).
    pub async fn close(self) {
        if let Err(error) = self.client.send_end().await {
            tracing::debug!(%error, "closing the XMPP stream");
        }
    }
}

impl std::fmt::Debug for XmppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppSession")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// TCP to one address, then TLS at once with one CA (see the module doc).
#[derive(Clone)]
pub struct DirectTls {
    address: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for DirectTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTls")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl DirectTls {
    /// A connector to `address` trusting the CA certificates in `ca_pem` only.
    pub fn new(address: SocketAddr, ca_pem: &str) -> Result<Self, XmppError> {
        let tls = crate::tls::ca::client_config_trusting(ca_pem)?;
        Ok(Self {
            address,
            tls: Arc::new(tls),
        })
    }
}

/// A TLS failure as tokio-xmpp's connector error.
#[derive(Debug, thiserror::Error)]
#[error("TLS to the XMPP server")]
struct TlsFailed(#[source] std::io::Error);
impl tokio_xmpp::connect::ServerConnectorError for TlsFailed {}

impl ServerConnector for DirectTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        let tcp = TcpStream::connect(self.address).await?;
        let name = rustls::pki_types::ServerName::try_from(jid.domain().as_str().to_owned())
            .map_err(|e| tokio_xmpp::Error::Io(std::io::Error::other(e)))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| tokio_xmpp::Error::Connection(Box::new(TlsFailed(e))))?;
        let binding = channel_binding(&tls);
        let header = StreamHeader {
            to: Some(jid.domain().as_str().into()),
            from: Some(jid.to_bare().as_str().to_owned().into()),
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tls), ns, header, timeouts).await?;
        Ok((pending, binding))
    }
}

/// RFC 9266 `tls-exporter` channel binding where TLS 1.3 allows it.
fn channel_binding(tls: &TlsStream<TcpStream>) -> sasl::common::ChannelBinding {
    let (_, connection) = tls.get_ref();
    if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return sasl::common::ChannelBinding::None;
    }
    match connection.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None) {
        Ok(data) => sasl::common::ChannelBinding::TlsExporter(data.to_vec()),
        Err(_) => sasl::common::ChannelBinding::None,
    }
}

/// One login to see whether the server accepts the credentials: tokio-xmpp's client retries a
/// refused login forever (backing off), so a wrong password would look like a server that never
/// answers. Returns the SASL mechanisms offered.
async fn check_login(
    connector: &DirectTls,
    jid: &Jid,
    password: &str,
) -> Result<BTreeSet<String>, tokio_xmpp::Error> {
    let jid = Jid::from(jid.to_bare());
    let user = jid
        .node()
        .map(|n| n.as_str())
        .unwrap_or_default()
        .to_owned();
    let (pending, binding) = connector
        .connect(&jid, "jabber:client", Timeouts::default())
        .await?;
    let (features, stream) = pending.recv_features().await?;
    let mechanisms = features.sasl_mechanisms.clone();
    let credentials = sasl::common::Credentials::default()
        .with_username(user)
        .with_password(password)
        .with_channel_binding(binding);
    // Authenticated; the probe stream is dropped (the server sees the connection close).
    tokio_xmpp::client_login(stream, mechanisms.clone(), credentials).await?;
    Ok(mechanisms)
}

/// Logs in at `endpoint` and waits until the session is online. A refused login is an error at
/// once ([`XmppError::Login`] with an authentication error).
pub async fn connect(endpoint: &XmppEndpoint) -> Result<XmppSession, XmppError> {
    let connector = DirectTls::new(endpoint.address, &endpoint.ca_pem)?;
    let mechanisms = tokio::time::timeout(
        LOGIN_TIMEOUT,
        check_login(&connector, &endpoint.jid, &endpoint.password),
    )
    .await
    .map_err(|_| XmppError::Timeout(LOGIN_TIMEOUT))?
    .map_err(XmppError::Login)?;
    let mut client = Client::new_with_connector(
        endpoint.jid.clone(),
        endpoint.password.clone(),
        connector,
        Timeouts::default(),
    );
    let first = tokio::time::timeout(LOGIN_TIMEOUT, client.next())
        .await
        .map_err(|_| XmppError::Timeout(LOGIN_TIMEOUT))?;
    match first {
        Some(Event::Online {
            bound_jid,
            features,
            ..
        }) => Ok(XmppSession {
            client,
            bound: bound_jid,
            features,
            mechanisms,
        }),
        Some(Event::Disconnected(error)) => Err(XmppError::Login(error)),
        Some(Event::Stanza(_)) | None => Err(XmppError::Login(tokio_xmpp::Error::Disconnected)),
    }
}
