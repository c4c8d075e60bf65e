//! The node's background tasks: the event pump (acknowledges ldk-node's events, records why
//! payments failed, fans received payments out, has held payments decided, wakes waiters) and
//! the redial watchdog.

use std::sync::Arc;
use std::time::Duration;

use ldk_node::{Event, Node};
use tokio::sync::Notify;

use super::hold::{ClaimerSlot, Held, settle_held};
use super::{Received, ReceivedHook};

/// How long a held payment waits before its receiver is asked again.
const HOLD_RETRY: Duration = Duration::from_millis(200);

/// How often disconnected channel peers are redialled.
const REDIAL_EVERY: Duration = Duration::from_secs(3);

/// Redials persisted peers that are not connected, every [`REDIAL_EVERY`]: after either side
/// restarts, channels come back in seconds rather than at ldk-node's own, slower reconnection.
pub(super) async fn redial_peers(node: Arc<Node>) {
    loop {
        tokio::time::sleep(REDIAL_EVERY).await;
        for peer in node.list_peers() {
            if peer.is_persisted && !peer.is_connected {
                let node = node.clone();
                // `connect` blocks on ldk-node's runtime: keep it off the async workers.
                let dialled = tokio::task::spawn_blocking(move || {
                    node.connect(peer.node_id, peer.address, true)
                })
                .await;
                if let Ok(Err(error)) = dialled {
                    tracing::debug!(%error, peer = %peer.node_id, "redial failed; retrying");
                }
            }
        }
    }
}

/// Why recent payments failed, by payment id, until their waiter reads it (bounded).
#[derive(Default)]
pub(super) struct FailureReasons(std::sync::Mutex<std::collections::HashMap<[u8; 32], String>>);

impl FailureReasons {
    /// More failures than anyone waits for are dropped wholesale.
    const LIMIT: usize = 10_000;

    pub(super) fn record(&self, id: [u8; 32], reason: String) {
        let mut reasons = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if reasons.len() >= Self::LIMIT {
            reasons.clear();
        }
        reasons.insert(id, reason);
    }

    pub(super) fn take(&self, id: &[u8; 32]) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// Who the event pump tells about what.
pub(super) struct Waiters {
    /// Woken after every event.
    pub events: Arc<Notify>,
    /// Received payments, fanned out.
    pub received: tokio::sync::broadcast::Sender<Received>,
    /// Why payments failed.
    pub failures: Arc<FailureReasons>,
    /// The durable receiver of payments with custom records.
    pub hook: Arc<std::sync::OnceLock<ReceivedHook>>,
    /// Hold such payments until the durable receiver is set.
    pub hold: bool,
    /// Who decides held payments (hold invoices).
    pub claimer: ClaimerSlot,
}

/// Drains ldk-node's event queue, logging and acknowledging each event, and wakes waiters.
pub(super) async fn pump_events(node: Arc<Node>, waiters: Waiters) {
    let Waiters {
        events,
        received,
        failures,
        hook,
        hold,
        claimer,
    } = waiters;
    loop {
        let event = node.next_event_async().await;
        match &event {
            Event::PaymentReceived {
                amount_msat,
                payment_hash,
                custom_records,
                ..
            } => {
                tracing::debug!(amount_msat, "lightning payment received");
                let payment = Received {
                    payment_hash: payment_hash.0,
                    amount_msat: *amount_msat,
                    records: custom_records
                        .iter()
                        .map(|r| (r.type_num, r.value.clone()))
                        .collect(),
                };
                // Held until the durable receiver has it on disk: acknowledging first would
                // lose the credit to a crash in between (ldk-node replays what was not marked).
                // With `hold`, a payment waits for its receiver to be set as well.
                while !payment.records.is_empty() && (hold || hook.get().is_some()) {
                    if let Some(hook) = hook.get()
                        && hook(payment.clone()).await
                    {
                        break;
                    }
                    tokio::time::sleep(HOLD_RETRY).await;
                }
                // No subscriber is fine: the payment itself is in the node's store.
                let _ = received.send(payment);
            }
            Event::PaymentFailed {
                reason, payment_id, ..
            } => {
                tracing::info!(?reason, "lightning payment failed");
                if let Some(id) = payment_id {
                    let reason = reason.map_or("no reason given".into(), |r| format!("{r:?}"));
                    failures.record(id.0, reason);
                }
            }
            Event::PaymentClaimable {
                payment_hash,
                claimable_amount_msat,
                ..
            } => {
                let held = Held {
                    payment_hash: payment_hash.0,
                    amount_msat: *claimable_amount_msat,
                };
                settle_held(&node, &claimer, held).await;
            }
            Event::ChannelReady { channel_id, .. } => {
                tracing::info!(%channel_id, "lightning channel ready");
            }
            Event::ChannelClosed {
                channel_id, reason, ..
            } => {
                tracing::info!(%channel_id, ?reason, "lightning channel closed");
            }
            _ => tracing::trace!(?event, "lightning event"),
        }
        if let Err(error) = node.event_handled() {
            tracing::warn!(%error, "lightning event not marked handled (it will come again)");
        }
        events.notify_waiters();
    }
}
