//! The device agent: one long-running service, and the one front door an embedding application
//! needs (as ldk-node's `Builder` → `Node`).
//!
//! [`Agent::builder`] takes the data directory, the keystore passphrase and an [`AgentConfig`];
//! [`AgentBuilder::build`] locks the directory, unlocks the wallet, opens one channel store that
//! every leg shares, and starts what the configuration declares: the EVM seller with its claimer
//! and withdrawal watch, the satoshi seller with its expiry watcher (and L402 over the embedded
//! Lightning node), and the periodic buyers. [`Agent::events`] streams what happens;
//! [`Agent::stop`] stops accepting, lets in-flight Lightning payments settle, and claims what is
//! due before the store closes.
//!
//! - `config`: `agent.toml`.
//! - `control`: the control socket other `m2m` commands reach a running agent through.
//! - `legs`: starting each seller and the chains it needs.
//! - `buying`: the periodic paid fetches.
//! - `dashboard`: the web page on the `[metrics]` listener.
//! - `priced_topics`: `[sell.mqtt]` and the `mqtt:` buys.

mod buying;
pub mod config;
pub mod control;
pub mod dashboard;
mod legs;
mod priced_topics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use m2m_wallet::{Keystore, KeystoreError, Passphrase};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub use config::AgentConfig;

use crate::budget::Budgets;
use crate::datadir::{DataDir, DataDirError};
use crate::events::{AgentEvent, EventBus};
use crate::store::{ChannelStore, StoreError};

