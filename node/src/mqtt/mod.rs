//! MQTT: the device as a client of a broker (MQTT 5 over TLS, `rumqttc`), where priced topics
//! will be sold and paid for (issue 17). No broker of our own: deployments run mosquitto (or any
//! MQTT 5 broker) with password accounts and topic ACLs; tests start one with
//! `tools::start_mosquitto`.
//!
//! - here: the connection — TLS always (the broker's CA), user and password, clean or
//!   persistent sessions, and typed refusals (wrong password, no account);
//! - [`pack`]: a reading as published on a priced topic — the core's fractionally encrypted SenML
//!   pack, signed by the seller's key;
//! - [`wire`]: the priced-topic protocol (topics, MQTT 5 properties);
//! - [`seller`] and [`buyer`]: both ends of it, on the seller's and buyer's payment engines;
//! - [`config`]: the agent's `[mqtt]` and `[sell.mqtt]`.

pub mod buyer;
pub mod config;
pub mod pack;
pub mod seller;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, LastWill, Packet, Publish};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};

/// How long a connection attempt may take before it is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and as whom the device meets its broker.
#[derive(Clone)]
pub struct MqttEndpoint {
    /// Host name or address (checked against the broker's certificate).
    pub host: String,
    /// TLS port (8883 by convention).
    pub port: u16,
    /// The CA certificates (PEM) the broker's certificate must chain to.
    pub ca_pem: String,
    /// The account.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for MqttEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive() // never the password
    }
}

/// A connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker's CA certificates are unusable.
    #[error("the broker's CA")]
    Ca(#[from] crate::tls::ca::CaError),
    /// The broker refused the session (`BadUserNamePassword`, `NotAuthorized`, …).
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The connection failed (TCP, TLS, protocol).
    #[error("connecting to the broker")]
    Connection(#[source] ConnectionError),
    /// No answer in time.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
}

/// Connects as `client_id`; `clean_start = false` resumes the broker's session for that id
/// (subscriptions and messages queued while away). Returns once the broker has accepted the
/// session; the event loop must then be polled for the connection to make progress.
pub async fn connect(
    endpoint: &MqttEndpoint,
    client_id: &str,
    clean_start: bool,
) -> Result<(AsyncClient, EventLoop), MqttError> {
    connect_with_will(endpoint, client_id, clean_start, None).await
}

/// [`connect`] with a last will: the message the broker publishes for this client when its
/// connection drops without a DISCONNECT (a crash, a cut link, a missed keep-alive).
pub async fn connect_with_will(
    endpoint: &MqttEndpoint,
    client_id: &str,
    clean_start: bool,
    will: Option<LastWill>,
) -> Result<(AsyncClient, EventLoop), MqttError> {
    open(endpoint, client_id, clean_start, will, false).await
}

/// [`connect`] where the caller acknowledges each incoming QoS 1 message itself
/// (`AsyncClient::ack`), once it has kept what it needs: until then the broker holds it for the
/// session, across a crash of this process too.
pub(crate) async fn connect_acking(
    endpoint: &MqttEndpoint,
    client_id: &str,
    clean_start: bool,
) -> Result<(AsyncClient, EventLoop), MqttError> {
    open(endpoint, client_id, clean_start, None, true).await
}

async fn open(
    endpoint: &MqttEndpoint,
    client_id: &str,
    clean_start: bool,
    will: Option<LastWill>,
    manual_acks: bool,
) -> Result<(AsyncClient, EventLoop), MqttError> {
    let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    options.set_manual_acks(manual_acks);
    options
        .set_credentials(endpoint.user.clone(), endpoint.password.clone())
        .set_clean_start(clean_start)
        .set_keep_alive(Duration::from_secs(30))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(crate::tls::ca::client_config_trusting(&endpoint.ca_pem)?),
        )));
    if let Some(will) = will {
        options.set_last_will(will);
    }
    if !clean_start {
        // Keep the session (and what is queued for it) for a day while the device is away.
        options.set_session_expiry_interval(Some(24 * 3600));
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let accepted = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return match ack.code {
                        ConnectReturnCode::Success => Ok(()),
                        code => Err(MqttError::Refused(code)),
                    };
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return Err(MqttError::Refused(code));
                }
                Err(error) => return Err(MqttError::Connection(error)),
            }
        }
    })
    .await
    .map_err(|_| MqttError::Timeout(CONNECT_TIMEOUT))?;
    accepted.map(|()| (client, events))
}

/// What the broker delivered, as the pump hands it on.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A (re)connection was accepted; `session_present` says whether the broker kept the
    /// session (subscriptions) from before.
    Connected {
        /// The CONNACK's session-present flag.
        session_present: bool,
    },
    /// A message on a subscribed topic.
    Message(Box<Publish>),
}

/// Polls `events` until the client disconnects or `sink` closes: deliveries go to `sink`, and a
/// dropped connection is retried (rumqttc reconnects on the next poll) after a pause that grows to 5 s.
pub(crate) fn spawn_pump(
    mut events: EventLoop,
    sink: tokio::sync::mpsc::UnboundedSender<Delivery>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            let delivery = match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    pause = Duration::from_millis(100);
                    Delivery::Connected {
                        session_present: ack.session_present,
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    Delivery::Message(Box::new(publish))
                }
                // Our own DISCONNECT went out: the session ends here, no reconnection.
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(error) => {
                    if sink.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %crate::events::error_line(&error), "MQTT connection lost; reconnecting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if sink.send(delivery).is_err() {
                return;
            }
        }
    })
}
