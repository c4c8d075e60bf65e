//! Budgets that hold: the caps a buyer spends within on each leg, with what was spent kept in
//! the channel store so a restart continues the same hour and day.
//!
//! One [`Budgets`] per data directory is shared by every buyer of an agent (EVM, Bitcoin
//! channels, L402). A payment is checked and recorded before it leaves the device, and the
//! record is durable before the payment is sent: a crash can over-count a payment that never
//! left, never forget one that did. A payment counts once it has left, whether or not the seller
//! then served (a seller answering 503 after taking a voucher must not escape the cap).
//!
//! Caps are per leg, in the leg's unit: token atomic units on EVM (each token counted on its own,
//! so a budget is meant for one stablecoin), satoshi for Bitcoin channels and for Lightning. The
//! payee is who is paid, not where the request went: `network/payTo` on EVM, the payee's x-only
//! key on Bitcoin, the node id on Lightning. Caps come from `agent.toml`; `m2m budget set`
//! replaces a leg's caps and that choice is kept until `agent.toml`'s caps for the leg change.

use std::collections::HashMap;
use std::sync::Mutex;

use m2m_core::budget::{BudgetError, BudgetPolicy, BudgetTracker, SavedWindow};
use m2m_core::{Amount, Asset, ChannelId};
use serde::{Deserialize, Serialize};

use crate::events::{AgentEvent, EventLink, Leg};
use crate::store::{ChannelStore, RecordWrite, StoreError};

/// One leg's caps, in its unit (token atomic units on EVM, satoshi on Bitcoin and Lightning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetCaps {
    /// Most one payment may be.
    pub per_request: u128,
    /// Most one payee may receive in any rolling hour.
    pub per_payee_per_hour: u128,
    /// Most all payees together may receive in any rolling day.
    pub per_day: u128,
}

impl BudgetCaps {
    /// `Err(field)` names the first cap that is zero (a zero cap would refuse everything:
    /// leave the leg's section out to pay without a budget).
    pub fn check(&self) -> Result<(), &'static str> {
        for (field, value) in [
            ("per_request", self.per_request),
            ("per_payee_per_hour", self.per_payee_per_hour),
            ("per_day", self.per_day),
        ] {
            if value == 0 {
                return Err(field);
            }
        }
        Ok(())
    }
}

/// A payment was refused, or its record could not be kept (then it is not sent either).
#[derive(Debug, thiserror::Error)]
pub enum BudgetsError {
    /// A cap said no; nothing was recorded or paid.
    #[error("the {} budget refuses paying {payee}", leg_name(*leg))]
    Refused {
        /// The leg.
        leg: Leg,
        /// Who would have been paid.
        payee: String,
        /// Which cap.
        #[source]
        cause: BudgetError,
    },
    /// The store failed; nothing was paid.
    #[error("recording the budget")]
    Store(#[from] StoreError),
    /// A saved row cannot be read.
    #[error("saved budget row {row:?}")]
    Corrupt {
        /// The row.
        row: String,
        /// Why.
        #[source]
        cause: m2m_core::records::RecordError,
    },
}

/// What one leg's budget shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetReport {
    /// The leg.
    pub leg: Leg,
    /// Its caps (`None`: that leg pays without a budget).
    pub caps: Option<BudgetCaps>,
    /// Where the caps come from: `config` or `set` (by `m2m budget set`).
    pub source: &'static str,
    /// Spent in the rolling day, per asset scope (EVM tokens each have one).
    pub day: Vec<(String, u128)>,
    /// Spent per payee in the rolling hour.
    pub payees: Vec<(String, u128)>,
}

/// Every leg's budget, persisted in the store.
#[derive(Debug)]
pub struct Budgets {
    store: ChannelStore,
    inner: Mutex<Inner>,
    /// Refusals go here once an agent attaches its bus.
    pub events: EventLink,
}

