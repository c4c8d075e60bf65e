//! x402 v2 messages: the specification's examples parse, headers round-trip, hostile header
//! values get typed errors, and batch-settlement payloads convert to core vouchers.

use m2m_node::x402::batch::{BatchPayload, BatchPayloadError};
use m2m_node::x402::headers::{self, HeaderError, MAX_HEADER_BYTES};
use m2m_node::x402::types::{PaymentPayload, PaymentRequired, SettlementResponse};
use serde_json::json;

fn spec_payment_required() -> serde_json::Value {
    json!({
        "x402Version": 2,
        "error": "PAYMENT-SIGNATURE header is required",
        "resource": {"url": "https://api.example.com/premium-data", "description": "Access to premium market data", "mimeType": "application/json"},
        "accepts": [{
            "scheme": "exact", "network": "eip155:84532", "amount": "10000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}
        }],
        "extensions": {}
    })
}

#[test]
fn specification_examples_parse_and_round_trip_through_headers() {
    let required: PaymentRequired = serde_json::from_value(spec_payment_required()).unwrap();
    assert_eq!(
        required.accepts[0].pay_to,
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
    );
    assert_eq!(
        required.resource.mime_type.as_deref(),
        Some("application/json")
    );
    let header = headers::encode(&required);
    assert_eq!(
        headers::decode::<PaymentRequired>(&header).unwrap(),
        required
    );
    assert_eq!(
        serde_json::to_value(&required).unwrap(),
        spec_payment_required(),
        "field names as specified"
    );

    let settled: SettlementResponse = serde_json::from_value(json!({
        "success": true, "transaction": "0x1234", "network": "eip155:84532",
        "payer": "0x857b06519E91e3A54538791bDbb0E22373e36b66"
    }))
    .unwrap();
    assert!(settled.success && settled.amount.is_none());
}

#[test]
fn hostile_header_values_get_typed_errors() {
    assert!(matches!(
        headers::decode::<PaymentRequired>(&"A".repeat(MAX_HEADER_BYTES + 1)),
        Err(HeaderError::TooLong(_))
    ));
    assert!(matches!(
        headers::decode::<PaymentRequired>("not base64!"),
        Err(HeaderError::Base64(_))
    ));
    let not_json = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"{oops");
    assert!(matches!(
        headers::decode::<PaymentRequired>(&not_json),
        Err(HeaderError::Json(_))
    ));
    let mut v1 = spec_payment_required();
    v1["x402Version"] = json!(1);
    assert!(matches!(
        headers::decode::<PaymentRequired>(&headers::encode(&v1)),
        Err(HeaderError::Version(1))
    ));
    let missing = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        br#"{"x402Version":2}"#,
    );
    assert!(matches!(
        headers::decode::<PaymentPayload>(&missing),
        Err(HeaderError::Json(_))
    ));
}

#[test]
fn batch_settlement_voucher_payload_converts_to_a_core_voucher() {
    let signature = format!("0x{}1b", "ab".repeat(64));
    let payload = json!({
        "type": "voucher",
        "channelConfig": {
            "payer": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
            "payerAuthorizer": "0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
            "receiver": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "receiverAuthorizer": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "withdrawDelay": 900,
            "salt": format!("0x{}", "00".repeat(32))
        },
        "voucher": {"channelId": format!("0x{}", "11".repeat(32)), "maxClaimableAmount": "5000", "signature": signature}
    });
    let parsed: BatchPayload = serde_json::from_value(payload.clone()).unwrap();
    let BatchPayload::Voucher {
        channel_config,
        voucher,
    } = &parsed
    else {
        panic!("not a voucher payload")
    };
    let core = voucher.to_core().unwrap();
    assert_eq!(core.max_claimable_units, 5000);
    assert_eq!(core.signature.0[64], 0x1b);
    assert_eq!(
        channel_config
            .to_contract()
            .unwrap()
            .withdrawDelay
            .to::<u64>(),
        900
    );
    // Addresses are written back in lower case (valid for every x402 client); values are kept.
    let written = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        serde_json::from_value::<BatchPayload>(written.clone()).unwrap(),
        parsed
    );
    assert_eq!(written["voucher"], payload["voucher"]);

    let mut bad = voucher.clone();
    bad.max_claimable_amount = "-1".into();
    assert_eq!(
        bad.to_core(),
        Err(BatchPayloadError::Field("maxClaimableAmount"))
    );
    bad = voucher.clone();
    bad.signature = vec![1u8; 64].into();
    assert_eq!(bad.to_core(), Err(BatchPayloadError::Field("signature")));
}