/// The agent could not be built or stopped cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No data directory was given.
    #[error("the agent needs a data directory")]
    NoDataDir,
    /// No passphrase was given.
    #[error("the agent needs the keystore passphrase")]
    NoPassphrase,
    /// The data directory refused (in use, unreadable).
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The keystore refused (missing, wrong passphrase, damaged).
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The channel store could not be opened.
    #[error("channel store: {0}")]
    Store(#[source] StoreError),
    /// The saved budgets could not be read.
    #[error("budgets")]
    Budgets(#[source] crate::budget::BudgetsError),
    /// The device's TLS identity could not be made.
    #[error("TLS identity")]
    Tls(#[source] crate::tls::TlsError),
    /// A leg could not start; the leg and the cause.
    #[error("starting {leg}: {source}")]
    Leg {
        /// Which part.
        leg: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration asks for something this build lacks.
    #[error("{0} needs a build with the `lightning` feature")]
    NoLightning(&'static str),
}

impl AgentError {
    fn leg(leg: &'static str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        move |source| AgentError::Leg { leg, source }
    }
}

/// Builds an [`Agent`].
#[derive(Debug, Default)]
pub struct AgentBuilder {
    data_dir: Option<PathBuf>,
    passphrase: Option<Passphrase>,
    config: AgentConfig,
}

impl AgentBuilder {
    /// The device's data directory (keystore, channel store, Lightning state).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The keystore passphrase.
    pub fn passphrase(mut self, passphrase: Passphrase) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// What to run (default: nothing but the wallet).
    pub fn config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }

    /// Locks the data directory, unlocks the wallet and starts every declared service.
    pub async fn build(self) -> Result<Agent, AgentError> {
        let dir = self.data_dir.ok_or(AgentError::NoDataDir)?;
        let passphrase = self.passphrase.ok_or(AgentError::NoPassphrase)?;
        let data_dir = DataDir::open(&dir)?;
        let keystore_path = data_dir.keystore_path();
        if !keystore_path.exists() {
            return Err(KeystoreError::NotFound(keystore_path).into());
        }
        let keystore = Arc::new(Keystore::open(&keystore_path, &passphrase)?);
        drop(passphrase);
        let store = Arc::new(ChannelStore::open(&data_dir).map_err(AgentError::Store)?);
        let events = Arc::new(EventBus::default());
        let budgets = Budgets::load((*store).clone(), &self.config.budget.caps())
            .map_err(AgentError::Budgets)?;
        budgets.events.attach(events.clone());
        let budgets = Arc::new(budgets);
        let metrics = Arc::new(crate::metrics::AgentMetrics::new(
            store.clone(),
            budgets.clone(),
        ));
        let activity = Arc::new(dashboard::activity::Activity::new(crate::now_secs()));
        events.observe_with(vec![metrics.clone(), activity.clone()]);
        let identity =
            crate::tls::DeviceIdentity::derive(keystore.keys()).map_err(AgentError::Tls)?;
        let shared = legs::Shared {
            #[cfg(feature = "lightning")]
            data_dir: &data_dir,
            keystore: &keystore,
            store: &store,
            events: &events,
            budgets: &budgets,
            metrics: &metrics,
            identity: &identity,
        };
        let legs = legs::start(&self.config, &shared).await?;
        let (leg_buyers, buyers, mqtt_buyer) = buying::start(&self.config, &shared, &legs).await?;
        #[cfg(feature = "lightning")]
        if let Some(ln) = &legs.ln {
            metrics.attach_lightning(ln.clone());
        }
        let bound = match &self.config.metrics {
            Some(config) => Some(legs::bind_metrics(config, &shared).await?),
            None => None,
        };
        let dashboard_token = match &self.config.metrics {
            Some(config) if config.dashboard => Some(
                dashboard::DashboardToken::generate()
                    .map_err(|e| AgentError::leg("the dashboard")(Box::new(e)))?,
            ),
            _ => None,
        };
        let listener_url = bound.as_ref().map(|b| b.url.clone());
        let status = serde_json::json!({
            "dataDir": data_dir.path(),
            "ethereum": format!("{:#x}", m2m_wallet::Signer::evm_address(&*keystore)),
            "bitcoin": keystore.keys().bitcoin_address().to_string(),
            "tlsPin": identity.pin().to_string(),
            "evm": legs.evm.as_ref().map(|evm| evm.server.url()),
            "btc": legs.btc.as_ref().map(|btc| btc.server.url()),
            "gateway": legs.gateway.as_ref().map(|g| g.server.url()),
            "mqttTopics": legs.mqtt.as_ref().map(|m| m.seller.topics().collect::<Vec<_>>()),
            "metrics": listener_url.as_ref().map(|url| format!("{url}/metrics")),
            "dashboard": listener_url.as_ref().filter(|_| dashboard_token.is_some())
                .map(|url| format!("{url}{}", dashboard::PATH)),
        });
        let target = Arc::new(control::ControlTarget {
            evm: legs.evm.as_ref().map(|evm| evm.seller.clone()),
            btc: legs.btc.as_ref().map(|btc| btc.seller.clone()),
            buyers: leg_buyers,
            store: store.clone(),
            signer: keystore.clone(),
            evm_endpoint: self.config.evm_endpoint(),
            btc_wallet: legs.bitcoin.as_ref().map(|b| b.wallet.clone()),
            #[cfg(feature = "lightning")]
            ln: legs.ln.clone(),
            budget_config: self.config.budget.clone(),
            events: events.clone(),
            status: status.clone(),
            dashboard: listener_url
                .as_ref()
                .zip(dashboard_token.as_ref())
                .map(|(url, token)| token.url(url)),
        });
        let dashboard_url = target.dashboard.clone();
        let metrics_server = match bound {
            Some(bound) => {
                let mut router = crate::metrics::router(metrics.clone());
                if let Some(token) = dashboard_token {
                    router = router.merge(dashboard::router(Arc::new(dashboard::Dashboard {
                        token,
                        target: target.clone(),
                        activity,
                    })));
                }
                Some(legs::serve_metrics(bound, router, &shared)?)
            }
            None => None,
        };
        let control = control::serve(data_dir.path(), target)
            .map_err(|e| AgentError::leg("the control socket")(Box::new(e)))?;
        Ok(Agent {
            legs,
            metrics,
            metrics_server,
            dashboard_url,
            status,
            buyers,
            mqtt_buyer,
            control,
            events,
            keystore,
            _store: store,
            _data_dir: data_dir,
        })
    }
}

/// A running device agent. Dropping it stops its tasks without the orderly part; call
/// [`Agent::stop`].
pub struct Agent {
    legs: legs::Legs,
    metrics: Arc<crate::metrics::AgentMetrics>,
    metrics_server: Option<crate::seller::ServerHandle>,
    /// The dashboard's URL with its token.
    dashboard_url: Option<String>,
    /// What `m2m agent status` shows: addresses, the TLS pin, each server's URL.
    status: serde_json::Value,
    buyers: Vec<JoinHandle<()>>,
    mqtt_buyer: Option<Arc<crate::mqtt::buyer::MqttBuyer>>,
    control: JoinHandle<()>,
    events: Arc<EventBus>,
    keystore: Arc<Keystore>,
    // Declared last: the store closes and the lock is released after every leg has stopped.
    _store: Arc<ChannelStore>,
    _data_dir: DataDir,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("evm", &self.evm_listen())
            .field("btc", &self.btc_listen())
            .finish_non_exhaustive()
    }
}

/// What an orderly stop did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// EVM channels claimed on the way out.
    pub evm_claimed: usize,
    /// Problems met while stopping (each one line); the next start retries what they left.
    pub problems: Vec<String>,
}

impl Agent {
    /// Starts describing an agent.
    pub fn builder() -> AgentBuilder {
        crate::tls::install_crypto_provider();
        AgentBuilder::default()
    }

    /// A stream of what happens from now on.
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    /// The device wallet (addresses, keys for signing).
    pub fn keystore(&self) -> &Arc<Keystore> {
        &self.keystore
    }

    /// Where the EVM seller listens, if it runs.
    pub fn evm_listen(&self) -> Option<SocketAddr> {
        self.legs.evm.as_ref().map(|evm| evm.server.local_addr)
    }

    /// The agent's public facts: data directory, addresses, TLS pin (`tlsPin`) and the URL of
    /// each server it runs (`evm`, `btc`, `gateway`, `metrics`, `dashboard` without its
    /// token), as `m2m agent status` shows them.
    pub fn status(&self) -> &serde_json::Value {
        &self.status
    }

    /// The dashboard's URL with this run's token (what `m2m dashboard` prints), if it is served.
    pub fn dashboard_url(&self) -> Option<&str> {
        self.dashboard_url.as_deref()
    }

    /// The agent's metrics (what `GET /metrics` on the `[metrics]` listener answers).
    pub fn metrics(&self) -> &Arc<crate::metrics::AgentMetrics> {
        &self.metrics
    }

    /// Where the satoshi seller listens, if it runs.
    pub fn btc_listen(&self) -> Option<SocketAddr> {
        self.legs.btc.as_ref().map(|btc| btc.server.local_addr)
    }

    /// The EVM seller, if it runs.
    pub fn evm_seller(&self) -> Option<&Arc<crate::seller::Seller>> {
        self.legs.evm.as_ref().map(|evm| &evm.seller)
    }

    /// Where the connectivity gateway listens, if it runs.
    pub fn gateway_listen(&self) -> Option<SocketAddr> {
        self.legs.gateway.as_ref().map(|g| g.server.local_addr)
    }

    /// The connectivity gateway, if it runs.
    pub fn gateway(&self) -> Option<&Arc<crate::gateway::Gateway>> {
        self.legs.gateway.as_ref().map(|g| &g.gateway)
    }

    /// The satoshi seller, if it runs.
    pub fn btc_seller(&self) -> Option<&Arc<crate::btc::BtcSeller>> {
        self.legs.btc.as_ref().map(|btc| &btc.seller)
    }

    /// The embedded Lightning node, if it runs.
    #[cfg(feature = "lightning")]
    pub fn lightning(&self) -> Option<&Arc<crate::ln::LnNode>> {
        self.legs.ln.as_ref()
    }

    /// Stops in order: buyers first (no new payments), then the servers (in-flight requests
    /// finish), claims everything unclaimed on the EVM leg, lets in-flight Lightning payments
    /// settle and stops the node; then the store closes and the data directory is unlocked.
    pub async fn stop(self) -> StopReport {
        self.events.publish(AgentEvent::Stopping);
        self.control.abort();
        if let Some(server) = self.metrics_server {
            server.shutdown().await;
        }
        let _ = std::fs::remove_file(self._data_dir.path().join(control::SOCKET_FILE));
        for buyer in &self.buyers {
            buyer.abort();
        }
        if let Some(mqtt) = &self.mqtt_buyer {
            mqtt.disconnect().await;
        }
        // The priced topics say `offline` and take no more payments before the EVM seller's
        // last claim below.
        if let Some(mqtt) = self.legs.mqtt {
            mqtt.stop().await;
        }
        let mut report = StopReport::default();
        // The gateway first: no voucher reaches the EVM seller after its last claim below.
        if let Some(gateway) = self.legs.gateway {
            gateway.server.shutdown().await;
            // A gateway with a seller of its own claims like the EVM seller does.
            if let Some(claimer) = gateway.claimer {
                claimer.abort();
                match gateway.gateway.seller().claim_all().await {
                    Ok(count) => report.evm_claimed += count,
                    Err(error) => report
                        .problems
                        .push(format!("claiming the gateway's vouchers: {error}")),
                }
            }
        }
        if let Some(evm) = self.legs.evm {
            evm.server.shutdown().await;
            evm.claimer.abort();
            match evm.seller.claim_all().await {
                Ok(count) => report.evm_claimed += count,
                Err(error) => report
                    .problems
                    .push(format!("claiming on the EVM leg: {error}")),
            }
        }
        if let Some(btc) = self.legs.btc {
            btc.watcher.abort();
            btc.server.shutdown().await;
        }
        #[cfg(feature = "lightning")]
        if let Some(ln) = self.legs.ln {
            match ln.settle_and_stop(legs::LN_SETTLE_WAIT).await {
                Ok(true) => {}
                Ok(false) => report
                    .problems
                    .push("Lightning HTLCs still in flight; they settle at the next start".into()),
                Err(error) => report.problems.push(format!("stopping Lightning: {error}")),
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_builder_says_what_is_missing_and_touches_nothing() {
        let error = Agent::builder().build().await.unwrap_err();
        assert!(matches!(error, AgentError::NoDataDir), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = Agent::builder()
            .data_dir(dir.path())
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, AgentError::NoPassphrase), "{error}");
        let passphrase = Passphrase::new("a passphrase for tests".into()).unwrap();
        let error = Agent::builder()
            .data_dir(dir.path().join("device"))
            .passphrase(passphrase)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(error, AgentError::Keystore(KeystoreError::NotFound(_))),
            "{error}"
        );
        assert!(
            !dir.path().join("device/channels.redb").exists(),
            "no store is made for a device without a wallet"
        );
    }
}
