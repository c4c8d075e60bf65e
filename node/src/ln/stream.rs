//! Streams of keysend payments, each buying time (Podcasting 2.0 style, bLIP-10 records).
//!
//! A payer sends one keysend per period (a minute of connectivity, say) with a JSON record under
//! TLV type [`STREAM_RECORD_TYPE`] naming the session it pays; the payee credits the session with
//! the amount actually received (never what the record claims). No invoice round trip is needed,
//! so a stream costs one payment per period and nothing else.
//!
//! - [`open_gateway_session`] + [`StreamPayer`]: the client side against `m2m gateway`;
//!   [`connect_lightning`] runs both with a local CONNECT proxy (`m2m connect --lightning`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

use super::{LnError, LnNode, PaymentOutcome, Received};
pub use crate::gateway::STREAM_RECORD_TYPE;

/// The record a stream payment carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Always `"stream"`.
    pub action: String,
    /// The paying application.
    pub app_name: String,
    /// The session paid (the payee's id for it).
    pub session: u64,
    /// This payment, msat.
    pub value_msat: u64,
    /// Everything paid in this session so far, this payment included, msat.
    pub value_msat_total: u64,
    /// Milliseconds of service this payment buys at the advertised price.
    pub millis: u64,
}

impl StreamRecord {
    /// Reads the stream record of a received payment, if it has one.
    pub fn of(received: &Received) -> Option<Self> {
        let (_, value) = received
            .records
            .iter()
            .find(|(kind, _)| *kind == STREAM_RECORD_TYPE)?;
        serde_json::from_slice::<Self>(value)
            .ok()
            .filter(|record| record.action == "stream")
    }
}

/// A stream session could not be opened or paid.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The gateway could not be reached.
    #[error("gateway request: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway's answer was not a Lightning session offer.
    #[error("gateway: {0}")]
    Offer(String),
    /// A payment failed.
    #[error(transparent)]
    Ln(#[from] LnError),
    /// The local proxy could not be set up.
    #[error(transparent)]
    Proxy(#[from] crate::gateway::client::ConnectError),
}

/// A Lightning session opened at a gateway: whom to pay and at what price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LightningSession {
    /// The gateway's session id (also `Proxy-Authorization: M2M <id>`).
    pub id: u64,
    /// The gateway's node.
    pub node: PublicKey,
    /// Price of a minute, msat.
    pub msat_per_minute: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Offer {
    node_id: String,
    msat_per_minute: u64,
    record_type: u64,
}

#[derive(Deserialize)]
struct Opened {
    session: u64,
    lightning: Offer,
}

/// Opens a Lightning-paid session at the gateway at `base` (`http://host:port`).
pub async fn open_gateway_session(
    http: &reqwest::Client,
    base: &str,
) -> Result<LightningSession, StreamError> {
    let response = http
        .post(format!("{}/sessions", base.trim_end_matches('/')))
        .json(&serde_json::json!({ "lightning": true }))
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(StreamError::Offer(format!("{status}: {body}")));
    }
    let opened: Opened = response.json().await?;
    if opened.lightning.record_type != STREAM_RECORD_TYPE {
        return Err(StreamError::Offer(format!(
            "unknown stream record type {}",
            opened.lightning.record_type
        )));
    }
    let node = opened
        .lightning
        .node_id
        .parse()
        .map_err(|e| StreamError::Offer(format!("node id: {e}")))?;
    if opened.lightning.msat_per_minute == 0 {
        return Err(StreamError::Offer("a zero price".into()));
    }
    Ok(LightningSession {
        id: opened.session,
        node,
        msat_per_minute: opened.lightning.msat_per_minute,
    })
}

/// Pays a session period by period.
#[derive(Debug)]
pub struct StreamPayer {
    ln: Arc<LnNode>,
    session: LightningSession,
    paid_msat: u64,
}

impl StreamPayer {
    /// A payer of `session` from `ln`.
    pub fn new(ln: Arc<LnNode>, session: LightningSession) -> Self {
        Self {
            ln,
            session,
            paid_msat: 0,
        }
    }

