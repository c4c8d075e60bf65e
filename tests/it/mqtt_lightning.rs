//! A priced MQTT topic paid over Lightning, on mosquitto and a real regtest channel (buyer →
//! seller, two embedded ldk-nodes): the sheet offers keys for msat beside its vouchers; the
//! buyer asks for a hold invoice, gets the key wrapped under the ECDH secret bound to the
//! invoice's preimage, pays, and opens the reading with the preimage the payment returns.
//! The seller claims only what its durable records know: an invoice handed out before the
//! seller restarted is still claimed after it, and its key opens. An invoice over the buyer's
//! cap or its budget is not paid; a wrap opens neither with the ECDH secret alone nor with the
//! preimage alone (what a routing node learns). No voucher is signed and the EVM token does
//! not move: Lightning carries these sales alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bitcoin::Amount;
use m2m::core::hold;
use m2m::core::key_wrap::{self, WrapParties};
use m2m::node::budget::{BudgetCaps, Budgets, BudgetsError};
use m2m::node::events::Leg;
use m2m::node::mqtt::buyer::{InvoiceRefusal, MqttBuyError, MqttBuyerOptions};
use m2m::node::mqtt::seller::{LightningSales, MqttSeller, MqttSellerOptions};
use m2m::node::mqtt::{pack, wire};
use m2m::wallet::Signer;

use super::lightning::{Agent, channel_between};
use super::mqtt_paid::{RawPayer, TOPIC, endpoint, market_with};

