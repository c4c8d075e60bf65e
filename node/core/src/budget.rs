//! The budget policy of an autonomous buyer: caps per request, per peer per hour, and per day,
//! and a list of peers cut off for misbehaving.
//!
//! Windows are rolling, kept as fixed buckets (60 one-minute buckets per peer for the hour, 24
//! one-hour buckets for the day), so memory per peer is constant and a spend leaves the window
//! exactly one bucket width after it aged out.
//!
//! A tracker is saved and restored window by window ([`SavedWindow`], a few bytes per bucket
//! in use), so a store can keep one row per peer and rewrite only the rows a payment touched; a
//! restart then continues the same hour and day instead of starting them afresh.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::amount::{Amount, Asset};
use crate::records::RecordError;

/// One-minute buckets in a peer's hour window.
pub const HOUR_BUCKETS: usize = 60;
/// One-hour buckets in the day window.
pub const DAY_BUCKETS: usize = 24;

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

/// A window as saved: the newest bucket number and the buckets that hold something.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedWindow {
    /// Absolute number of the newest bucket written.
    pub newest: u64,
    /// `(slot, units)` of every non-empty bucket.
    pub buckets: Vec<(u8, u128)>,
}

const SAVED_WINDOW_VERSION: u8 = 1;

impl SavedWindow {
    /// Version byte, newest bucket (8 bytes), count, then 17 bytes per non-empty bucket.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + 17 * self.buckets.len());
        out.push(SAVED_WINDOW_VERSION);
        out.extend_from_slice(&self.newest.to_be_bytes());
        out.push(self.buckets.len() as u8);
        for (slot, units) in &self.buckets {
            out.push(*slot);
            out.extend_from_slice(&units.to_be_bytes());
        }
        out
    }

    /// Reads [`Self::encode`]'s layout.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or(RecordError::Corrupt("budget window"))?;
        if version != SAVED_WINDOW_VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: version,
                supported: SAVED_WINDOW_VERSION,
            });
        }
        let corrupt = RecordError::Corrupt("budget window");
        let (newest, rest) = rest.split_at_checked(8).ok_or(corrupt)?;
        let (&count, rest) = rest.split_first().ok_or(corrupt)?;
        if rest.len() != 17 * usize::from(count) {
            return Err(corrupt);
        }
        let buckets = rest
            .chunks_exact(17)
            .map(|chunk| {
                let mut units = [0u8; 16];
                units.copy_from_slice(&chunk[1..]);
                (chunk[0], u128::from_be_bytes(units))
            })
            .collect();
        let mut newest_bytes = [0u8; 8];
        newest_bytes.copy_from_slice(newest);
        Ok(Self {
            newest: u64::from_be_bytes(newest_bytes),
            buckets,
        })
    }
}

impl<const N: usize> Window<N> {
    fn saved(&self) -> SavedWindow {
        SavedWindow {
            newest: self.newest,
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, units)| **units != 0)
                .map(|(slot, units)| (slot as u8, *units))
                .collect(),
        }
    }

    fn restored(saved: &SavedWindow) -> Result<Self, RecordError> {
        let mut window = Self::new();
        window.newest = saved.newest;
        for (slot, units) in &saved.buckets {
            let bucket = window
                .buckets
                .get_mut(usize::from(*slot))
                .ok_or(RecordError::Corrupt("budget bucket out of range"))?;
            *bucket = *units;
        }
        Ok(window)
    }
}

/// Tracks spending against a [`BudgetPolicy`], per peer `P` (e.g. a payee address).
#[derive(Debug, Clone)]
pub struct BudgetTracker<P: Ord + Clone> {
    policy: BudgetPolicy,
    peers: BTreeMap<P, Window<HOUR_BUCKETS>>,
    day: Window<DAY_BUCKETS>,
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

    /// Replaces the caps; what was spent stays spent.
    pub fn set_policy(&mut self, policy: BudgetPolicy) {
        self.policy = policy;
    }

    /// What `peer` received in the rolling hour and everyone in the rolling day, at `now_secs`.
    pub fn spent(&mut self, peer: &P, now_secs: u64) -> (u128, u128) {
        let hour = self
            .peers
            .get_mut(peer)
            .map_or(0, |window| window.spent(now_secs / 60));
        (hour, self.day.spent(now_secs / 3600))
    }

    /// Every peer paid or blocked.
    pub fn peers(&self) -> impl Iterator<Item = &P> {
        self.peers
            .keys()
            .chain(self.blocked.iter().filter(|p| !self.peers.contains_key(*p)))
    }

    /// `peer`'s hour window and whether it is blocked, for saving.
    pub fn saved_peer(&self, peer: &P) -> (SavedWindow, bool) {
        let window = self.peers.get(peer).map(Window::saved).unwrap_or_default();
        (window, self.blocked.contains(peer))
    }

    /// The day window, for saving.
    pub fn saved_day(&self) -> SavedWindow {
        self.day.saved()
    }

    /// Puts back a peer saved by [`Self::saved_peer`].
    pub fn restore_peer(
        &mut self,
        peer: P,
        window: &SavedWindow,
        blocked: bool,
    ) -> Result<(), RecordError> {
        if blocked {
            self.blocked.insert(peer.clone());
        }
        self.peers.insert(peer, Window::restored(window)?);
        Ok(())
    }

    /// Puts back the day window saved by [`Self::saved_day`].
    pub fn restore_day(&mut self, window: &SavedWindow) -> Result<(), RecordError> {
        self.day = Window::restored(window)?;
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
