//! Priced MQTT topics over Lightning between two `m2m agent run` processes, on mosquitto, a
//! regtest channel opened with `m2m ln open` through the buyer's control socket, and anvil (the
//! seller's `[sell.evm]` routes are its topics): the seller's `[sell.mqtt] lightning_msat`
//! sells each key with a hold invoice, the buyer's `[[buy]] url = "mqtt:<topic>" pay = "l402"`
//! pays them from its node inside its Lightning budget. Both report the payments; what the
//! buyer says it paid is what the seller says it received, in whole keys, with no voucher.

use std::time::Duration;

use m2m::node::tools::{start_bitcoind, start_mosquitto};

use super::agent::{RunningAgent, count, free_listen, total};
use super::agent_lightning::{bitcoind_section, l402_buyer_section, open_channel_through_agents};
use super::agent_mqtt::{broker_section, evm_seller_section, init_address};
use super::cli::Device;
use super::mqtt_paid::{TOPIC, buyer_account, seller_account};
use crate::support::{LocalChain, give_eth};

const PRICE_MSAT: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sell_and_buy_topic_keys_with_hold_invoices() {
    let node = start_bitcoind().await.expect("bitcoind");
    let rpc = node.rpc().clone();
    let chain = LocalChain::start(31337).await;
    let (seller, buyer) = (Device::new(), Device::new());
    let seller_address = init_address(&seller);
    init_address(&buyer);
    give_eth(&chain, seller_address, 10u128.pow(20)).await;
    let broker = start_mosquitto(&[seller_account(seller_address), buyer_account("b1")])
        .await
        .expect("mosquitto");
    let files = tempfile::tempdir().unwrap();
    let bitcoind = bitcoind_section(&node);
    let seller_config = format!(
        "{bitcoind}[lightning]\nlisten = \"{}\"\n{}[sell.mqtt]\npublish_every_secs = 1\nlightning_msat = {PRICE_MSAT}\n{}",
        free_listen(),
        evm_seller_section(&chain),
        broker_section(broker.port(), broker.ca_pem(), "seller", files.path()),
    );
    let buyer_config = format!(
        "{bitcoind}{}{}",
        l402_buyer_section(&format!("mqtt:{TOPIC}"), PRICE_MSAT / 1000),
        broker_section(broker.port(), broker.ca_pem(), "b1", files.path()),
    );
    let mut selling = RunningAgent::start(&seller, &seller_config);
    selling.wait_for(Duration::from_secs(90), |seen| !seen.is_empty());
    let mut buying = RunningAgent::start(&buyer, &buyer_config);
    buying.wait_for(Duration::from_secs(90), |seen| !seen.is_empty());

    // The buyer's node is funded and opens a channel to the seller's, through `m2m ln`.
    let miner = open_channel_through_agents(&rpc, &buyer, &seller).await;
    buying.wait_for(Duration::from_secs(120), |seen| {
        count(seen, "payment_sent", "lightning") >= 3
    });
    let (bought, sold) = (buying.stop_cleanly(), selling.stop_cleanly());
    miner.abort();

    let paid = total(&bought, "payment_sent", "lightning");
    assert!(
        bought
            .iter()
            .filter(|e| e["event"] == "payment_sent")
            .all(|e| e["scheme"] == "m2m-ln-hold" && e["resource"] == format!("mqtt:{TOPIC}")),
        "{bought:?}"
    );
    assert_eq!(paid % u128::from(PRICE_MSAT), 0, "whole keys, in msat");
    assert_eq!(
        total(&sold, "payment_received", "lightning"),
        paid,
        "paid = received"
    );
    assert_eq!(count(&bought, "payment_sent", "evm"), 0, "no voucher");
    println!(
        "agents over MQTT and Lightning: {} keys, {paid} msat",
        count(&bought, "payment_sent", "lightning")
    );
}
