//! Starting what an agent sells, and the chains it needs: the bitcoind client and on-chain
//! wallet, the embedded Lightning node, the EVM seller with its claimer, the satoshi seller with
//! its expiry watcher (and L402). Every leg shares the agent's store, signer and event bus.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, FeeRate};
use m2m_wallet::Keystore;
use tokio::task::JoinHandle;

use super::AgentError;
use super::config::{AgentConfig, BitcoindConfig, BtcSellConfig};
use crate::btc::{
    BitcoinRpc, BtcRoute, BtcSeller, BtcWallet, PayeeChannels, PayeePolicy, RpcAuth, serve_btc,
};
#[cfg(feature = "lightning")]
use crate::datadir::DataDir;
use crate::events::EventBus;
use crate::seller::sensor::{SensorSource, SimulatedSensor};
use crate::seller::{Seller, SellerConfig, ServerHandle};
use crate::store::ChannelStore;

/// How long a stop waits for in-flight Lightning payments.
#[cfg(feature = "lightning")]
pub(super) const LN_SETTLE_WAIT: Duration = Duration::from_secs(15);
/// How often the Bitcoin watcher looks for channels near their expiry.
const BTC_WATCH_EVERY: Duration = Duration::from_secs(30);

/// What every leg is built from.
pub(super) struct Shared<'a> {
    /// Where the Lightning node keeps its state.
    #[cfg(feature = "lightning")]
    pub data_dir: &'a DataDir,
    pub keystore: &'a Arc<Keystore>,
    pub store: &'a Arc<ChannelStore>,
    pub events: &'a Arc<EventBus>,
    pub budgets: &'a Arc<crate::budget::Budgets>,
    /// Times each server's requests.
    pub metrics: &'a Arc<crate::metrics::AgentMetrics>,
    /// The device's TLS identity, for listeners beyond loopback.
    pub identity: &'a crate::tls::DeviceIdentity,
}

/// How the listener `what` on `listen` speaks.
fn server_tls(
    mode: crate::tls::TlsMode,
    listen: std::net::SocketAddr,
    shared: &Shared<'_>,
    what: &'static str,
) -> Result<crate::tls::ServerTls, AgentError> {
    crate::tls::ServerTls::resolve(mode, listen, shared.identity)
        .map_err(|e| AgentError::leg(what)(boxed(e)))
}

/// The `[metrics]` listener, bound (so its URL is known) but not yet serving.
pub(super) struct BoundListener {
    listener: tokio::net::TcpListener,
    tls: crate::tls::ServerTls,
    /// `http://` or `https://` and the bound address.
    pub url: String,
}

/// Binds the `[metrics]` listener.
pub(super) async fn bind_metrics(
    config: &super::config::MetricsConfig,
    shared: &Shared<'_>,
) -> Result<BoundListener, AgentError> {
    let what = "the metrics listener";
    let tls = server_tls(config.tls, config.listen, shared, what)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::leg(what)(boxed(e)))?;
    let local = listener
        .local_addr()
        .map_err(|e| AgentError::leg(what)(boxed(e)))?;
    let url = format!("{}://{local}", tls.scheme());
    Ok(BoundListener { listener, tls, url })
}

/// Serves `router` (the metrics, and the dashboard when on) on the bound listener.
pub(super) fn serve_metrics(
    bound: BoundListener,
    router: axum::Router,
    shared: &Shared<'_>,
) -> Result<ServerHandle, AgentError> {
    crate::seller::serve_router_timed(
        router,
        bound.listener,
        &crate::seller::config::LimitsConfig::default(),
        bound.tls,
        Some(shared.metrics.request_timer("metrics")),
    )
    .map_err(|e| AgentError::leg("the metrics listener")(boxed(e)))
}

/// The EVM seller and its background claimer.
pub(super) struct EvmLeg {
    pub seller: Arc<Seller>,
    pub server: ServerHandle,
    pub claimer: JoinHandle<()>,
}

/// The satoshi seller and its expiry watcher.
pub(super) struct BtcLeg {
    pub seller: Arc<BtcSeller>,
    pub server: ServerHandle,
    pub watcher: JoinHandle<()>,
}

