//! The regtest node the Bitcoin leg is built on: provisioned by `scripts/bitcoind` (Bitcoin
//! Core from the crates.io package libbitcoinkernel-sys), started on free loopback ports, and
//! paying a coinbase to the device wallet's BIP-86 Taproot address.

use m2m::node::tools::start_bitcoind;
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength};
use serde_json::json;

#[tokio::test]
async fn a_regtest_node_pays_the_device_taproot_address() {
    let node = start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let info = node.call("getblockchaininfo", json!([])).await.unwrap();
    assert_eq!(info["chain"], "regtest");
    let genesis = node.call("getblockhash", json!([0])).await.unwrap();
    let caip2 = format!("bip122:{}", &genesis.as_str().unwrap()[..32]);
    assert_eq!(
        caip2, "bip122:0f9188f13cb7b2c71f2a335e3a4fc328",
        "regtest's CAIP-2 name"
    );

    let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
    let device = DeviceKeys::derive(&seed, Network::Regtest).unwrap();
    let address = device.bitcoin_address().to_string();
    assert!(address.starts_with("bcrt1p"), "{address}");
    node.call("generatetoaddress", json!([1, address]))
        .await
        .unwrap();
    let scan = node
        .call(
            "scantxoutset",
            json!(["start", [format!("addr({address})")]]),
        )
        .await
        .unwrap();
    assert_eq!(scan["total_amount"].as_f64(), Some(50.0), "{scan}");
}
