//! A key whose answer came after the buyer had given up on it, on mosquitto and anvil: the
//! buyer's purchase times out while the seller takes the payment (its first one relays a
//! deposit on chain, which takes longer than the buyer waits); the answer still arrives on the
//! buyer's persistent session, is kept, and buying the same reading again opens it without a
//! second payment. On chain the seller holds exactly the one reading it was paid. And across
//! restarts of the buyer: an answer that reached the broker while the buyer was down is kept in
//! the buyer's store when it returns, and opens the reading after another restart, with no
//! second payment.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use m2m::node::mqtt::buyer::MqttBuyerOptions;

use m2m::node::mqtt::buyer::MqttBuyer;

use super::mqtt_paid::{Market, TOPIC, market};

/// Waits up to 20 s for `done`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A persistent-session buyer `b1` that waits 1 ms for answers, and a reading it paid for but
/// gave up on (the first payment relays a deposit on chain, slower than that): the buyer, the
/// reading's key id and the signed reading, once the seller has taken the payment.
async fn paid_and_given_up(market: &Market) -> (MqttBuyer, Vec<u8>, Vec<u8>) {
    let b1 = market.buyer_client("b1", impatient()).await;
    let mut readings = b1.subscribe(TOPIC).await.unwrap();
    let (key_id, signed) = market.publish(&mut readings).await;
    let first = b1.buy(TOPIC, &signed).await;
    assert!(first.is_err(), "1 ms is too short for a deposit: {first:?}");
    let stats = &market.mqtt_seller.seller.stats;
    eventually("the seller to take the payment", || {
        stats.keys_sold.load(Ordering::Relaxed) >= 1
    })
    .await;
    (b1, key_id, signed)
}

fn impatient() -> MqttBuyerOptions {
    MqttBuyerOptions {
        clean_start: false,
        answer_timeout: Duration::from_millis(1),
        ..MqttBuyerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_answered_after_the_buyer_gave_up_is_used_without_paying_again() {
    let market = market().await;
    let (b1, key_id, signed) = paid_and_given_up(&market).await;
    // The seller took the payment and answered; the answer reaches the buyer after all.
    let stats = &market.mqtt_seller.seller.stats;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_answered_while_the_buyer_was_down_is_kept_and_opened_after_restarts() {
    let market = market().await;
    // The buyer pays and goes away before the answer comes; the broker keeps the answer for
    // its session.
    let (first, key_id, signed) = paid_and_given_up(&market).await;
    first.disconnect().await;
    let stats = &market.mqtt_seller.seller.stats;
    // Back: the queued answer is delivered, kept in the store, then acknowledged.
    let second = market.buyer_client("b1", impatient()).await;
    let store = market.buyer.store();
    eventually("the answer to be kept", || {
        !store.mqtt_answers().unwrap().is_empty()
    })
    .await;
    assert_eq!(store.mqtt_answers().unwrap()[0].key_id, key_id);
    second.disconnect().await;
    // Down again and back: the broker has nothing left for it; the store has the key.
    let third = market.buyer_client("b1", impatient()).await;
    let _readings = third.subscribe(TOPIC).await.unwrap(); // (the retained sheet again)
    let vouchers = market.buyer.stats.vouchers.load(Ordering::Relaxed);
    let bought = third
        .buy(TOPIC, &signed)
        .await
        .expect("the kept answer opens the reading");
    assert_eq!(bought.key_id, key_id);
    assert!((-10.0..50.0).contains(&bought.reading.value));
    assert!(
        store.mqtt_answers().unwrap().is_empty(),
        "used, then forgotten"
    );
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), 1, "paid once");
    assert_eq!(
        market.buyer.stats.vouchers.load(Ordering::Relaxed),
        vouchers,
        "no voucher signed for it"
    );
    third.disconnect().await;
    market.settle_and_check(1).await;
}
