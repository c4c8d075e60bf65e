//! A key whose answer came after the buyer had given up on it, on mosquitto and anvil: the
//! buyer's purchase times out while the seller takes the payment (its first one relays a
//! deposit on chain, which takes longer than the buyer waits); the answer still arrives on the
//! buyer's persistent session, is kept, and buying the same reading again opens it without a
//! second payment. On chain the seller holds exactly the one reading it was paid.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use m2m::node::mqtt::buyer::MqttBuyerOptions;

use super::mqtt_paid::{TOPIC, market};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_answered_after_the_buyer_gave_up_is_used_without_paying_again() {
    let market = market().await;
    let options = MqttBuyerOptions {
        clean_start: false,
        answer_timeout: Duration::from_millis(1),
        ..MqttBuyerOptions::default()
    };
    let b1 = market.buyer_client("b1", options).await;
    let mut readings = b1.subscribe(TOPIC).await.unwrap();
    let (key_id, signed) = market.publish(&mut readings).await;
    let first = b1.buy(TOPIC, &signed).await;
    assert!(first.is_err(), "1 ms is too short for a deposit: {first:?}");
    // The seller took the payment and answered; the answer reaches the buyer after all.
    let stats = &market.mqtt_seller.seller.stats;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.keys_sold.load(Ordering::Relaxed) < 1 {
        assert!(
            Instant::now() < deadline,
            "the seller never took the payment"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (the answer leaves the seller just after it counts the sale: give it a moment)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = b1
        .buy(TOPIC, &signed)
        .await
        .expect("the late answer opens the reading");
    assert_eq!(again.key_id, key_id);
    assert!((-10.0..50.0).contains(&again.reading.value));
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), 1, "paid once");
    b1.disconnect().await;
    market.settle_and_check(1).await;
}