#[derive(Debug, Default)]
struct Inner {
    /// Caps per leg and whether they were set at run time.
    caps: HashMap<Leg, (BudgetCaps, bool)>,
    /// One tracker per asset scope.
    trackers: HashMap<String, BudgetTracker<String>>,
}

/// A leg's caps as set by `m2m budget set`, with the config's caps at that moment.
#[derive(Serialize, Deserialize)]
struct SetCaps {
    caps: BudgetCaps,
    config_then: Option<BudgetCaps>,
}

const POLICY_SCOPE: &str = "policy";

impl Budgets {
    /// Loads what was spent from `store`; `config` holds each leg's caps from `agent.toml`.
    pub fn load(store: ChannelStore, config: &[(Leg, BudgetCaps)]) -> Result<Self, BudgetsError> {
        let mut inner = Inner::default();
        for &(leg, caps) in config {
            inner.caps.insert(leg, (caps, false));
        }
        let rows = store.budget_rows()?;
        let mut saved = Vec::new();
        for (name, data) in rows {
            let Some((scope, peer)) = name.split_once('\n') else {
                continue;
            };
            if scope == POLICY_SCOPE {
                let Some(leg) = leg_named(peer) else { continue };
                let Ok(set) = serde_json::from_slice::<SetCaps>(&data) else {
                    continue;
                };
                let config_now = config.iter().find(|(l, _)| *l == leg).map(|(_, c)| *c);
                if set.config_then == config_now {
                    inner.caps.insert(leg, (set.caps, true));
                } else {
                    tracing::info!(
                        ?leg,
                        "agent.toml changed this leg's budget since `m2m budget set`; its caps apply"
                    );
                }
                continue;
            }
            saved.push((scope.to_owned(), peer.to_owned(), data));
        }
        for (scope, peer, data) in saved {
            let row_name = format!("{scope}/{peer}");
            let corrupt = |cause| BudgetsError::Corrupt {
                row: row_name.clone(),
                cause,
            };
            let Some((leg, asset)) = scope_parts(&scope) else {
                continue;
            };
            // A leg without caps still keeps its blocked payees.
            let policy = inner.policy_or_unbounded(leg, asset);
            let tracker = inner
                .trackers
                .entry(scope.clone())
                .or_insert_with(|| BudgetTracker::new(policy));
            let (blocked, window) = data
                .split_first()
                .ok_or_else(|| corrupt(m2m_core::records::RecordError::Corrupt("empty")))?;
            let window = SavedWindow::decode(window).map_err(corrupt)?;
            if peer.is_empty() {
                tracker.restore_day(&window).map_err(corrupt)?;
            } else {
                tracker
                    .restore_peer(peer, &window, *blocked == 1)
                    .map_err(corrupt)?;
            }
        }
        Ok(Self {
            store,
            inner: Mutex::new(inner),
            events: EventLink::default(),
        })
    }

    /// Checks a payment of `units` of `asset` to `payee` on `leg` and, if every cap allows it,
    /// records it durably. Call before the payment leaves the device; a leg without caps pays
    /// freely.
    pub async fn authorize(
        &self,
        leg: Leg,
        asset: Asset,
        payee: &str,
        units: u128,
    ) -> Result<(), BudgetsError> {
        if let Some(recorded) = self.reserve(leg, asset, payee, units)? {
            recorded.durable().await?;
        }
        Ok(())
    }

