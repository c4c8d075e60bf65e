//! What carries a paid request to the seller and its answer back: HTTP here (the paid retry with
//! `PAYMENT-SIGNATURE`), a priced MQTT topic in `crate::mqtt::buyer`. The buyer's payment logic
//! (budget, channel, voucher persisted first, the seller's response checked before the next
//! voucher, corrective resync) is written once against [`PaymentCarrier`].

use std::future::Future;

use super::{BuyerError, payment_required, settlement};
use crate::x402::headers::{self, PAYMENT_SIGNATURE};
use crate::x402::types::{PaymentPayload, PaymentRequired, SettlementResponse};

/// The seller's answer to a paid request.
#[derive(Debug)]
pub enum PaidAnswer {
    /// Served: what it served and its `PAYMENT-RESPONSE`, if it sent one.
    Served {
        /// Status (200 for every carrier but HTTP's other successes).
        status: u16,
        /// The reading (or, on MQTT, the wrapped reading key).
        body: Vec<u8>,
        /// The settlement.
        settlement: Option<SettlementResponse>,
    },
    /// Refused with a `PAYMENT-REQUIRED` (its `error` says why; corrective ones carry the
    /// channel's state).
    PaymentRequired(PaymentRequired),
}

/// Carries one paid request. A failure of the carrier itself (connection, timeout, a non-402
/// refusal) is an error; the buyer then assumes the voucher may have been seen.
pub trait PaymentCarrier: Sync {
    /// Sends `message` and waits for the answer.
    fn carry(
        &self,
        message: PaymentPayload,
    ) -> impl Future<Output = Result<PaidAnswer, BuyerError>> + Send;
}

/// The paid retry of an HTTP GET.
pub(super) struct HttpCarrier<'a> {
    pub(super) http: &'a reqwest::Client,
    pub(super) url: &'a str,
}

impl PaymentCarrier for HttpCarrier<'_> {
    async fn carry(&self, message: PaymentPayload) -> Result<PaidAnswer, BuyerError> {
        let response = self
            .http
            .get(self.url)
            .header(PAYMENT_SIGNATURE, headers::encode(&message))
            .send()
            .await?;
        let status = response.status().as_u16();
        if status == 402 {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            return Ok(PaidAnswer::PaymentRequired(payment_required(
                &headers,
                Some(&body),
            )?));
        }
        if !response.status().is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(BuyerError::Unavailable {
                status,
                message: crate::http_client::failure_message(&body),
            });
        }
        let settlement = settlement(response.headers())?;
        Ok(PaidAnswer::Served {
            status,
            body: response.bytes().await?.to_vec(),
            settlement,
        })
    }
}