/// The connectivity gateway; its claimer runs here only when no EVM seller backs it.
pub(super) struct GatewayLeg {
    pub gateway: Arc<crate::gateway::Gateway>,
    pub server: ServerHandle,
    pub claimer: Option<JoinHandle<()>>,
}

/// bitcoind, the device's on-chain wallet (synced at start), and its fee rate.
pub(super) struct Bitcoin {
    pub rpc: BitcoinRpc,
    pub wallet: Arc<BtcWallet>,
    pub fee_rate: FeeRate,
}

/// Everything started.
pub(super) struct Legs {
    pub evm: Option<EvmLeg>,
    /// `[sell.evm]`'s routes on priced MQTT topics.
    pub mqtt: Option<crate::mqtt::seller::MqttSellerHandle>,
    pub btc: Option<BtcLeg>,
    pub gateway: Option<GatewayLeg>,
    /// bitcoind and the device's on-chain wallet, when configured.
    pub bitcoin: Option<Bitcoin>,
    #[cfg(feature = "lightning")]
    pub ln: Option<Arc<crate::ln::LnNode>>,
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    error: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(error)
}

/// The reason a configuration value was refused, as an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(&'static str);

/// The gateway's own (text) reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct GatewayRefused(String);

pub(super) async fn start(config: &AgentConfig, shared: &Shared<'_>) -> Result<Legs, AgentError> {
    let bitcoin = match &config.bitcoind {
        Some(bitcoind) => Some(open_bitcoin(bitcoind, shared).await?),
        None => None,
    };
    #[cfg(feature = "lightning")]
    let ln = match (&config.lightning, &bitcoin) {
        (Some(lightning), Some(bitcoin)) => {
            let gateway_sessions = config
                .gateway
                .as_ref()
                .is_some_and(|g| g.lightning_msat_per_minute.is_some());
            Some(start_lightning(lightning, &bitcoin.rpc, gateway_sessions, shared).await?)
        }
        _ => None,
    };
    #[cfg(not(feature = "lightning"))]
    if config.lightning.is_some() {
        return Err(AgentError::NoLightning("[lightning]"));
    }
    let evm = match &config.sell.evm {
        Some(evm) => {
            // With a gateway on the same chain, one seller takes readings and `/cover` both.
            let mut evm = evm.clone();
            if let Some(gateway) = &config.gateway {
                let cover = gateway
                    .cover_route()
                    .map_err(|e| AgentError::leg("the gateway")(boxed(GatewayRefused(e))))?;
                evm.routes.push(cover);
            }
            Some(start_evm(&evm, shared).await?)
        }
        None => None,
    };
    let gateway = match &config.gateway {
        Some(gateway) => Some(
            start_gateway(
                gateway,
                evm.as_ref(),
                #[cfg(feature = "lightning")]
                ln.as_deref(),
                shared,
            )
            .await?,
        ),
        None => None,
    };
    let btc = match (&config.sell.btc, &bitcoin) {
        (Some(btc), Some(Bitcoin { rpc, .. })) => {
            #[cfg(feature = "lightning")]
            let l402 = match (btc.l402, &ln) {
                (true, Some(ln)) => Some(
                    crate::ln::l402::L402Issuer::new(
                        ln.clone(),
                        shared.store.clone(),
                        shared.keystore.keys(),
                    )
                    .map_err(|e| AgentError::leg("L402")(boxed(e)))?,
                ),
                _ => None,
            };
            #[cfg(not(feature = "lightning"))]
            if btc.l402 {
                return Err(AgentError::NoLightning("sell.btc.l402"));
            }
            let seller = btc_seller(btc, rpc, shared).await?;
            #[cfg(feature = "lightning")]
            let seller = match l402 {
                Some(issuer) => seller.with_l402(Arc::new(issuer)),
                None => seller,
            };
            Some(serve_btc_leg(seller, btc, shared).await?)
        }
        _ => None,
    };
    let mqtt = super::priced_topics::start_seller(
        config,
        shared,
        evm.as_ref(),
        #[cfg(feature = "lightning")]
        ln.as_ref(),
    )
    .await?;
    Ok(Legs {
        evm,
        mqtt,
        btc,
        gateway,
        bitcoin,
        #[cfg(feature = "lightning")]
        ln,
    })
}

