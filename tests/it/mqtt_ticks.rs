//! Readings of a priced MQTT topic paid by hash-chain ticks, on mosquitto and anvil: the seller
//! offers K ticks per voucher; the buyer's first voucher opens a stream, the next K readings are
//! each paid with one tick (one SHA-256 for the seller), the voucher after them pays for those K
//! readings and its own. At most K readings are ever on credit, and on chain the seller holds
//! exactly what the vouchers covered. A tick of a stream the seller does not know gets a coded
//! refusal and no key.

use std::sync::atomic::Ordering;

use m2m::node::mqtt::buyer::MqttBuyerOptions;
use m2m::node::mqtt::seller::MqttSellerOptions;
use m2m::node::mqtt::wire;
use m2m::node::x402::headers;
use m2m::node::x402::types::PaymentRequired;

use super::mqtt_paid::{PRICE, RawPayer, TOPIC, market_with};

/// Readings a stream may pay by ticks between vouchers.
const K: u32 = 3;
const READINGS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_pays_k_readings_by_ticks_between_vouchers() {
    let market = market_with(MqttSellerOptions {
        ticks_per_voucher: Some(K),
        ..MqttSellerOptions::default()
    })
    .await;
    let options = MqttBuyerOptions {
        ticks: true,
        ..MqttBuyerOptions::default()
    };
    let b1 = market.buyer_client("b1", options).await;
    let mut readings = b1.subscribe(TOPIC).await.unwrap();
    let (mut by_tick, mut by_voucher, mut vouchers_paid) = (0, 0, 0u128);
    let mut order = String::new();
    for _ in 0..READINGS {
        let (key_id, signed) = market.publish(&mut readings).await;
        let paid = b1.buy(TOPIC, &signed).await.expect("bought");
        assert_eq!(paid.key_id, key_id);
        assert!((-10.0..50.0).contains(&paid.reading.value));
        if paid.by_tick {
            by_tick += 1;
            order.push('t');
        } else {
            by_voucher += 1;
            vouchers_paid += paid.price;
            order.push('V');
        }
    }
    // Readings 1, 5 and 9 by voucher (the 2nd and 3rd also pay the 3 ticks before them).
    assert_eq!(order, "VtttVtttVt");
    assert_eq!((by_voucher, by_tick), (3, 7));
    assert_eq!(vouchers_paid, 9 * PRICE, "1 + 4 + 4 readings");
    let stats = &market.mqtt_seller.seller.stats;
    assert_eq!(stats.ticks.load(Ordering::Relaxed), 7);
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), 3);
    assert_eq!(market.buyer.stats.vouchers.load(Ordering::Relaxed), 3);

    // A tick of a stream nobody opened: refused, no key.
    let (raw, sheet) = RawPayer::connect(&market.broker, "b2").await;
    assert_eq!(
        sheet.accepts[0].extra.as_ref().unwrap()[wire::TICKS_PER_VOUCHER],
        K,
        "the sheet offers the streams"
    );
    let (key_id, _) = market.publish(&mut readings).await;
    let answer = raw
        .send(
            &key_id,
            vec![
                (wire::TICK_ANCHOR.into(), "11".repeat(32)),
                (wire::TICK.into(), "22".repeat(32)),
            ],
        )
        .await;
    assert!(answer.payload.is_empty(), "no key for a forged tick");
    let refusal: PaymentRequired =
        headers::decode(wire::user_property(&answer, "PAYMENT-REQUIRED").unwrap()).unwrap();
    assert_eq!(refusal.error.as_deref(), Some("m2m_tick_invalid"));
    assert_eq!(stats.ticks.load(Ordering::Relaxed), 7);

    // The last reading is on credit (1 ≤ K): the seller holds the 9 the vouchers covered.
    b1.disconnect().await;
    market.settle_and_check(9).await;
}
