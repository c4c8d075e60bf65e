//! Taking a payment for one reading, whatever carried it: the HTTP route's `PAYMENT-SIGNATURE`
//! header and a priced MQTT topic's user property both end here, so both check the offer the
//! same way, persist the voucher before answering, and report the same event.

use std::sync::atomic::Ordering;

use super::batch::Refusal;
use super::{Route, Scheme, Seller};
use crate::events::{AgentEvent, Leg, Payment};
use crate::x402::codes;
use crate::x402::types::{
    PaymentPayload, PaymentRequired, PaymentRequirements, SettlementResponse,
};

impl Seller {
    /// Checks `payload` against `route`'s offers and takes it (batch-settlement: voucher made
    /// durable; exact: transfer settled on chain). On `Ok` the reading may be served with the
    /// returned settlement as its `PAYMENT-RESPONSE`; on `Err` nothing was charged.
    pub(crate) async fn accept_payment(
        &self,
        route: &Route,
        payload: &PaymentPayload,
    ) -> Result<SettlementResponse, Refusal> {
        self.accept_payment_of(route, payload, route.price).await
    }

    /// [`Self::accept_payment`] of `price` on the route's batch-settlement offer: what a tick
    /// stream's voucher covers (the readings paid by ticks since the last voucher, and its own).
    pub(crate) async fn accept_payment_of(
        &self,
        route: &Route,
        payload: &PaymentPayload,
        price: u128,
    ) -> Result<SettlementResponse, Refusal> {
        let scheme = offered_scheme(self, route, &payload.accepted)?;
        if price != route.price && scheme != Scheme::BatchSettlement {
            return Err(Refusal::new(
                codes::UNSUPPORTED_SCHEME,
                "only batch-settlement vouchers cover several readings",
            ));
        }
        let settlement = match scheme {
            Scheme::BatchSettlement => self.pay_batch(route, &payload.payload, price).await?,
            Scheme::Exact => {
                self.settle_exact(&payload.accepted, &payload.payload)
                    .await?
            }
        };
        self.events.publish(|| {
            AgentEvent::PaymentReceived(Payment {
                leg: Leg::Evm,
                scheme: payload.accepted.scheme.clone(),
                amount: price,
                resource: route.config.path.clone(),
            })
        });
        Ok(settlement)
    }

    /// The `PAYMENT-REQUIRED` for `route` at `url` after `refusal` (if any): its code, and the
    /// corrective channel state merged into the batch offer's `extra`. `None` when the seller
    /// itself failed (the payment could not be recorded): that is no 402 but a server error.
    pub(crate) fn terms_after(
        &self,
        route: &Route,
        url: &str,
        refusal: Option<&Refusal>,
    ) -> Option<PaymentRequired> {
        if let Some(refusal) = refusal {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(code = refusal.code, message = %refusal.message, "payment refused");
            if refusal.internal {
                tracing::error!(message = %refusal.message, "payment not recorded");
                return None;
            }
        }
        let mut required = self.payment_required(route, url, refusal.map(|r| r.code));
        if let Some(extra) = refusal.and_then(|r| r.extra.as_ref()) {
            for offer in &mut required.accepts {
                if offer.scheme == Scheme::BatchSettlement.as_str()
                    && let (Some(target), Some(patch)) = (
                        offer.extra.as_mut().and_then(|e| e.as_object_mut()),
                        extra.as_object(),
                    )
                {
                    target.extend(patch.clone());
                }
            }
        }
        Some(required)
    }
}

/// The scheme of `accepted`, if it is one of the route's requirements exactly.
fn offered_scheme(
    seller: &Seller,
    route: &Route,
    accepted: &PaymentRequirements,
) -> Result<Scheme, Refusal> {
    let scheme = route
        .config
        .schemes
        .iter()
        .copied()
        .find(|s| s.as_str() == accepted.scheme)
        .ok_or_else(|| {
            Refusal::new(
                codes::UNSUPPORTED_SCHEME,
                format!("{} is not offered here", accepted.scheme),
            )
        })?;
    let same_address = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let matches = seller.requirements(route).iter().any(|offer| {
        offer.scheme == accepted.scheme
            && offer.network == accepted.network
            && offer.amount == accepted.amount
            && same_address(&offer.asset, &accepted.asset)
            && same_address(&offer.pay_to, &accepted.pay_to)
    });
    if !matches {
        return Err(Refusal::new(
            codes::INVALID_PAYMENT_REQUIREMENTS,
            "accepted requirements differ from this route's price list",
        ));
    }
    Ok(scheme)
}