/// The bitcoind client and the device's on-chain wallet, synced.
async fn open_bitcoin(config: &BitcoindConfig, shared: &Shared<'_>) -> Result<Bitcoin, AgentError> {
    let fee_rate = FeeRate::from_sat_per_vb(config.fee_rate_sat_vb)
        .ok_or_else(|| AgentError::leg("bitcoind.fee_rate_sat_vb")(boxed(Refused("too large"))))?;
    let auth = match (&config.cookie, &config.user, &config.password_file) {
        (Some(cookie), _, _) => RpcAuth::Cookie(cookie.clone()),
        (None, Some(user), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| AgentError::leg("bitcoind password_file")(boxed(e)))?;
            let password = text.lines().next().unwrap_or_default().to_owned();
            RpcAuth::UserPass(user.clone(), password)
        }
        _ => {
            return Err(AgentError::leg("bitcoind")(boxed(Refused(
                "no cookie, nor user and password_file",
            ))));
        }
    };
    let rpc = BitcoinRpc::new(config.url.clone(), auth);
    let wallet = BtcWallet::open(shared.keystore.keys(), shared.store.clone(), rpc.clone())
        .map_err(|e| AgentError::leg("the Bitcoin wallet")(boxed(e)))?;
    wallet
        .sync()
        .await
        .map_err(|e| AgentError::leg("the Bitcoin wallet")(boxed(e)))?;
    Ok(Bitcoin {
        rpc,
        wallet: Arc::new(wallet),
        fee_rate,
    })
}

#[cfg(feature = "lightning")]
/// `durable_receiver`: a gateway takes Lightning sessions (their credits are recorded first).
async fn start_lightning(
    config: &super::config::LightningConfig,
    rpc: &BitcoinRpc,
    durable_receiver: bool,
    shared: &Shared<'_>,
) -> Result<Arc<crate::ln::LnNode>, AgentError> {
    let mut trusted_peers = Vec::new();
    for peer in &config.trusted_peers {
        let key = peer.parse().map_err(|_| {
            AgentError::leg("lightning.trusted_peers")(boxed(Refused("not a node id")))
        })?;
        trusted_peers.push(key);
    }
    let keys = shared.keystore.keys();
    let node = crate::ln::LnNode::start(
        keys,
        rpc,
        crate::ln::LnConfig {
            storage_dir: shared.data_dir.path().join("lightning"),
            listen: config.listen,
            network: keys.network(),
            alias: config.alias.clone().unwrap_or_else(|| "m2m-agent".into()),
            trusted_peers,
            forward_to_private_channels: false,
            durable_receiver,
        },
    )
    .await
    .map_err(|e| AgentError::leg("the Lightning node")(boxed(e)))?;
    Ok(Arc::new(node))
}

async fn start_evm(config: &SellerConfig, shared: &Shared<'_>) -> Result<EvmLeg, AgentError> {
    let device = format!("{:#x}", m2m_wallet::Signer::evm_address(&**shared.keystore));
    let seller = Seller::start(
        config.clone(),
        shared.keystore.clone(),
        (**shared.store).clone(),
        Arc::new(SimulatedSensor::new(&device)),
    )
    .await
    .map_err(|e| AgentError::leg("the EVM seller")(boxed(e)))?;
    seller.events.attach(shared.events.clone());
    seller.requests.attach(shared.metrics.request_timer("evm"));
    let tls = server_tls(
        config.tls,
        config.listen,
        shared,
        "the EVM seller's listener",
    )?;
    let server = crate::seller::serve(seller.clone(), None, tls)
        .await
        .map_err(|e| AgentError::leg("the EVM seller's listener")(boxed(e)))?;
    let claimer = tokio::spawn(seller.clone().run_claimer());
    Ok(EvmLeg {
        seller,
        server,
        claimer,
    })
}