    /// [`Self::authorize`] without the wait: the payment's record is queued and its ticket
    /// returned (`None` when nothing was recorded). A caller that persists its own record of the
    /// payment before sending it may drop the ticket: the store makes writes durable in the
    /// order they were queued, so the budget's is on disk once the caller's is — one fsync per
    /// payment instead of two.
    pub fn reserve(
        &self,
        leg: Leg,
        asset: Asset,
        payee: &str,
        units: u128,
    ) -> Result<Option<crate::store::Ticket>, BudgetsError> {
        let ticket = {
            let mut inner = self.lock();
            let scope = scope_name(leg, asset);
            if inner.policy(leg, asset).is_none() && !inner.trackers.contains_key(&scope) {
                return Ok(None); // no caps, nobody blocked: nothing to count against
            }
            let policy = inner.policy_or_unbounded(leg, asset);
            let tracker = inner
                .trackers
                .entry(scope.clone())
                .or_insert_with(|| BudgetTracker::new(policy));
            let payee_key = payee.to_owned();
            if let Err(cause) =
                tracker.authorize(&payee_key, Amount::new(asset, units), crate::now_secs())
            {
                drop(inner);
                self.events.publish(|| AgentEvent::BudgetRefused {
                    leg,
                    payee: payee.to_owned(),
                    reason: cause.to_string(),
                });
                return Err(BudgetsError::Refused {
                    leg,
                    payee: payee.to_owned(),
                    cause,
                });
            }
            let (window, blocked) = tracker.saved_peer(&payee_key);
            let day = tracker.saved_day();
            // Queued in order: the day row's ticket resolves only after the peer row is on disk.
            drop(
                self.store
                    .submit(window_row(&scope, payee, &window, blocked)),
            );
            self.store.submit(window_row(&scope, "", &day, false))
        };
        Ok(Some(ticket))
    }

    /// Cuts `payee` off on `leg` (it overcharged); kept across restarts.
    pub async fn block(&self, leg: Leg, asset: Asset, payee: &str) -> Result<(), BudgetsError> {
        self.events.publish(|| AgentEvent::PeerBlocked {
            leg,
            payee: payee.to_owned(),
        });
        let ticket = {
            let mut inner = self.lock();
            let policy = inner.policy_or_unbounded(leg, asset);
            let scope = scope_name(leg, asset);
            let tracker = inner
                .trackers
                .entry(scope.clone())
                .or_insert_with(|| BudgetTracker::new(policy));
            tracker.block(payee.to_owned());
            let (window, _) = tracker.saved_peer(&payee.to_owned());
            self.store.submit(window_row(&scope, payee, &window, true))
        };
        Ok(ticket.durable().await?)
    }

    /// Replaces `leg`'s caps (kept across restarts until `agent.toml` changes them);
    /// `config_now` is what `agent.toml` says for the leg.
    pub async fn set(
        &self,
        leg: Leg,
        caps: BudgetCaps,
        config_now: Option<BudgetCaps>,
    ) -> Result<(), BudgetsError> {
        let ticket = {
            let mut inner = self.lock();
            inner.caps.insert(leg, (caps, true));
            for (scope, tracker) in inner.trackers.iter_mut() {
                if let Some((scope_leg, asset)) = scope_parts(scope)
                    && scope_leg == leg
                {
                    tracker.set_policy(policy_of(leg, caps, asset));
                }
            }
            let set = SetCaps {
                caps,
                config_then: config_now,
            };
            let name = format!("{POLICY_SCOPE}\n{}", leg_name(leg));
            self.store.submit(RecordWrite::Budget(
                row_key(&name),
                row(&name, &serde_json::to_vec(&set).unwrap_or_default()),
            ))
        };
        Ok(ticket.durable().await?)
    }

