//! Priced MQTT topics between two `m2m agent run` processes on mosquitto and anvil: the seller's
//! `[sell.mqtt]` publishes its `[sell.evm]` route as a topic, one sealed reading a second; the
//! buyer's `[[buy]] url = "mqtt:<topic>"` buys the newest one each second with its EVM channel.
//! Both report the payments as events; the seller's status says `online` while it runs and
//! `offline` once stopped; what the seller claims on stop is what the events say it was paid,
//! and every unit of the token is accounted for.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use m2m::contracts::bindings::TestToken;
use m2m::node::mqtt::{MqttEndpoint, connect, wire};
use m2m::node::tools::start_mosquitto;
use rumqttc::v5::Event;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use serde_json::Value;

use super::agent::{RunningAgent, count, free_listen, total};
use super::cli::{Device, stdout_json};
use super::mqtt_paid::{PRICE, TOPIC, account, buyer_account, seller_account};
use crate::support::{LocalChain, give_eth, send};

const MINTED: u128 = 1_000_000;
/// Readings the buyer buys before both stop.
const READINGS: usize = 4;

/// `[mqtt]` for `user`, its CA and password in files under `dir`.
pub(super) fn broker_section(port: u16, ca_pem: &str, user: &str, dir: &std::path::Path) -> String {
    let (ca, password) = (dir.join(format!("{user}-ca.pem")), dir.join(user));
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&password, format!("{user}-secret-password\n")).unwrap();
    format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nca_file = \"{}\"\nuser = \"{user}\"\npassword_file = \"{}\"\n",
        ca.display(),
        password.display()
    )
}

/// Initialises `device` and returns its Ethereum address.
pub(super) fn init_address(device: &Device) -> Address {
    stdout_json(&device.run_ok(&["--json", "init"]))["ethereum"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `[sell.evm]` with [`TOPIC`]'s route at [`PRICE`] on `chain`.
pub(super) fn evm_seller_section(chain: &LocalChain) -> String {
    format!(
        r#"[sell.evm]
listen = "{listen}"
rpc_url = "{rpc}"
network = "eip155:31337"
[[sell.evm.route]]
path = "/{TOPIC}"
price = "{PRICE}"
asset = "{token}"
"#,
        listen = free_listen(),
        rpc = chain.anvil.endpoint(),
        token = chain.token,
    )
}

/// The retained status of `seller` as another account of the broker reads it.
async fn status(port: u16, ca_pem: &str, seller: Address) -> Option<Vec<u8>> {
    let endpoint = MqttEndpoint {
        host: "127.0.0.1".into(),
        port,
        ca_pem: ca_pem.to_owned(),
        user: "watcher".into(),
        password: "watcher-secret-password".into(),
    };
    let (client, mut events) = connect(&endpoint, "watcher", true).await.unwrap();
    client
        .subscribe(wire::status_topic(seller), QoS::AtLeastOnce)
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(publish))) = events.poll().await {
                return publish.payload.to_vec();
            }
        }
    })
    .await
    .ok();
    let _ = client.disconnect().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_sell_and_buy_readings_on_a_priced_mqtt_topic() {
    let chain = LocalChain::start(31337).await;
    let (seller, buyer) = (Device::new(), Device::new());
    let (seller_address, buyer_address) = (init_address(&seller), init_address(&buyer));
    give_eth(&chain, seller_address, 10u128.pow(20)).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    send(token.mint(buyer_address, U256::from(MINTED)), "mint").await;

    let broker = start_mosquitto(&[
        seller_account(seller_address),
        buyer_account("b1"),
        account("watcher", vec!["read m2m/status/#".into()]),
    ])
    .await
    .expect("mosquitto");
    let files = tempfile::tempdir().unwrap();
    let seller_config = format!(
        "{}\n[sell.mqtt]\npublish_every_secs = 1\n{}",
        evm_seller_section(&chain),
        broker_section(broker.port(), broker.ca_pem(), "seller", files.path()),
    );
    let buyer_config = format!(
        r#"
[[buy]]
url = "mqtt:{TOPIC}"
pay = "evm"
every_secs = 1
max_price = {PRICE}
[evm]
rpc_url = "{rpc}"
{broker}"#,
        rpc = chain.anvil.endpoint(),
        broker = broker_section(broker.port(), broker.ca_pem(), "b1", files.path()),
    );
    let mut selling = RunningAgent::start(&seller, &seller_config);
    let ready = selling.wait_for(Duration::from_secs(60), |seen| !seen.is_empty())[0].clone();
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(
        status(broker.port(), broker.ca_pem(), seller_address).await,
        Some(b"online".to_vec())
    );
    let mut buying = RunningAgent::start(&buyer, &buyer_config);
    buying.wait_for(Duration::from_secs(90), |seen| {
        count(seen, "payment_sent", "evm") >= READINGS
    });
    let (status_code, bought, _) = buying.stop();
    assert!(status_code.success());
    let (status_code, sold, log) = selling.stop();
    assert!(status_code.success(), "{log}");
    assert_eq!(
        status(broker.port(), broker.ca_pem(), seller_address).await,
        Some(b"offline".to_vec()),
        "a stopped seller says so"
    );

    let sent: Vec<&Value> = bought
        .iter()
        .filter(|e| e["event"] == "payment_sent")
        .collect();
    assert!(
        sent.iter()
            .all(|e| e["resource"] == format!("mqtt:{TOPIC}"))
    );
    assert!(sent.iter().all(|e| e["scheme"] == "batch-settlement"));
    let (paid, received) = (
        count(&bought, "payment_sent", "evm"),
        count(&sold, "payment_received", "evm"),
    );
    // A payment the seller took as the buyer stopped may have missed the buyer's last event.
    assert!(
        received == paid || received == paid + 1,
        "{paid} paid, {received} received"
    );
    assert_eq!(
        total(&sold, "payment_received", "evm"),
        received as u128 * PRICE
    );

    // The seller claimed on stop what it was paid; the rest of the deposit is in escrow.
    let (seller_got, buyer_left, escrow) =
        crate::support::token_split(&chain, seller_address, buyer_address).await;
    assert_eq!(seller_got, received as u128 * PRICE);
    assert_eq!(seller_got + buyer_left + escrow, MINTED, "conservation");
    println!("agents over MQTT: {paid} readings bought, {received} sold, seller {seller_got}");
}
