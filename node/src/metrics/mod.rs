//! The agent's metrics, in the OpenMetrics text format that Prometheus scrapes (`GET /metrics`
//! on the `[metrics]` listener), with one registry per agent so that several agents in one
//! process stay apart.
//!
//! Counters come from the agent's events, seen synchronously as they are published (a lagging
//! event subscriber may miss some; these never do): payments received and sent per leg and
//! scheme, in count and amount, buys that failed, budget refusals, claims confirmed, channels
//! opened and closed, payees blocked. Gauges are read at each scrape: from the channel store,
//! channels per leg and side, their capacity and what was paid on them, and what an EVM payee
//! has not claimed yet; from the budgets, each cap, the rolling day's spending per scope and
//! the payee closest to its hourly cap; from the Lightning node, its synced height, connected
//! peers, channels and balances. Histograms of HTTP request latency come from the agent's
//! servers (`requests`). Amounts are in each leg's unit: token atomic units (EVM), satoshi
//! (Bitcoin channels), millisatoshi (Lightning).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::budget::{Budgets, leg_name};
use crate::events::{AgentEvent, EventObserver, Leg, Payment};
use crate::ledger::Role;
use crate::store::ChannelStore;

mod http;
mod requests;

pub use http::{CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, router};
pub use requests::{RequestTimer, RequestTiming};

