//! `m2m btc` end to end against a regtest node: the owner sees the device's balance and sweeps
//! it to an address of their own; bad input is refused with a clear message.

use m2m::node::tools::start_bitcoind;
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength};
use serde_json::json;

use super::btc_channel::mine;
use super::cli::{Device, stdout_json};

const ABANDON_ABOUT: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_sees_the_balance_and_sweeps_it() {
    let node = start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = node.rpc().clone();
    let device = Device::new();
    let init = device.run_with_stdin(&["--json", "init", "--restore"], ABANDON_ABOUT);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let address = stdout_json(&init)["bitcoin"].as_str().unwrap().to_owned();
    rpc.mine_to(1, &address).await.unwrap();
    mine(&rpc, 100).await;

    let cookie = node.cookie_path();
    let btc = |args: &[&str]| {
        let mut all = vec!["--json", "btc", "--bitcoind", node.rpc_url(), "--cookie"];
        all.push(cookie.to_str().unwrap());
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        device.run_ok(&args)
    };
    let balance = stdout_json(&run(btc(&["balance"])));
    assert_eq!(balance["address"], address.as_str());
    assert_eq!(balance["confirmed"], json!(5_000_000_000u64));

    // A sweep to an address of another network is refused; nothing is sent.
    let refused = device.run(
        &btc(&[
            "sweep",
            "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr",
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("address"));

    let owner_keys = DeviceKeys::derive(
        &DeviceSeed::generate(SeedLength::Words12).unwrap(),
        Network::Regtest,
    )
    .unwrap();
    let owner = owner_keys.bitcoin_address().to_string();
    let owner = owner.as_str();
    let sweep = run(btc(&["sweep", owner]));
    let txid = String::from_utf8_lossy(&sweep.stdout).trim().to_owned();
    assert_eq!(txid.len(), 64, "{txid}");
    mine(&rpc, 1).await;
    let balance = stdout_json(&run(btc(&["balance"])));
    assert_eq!(balance["confirmed"], json!(0));
    let scan = rpc
        .call("scantxoutset", json!(["start", [format!("addr({owner})")]]))
        .await
        .unwrap();
    let swept = (scan["total_amount"].as_f64().unwrap() * 1e8).round() as u64;
    assert!(swept > 4_999_990_000 && swept < 5_000_000_000, "{swept}");
}
