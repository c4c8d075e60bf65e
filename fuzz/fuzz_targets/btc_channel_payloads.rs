//! Outside bytes of the `btc-channel` scheme, as the satoshi seller decodes them: the header
//! codec, the channel and voucher wire forms down to the core's terms and voucher, the offer's
//! extra fields, and the cooperative-close request. Nothing panics; terms and vouchers that
//! decode re-encode to the same wire form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_node::x402::btc::{
    BtcChannelPayload, BtcChannelWire, BtcOfferExtra, BtcVoucherWire, CloseRequestWire,
};
use m2m_node::x402::headers;
use m2m_node::x402::types::PaymentPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let payloads = headers::decode::<PaymentPayload>(text)
        .ok()
        .and_then(|payment| serde_json::from_value::<BtcChannelPayload>(payment.payload).ok())
        .into_iter()
        .chain(serde_json::from_str::<BtcChannelPayload>(text).ok());
    for payload in payloads {
        if let Ok(terms) = payload.channel.to_terms() {
            let again = BtcChannelWire::from_terms(&terms);
            assert_eq!(again.to_terms().ok(), Some(terms));
        }
        if let Ok(voucher) = payload.voucher.to_voucher() {
            let again = BtcVoucherWire::from_voucher(&voucher);
            assert_eq!(again.to_voucher().ok(), Some(voucher));
        }
    }
    if let Ok(extra) = serde_json::from_str::<BtcOfferExtra>(text) {
        let _ = extra.min_close_fee_rate();
    }
    if let Ok(close) = serde_json::from_str::<CloseRequestWire>(text) {
        let _ = close.to_request();
    }
});