/// The metrics could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The channel store could not be read.
    #[error("reading the channel store")]
    Ledger(#[source] crate::ledger::LedgerError),
    /// The text encoder failed.
    #[error("encoding the metrics")]
    Encode(#[source] std::fmt::Error),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    leg: String,
    scheme: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LegLabels {
    leg: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    leg: String,
    role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    leg: String,
    cap: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// What the Lightning node shows.
#[derive(Default)]
struct LightningGauges {
    height: Gauge,
    peers: Gauge,
    channels: Family<KindLabels, Gauge>,
    balance_sats: Family<KindLabels, Gauge>,
}

/// Everything one agent counts.
pub struct AgentMetrics {
    registry: Registry,
    store: Arc<ChannelStore>,
    received: Family<PaymentLabels, Counter>,
    received_units: Family<PaymentLabels, Counter>,
    sent: Family<PaymentLabels, Counter>,
    sent_units: Family<PaymentLabels, Counter>,
    buy_failures: Counter,
    budget_refusals: Family<LegLabels, Counter>,
    claims: Family<LegLabels, Counter>,
    opened: Family<LegLabels, Counter>,
    closed: Family<LegLabels, Counter>,
    blocked: Family<LegLabels, Counter>,
    channels: Family<SideLabels, Gauge>,
    capacity: Family<SideLabels, Gauge>,
    paid: Family<SideLabels, Gauge>,
    unclaimed: Family<LegLabels, Gauge>,
    withdraw_deadline: Family<LegLabels, Gauge>,
    expiry_height: Family<LegLabels, Gauge>,
    budgets: Arc<Budgets>,
    budget_caps: Family<CapLabels, Gauge>,
    budget_day: Family<ScopeLabels, Gauge>,
    budget_hour_max: Family<LegLabels, Gauge>,
    #[cfg(feature = "lightning")]
    lightning: std::sync::OnceLock<Arc<crate::ln::LnNode>>,
    ln: LightningGauges,
    requests: requests::RequestHistograms,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

fn legs(leg: Leg) -> LegLabels {
    LegLabels {
        leg: leg_name(leg).into(),
    }
}

/// A gauge holds an `i64`; amounts beyond it (never met in practice) show as its maximum.
fn gauge_value(amount: u128) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

impl AgentMetrics {
    /// Metrics of the agent whose channels are in `store` and spending caps in `budgets`.
    pub fn new(store: Arc<ChannelStore>, budgets: Arc<Budgets>) -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("m2m"),
            store,
            received: Family::default(),
            received_units: Family::default(),
            sent: Family::default(),
            sent_units: Family::default(),
            buy_failures: Counter::default(),
            budget_refusals: Family::default(),
            claims: Family::default(),
            opened: Family::default(),
            closed: Family::default(),
            blocked: Family::default(),
            channels: Family::default(),
            capacity: Family::default(),
            paid: Family::default(),
            unclaimed: Family::default(),
            withdraw_deadline: Family::default(),
            expiry_height: Family::default(),
            budgets,
            budget_caps: Family::default(),
            budget_day: Family::default(),
            budget_hour_max: Family::default(),
            #[cfg(feature = "lightning")]
            lightning: std::sync::OnceLock::new(),
            ln: LightningGauges::default(),
            requests: requests::histograms(),
        };
        metrics.register();
        metrics
    }

    /// Times the requests of the agent's server `server` (`evm`, `btc`, `gateway`, `metrics`).
    pub fn request_timer(&self, server: &'static str) -> RequestTimer {
        RequestTimer::new(self.requests.clone(), server)
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "http_request_duration_seconds",
            "Time from a request's head to its response's head, per server, method and status",
            self.requests.clone(),
        );
        r.register(
            "payments_received",
            "Payments accepted (durable before the reading was served)",
            self.received.clone(),
        );
        r.register(
            "received_units",
            "Amount received, in the leg's unit (token atomic units, sat, msat)",
            self.received_units.clone(),
        );
        r.register(
            "payments_sent",
            "Payments made whose purchase arrived",
            self.sent.clone(),
        );
        r.register(
            "sent_units",
            "Amount sent, in the leg's unit (token atomic units, sat, msat)",
            self.sent_units.clone(),
        );
        r.register(
            "buy_failures",
            "Buys that did not go through (refused, unreachable, over a limit)",
            self.buy_failures.clone(),
        );
        r.register(
            "budget_refusals",
            "Payments a budget refused before they left the device",
            self.budget_refusals.clone(),
        );
        r.register(
            "claimed_channels",
            "Channels whose claims were confirmed on chain",
            self.claims.clone(),
        );
        r.register(
            "channels_opened",
            "Channels this device pays on that were opened",
            self.opened.clone(),
        );
        r.register(
            "channels_closed",
            "Channels closed on chain by this device",
            self.closed.clone(),
        );
        r.register(
            "payees_blocked",
            "Payees cut off for overcharging",
            self.blocked.clone(),
        );
        r.register(
            "channels",
            "Channels in the store, per leg and side",
            self.channels.clone(),
        );
        r.register(
            "channel_capacity_units",
            "Deposits (EVM) or capacities (Bitcoin) of the channels, in the leg's unit",
            self.capacity.clone(),
        );
        r.register(
            "channel_paid_units",
            "Paid on the channels so far (payee: charged and held; payer: confirmed)",
            self.paid.clone(),
        );
        r.register(
            "unclaimed_units",
            "Charged as payee but not yet claimed on chain",
            self.unclaimed.clone(),
        );
        r.register(
            "withdrawal_deadline_timestamp_seconds",
            "Nearest time a payer may finish a pending withdrawal (claims must land before it)",
            self.withdraw_deadline.clone(),
        );
        r.register(
            "nearest_expiry_height",
            "Lowest expiry height of an open Bitcoin channel paid to this device",
            self.expiry_height.clone(),
        );
        r.register(
            "budget_cap_units",
            "Spending caps per leg (per_request, per_payee_per_hour, per_day), in the leg's unit",
            self.budget_caps.clone(),
        );
        r.register(
            "budget_day_spent_units",
            "Spent in the rolling day, per budget scope (an EVM token, or the leg)",
            self.budget_day.clone(),
        );
        r.register(
            "budget_hour_max_payee_spent_units",
            "Spent in the rolling hour by the payee closest to its hourly cap",
            self.budget_hour_max.clone(),
        );
        if cfg!(feature = "lightning") {
            r.register(
                "lightning_synced_height",
                "Best block the Lightning node is synced to",
                self.ln.height.clone(),
            );
            r.register(
                "lightning_connected_peers",
                "Peers the Lightning node is connected to",
                self.ln.peers.clone(),
            );
            r.register(
                "lightning_channels",
                "Lightning channels, usable or not (yet)",
                self.ln.channels.clone(),
            );
            r.register(
                "lightning_balance_sats",
                "The Lightning node's balances: onchain (spendable) and lightning",
                self.ln.balance_sats.clone(),
            );
        }
    }

    /// Shows the agent's Lightning node (set once, when the node runs).
    #[cfg(feature = "lightning")]
    pub fn attach_lightning(&self, node: Arc<crate::ln::LnNode>) {
        let _ = self.lightning.set(node);
    }

    fn count_payment(
        count: &Family<PaymentLabels, Counter>,
        units: &Family<PaymentLabels, Counter>,
        payment: &Payment,
    ) {
        let labels = PaymentLabels {
            leg: leg_name(payment.leg).into(),
            scheme: payment.scheme.clone(),
        };
        count.get_or_create(&labels).inc();
        units
            .get_or_create(&labels)
            .inc_by(u64::try_from(payment.amount).unwrap_or(u64::MAX));
    }

    /// Reads the store's channels into the gauges.
    fn refresh(&self) -> Result<(), MetricsError> {
        let rows = crate::ledger::channels(&self.store).map_err(MetricsError::Ledger)?;
        for leg in [Leg::Evm, Leg::Btc] {
            for role in [Role::Payer, Role::Payee] {
                let mine = rows.iter().filter(|r| r.leg == leg && r.role == role);
                let (count, capacity, paid) = mine.fold((0u128, 0u128, 0u128), |acc, r| {
                    (acc.0 + 1, acc.1 + r.capacity, acc.2 + r.paid.unwrap_or(0))
                });
                let side = SideLabels {
                    leg: leg_name(leg).into(),
                    role: match role {
                        Role::Payer => "payer",
                        Role::Payee => "payee",
                    }
                    .into(),
                };
                self.channels.get_or_create(&side).set(gauge_value(count));
                self.capacity
                    .get_or_create(&side)
                    .set(gauge_value(capacity));
                self.paid.get_or_create(&side).set(gauge_value(paid));
            }
        }
        let unclaimed: u128 = rows
            .iter()
            .filter(|r| r.leg == Leg::Evm && r.role == Role::Payee)
            .map(|r| r.paid.unwrap_or(0).saturating_sub(r.claimed.unwrap_or(0)))
            .sum();
        self.unclaimed
            .get_or_create(&legs(Leg::Evm))
            .set(gauge_value(unclaimed));
        // Deadlines exist only while something is due: no series otherwise.
        let payees = |leg| {
            rows.iter()
                .filter(move |r| r.leg == leg && r.role == Role::Payee)
        };
        let nearest = [
            (
                &self.withdraw_deadline,
                Leg::Evm,
                payees(Leg::Evm).filter_map(|r| r.withdraw_ready_at).min(),
            ),
            (
                &self.expiry_height,
                Leg::Btc,
                payees(Leg::Btc)
                    .filter(|r| r.state == "open")
                    .filter_map(|r| r.expiry_height.map(u64::from))
                    .min(),
            ),
        ];
        for (family, leg, value) in nearest {
            match value {
                Some(value) => {
                    family
                        .get_or_create(&legs(leg))
                        .set(gauge_value(u128::from(value)));
                }
                None => {
                    family.remove(&legs(leg));
                }
            }
        }
        self.refresh_budgets();
        #[cfg(feature = "lightning")]
        self.refresh_lightning();
        Ok(())
    }

    fn refresh_budgets(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for report in self.budgets.report(now) {
            let leg = leg_name(report.leg);
            if let Some(caps) = report.caps {
                for (cap, value) in [
                    ("per_request", caps.per_request),
                    ("per_payee_per_hour", caps.per_payee_per_hour),
                    ("per_day", caps.per_day),
                ] {
                    let labels = CapLabels {
                        leg: leg.into(),
                        cap: cap.into(),
                    };
                    self.budget_caps
                        .get_or_create(&labels)
                        .set(gauge_value(value));
                }
            }
            for (scope, spent) in report.day {
                self.budget_day
                    .get_or_create(&ScopeLabels { scope })
                    .set(gauge_value(spent));
            }
            let closest = report.payees.iter().map(|(_, spent)| *spent).max();
            self.budget_hour_max
                .get_or_create(&legs(report.leg))
                .set(gauge_value(closest.unwrap_or(0)));
        }
    }

    #[cfg(feature = "lightning")]
    fn refresh_lightning(&self) {
        let Some(node) = self.lightning.get() else {
            return;
        };
        let inner = node.inner();
        self.ln
            .height
            .set(i64::from(inner.status().current_best_block.height));
        let connected = inner.list_peers().iter().filter(|p| p.is_connected).count();
        self.ln.peers.set(gauge_value(connected as u128));
        let channels = node.channels();
        let usable = channels.iter().filter(|c| c.is_usable).count();
        for (kind, count) in [("usable", usable), ("other", channels.len() - usable)] {
            self.ln
                .channels
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(gauge_value(count as u128));
        }
        let (onchain, lightning) = node.balances();
        for (kind, sats) in [("onchain", onchain), ("lightning", lightning)] {
            self.ln
                .balance_sats
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(gauge_value(u128::from(sats.to_sat())));
        }
    }

    /// The text a scrape answers (after reading the store's channels).
    pub fn encode(&self) -> Result<String, MetricsError> {
        self.refresh()?;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(MetricsError::Encode)?;
        Ok(text)
    }
}

impl AgentMetrics {
    /// The same metrics in the Prometheus text format (0.0.4), for scrapers that do not ask
    /// for OpenMetrics and for `promtool check metrics`.
    pub fn encode_prometheus(&self) -> Result<String, MetricsError> {
        Ok(http::openmetrics_to_prometheus(&self.encode()?))
    }
}

impl EventObserver for AgentMetrics {
    fn observe(&self, event: &AgentEvent) {
        match event {
            AgentEvent::PaymentReceived(payment) => {
                Self::count_payment(&self.received, &self.received_units, payment);
            }
            AgentEvent::PaymentSent(payment) => {
                Self::count_payment(&self.sent, &self.sent_units, payment);
            }
            AgentEvent::BuyFailed { .. } => {
                self.buy_failures.inc();
            }
            AgentEvent::BudgetRefused { leg, .. } => {
                self.budget_refusals.get_or_create(&legs(*leg)).inc();
            }
            AgentEvent::ClaimConfirmed { leg, channels } => {
                self.claims
                    .get_or_create(&legs(*leg))
                    .inc_by(*channels as u64);
            }
            AgentEvent::ChannelOpened { leg, .. } => {
                self.opened.get_or_create(&legs(*leg)).inc();
            }
            AgentEvent::ChannelClosed { leg, .. } => {
                self.closed.get_or_create(&legs(*leg)).inc();
            }
            AgentEvent::PeerBlocked { leg, .. } => {
                self.blocked.get_or_create(&legs(*leg)).inc();
            }
            AgentEvent::Stopping => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_counters_and_the_text_is_openmetrics() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = crate::datadir::DataDir::open(dir.path()).unwrap();
        let store = Arc::new(ChannelStore::open(&data_dir).unwrap());
        let caps = crate::budget::BudgetCaps {
            per_request: 10,
            per_payee_per_hour: 100,
            per_day: 1_000,
        };
        let budgets = Arc::new(Budgets::load((*store).clone(), &[(Leg::Btc, caps)]).unwrap());
        let metrics = AgentMetrics::new(store, budgets);
        let payment = |amount| {
            AgentEvent::PaymentReceived(Payment {
                leg: Leg::Evm,
                scheme: "batch-settlement".into(),
                amount,
                resource: "/temperature".into(),
            })
        };
        metrics.observe(&payment(1_000));
        metrics.observe(&payment(2_500));
        metrics.observe(&AgentEvent::BudgetRefused {
            leg: Leg::Btc,
            payee: "x".into(),
            reason: "cap".into(),
        });
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                "m2m_payments_received_total{leg=\"evm\",scheme=\"batch-settlement\"} 2\n"
            )
        );
        assert!(
            text.contains(
                "m2m_received_units_total{leg=\"evm\",scheme=\"batch-settlement\"} 3500\n"
            )
        );
        assert!(text.contains("m2m_budget_refusals_total{leg=\"btc\"} 1\n"));
        assert!(text.contains("m2m_channels{leg=\"evm\",role=\"payee\"} 0\n"));
        assert!(text.contains("m2m_budget_cap_units{leg=\"btc\",cap=\"per_day\"} 1000\n"));
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
        let prometheus = metrics.encode_prometheus().unwrap();
        assert!(prometheus.contains("# TYPE m2m_payments_received_total counter\n"));
        assert!(prometheus.contains("# HELP m2m_payments_received_total Payments accepted"));
        assert!(prometheus.contains("# TYPE m2m_channels gauge\n"));
        assert!(!prometheus.contains("# EOF"));
    }
}
