//! The connectivity gateway (`m2m gateway`): a CONNECT proxy sold by the minute.
//!
//! A client opens a session by publishing a hash-chain commitment, then sends one tick (one
//! SHA-256 preimage) per `tick_secs` and pays a `batch-settlement` voucher for every
//! `ticks_per_voucher` ticks through the x402 route `/cover` (the seller machinery: deposits,
//! persistence before acknowledging, claims). Tunnels are forwarded only while the session is
//! paid ahead: the last tick is fresh and no more than K ticks are on credit; a watchdog cuts
//! them otherwise (within `tick_secs` + `grace_ms` + 100 ms of the last tick).
//!
//! With `lightning_msat_per_minute` set and a Lightning node attached
//! ([`Gateway::accept_lightning`], feature `lightning`), a session may instead be paid by keysend
//! payments carrying its id in a Podcasting 2.0 style stream record (`crate::ln::stream`): each
//! payment buys its amount's worth of time, and tunnels run while that time lasts.
//!
//! - [`GatewayConfig`] is `gateway.toml`.
//! - `http`: the offer, session and tick endpoints, `/cover`, and CONNECT tunnels.
//! - [`client`] is `m2m connect` — ticks, vouchers and a local CONNECT proxy for applications.

pub mod client;
pub mod egress;
mod http;
mod local_proxy;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy::primitives::Address;
use m2m_core::ChannelId;
use m2m_core::ticks::TickStream;
use serde::Deserialize;

pub use http::serve;

use crate::seller::config::{ClaimConfig, LimitsConfig};
use crate::seller::{Seller, SellerConfig};

/// The custom TLV record type of stream metadata in keysend payments (bLIP-10, as Podcasting 2.0
/// uses it): a JSON object naming the session paid.
pub const STREAM_RECORD_TYPE: u64 = 7_629_169;

/// Path of the x402 route that covers a block of ticks.
pub const COVER_PATH: &str = "/cover";

/// `gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listening address.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// TLS on the listener: `auto` (TLS unless loopback), `on`, `off` (loopback only) or
    /// `plaintext-beyond-loopback`.
    #[serde(default)]
    pub tls: crate::tls::TlsMode,
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// CAIP-2 network, `eip155:<chain id>`.
    pub network: String,
    /// The token paid in (EIP-3009).
    pub asset: Address,
    /// Price of one minute of connectivity (atomic units); `price_per_minute × tick_secs` must
    /// be a multiple of 60.
    pub price_per_minute: u128,
    /// Seconds of connectivity one tick buys.
    #[serde(default = "default_tick_secs")]
    pub tick_secs: u64,
    /// Ticks per voucher (K): at most this many ticks run on credit.
    #[serde(default = "default_ticks_per_voucher")]
    pub ticks_per_voucher: u32,
    /// Extra time after a tick runs out before tunnels are cut (milliseconds).
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// Price of one minute paid over Lightning (msat); absent: no Lightning sessions.
    #[serde(default)]
    pub lightning_msat_per_minute: Option<u64>,
    /// Most sessions held at once; an open beyond it is refused (503) until idle ones expire.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session neither ticked nor paid for this long is forgotten (its tunnels were cut
    /// already: it is not paid ahead).
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
    /// Where clients may go ([`egress`]): `public:*` (the default: any public address),
    /// addresses and ranges (`127.0.0.1:8080`, `10.1.0.0/16:*`: the only way behind the
    /// gateway), names and wildcards (`*.example.com:443`, public addresses only).
    #[serde(default)]
    pub upstreams: egress::Egress,
    /// Claiming (as for a seller).
    #[serde(default)]
    pub claim: ClaimConfig,
    /// Limits (as for a seller).
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8118))
}
fn default_tick_secs() -> u64 {
    1
}
fn default_ticks_per_voucher() -> u32 {
    10
}
fn default_grace_ms() -> u64 {
    500
}
fn default_max_sessions() -> usize {
    1024
}
fn default_session_idle_secs() -> u64 {
    600
}