const PRICE_MSAT: u64 = 25_000;
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_invoice_pays_for_a_reading_key_and_its_preimage_opens_it() {
    let bitcoind = m2m::node::tools::start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = bitcoind.rpc().clone();
    let (buyer_agent, seller_agent) = (Agent::new("mqtt-buyer"), Agent::new("mqtt-seller"));
    let buyer_ln = buyer_agent.start(&rpc).await;
    let seller_ln = Arc::new(seller_agent.start(&rpc).await);
    channel_between(&rpc, &buyer_ln, &seller_ln, Amount::from_sat(500_000), true).await;

    let sales = LightningSales::new(seller_ln.clone(), seller_agent.keys(), PRICE_MSAT).unwrap();
    let options = MqttSellerOptions {
        lightning: Some(sales),
        ..MqttSellerOptions::default()
    };
    let mut market = market_with(options.clone()).await;
    let b1 = market.buyer_client("b1", MqttBuyerOptions::default()).await;
    let mut readings = b1.subscribe(TOPIC).await.unwrap();

    // Three readings, each bought with one hold invoice.
    const BOUGHT: u64 = 3;
    for _ in 0..BOUGHT {
        let (key_id, signed) = market.publish(&mut readings).await;
        let paid = b1
            .buy_by_lightning(&buyer_ln, TOPIC, &signed, PRICE_MSAT, None)
            .await
            .expect("bought over Lightning");
        assert_eq!(paid.key_id, key_id);
        assert!(paid.by_lightning && paid.settlement.is_none());
        assert_eq!(paid.price, u128::from(PRICE_MSAT));
        assert!((-10.0..50.0).contains(&paid.reading.value));
    }
    let stats = &market.mqtt_seller.seller.stats;
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), BOUGHT);
    assert_eq!(
        stats.lightning_msat.load(Ordering::Relaxed),
        BOUGHT * PRICE_MSAT
    );

    // Over the cap, or over the budget: refused before anything is paid.
    let (_, signed) = market.publish(&mut readings).await;
    let capped = b1
        .buy_by_lightning(&buyer_ln, TOPIC, &signed, PRICE_MSAT - 1, None)
        .await;
    assert!(
        matches!(
            capped,
            Err(MqttBuyError::Invoice(InvoiceRefusal::TooExpensive(p))) if p == PRICE_MSAT
        ),
        "{capped:?}"
    );
    let budget_dir = tempfile::tempdir().unwrap();
    let caps = BudgetCaps {
        per_request: PRICE_MSAT as u128 / 1000 - 1, // caps are in satoshi
        per_payee_per_hour: 1_000_000,
        per_day: 1_000_000,
    };
    let budgets = Budgets::load(
        super::paid_http::open_store(budget_dir.path()),
        &[(Leg::Lightning, caps)],
    )
    .unwrap();
    let over_budget = b1
        .buy_by_lightning(&buyer_ln, TOPIC, &signed, PRICE_MSAT, Some(&budgets))
        .await;
    assert!(
        matches!(
            over_budget,
            Err(MqttBuyError::Budget(BudgetsError::Refused { .. }))
        ),
        "{over_budget:?}"
    );
    assert_eq!(stats.keys_sold.load(Ordering::Relaxed), BOUGHT, "not paid");

    // An invoice taken by hand; the seller restarts before it is paid.
    let seller_address = market.seller_keys.evm_address();
    let (key_id, signed) = market.publish(&mut readings).await;
    let (raw, _) = RawPayer::connect(&market.broker, "b2").await;
    let buyer_key = alloy::primitives::hex::encode(market.buyer_keys.evm_public_key().serialize());
    let answer = raw
        .send(
            &key_id,
            vec![
                (wire::LN_HOLD.into(), "1".into()),
                (wire::BUYER_KEY.into(), buyer_key),
            ],
        )
        .await;
    let invoice = wire::user_property(&answer, wire::LN_INVOICE)
        .expect("a hold invoice")
        .to_owned();
    let wrapped = answer.payload.to_vec();
    let invoices_before = market
        .mqtt_seller
        .seller
        .stats
        .invoices
        .load(Ordering::Relaxed);
    assert_eq!(
        invoices_before,
        BOUGHT + 2,
        "the over-budget purchase asked, the capped one not"
    );
    let old = market.mqtt_seller;
    old.stop().await;
    market.mqtt_seller = MqttSeller::start(
        market.seller.clone(),
        market.seller_keys.clone(),
        &endpoint(&market.broker, "seller"),
        options,
    )
    .await
    .expect("the seller restarts");
    let paid = buyer_ln
        .pay(&invoice, WAIT)
        .await
        .expect("paid after the restart");
    let restarted = &market.mqtt_seller.seller.stats;
    assert_eq!(
        restarted.keys_sold.load(Ordering::Relaxed),
        1,
        "claimed by the new seller"
    );
    let checked = pack::verify(&signed, seller_address).unwrap();
    let shared = market.buyer_keys.evm_key_agreement(&checked.seller_key);
    let parties = WrapParties {
        seller: seller_address.0.0,
        buyer: market.buyer_keys.evm_address().0.0,
    };
    let (unwrapped_id, key) =
        key_wrap::unwrap(&hold::bind(&shared, &paid.preimage), &parties, &wrapped)
            .expect("the preimage opens the wrap");
    assert_eq!(unwrapped_id, key_id);
    let reading = checked.sealed.open(&key).expect("and its key the reading");
    assert!((-10.0..50.0).contains(&reading.value));
    // What a routing node learns (the preimage) or the buyer had before paying (the ECDH
    // secret) opens nothing alone.
    assert!(key_wrap::unwrap(&paid.preimage, &parties, &wrapped).is_err());
    assert!(key_wrap::unwrap(&shared, &parties, &wrapped).is_err());

    // Every msat accounted for: the seller's node received what its claims say, the buyer's
    // node sent it; no voucher, no token moved.
    seller_ln.wait_settled(WAIT).await.unwrap();
    let sold_msat = (BOUGHT + 1) * PRICE_MSAT;
    assert_eq!(seller_ln.received_msat(), sold_msat);
    assert_eq!(
        buyer_ln.sent_msat().0,
        sold_msat,
        "a direct channel: no fees"
    );
    assert_eq!(market.buyer.stats.vouchers.load(Ordering::Relaxed), 0);
    println!(
        "mqtt over lightning: {} keys sold for {sold_msat} msat, {} invoices handed out",
        BOUGHT + 1,
        invoices_before
    );
    b1.disconnect().await;
    let (seller_got, _, escrow) = crate::support::token_split(
        &market.chain,
        market.seller.receiver(),
        market.buyer_keys.evm_address(),
    )
    .await;
    assert_eq!((seller_got, escrow), (0, 0), "the token did not move");
    market.mqtt_seller.stop().await;
}