    /// Every leg's caps and what was spent, at `now_secs`.
    pub fn report(&self, now_secs: u64) -> Vec<BudgetReport> {
        let mut inner = self.lock();
        let Inner { caps, trackers } = &mut *inner;
        [Leg::Evm, Leg::Btc, Leg::Lightning]
            .into_iter()
            .map(|leg| {
                let mut day = Vec::new();
                let mut payees = Vec::new();
                for (scope, tracker) in trackers.iter_mut() {
                    if scope_parts(scope).is_none_or(|(l, _)| l != leg) {
                        continue;
                    }
                    let peers: Vec<String> = tracker.peers().cloned().collect();
                    for peer in peers {
                        let hour = tracker.spent(&peer, now_secs).0;
                        payees.push((peer, unit_of(leg, hour)));
                    }
                    let today = tracker.spent(&String::new(), now_secs).1;
                    day.push((scope.clone(), unit_of(leg, today)));
                }
                let entry = caps.get(&leg);
                BudgetReport {
                    leg,
                    caps: entry.map(|(c, _)| *c),
                    source: if entry.is_some_and(|(_, set)| *set) {
                        "set"
                    } else {
                        "config"
                    },
                    day,
                    payees,
                }
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn policy(&self, leg: Leg, asset: Asset) -> Option<BudgetPolicy> {
        self.caps
            .get(&leg)
            .map(|(caps, _)| policy_of(leg, *caps, asset))
    }

    /// The leg's policy, or one that only refuses blocked payees.
    fn policy_or_unbounded(&self, leg: Leg, asset: Asset) -> BudgetPolicy {
        self.policy(leg, asset).unwrap_or(BudgetPolicy {
            per_request: Amount::new(asset, u128::MAX),
            per_peer_per_hour: Amount::new(asset, u128::MAX),
            per_day: Amount::new(asset, u128::MAX),
        })
    }
}

/// Lightning pays in millisatoshi and its caps are in satoshi.
fn policy_of(leg: Leg, caps: BudgetCaps, asset: Asset) -> BudgetPolicy {
    let scale = |units: u128| match leg {
        Leg::Lightning => units.saturating_mul(1000),
        _ => units,
    };
    BudgetPolicy {
        per_request: Amount::new(asset, scale(caps.per_request)),
        per_peer_per_hour: Amount::new(asset, scale(caps.per_payee_per_hour)),
        per_day: Amount::new(asset, scale(caps.per_day)),
    }
}

/// A tracked amount in the leg's cap unit (Lightning: msat shown as whole sat, rounded up).
fn unit_of(leg: Leg, units: u128) -> u128 {
    match leg {
        Leg::Lightning => units.div_ceil(1000),
        _ => units,
    }
}

/// The leg as `agent.toml` and the control socket name it.
pub fn leg_name(leg: Leg) -> &'static str {
    match leg {
        Leg::Evm => "evm",
        Leg::Btc => "btc",
        Leg::Lightning => "lightning",
    }
}

/// The leg called `name` (`evm`, `btc`, `lightning`).
pub fn leg_named(name: &str) -> Option<Leg> {
    [Leg::Evm, Leg::Btc, Leg::Lightning]
        .into_iter()
        .find(|leg| leg_name(*leg) == name)
}

/// `evm:<chain id>:<token hex>`, `btc`, `lightning`: one tracker each.
fn scope_name(leg: Leg, asset: Asset) -> String {
    match asset {
        Asset::Erc20 { chain_id, token } => {
            let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}:{chain_id}:0x{hex}", leg_name(leg))
        }
        Asset::Bitcoin => leg_name(leg).to_owned(),
    }
}

fn scope_parts(scope: &str) -> Option<(Leg, Asset)> {
    let mut parts = scope.split(':');
    let leg = leg_named(parts.next()?)?;
    match (parts.next(), parts.next()) {
        (None, _) => Some((leg, Asset::Bitcoin)),
        (Some(chain), Some(token)) => {
            let chain_id = chain.parse().ok()?;
            let bytes: Vec<u8> = (0..20)
                .map(|i| u8::from_str_radix(token.get(2 + 2 * i..4 + 2 * i)?, 16).ok())
                .collect::<Option<_>>()?;
            Some((
                leg,
                Asset::Erc20 {
                    chain_id,
                    token: bytes.try_into().ok()?,
                },
            ))
        }
        _ => None,
    }
}

/// Rows are keyed by a hash of their name (the store's keys are 32 bytes) and carry the name.
fn row_key(name: &str) -> ChannelId {
    use bitcoin::hashes::{Hash, sha256};
    ChannelId(sha256::Hash::hash(name.as_bytes()).to_byte_array())
}

fn row(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + name.len() + data.len());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Splits a stored row into its name and data.
pub(crate) fn split_row(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    let (len, rest) = bytes.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (name, data) = rest.split_at_checked(len)?;
    Some((String::from_utf8(name.to_vec()).ok()?, data.to_vec()))
}

fn window_row(scope: &str, payee: &str, window: &SavedWindow, blocked: bool) -> RecordWrite {
    let name = format!("{scope}\n{payee}");
    let mut data = vec![u8::from(blocked)];
    data.extend_from_slice(&window.encode());
    RecordWrite::Budget(row_key(&name), row(&name, &data))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: BudgetCaps = BudgetCaps {
        per_request: 100,
        per_payee_per_hour: 250,
        per_day: 1_000,
    };
    const USD: Asset = Asset::Erc20 {
        chain_id: 31337,
        token: [7; 20],
    };

    #[tokio::test]
    async fn spending_survives_a_restart_and_set_caps_hold_until_the_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = crate::datadir::DataDir::open(dir.path()).unwrap();
        let store = ChannelStore::open(&data_dir).unwrap();
        let budgets = Budgets::load(store.clone(), &[(Leg::Evm, CAPS), (Leg::Btc, CAPS)]).unwrap();
        budgets
            .authorize(Leg::Evm, USD, "seller", 100)
            .await
            .unwrap();
        budgets
            .authorize(Leg::Evm, USD, "seller", 100)
            .await
            .unwrap();
        budgets
            .authorize(Leg::Btc, Asset::Bitcoin, "key", 100)
            .await
            .unwrap();
        budgets
            .authorize(Leg::Lightning, Asset::Bitcoin, "node", 10_000_000)
            .await
            .unwrap();
        drop(budgets);

        let budgets = Budgets::load(store.clone(), &[(Leg::Evm, CAPS), (Leg::Btc, CAPS)]).unwrap();
        let refused = budgets
            .authorize(Leg::Evm, USD, "seller", 100)
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                BudgetsError::Refused {
                    cause: BudgetError::PeerHourly {
                        spent_units: 200,
                        ..
                    },
                    ..
                }
            ),
            "{refused:?}"
        );
        let evm = &budgets.report(crate::now_secs())[0];
        assert_eq!(evm.payees, vec![("seller".to_owned(), 200)]);
        assert_eq!(evm.source, "config");

        let wider = BudgetCaps {
            per_payee_per_hour: 500,
            ..CAPS
        };
        budgets.set(Leg::Evm, wider, Some(CAPS)).await.unwrap();
        budgets
            .authorize(Leg::Evm, USD, "seller", 100)
            .await
            .unwrap();
        drop(budgets);
        let budgets = Budgets::load(store.clone(), &[(Leg::Evm, CAPS)]).unwrap();
        assert_eq!(
            budgets.report(crate::now_secs())[0].caps,
            Some(wider),
            "set caps are kept"
        );
        assert_eq!(budgets.report(crate::now_secs())[0].payees[0].1, 300);
        drop(budgets);
        let edited = BudgetCaps {
            per_day: 2_000,
            ..CAPS
        };
        let budgets = Budgets::load(store, &[(Leg::Evm, edited)]).unwrap();
        assert_eq!(
            budgets.report(crate::now_secs())[0].caps,
            Some(edited),
            "an edited agent.toml wins"
        );
    }

    #[test]
    fn scopes_name_their_leg_and_asset() {
        for (leg, asset) in [
            (Leg::Evm, USD),
            (Leg::Btc, Asset::Bitcoin),
            (Leg::Lightning, Asset::Bitcoin),
        ] {
            assert_eq!(scope_parts(&scope_name(leg, asset)), Some((leg, asset)));
        }
        assert_eq!(
            split_row(&row("a\nb", b"xy")),
            Some(("a\nb".into(), b"xy".to_vec()))
        );
    }
}
