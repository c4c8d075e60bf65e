//! A seller process and a buyer device on each leg, as the crash soak and the backup-restore
//! tests run them: `m2m serve` with a seller configuration on anvil, `m2m btc serve` on regtest,
//! each on a fixed loopback port (so that restarts keep the buyer's URL).

use alloy::primitives::{Address, U256};
use serde_json::Value;

use crate::cli::{Device, stdout_json};
use crate::crash_soak::{Side, beside, free_port};
use crate::support::{LocalChain, give_eth, send};

pub const EVM_PRICE: u128 = 1_000;
pub const BTC_PRICE: u128 = 10;
/// Test tokens the EVM buyer starts with.
pub const MINTED: u128 = 1_000_000_000_000;

/// A device after `m2m init`, and what init printed.
pub fn initialised() -> (Device, Value) {
    let device = Device::new();
    let info = stdout_json(&device.run_ok(&["--json", "init"]));
    (device, info)
}

fn address(info: &Value, key: &str) -> String {
    info[key].as_str().unwrap().to_owned()
}

/// An EVM seller process (not started) and a buyer device holding [`MINTED`] test tokens.
pub struct EvmPair {
    pub seller: Side,
    pub buyer: Device,
    pub url: String,
    pub seller_address: Address,
    pub buyer_address: Address,
}

impl EvmPair {
    /// Its seller claims once `claim_threshold` units are unclaimed (and on a clean stop).
    pub async fn new(chain: &LocalChain, claim_threshold: u128) -> Self {
        let (seller_device, seller_info) = initialised();
        let (buyer, buyer_info) = initialised();
        let seller_address: Address = address(&seller_info, "ethereum").parse().unwrap();
        let buyer_address: Address = address(&buyer_info, "ethereum").parse().unwrap();
        give_eth(chain, seller_address, 10u128.pow(20)).await; // it relays deposits and claims
        let token = m2m::contracts::bindings::TestToken::new(chain.token, &chain.facilitator);
        send(token.mint(buyer_address, U256::from(MINTED)), "mint").await;
        let port = free_port();
        let config = beside(&seller_device, "seller.toml");
        std::fs::write(
            &config,
            format!(
                r#"
                listen = "127.0.0.1:{port}"
                rpc_url = "{rpc}"
                network = "eip155:31337"
                [claim]
                threshold = "{claim_threshold}"
                check_secs = 1
                [[route]]
                path = "/temperature"
                price = "{EVM_PRICE}"
                asset = "{token}"
                "#,
                rpc = chain.anvil.endpoint(),
                token = chain.token,
            ),
        )
        .unwrap();
        let log = beside(&seller_device, "seller.log");
        let args = ["--json", "serve", "--config", &config.display().to_string()]
            .map(String::from)
            .to_vec();
        Self {
            seller: Side::new(seller_device, args, log),
            buyer,
            url: format!("http://127.0.0.1:{port}/temperature"),
            seller_address,
            buyer_address,
        }
    }

    /// `m2m get` paying `count` readings (new channels hold 50 readings).
    pub fn buyer_args(&self, count: u64) -> Vec<String> {
        [
            "--json",
            "get",
            &self.url,
            "--count",
            &count.to_string(),
            "--scheme",
            "batch-settlement",
            "--deposit-readings",
            "50",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Whether a line of the buyer's output is a paid reading (`--json` prints each reading as
    /// one pretty-printed object, written whole).
    pub fn is_reading(line: &str) -> bool {
        line.trim() == r#""scheme": "batch-settlement""#
    }
}

/// A Bitcoin seller process (not started) and a buyer device with 50 spendable BTC.
pub struct BtcPair {
    pub seller: Side,
    pub buyer: Device,
    pub url: String,
    pub cli: BtcCli,
}

/// How `m2m btc` reaches the test's bitcoind.
#[derive(Debug, Clone)]
pub struct BtcCli {
    rpc_url: String,
    cookie: String,
}

impl BtcCli {
    /// `m2m --json btc --bitcoind … ARGS`.
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--json",
            "btc",
            "--bitcoind",
            &self.rpc_url,
            "--cookie",
            &self.cookie,
        ];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect()
    }
}

impl BtcPair {
    pub async fn new(node: &m2m::node::tools::BitcoindHandle) -> Self {
        let rpc = node.rpc();
        let (seller_device, _) = initialised();
        let (buyer, buyer_info) = initialised();
        rpc.mine_to(1, &address(&buyer_info, "bitcoin"))
            .await
            .unwrap();
        crate::btc_channel::mine(rpc, 100).await; // the coinbase matures
        let listen = format!("127.0.0.1:{}", free_port());
        let mut pair = Self {
            seller: Side::new(seller_device, Vec::new(), std::path::PathBuf::new()),
            buyer,
            url: format!("http://{listen}/temperature"),
            cli: BtcCli {
                rpc_url: node.rpc_url().to_owned(),
                cookie: node.cookie_path().display().to_string(),
            },
        };
        let route = format!("/temperature={BTC_PRICE}");
        pair.seller.args = pair
            .cli
            .args(&["serve", "--listen", &listen, "--route", &route]);
        pair.seller.log = beside(&pair.seller.device, "seller.log");
        pair
    }

    /// `m2m btc get` paying `count` readings (new channels lock 0.02 BTC).
    pub fn buyer_args(&self, count: u64) -> Vec<String> {
        self.cli.args(&[
            "get",
            &self.url,
            "--count",
            &count.to_string(),
            "--capacity",
            "2000000",
        ])
    }

    /// Whether a line of the buyer's output is a paid reading (a SenML pack, one line).
    pub fn is_reading(line: &str) -> bool {
        line.starts_with("[{")
    }
}