    /// Pays for the next `period` of service (at least 1 msat) and waits for the outcome.
    pub async fn pay_for(
        &mut self,
        period: Duration,
        timeout: Duration,
    ) -> Result<PaymentOutcome, LnError> {
        let millis = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        let amount =
            (u128::from(self.session.msat_per_minute) * u128::from(millis)).div_ceil(60_000);
        let amount = u64::try_from(amount).unwrap_or(u64::MAX).max(1);
        let record = StreamRecord {
            action: "stream".into(),
            app_name: "m2m".into(),
            session: self.session.id,
            value_msat: amount,
            value_msat_total: self.paid_msat + amount,
            millis,
        };
        let value = serde_json::to_vec(&record).expect("a record serializes");
        let outcome = self
            .ln
            .keysend_with_records(
                self.session.node,
                amount,
                vec![(STREAM_RECORD_TYPE, value)],
                timeout,
            )
            .await?;
        self.paid_msat += amount;
        Ok(outcome)
    }

    /// Paid so far, msat.
    pub fn paid_msat(&self) -> u64 {
        self.paid_msat
    }

    /// The session.
    pub fn session(&self) -> LightningSession {
        self.session
    }
}

/// A Lightning-paid gateway session with a local CONNECT proxy for applications.
#[derive(Debug)]
pub struct LightningConnect {
    /// Where applications connect (an HTTP CONNECT proxy).
    pub local_addr: SocketAddr,
    /// The gateway's session id.
    pub session: u64,
    /// Keysends that succeeded.
    pub payments: Arc<AtomicU64>,
    /// Paid so far, msat.
    pub paid_msat: Arc<AtomicU64>,
    payer: tokio::task::JoinHandle<()>,
    proxy: tokio::task::JoinHandle<()>,
}

impl LightningConnect {
    /// Stops paying (the gateway cuts the session when the paid time runs out).
    pub fn stop_paying(&self) {
        self.payer.abort();
    }
}

impl Drop for LightningConnect {
    fn drop(&mut self) {
        self.payer.abort();
        self.proxy.abort();
    }
}

/// Opens a Lightning session at `gateway`, pays two `period`s ahead and then one more every
/// `period` (so about one period is always paid ahead), and serves the local proxy on `listen`.
/// An https gateway is checked against its pin in `trust` (else the system's roots).
pub async fn connect_lightning(
    gateway: &str,
    ln: Arc<LnNode>,
    listen: SocketAddr,
    period: Duration,
    trust: &crate::tls::Trust,
) -> Result<LightningConnect, StreamError> {
    let http = crate::http_client::client_trusting(crate::http_client::RESPONSE_TIMEOUT, 4, trust);
    let session = open_gateway_session(&http, gateway).await?;
    let mut payer = StreamPayer::new(ln, session);
    let timeout = period.max(Duration::from_secs(30));
    payer.pay_for(period * 2, timeout).await?;
    let payments = Arc::new(AtomicU64::new(1));
    let paid_msat = Arc::new(AtomicU64::new(payer.paid_msat()));
    let paying = {
        let (payments, paid_msat) = (payments.clone(), paid_msat.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.tick().await; // the first payment went out above
            loop {
                every.tick().await;
                match payer.pay_for(period, timeout).await {
                    Ok(_) => {
                        payments.fetch_add(1, Ordering::Relaxed);
                        paid_msat.store(payer.paid_msat(), Ordering::Relaxed);
                    }
                    Err(error) => tracing::warn!(%error, "paying for connectivity"),
                }
            }
        })
    };
    let current = Arc::new(AtomicU64::new(session.id));
    let (local_addr, proxy) =
        crate::gateway::client::serve_local_proxy(listen, gateway, trust.clone(), current).await?;
    Ok(LightningConnect {
        local_addr,
        session: session.id,
        payments,
        paid_msat,
        payer: paying,
        proxy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_back_from_a_received_payment() {
        let record = StreamRecord {
            action: "stream".into(),
            app_name: "m2m".into(),
            session: 7,
            value_msat: 1_000,
            value_msat_total: 5_000,
            millis: 1_000,
        };
        let mut received = Received {
            payment_hash: [1; 32],
            amount_msat: 1_000,
            records: vec![
                (65_537, b"other".to_vec()),
                (STREAM_RECORD_TYPE, serde_json::to_vec(&record).unwrap()),
            ],
        };
        assert_eq!(StreamRecord::of(&received), Some(record));
        received.records[1].1 = br#"{"action":"boost"}"#.to_vec();
        assert_eq!(StreamRecord::of(&received), None, "not a stream");
        received.records.truncate(1);
        assert_eq!(StreamRecord::of(&received), None);
    }
}
