//! The budget policy of an autonomous buyer: caps per request, per peer per hour, and per day,
//! and a list of peers cut off for misbehaving.
//!
//! Windows are rolling, kept as fixed buckets (60 one-minute buckets per peer for the hour, 24
//! one-hour buckets for the day), so memory per peer is constant and a spend leaves the window
//! exactly one bucket width after it aged out.

use alloc::collections::{BTreeMap, BTreeSet};

use crate::amount::{Amount, Asset};

/// The caps. All in one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Most one request may cost.
    pub per_request: Amount,
    /// Most one peer may receive in any rolling hour.
    pub per_peer_per_hour: Amount,
    /// Most all peers together may receive in any rolling day.
    pub per_day: Amount,
}

/// Why a payment was refused; nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetError {
    /// The payment is in another asset than the policy.
    WrongAsset(Asset),
    /// The request costs more than the per-request cap.
    PerRequest {
        /// The price.
        price_units: u128,
        /// The cap.
        cap_units: u128,
    },
    /// The peer's rolling-hour cap would be exceeded.
    PeerHourly {
        /// Already spent with this peer in the window.
        spent_units: u128,
        /// The cap.
        cap_units: u128,
    },
    /// The rolling-day cap would be exceeded.
    Daily {
        /// Already spent in the window.
        spent_units: u128,
        /// The cap.
        cap_units: u128,
    },
    /// The peer was cut off.
    PeerBlocked,
}

impl core::fmt::Display for BudgetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BudgetError::WrongAsset(asset) => write!(f, "budget is not in {asset:?}"),
            BudgetError::PerRequest {
                price_units,
                cap_units,
            } => {
                write!(
                    f,
                    "price {price_units} above the per-request cap {cap_units}"
                )
            }
            BudgetError::PeerHourly {
                spent_units,
                cap_units,
            } => {
                write!(
                    f,
                    "peer hourly cap {cap_units} reached ({spent_units} spent)"
                )
            }
            BudgetError::Daily {
                spent_units,
                cap_units,
            } => write!(f, "daily cap {cap_units} reached ({spent_units} spent)"),
            BudgetError::PeerBlocked => f.write_str("peer is cut off"),
        }
    }
}

impl core::error::Error for BudgetError {}

/// Rolling sum over `N` buckets of `bucket_secs` seconds each.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window<const N: usize> {
    buckets: [u128; N],
    /// Absolute bucket number (`now / bucket_secs`) of the newest bucket written.
    newest: u64,
}

impl<const N: usize> Window<N> {
    const fn new() -> Self {
        Self {
            buckets: [0; N],
            newest: 0,
        }
    }

    fn advance(&mut self, bucket: u64) {
        if bucket <= self.newest {
            return;
        }
        let stale = (bucket - self.newest).min(N as u64);
        for step in 1..=stale {
            self.buckets[((self.newest + step) % N as u64) as usize] = 0;
        }
        self.newest = bucket;
    }

    fn spent(&mut self, bucket: u64) -> u128 {
        self.advance(bucket);
        self.buckets
            .iter()
            .fold(0u128, |sum, b| sum.saturating_add(*b))
    }

    fn add(&mut self, bucket: u64, units: u128) {
        self.advance(bucket);
        let slot = &mut self.buckets[(bucket.max(self.newest) % N as u64) as usize];
        *slot = slot.saturating_add(units);
    }
}

/// Tracks spending against a [`BudgetPolicy`], per peer `P` (e.g. a payee address).
#[derive(Debug, Clone)]
pub struct BudgetTracker<P: Ord + Clone> {
    policy: BudgetPolicy,
    peers: BTreeMap<P, Window<60>>,
    day: Window<24>,
    blocked: BTreeSet<P>,
}

impl<P: Ord + Clone> BudgetTracker<P> {
    /// A tracker with nothing spent.
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            peers: BTreeMap::new(),
            day: Window::new(),
            blocked: BTreeSet::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &BudgetPolicy {
        &self.policy
    }

    /// Checks a payment of `price` to `peer` at `now_secs` and, if every cap allows it, records it.
    pub fn authorize(&mut self, peer: &P, price: Amount, now_secs: u64) -> Result<(), BudgetError> {
        if price.asset() != self.policy.per_request.asset() {
            return Err(BudgetError::WrongAsset(price.asset()));
        }
        if self.blocked.contains(peer) {
            return Err(BudgetError::PeerBlocked);
        }
        let units = price.base_units();
        let cap = self.policy.per_request.base_units();
        if units > cap {
            return Err(BudgetError::PerRequest {
                price_units: units,
                cap_units: cap,
            });
        }
        let (minute, hour) = (now_secs / 60, now_secs / 3600);
        let peer_cap = self.policy.per_peer_per_hour.base_units();
        let peer_spent = self
            .peers
            .get_mut(peer)
            .map_or(0, |window| window.spent(minute));
        if peer_spent.saturating_add(units) > peer_cap {
            return Err(BudgetError::PeerHourly {
                spent_units: peer_spent,
                cap_units: peer_cap,
            });
        }
        let day_cap = self.policy.per_day.base_units();
        let day_spent = self.day.spent(hour);
        if day_spent.saturating_add(units) > day_cap {
            return Err(BudgetError::Daily {
                spent_units: day_spent,
                cap_units: day_cap,
            });
        }
        self.peers
            .entry(peer.clone())
            .or_insert_with(Window::new)
            .add(minute, units);
        self.day.add(hour, units);
        Ok(())
    }

    /// Cuts `peer` off (e.g. it overcharged or failed to serve).
    pub fn block(&mut self, peer: P) {
        self.blocked.insert(peer);
    }

    /// Whether `peer` is cut off.
    pub fn is_blocked(&self, peer: &P) -> bool {
        self.blocked.contains(peer)
    }
}
