//! Outside bytes of the x402 schemes, as a seller and a buyer decode them: the base64 header
//! codec, `PaymentPayload` and `PaymentRequired`, the `batch-settlement` payload (deposit,
//! voucher, refund) down to the core voucher and the contract's channel config, and the `exact`
//! authorization down to its typed transfer. Nothing panics; whatever decodes re-encodes to
//! something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_node::x402::batch::BatchPayload;
use m2m_node::x402::exact::ExactPayload;
use m2m_node::x402::headers;
use m2m_node::x402::types::{PaymentPayload, PaymentRequired, SettlementResponse};
use serde::Deserialize;

fn payload_fields(payment: &PaymentPayload) {
    if let Ok(batch) = BatchPayload::deserialize(&payment.payload) {
        let (BatchPayload::Deposit { channel_config, voucher, .. }
        | BatchPayload::Voucher { channel_config, voucher }
        | BatchPayload::Refund { channel_config, voucher, .. }) = &batch;
        let _ = channel_config.to_contract();
        let _ = voucher.to_core();
        let again = serde_json::to_value(&batch).expect("a decoded payload encodes");
        assert_eq!(BatchPayload::deserialize(&again).ok().as_ref(), Some(&batch));
    }
    if let Ok(exact) = ExactPayload::deserialize(&payment.payload) {
        let _ = exact.authorization.to_typed();
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As `PAYMENT-SIGNATURE` (base64 JSON) and as the JSON inside it.
    if let Ok(payment) = headers::decode::<PaymentPayload>(text) {
        payload_fields(&payment);
        let again: PaymentPayload = headers::decode(&headers::encode(&payment)).expect("round trip");
        assert_eq!(again.accepted.amount, payment.accepted.amount);
    }
    if let Ok(payment) = serde_json::from_str::<PaymentPayload>(text) {
        payload_fields(&payment);
    }
    // What a buyer decodes: the 402's `PAYMENT-REQUIRED` and the `PAYMENT-RESPONSE`.
    let _ = headers::decode::<PaymentRequired>(text);
    let _ = headers::decode::<SettlementResponse>(text);
});