/// The gateway on the EVM seller (or on a seller of its own), serving, and crediting Lightning
/// sessions when it takes them and the agent runs a node.
async fn start_gateway(
    config: &crate::gateway::GatewayConfig,
    evm: Option<&EvmLeg>,
    #[cfg(feature = "lightning")] ln: Option<&crate::ln::LnNode>,
    shared: &Shared<'_>,
) -> Result<GatewayLeg, AgentError> {
    let refused = |e| AgentError::leg("the gateway")(boxed(GatewayRefused(e)));
    let (gateway, claimer) = match evm {
        Some(evm) => (
            crate::gateway::Gateway::with_seller(
                config.clone(),
                evm.seller.clone(),
                (**shared.store).clone(),
            )
            .map_err(refused)?,
            None,
        ),
        None => {
            let gateway = crate::gateway::Gateway::start(
                config.clone(),
                shared.keystore.clone(),
                (**shared.store).clone(),
            )
            .await
            .map_err(refused)?;
            gateway.seller().events.attach(shared.events.clone());
            let claimer = tokio::spawn(gateway.seller().clone().run_claimer());
            (gateway, Some(claimer))
        }
    };
    #[cfg(feature = "lightning")]
    if let (Some(_), Some(ln)) = (config.lightning_msat_per_minute, ln) {
        gateway.accept_lightning(ln).map_err(refused)?;
    }
    gateway
        .requests
        .attach(shared.metrics.request_timer("gateway"));
    let tls = server_tls(config.tls, config.listen, shared, "the gateway's listener")?;
    let server = crate::gateway::serve(gateway.clone(), None, tls)
        .await
        .map_err(|e| AgentError::leg("the gateway's listener")(boxed(e)))?;
    Ok(GatewayLeg {
        gateway,
        server,
        claimer,
    })
}

async fn btc_seller(
    config: &BtcSellConfig,
    rpc: &BitcoinRpc,
    shared: &Shared<'_>,
) -> Result<BtcSeller, AgentError> {
    let policy = PayeePolicy {
        min_confirmations: config.min_confirmations,
        ..PayeePolicy::default()
    };
    let payee = PayeeChannels::load(
        shared.store.clone(),
        rpc.clone(),
        shared.keystore.clone(),
        policy,
    )
    .map_err(|e| AgentError::leg("the Bitcoin channels")(boxed(e)))?;
    let network = rpc
        .caip2()
        .await
        .map_err(|e| AgentError::leg("bitcoind")(boxed(e)))?;
    let device = format!("{:#x}", m2m_wallet::Signer::evm_address(&**shared.keystore));
    let fallback: Arc<dyn SensorSource> = Arc::new(SimulatedSensor::new(&device));
    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        routes.push(BtcRoute {
            path: route.path.clone(),
            price: Amount::from_sat(route.price_sat),
            sensor: route.sensor.kind,
            source: Some(route.sensor.start(&device, &fallback).await),
        });
    }
    payee.events.attach(shared.events.clone());
    let seller = BtcSeller::new(Arc::new(payee), &policy, network, routes, fallback);
    seller.events.attach(shared.events.clone());
    seller.requests.attach(shared.metrics.request_timer("btc"));
    Ok(seller)
}

async fn serve_btc_leg(
    seller: BtcSeller,
    config: &BtcSellConfig,
    shared: &Shared<'_>,
) -> Result<BtcLeg, AgentError> {
    let tls = server_tls(
        config.tls,
        config.listen,
        shared,
        "the satoshi seller's listener",
    )?;
    let seller = Arc::new(seller);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::leg("the satoshi seller's listener")(boxed(e)))?;
    let server = serve_btc(seller.clone(), listener, &config.limits, tls)
        .map_err(|e| AgentError::leg("the satoshi seller's listener")(boxed(e)))?;
    let watcher = tokio::spawn(seller.payee().clone().run_watcher(BTC_WATCH_EVERY));
    Ok(BtcLeg {
        seller,
        server,
        watcher,
    })
}
