//! HTTP request latency of an agent's servers: a histogram per server, method and status,
//! observed by the hardened server setup (`seller::serve_router`) from the moment a request's
//! head is read until its response head is ready (for a paid reading: the payment checked,
//! made durable, and the reading produced).
//!
//! A service (EVM seller, satoshi seller, gateway) carries a [`RequestTiming`] that the agent
//! attaches to its metrics before serving; a service used alone times nothing.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Bucket bounds (seconds): half a millisecond to ten seconds, about three per decade.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    server: &'static str,
    method: &'static str,
    status: u16,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The histogram family of one agent.
pub(super) type RequestHistograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// A new, empty family.
pub(super) fn histograms() -> RequestHistograms {
    Family::new_with_constructor(histogram)
}

/// Times the requests of one server (`evm`, `btc`, `gateway`, `metrics`) into its agent's
/// family; cheap to clone.
#[derive(Clone)]
pub struct RequestTimer {
    histograms: RequestHistograms,
    server: &'static str,
}

impl std::fmt::Debug for RequestTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTimer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl RequestTimer {
    pub(super) fn new(histograms: RequestHistograms, server: &'static str) -> Self {
        Self { histograms, server }
    }

    /// One request: its method, the status answered and how long it took.
    pub fn observe(&self, method: &axum::http::Method, status: u16, took: Duration) {
        // A fixed set, so that a client inventing methods cannot grow the family.
        let method = match *method {
            axum::http::Method::GET => "GET",
            axum::http::Method::HEAD => "HEAD",
            axum::http::Method::POST => "POST",
            axum::http::Method::CONNECT => "CONNECT",
            _ => "other",
        };
        self.histograms
            .get_or_create(&RequestLabels {
                server: self.server,
                method,
                status,
            })
            .observe(took.as_secs_f64());
    }
}

/// A service's link to its agent's request histograms, set once (as `events::EventLink`).
#[derive(Debug, Default)]
pub struct RequestTiming {
    timer: OnceLock<RequestTimer>,
}

impl RequestTiming {
    /// Times this service's requests with `timer`; a second call keeps the first.
    pub fn attach(&self, timer: RequestTimer) {
        let _ = self.timer.set(timer);
    }

    /// The timer, if one is attached.
    pub fn timer(&self) -> Option<RequestTimer> {
        self.timer.get().cloned()
    }
}
