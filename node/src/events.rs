//! What happened in an agent, as typed events: payments received and sent on each leg, claims
//! confirmed, channels closed, buys refused or failed. Services publish on an [`EventBus`] once
//! the effect is durable (a payment received is announced after its voucher is persisted);
//! subscribers (an embedding application, the CLI, later the dashboard) read a
//! `tokio::sync::broadcast` stream. A slow subscriber misses events (it is told how many)
//! rather than slowing payments down.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::sync::broadcast;

/// Which payment leg an event is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// EVM escrow channels and `exact` transfers (amounts in the token's atomic units).
    Evm,
    /// Bitcoin Taproot channels (amounts in satoshi).
    Btc,
    /// Lightning (amounts in millisatoshi).
    Lightning,
}

/// One payment, received or sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    /// The leg it went over.
    pub leg: Leg,
    /// The scheme: `batch-settlement`, `exact`, `btc-channel`, `l402`, `keysend`.
    pub scheme: String,
    /// The amount, in the leg's unit (token atomic units, sat, msat).
    pub amount: u128,
    /// What was paid for (a path or URL).
    pub resource: String,
}

/// An event of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A payment was accepted and made durable; the reading was then served.
    PaymentReceived(Payment),
    /// A payment was made and what it bought was received.
    PaymentSent(Payment),
    /// A buy did not go through (the seller refused, was unreachable, or a limit said no).
    BuyFailed {
        /// The resource.
        url: String,
        /// Why, in one line.
        reason: String,
    },
    /// A budget refused a payment before it left the device.
    BudgetRefused {
        /// The leg.
        leg: Leg,
        /// Who would have been paid.
        payee: String,
        /// Which cap, in one line.
        reason: String,
    },
    /// Claims were confirmed on chain.
    ClaimConfirmed {
        /// The leg.
        leg: Leg,
        /// How many channels were claimed.
        channels: usize,
    },
    /// A channel this device pays on was opened (its first deposit or funding went out).
    ChannelOpened {
        /// The leg.
        leg: Leg,
        /// The channel id (hex).
        id: String,
    },
    /// A payee was cut off for overcharging; the budget refuses it from now on.
    PeerBlocked {
        /// The leg.
        leg: Leg,
        /// Who.
        payee: String,
    },
    /// A channel was closed on chain (a Bitcoin close before expiry).
    ChannelClosed {
        /// The leg.
        leg: Leg,
        /// The closing transaction.
        txid: String,
    },
    /// The agent is stopping (in-flight payments settle, due claims are made).
    Stopping,
}

/// Where services publish events; cheap to clone. Publishing never blocks and never fails:
/// with no subscriber an event is simply dropped.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<AgentEvent>,
    /// See every event synchronously, before any subscriber (counters that must not miss one,
    /// as a lagging subscriber may).
    observers: Arc<OnceLock<Vec<Arc<dyn EventObserver>>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.sender.receiver_count())
            .finish_non_exhaustive()
    }
}

/// Something that must see every event as it is published (the agent's metrics, the
/// dashboard's activity); it must be
/// quick and must not block, since publishing happens on the payment path.
pub trait EventObserver: Send + Sync {
    /// One event, as it is published.
    fn observe(&self, event: &AgentEvent);
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus {
    /// A bus that keeps up to `capacity` events for each lagging subscriber.
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity.max(1)).0,
            observers: Arc::new(OnceLock::new()),
        }
    }

    /// Sets the observers that see every event, in this order; a second call keeps the first
    /// set (set once, so publishing reads them without a lock).
    pub fn observe_with(&self, observers: Vec<Arc<dyn EventObserver>>) {
        let _ = self.observers.set(observers);
    }

    /// Publishes `event` to the observers and every current subscriber.
    pub fn publish(&self, event: AgentEvent) {
        for observer in self.observers.get().into_iter().flatten() {
            observer.observe(&event);
        }
        let _ = self.sender.send(event);
    }

    /// A new subscription, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.sender.subscribe()
    }
}

/// A service's link to the bus of the agent that runs it, set once; before that (a service
/// used alone), events go nowhere.
#[derive(Debug, Default)]
pub struct EventLink {
    bus: OnceLock<Arc<EventBus>>,
}

impl EventLink {
    /// Connects to `bus`; a second call keeps the first bus.
    pub fn attach(&self, bus: Arc<EventBus>) {
        let _ = self.bus.set(bus);
    }

    /// Publishes on the attached bus, if any.
    pub fn publish(&self, event: impl FnOnce() -> AgentEvent) {
        if let Some(bus) = self.bus.get() {
            bus.publish(event());
        }
    }
}

/// An error and its causes on one line ("outer: inner: innermost"), skipping causes already
/// quoted by their parent's message: what an event or a command line shows.
pub fn error_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_subscribers_once_attached() {
        let link = EventLink::default();
        link.publish(|| AgentEvent::Stopping); // nobody attached: dropped
        let bus = Arc::new(EventBus::new(4));
        let mut events = bus.subscribe();
        link.attach(bus);
        link.publish(|| AgentEvent::ClaimConfirmed {
            leg: Leg::Evm,
            channels: 2,
        });
        assert_eq!(
            events.try_recv().unwrap(),
            AgentEvent::ClaimConfirmed {
                leg: Leg::Evm,
                channels: 2
            }
        );
        assert!(
            events.try_recv().is_err(),
            "the unattached event was dropped"
        );
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let event = AgentEvent::PaymentReceived(Payment {
            leg: Leg::Btc,
            scheme: "btc-channel".into(),
            amount: 25,
            resource: "/temperature".into(),
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "payment_received");
        assert_eq!(json["leg"], "btc");
    }
}