impl GatewayConfig {
    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| format!("gateway config: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values serde cannot: prices and counts.
    pub fn check(&self) -> Result<(), String> {
        self.tick_price()?;
        if self.ticks_per_voucher == 0 {
            return Err("ticks_per_voucher must be positive".into());
        }
        if self.lightning_msat_per_minute == Some(0) {
            return Err("lightning_msat_per_minute must be positive".into());
        }
        if self.max_sessions == 0 || self.session_idle_secs == 0 {
            return Err("max_sessions and session_idle_secs must be positive".into());
        }
        Ok(())
    }

    /// The x402 route behind `/cover`: K ticks' price, channels only. A seller that carries it
    /// can back a gateway ([`Gateway::with_seller`]).
    pub fn cover_route(&self) -> Result<crate::seller::config::RouteConfig, String> {
        let cover = self.tick_price()? * u128::from(self.ticks_per_voucher);
        Ok(crate::seller::config::RouteConfig {
            path: COVER_PATH.into(),
            price: cover.to_string(),
            asset: self.asset,
            schemes: vec![crate::seller::config::Scheme::BatchSettlement],
            description: Some(format!("{} ticks of connectivity", self.ticks_per_voucher)),
            sensor: Default::default(),
        })
    }

    /// The price of one tick.
    pub fn tick_price(&self) -> Result<u128, String> {
        let per_tick = self
            .price_per_minute
            .saturating_mul(u128::from(self.tick_secs));
        if self.tick_secs == 0 || per_tick == 0 || per_tick % 60 != 0 {
            return Err("price_per_minute × tick_secs must be a positive multiple of 60".into());
        }
        Ok(per_tick / 60)
    }

    /// The seller behind `/cover`: one route priced at K ticks, channels only.
    fn seller_config(&self) -> Result<SellerConfig, String> {
        let route = self.cover_route()?;
        let mut config = SellerConfig::parse(&format!(
            "rpc_url = \"{}\"\nnetwork = \"{}\"\nfacilitator = false\n\
             [[route]]\npath = \"{}\"\nprice = \"{}\"\nasset = \"{}\"\n\
             schemes = [\"batch-settlement\"]\n",
            self.rpc_url, self.network, route.path, route.price, route.asset
        ))
        .map_err(|e| e.to_string())?;
        config.routes[0].description = route.description;
        config.listen = self.listen;
        config.claim = self.claim.clone();
        config.limits = self.limits.clone();
        Ok(config)
    }
}

/// How a session pays.
#[derive(Debug)]
pub enum Metering {
    /// Hash-chain ticks, covered by `batch-settlement` vouchers.
    Ticks {
        /// The session's tick chain (boxed: the variants differ much in size).
        stream: Box<TickStream>,
        /// The channel its vouchers pay on (bound by the first cover).
        channel: Option<ChannelId>,
        /// When the last tick came.
        last_tick: Option<Instant>,
    },
    /// Keysend payments over Lightning, each buying time.
    Lightning {
        /// Until when the session is paid.
        paid_until: Option<Instant>,
        /// Received so far, msat.
        received_msat: u64,
    },
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// How it pays.
    pub metering: Metering,
    /// Payments accepted: vouchers (each covers K ticks) or keysends.
    pub covers: u64,
    /// Bytes forwarded both ways (updated as they pass).
    pub bytes: Arc<AtomicU64>,
    /// Tunnels cut for lack of payment.
    pub cuts: u64,
    /// When it was opened.
    opened: Instant,
}

impl Session {
    fn new(metering: Metering) -> Self {
        Self {
            metering,
            covers: 0,
            bytes: Arc::new(AtomicU64::new(0)),
            cuts: 0,
            opened: Instant::now(),
        }
    }

    /// The last moment it was paid for or ticked (its opening, before either).
    fn last_active(&self) -> Instant {
        let seen = match &self.metering {
            Metering::Ticks { last_tick, .. } => *last_tick,
            Metering::Lightning { paid_until, .. } => *paid_until,
        };
        seen.map_or(self.opened, |seen| seen.max(self.opened))
    }
}

/// The gateway's state.
pub struct Gateway {
    config: GatewayConfig,
    seller: Arc<Seller>,
    /// Where Lightning credits are recorded (the seller's store).
    store: crate::store::ChannelStore,
    sessions: Mutex<HashMap<u64, Arc<Mutex<Session>>>>,
    /// The node id Lightning sessions pay (hex), once a node is attached.
    lightning_node: std::sync::OnceLock<String>,
    /// Its requests' latency, once an agent attaches its metrics.
    pub requests: crate::metrics::RequestTiming,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts the payment side (the seller behind `/cover`) on the device wallet and store.
    pub async fn start(
        config: GatewayConfig,
        signer: crate::evm::SharedSigner,
        store: crate::store::ChannelStore,
    ) -> Result<Arc<Self>, String> {
        let sensor = Arc::new(crate::seller::sensor::SimulatedSensor::new("gateway"));
        let seller = Seller::start(config.seller_config()?, signer, store.clone(), sensor)
            .await
            .map_err(|e| format!("gateway payments: {e}"))?;
        Self::new(config, seller, store)
    }

    fn new(
        config: GatewayConfig,
        seller: Arc<Seller>,
        store: crate::store::ChannelStore,
    ) -> Result<Arc<Self>, String> {
        let gateway = Self {
            config,
            seller,
            store,
            sessions: Mutex::new(HashMap::new()),
            lightning_node: std::sync::OnceLock::new(),
            requests: Default::default(),
        };
        gateway.restore_lightning_sessions()?;
        Ok(Arc::new(gateway))
    }

