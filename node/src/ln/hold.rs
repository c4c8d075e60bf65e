//! Hold invoices: an invoice for a payment hash the caller chose, whose payment is claimed (or
//! failed back) only when the caller decides — ldk-node's `receive_for_hash`, its
//! `PaymentClaimable` event and `claim_for_hash` / `fail_for_hash`.
//!
//! One claimer decides for every held payment ([`LnNode::set_hold_claimer`]; a priced-topic
//! seller is one). It is asked before the event is acknowledged, so a crash between its decision
//! and the claim replays the event and asks again: a claimer answers the same way twice. A held
//! payment that no claimer takes within [`CLAIMER_GRACE`] (none set: the process is starting,
//! or sells nothing that way) is failed back: the payer gets its money back, nothing is lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ldk_node::Node;
use ldk_node::lightning::types::payment::{PaymentHash, PaymentPreimage};
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};

use super::{LnError, LnNode};

/// How long a held payment waits for a claimer to be set before it is failed back.
pub const CLAIMER_GRACE: Duration = Duration::from_secs(15);

/// A payment waiting for its claimer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The payment hash (the invoice's).
    pub payment_hash: [u8; 32],
    /// What arrived, msat.
    pub amount_msat: u64,
}

/// What the claimer decided.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HoldDecision {
    /// Claim with this preimage (it must hash to the payment hash).
    Claim([u8; 32]),
    /// Fail it back to the payer.
    Fail,
}

/// Decides a held payment; called once per `PaymentClaimable` event (again after a crash).
pub type HoldClaimer =
    Arc<dyn Fn(Held) -> Pin<Box<dyn Future<Output = HoldDecision> + Send>> + Send + Sync>;

/// The claimer slot the event pump reads.
pub(super) type ClaimerSlot = Arc<RwLock<Option<HoldClaimer>>>;

impl LnNode {
    /// An invoice for `amount_msat` whose payment is held for the claimer: it pays `payment_hash`
    /// and this node learns its preimage from the claimer, not from its own store.
    pub fn hold_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry_secs: u32,
        payment_hash: [u8; 32],
    ) -> Result<Bolt11Invoice, LnError> {
        let description = Description::new(description.to_owned())
            .map_err(|e| LnError::Input(format!("invoice description: {e}")))?;
        Ok(self.node.bolt11_payment().receive_for_hash(
            amount_msat,
            &Bolt11InvoiceDescription::Direct(description),
            expiry_secs,
            PaymentHash(payment_hash),
        )?)
    }

    /// Sets (or, with `None`, clears) the claimer of held payments, replacing any before it.
    pub fn set_hold_claimer(&self, claimer: Option<HoldClaimer>) {
        *self
            .claimer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = claimer;
    }
}

/// Settles one `PaymentClaimable` event: asks the claimer (waiting up to [`CLAIMER_GRACE`] for
/// one), then claims or fails back.
pub(super) async fn settle_held(node: &Node, slot: &ClaimerSlot, held: Held) {
    let deadline = tokio::time::Instant::now() + CLAIMER_GRACE;
    let claimer = loop {
        let current = slot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match current {
            Some(claimer) => break Some(claimer),
            None if tokio::time::Instant::now() >= deadline => break None,
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let decision = match claimer {
        Some(claimer) => claimer(held).await,
        None => {
            tracing::warn!("a held payment arrived and nothing claims it: failed back");
            HoldDecision::Fail
        }
    };
    let hash = PaymentHash(held.payment_hash);
    let outcome = match decision {
        HoldDecision::Claim(preimage) => {
            node.bolt11_payment()
                .claim_for_hash(hash, held.amount_msat, PaymentPreimage(preimage))
        }
        HoldDecision::Fail => node.bolt11_payment().fail_for_hash(hash),
    };
    match outcome {
        Ok(()) => tracing::debug!(amount_msat = held.amount_msat, %decision, "held payment"),
        Err(error) => tracing::warn!(%error, "settling a held payment"),
    }
}

impl std::fmt::Display for HoldDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the preimage: it is the buyer's key to its reading until the claim settles.
        f.write_str(match self {
            HoldDecision::Claim(_) => "claim",
            HoldDecision::Fail => "fail",
        })
    }
}

impl std::fmt::Debug for HoldDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
