//! What happened during a run: one event per request, plus samples of the chain over time, and
//! the figures derived from them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Paid with a voucher and served.
    Voucher,
    /// Paid with an on-chain `exact` transfer and served.
    Exact,
    /// The seller refused the payment (402 with an error code).
    Refused,
    /// The buyer refused: budget exhausted, seller blocked, price too high.
    BuyerRefused,
    /// The buyer caught the seller misreporting charges and blocked it.
    SellerCaught,
    /// The connection failed (seller down, response lost).
    Failed,
}

/// One request.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Event {
    /// The buyer (its index in the fleet).
    pub buyer: u32,
    /// Milliseconds since the paying phase began.
    pub at_ms: u64,
    /// Request latency in microseconds.
    pub latency_us: u64,
    /// Outcome.
    pub outcome: Outcome,
}

/// The chain and payments at one instant.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the paying phase began.
    pub at_secs: f64,
    /// Paid readings so far.
    pub paid: u64,
    /// Gas used by every transaction since the run began.
    pub gas: u64,
    /// Transactions since the run began.
    pub transactions: u64,
}

/// Collects events from every device.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    /// Starts the clock.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// When the paying phase began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records one request of `buyer` that began at `begun`.
    pub fn record(&self, buyer: u32, begun: Instant, outcome: Outcome) {
        let event = Event {
            buyer,
            at_ms: begun.duration_since(self.started).as_millis() as u64,
            latency_us: begun.elapsed().as_micros() as u64,
            outcome,
        };
        self.lock().push(event);
    }

    /// Paid readings so far.
    pub fn paid(&self) -> u64 {
        self.lock()
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Voucher | Outcome::Exact))
            .count() as u64
    }

    /// Every event, in order of completion.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts by outcome and latency percentiles of paid requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Readings paid by voucher.
    pub vouchers: u64,
    /// Readings paid by `exact`.
    pub exact: u64,
    /// Payments the sellers refused.
    pub refused: u64,
    /// Payments the buyers refused (budget, blocked sellers).
    pub buyer_refused: u64,
    /// Times a buyer caught a seller overcharging.
    pub sellers_caught: u64,
    /// Requests that failed in transit.
    pub failed: u64,
    /// Paid readings per second over the paying phase.
    pub paid_per_sec: f64,
    /// Median latency of paid requests (ms).
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
}

impl Figures {
    /// Derives the figures from `events` over `duration`.
    pub fn of(events: &[Event], duration: Duration) -> Self {
        let count = |outcome| events.iter().filter(|e| e.outcome == outcome).count() as u64;
        let mut paid: Vec<u64> = events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Voucher | Outcome::Exact))
            .map(|e| e.latency_us)
            .collect();
        paid.sort_unstable();
        let percentile = |p: f64| {
            paid.get(((paid.len().saturating_sub(1)) as f64 * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        Self {
            vouchers: count(Outcome::Voucher),
            exact: count(Outcome::Exact),
            refused: count(Outcome::Refused),
            buyer_refused: count(Outcome::BuyerRefused),
            sellers_caught: count(Outcome::SellerCaught),
            failed: count(Outcome::Failed),
            paid_per_sec: paid.len() as f64 / duration.as_secs_f64().max(1e-9),
            p50_ms: percentile(0.5),
            p90_ms: percentile(0.9),
            p99_ms: percentile(0.99),
        }
    }
}

/// The paid requests of one leg: when each completed (seconds since the leg's paying phase
/// began) and how long it took (ms). What the report's per-leg plots are drawn from.
#[derive(Debug, Clone, Default)]
pub struct Timeline(Vec<(f64, f64)>);

impl Timeline {
    /// One paid request that completed `at_secs` into the paying phase after `latency_ms`.
    pub fn push(&mut self, at_secs: f64, latency_ms: f64) {
        self.0.push((at_secs, latency_ms));
    }

    /// Takes in another device's timeline.
    pub fn extend(&mut self, other: Timeline) {
        self.0.extend(other.0);
    }

    /// Paid requests.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was paid.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The EVM leg's, from the recorder's events (vouchers and `exact`).
    pub fn of_events(events: &[Event]) -> Self {
        Self(
            events
                .iter()
                .filter(|e| matches!(e.outcome, Outcome::Voucher | Outcome::Exact))
                .map(|e| {
                    let latency_ms = e.latency_us as f64 / 1000.0;
                    (e.at_ms as f64 / 1000.0 + latency_ms / 1000.0, latency_ms)
                })
                .collect(),
        )
    }

    /// Latencies (ms), sorted.
    pub fn latencies(&self) -> Vec<f64> {
        let mut latencies: Vec<f64> = self.0.iter().map(|p| p.1).collect();
        latencies.sort_by(f64::total_cmp);
        latencies
    }

    /// Paid so far at each completion: (seconds, count), in time order.
    pub fn cumulative(&self) -> Vec<(f64, f64)> {
        let mut times: Vec<f64> = self.0.iter().map(|p| p.0).collect();
        times.sort_by(f64::total_cmp);
        times
            .into_iter()
            .enumerate()
            .map(|(i, at)| (at, (i + 1) as f64))
            .collect()
    }
}

/// Where every unit of one asset ended up: the report's conservation picture.
#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    /// What is counted, with its unit.
    pub asset: &'static str,
    /// What went in (top-ups).
    pub total: u128,
    /// Where it is at the end, by holder; sums to `total` when every unit is accounted for.
    pub parts: Vec<(&'static str, u128)>,
}

/// Resident memory of this process in bytes (Linux `/proc/self/status`), if known.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