    /// A gateway whose `/cover` vouchers are taken by `seller`, which must carry
    /// [`GatewayConfig::cover_route`]: the device's readings and its connectivity are then paid
    /// on one channel per buyer, through one seller (two sellers on one store would each hold
    /// their own view of the same channel).
    pub fn with_seller(
        config: GatewayConfig,
        seller: Arc<Seller>,
        store: crate::store::ChannelStore,
    ) -> Result<Arc<Self>, String> {
        let wanted = config.cover_route()?;
        match seller.route(COVER_PATH) {
            Some(route) if route.price == wanted.price.parse::<u128>().unwrap_or_default() => {}
            Some(_) => return Err(format!("the seller's {COVER_PATH} route has another price")),
            None => return Err(format!("the seller has no {COVER_PATH} route")),
        }
        Self::new(config, seller, store)
    }

    /// The seller behind `/cover` (claims, channel summaries).
    pub fn seller(&self) -> &Arc<Seller> {
        &self.seller
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// (covers, ticks received, bytes, cuts) of a session, if it exists; a Lightning session
    /// counts its keysends as covers and no ticks.
    pub fn session_figures(&self, id: u64) -> Option<(u64, u32, u64, u64)> {
        let session = self.session(id)?;
        let session = lock(&session);
        let received = match &session.metering {
            Metering::Ticks { stream, .. } => {
                stream.uncovered() + (session.covers as u32) * self.config.ticks_per_voucher
            }
            Metering::Lightning { .. } => 0,
        };
        let bytes = session.bytes.load(std::sync::atomic::Ordering::Relaxed);
        Some((session.covers, received, bytes, session.cuts))
    }

    /// Totals over every session: (vouchers, ticks received, bytes, tunnels cut).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let sessions: Vec<_> = lock(&self.sessions).keys().copied().collect();
        sessions
            .into_iter()
            .filter_map(|id| self.session_figures(id))
            .fold(
                (0, 0, 0, 0),
                |(c, t, b, x), (covers, ticks, bytes, cuts)| {
                    (c + covers, t + u64::from(ticks), b + bytes, x + cuts)
                },
            )
    }

