//! `m2m ln` and `m2m topup --chain ln` through the binary, against a regtest hub node: the device
//! funds its Lightning wallet, opens a private channel to the hub, is topped up through a unified
//! BIP-21 request it waits online for, pays an invoice of the hub, and refuses bad input.

use bitcoin::hashes::{Hash, sha256};
use m2m::node::tools::start_bitcoind;
use m2m::wallet::topup::lightning_of_uri;

use super::btc_channel::mine;
use super::cli::{Device, stdout_json};
use super::lightning::{Agent, pay_once_routable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_opens_is_topped_up_and_pays_over_lightning() {
    let bitcoind = start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = bitcoind.rpc().clone();
    let hub_agent = Agent::new("hub");
    let hub = hub_agent.start(&rpc).await;

    let device = Device::new();
    device.run_ok(&["--json", "init", "--words", "12"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cookie = bitcoind.cookie_path().display().to_string();
    let ln_args = |args: &[&str]| {
        let mut all = vec![
            "--json".to_owned(),
            "ln".into(),
            "--bitcoind".into(),
            bitcoind.rpc_url().into(),
            "--cookie".into(),
            cookie.clone(),
            "--ln-listen".into(),
            listen.clone(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let ln = |args: &[&str]| {
        let all = ln_args(args);
        stdout_json(&device.run_ok(&all.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    let info = ln(&["info"]);
    let device_id = info["nodeId"].as_str().unwrap().to_owned();
    assert_eq!(info["lightningSats"], 0);
    assert_eq!(
        ln(&["info"])["nodeId"],
        device_id.as_str(),
        "same seed, same node"
    );

    // Fund the device's Lightning wallet, open a private channel to the hub pushing it 200k sat.
    let address = String::from_utf8(
        device
            .run_ok(
                &ln_args(&["address"])
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
            .stdout,
    )
    .unwrap();
    rpc.mine_to(1, address.trim()).await.unwrap();
    mine(&rpc, 100).await;
    let hub_peer = format!("{}@{}", hub.node_id(), hub_agent.listen);
    let opened = ln(&["open", &hub_peer, "500000", "--push-sats", "200000"]);
    assert_eq!(opened["capacitySats"], 500_000);
    mine(&rpc, 7).await;
    hub.sync().await.unwrap();

    // A top-up: a unified request; the device stays online until the hub has paid it.
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("topup.log");
    let mut topup_args = vec![
        "--json",
        "topup",
        "--chain",
        "ln",
        "--amount",
        "0.0001",
        "--wait",
        "120",
        "--bitcoind",
        bitcoind.rpc_url(),
        "--cookie",
        &cookie,
        "--ln-listen",
        &listen,
    ];
    let mut child = device.spawn(&topup_args, &stderr);
    // The request is printed before the wait; read just that JSON value.
    let request = serde_json::Deserializer::from_reader(child.stdout.take().unwrap())
        .into_iter::<serde_json::Value>()
        .next()
        .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&stderr).unwrap()))
        .unwrap();
    let uri = request["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("bitcoin:bcrt1p") && uri.contains("amount=0.0001"),
        "{uri}"
    );
    let invoice = lightning_of_uri(uri).unwrap();
    assert_eq!(invoice, request["invoice"].as_str().unwrap());
    pay_once_routable(&hub, invoice).await.unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        status.success() && log.contains("paid: 10000000 msat"),
        "{log}"
    );

    // The device pays an invoice of the hub; the preimage proves it.
    let invoice = hub.invoice(20_000_000, "service", 600).unwrap();
    let paid = ln(&["pay", &invoice.to_string()]);
    let preimage = alloy::primitives::hex::decode(paid["preimage"].as_str().unwrap()).unwrap();
    assert_eq!(
        sha256::Hash::hash(&preimage).to_byte_array(),
        *invoice.payment_hash().as_byte_array()
    );
    let channels = ln(&["channels"]);
    let channels = channels.as_array().unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["peer"], hub.node_id().to_string().as_str());
    assert_eq!(channels[0]["announced"], false);
    // 500k − 200k pushed + 10k topped up − 20k paid, less the commitment fee and anchors.
    let outbound = channels[0]["outboundMsat"].as_u64().unwrap();
    assert!(
        outbound < 290_000_000 && outbound > 280_000_000,
        "{outbound}"
    );

    // Bad input is refused with a clear message.
    let refused = device.run(
        &ln_args(&["pay", "lnbc-not-an-invoice"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a BOLT11 invoice"));
    let refused = device.run(
        &ln_args(&["open", "somebody", "1000"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NODE_ID@IP:PORT"));
    topup_args[5] = "0.000000001";
    let refused = device.run(&topup_args);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("invalid amount"),
        "{message}"
    );
    assert_eq!(
        ln(&["channels"]).as_array().unwrap().len(),
        1,
        "nothing changed"
    );
    hub.stop().await.unwrap();
}