    fn session(&self, id: u64) -> Option<Arc<Mutex<Session>>> {
        lock(&self.sessions).get(&id).cloned()
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Forgets the sessions idle for longer than `session_idle_secs` (and not paid ahead, which
    /// an idle one cannot be); returns how many are left.
    fn prune(&self, sessions: &mut HashMap<u64, Arc<Mutex<Session>>>) -> usize {
        let idle = std::time::Duration::from_secs(self.config.session_idle_secs);
        sessions.retain(|_, session| {
            let session = lock(session);
            session.last_active().elapsed() < idle || self.paid_ahead(&session)
        });
        sessions.len()
    }

    /// Whether `session` may use the network now: its last tick still runs and no more than K
    /// ticks are on credit; or, over Lightning, the time it paid for has not run out.
    fn paid_ahead(&self, session: &Session) -> bool {
        let grace = std::time::Duration::from_millis(self.config.grace_ms);
        match &session.metering {
            Metering::Ticks {
                stream, last_tick, ..
            } => {
                let Some(last) = last_tick else {
                    return false;
                };
                let runs = std::time::Duration::from_secs(self.config.tick_secs) + grace;
                // Up to K ticks on credit: the K-th tick is followed at once by its voucher, and
                // a tick beyond the limit is refused, so freshness then runs out.
                last.elapsed() < runs && stream.uncovered() <= self.config.ticks_per_voucher
            }
            Metering::Lightning { paid_until, .. } => {
                paid_until.is_some_and(|until| Instant::now() < until + grace)
            }
        }
    }

    /// Records the payment `hash` of `amount_msat` for session `id` durably, then credits it
    /// ([`Self::credit_lightning`]). A payment recorded before (an event replayed after a
    /// crash) changes nothing. Called before the node acknowledges the payment.
    pub async fn credit_lightning_durably(
        &self,
        hash: [u8; 32],
        id: u64,
        amount_msat: u64,
    ) -> Result<bool, crate::store::StoreError> {
        if self.config.lightning_msat_per_minute.is_none() || self.store.ln_credited(&hash)? {
            return Ok(false);
        }
        let credit = crate::store::ln::LnCredit {
            session: id,
            amount_msat,
            at_ms: now_ms(),
        };
        self.store
            .submit(crate::store::RecordWrite::LnCredit(ChannelId(hash), credit))
            .durable()
            .await?;
        Ok(self.credit_lightning(id, amount_msat))
    }

    /// Rebuilds every Lightning session that was paid from its recorded credits, in order:
    /// a restart keeps the time they paid for.
    fn restore_lightning_sessions(&self) -> Result<(), String> {
        let Some(per_minute) = self.config.lightning_msat_per_minute else {
            return Ok(());
        };
        let mut credits = self.store.ln_credits().map_err(|e| e.to_string())?;
        credits.sort_by_key(|credit| credit.at_ms);
        let mut paid: HashMap<u64, (u64, u64, u64)> = HashMap::new();
        for credit in credits {
            let (until, received, covers) = paid.entry(credit.session).or_default();
            let bought = u128::from(credit.amount_msat) * 60_000 / u128::from(per_minute);
            *until = (*until).max(credit.at_ms) + u64::try_from(bought).unwrap_or(u64::MAX / 2);
            *received += credit.amount_msat;
            *covers += 1;
        }
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut sessions = lock(&self.sessions);
        for (id, (until_ms, received_msat, covers)) in paid {
            let paid_until = if until_ms >= now_ms {
                now.checked_add(std::time::Duration::from_millis(until_ms - now_ms))
            } else {
                now.checked_sub(std::time::Duration::from_millis(now_ms - until_ms))
            };
            let mut session = Session::new(Metering::Lightning {
                paid_until: paid_until.or(Some(now)),
                received_msat,
            });
            session.covers = covers;
            sessions.insert(id, Arc::new(Mutex::new(session)));
        }
        Ok(())
    }

    /// Credits a Lightning session with `amount_msat` received for it: that amount's worth of
    /// time, counted from now or from the end of what was already paid, whichever is later.
    /// A session paid for under an id the gateway does not hold (it restarted before the first
    /// payment) is opened by the payment. Returns false if the id is a tick session (the
    /// payment is kept all the same).
    pub fn credit_lightning(&self, id: u64, amount_msat: u64) -> bool {
        let Some(per_minute) = self.config.lightning_msat_per_minute else {
            return false;
        };
        let session = lock(&self.sessions)
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Session::new(Metering::Lightning {
                    paid_until: None,
                    received_msat: 0,
                })))
            })
            .clone();
        let mut session = lock(&session);
        let Metering::Lightning {
            paid_until,
            received_msat,
        } = &mut session.metering
        else {
            return false;
        };
        let millis = u128::from(amount_msat) * 60_000 / u128::from(per_minute);
        let bought = std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        let now = Instant::now();
        let from = paid_until.filter(|until| *until > now).unwrap_or(now);
        *paid_until = Some(from + bought);
        *received_msat += amount_msat;
        session.covers += 1;
        true
    }

    /// What a client needs to pay a Lightning session (absent when the gateway takes none).
    pub fn lightning_offer(&self) -> Option<serde_json::Value> {
        let node_id = self.lightning_node.get()?;
        Some(serde_json::json!({
            "nodeId": node_id,
            "msatPerMinute": self.config.lightning_msat_per_minute?,
            "recordType": STREAM_RECORD_TYPE,
        }))
    }

    /// Takes Lightning sessions through `ln`: keysends carrying a session's stream record credit
    /// it, recorded in the store before the node acknowledges them (start the node with
    /// `durable_receiver` so none arrives before this). Needs `lightning_msat_per_minute`.
    #[cfg(feature = "lightning")]
    pub fn accept_lightning(self: &Arc<Self>, ln: &crate::ln::LnNode) -> Result<(), String> {
        if self.config.lightning_msat_per_minute.is_none() {
            return Err("set lightning_msat_per_minute to take Lightning sessions".into());
        }
        let node_id = ln.node_id().to_string();
        if self.lightning_node.set(node_id).is_err() {
            return Err("a Lightning node is already attached".into());
        }
        let gateway = self.clone();
        ln.receive_durably(Arc::new(move |payment: crate::ln::Received| {
            let gateway = gateway.clone();
            Box::pin(async move {
                let Some(record) = crate::ln::stream::StreamRecord::of(&payment) else {
                    return true; // not a stream payment: nothing to record
                };
                match gateway
                    .credit_lightning_durably(
                        payment.payment_hash,
                        record.session,
                        payment.amount_msat,
                    )
                    .await
                {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::error!(%error, "stream credit not recorded; the payment waits");
                        false
                    }
                }
            })
        }))
        .map_err(|e| e.to_string())
    }

    /// Received over Lightning by a session, msat.
    pub fn lightning_received(&self, id: u64) -> Option<u64> {
        let session = self.session(id)?;
        let session = lock(&session);
        match session.metering {
            Metering::Lightning { received_msat, .. } => Some(received_msat),
            Metering::Ticks { .. } => None,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
