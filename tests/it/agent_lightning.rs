//! The Lightning leg of two agents as processes on regtest: the buyer agent's node is funded
//! and opens a channel to the seller agent's node through `m2m ln` commands that reach the
//! running agents over their control sockets; the buyer's periodic L402 buys then pay the
//! seller's readings; an invoice of the seller is paid by the buyer; a budget change through
//! `m2m budget set` stops the L402 buys before anything more is paid. Every msat is accounted
//! for: what the buyer's events say it paid = what the seller's events say it received.

use std::time::Duration;

use m2m::node::tools::start_bitcoind;

use super::agent::{RunningAgent, count, free_listen, total};
use super::btc_channel::{mine, start_miner};
use super::cli::{Device, stdout_json};

const PRICE_SAT: u64 = 30;

/// The `[bitcoind]` section of an agent on `node`.
pub(super) fn bitcoind_section(node: &m2m::node::tools::BitcoindHandle) -> String {
    format!(
        "[bitcoind]\nurl = \"{}\"\ncookie = \"{}\"\n",
        node.rpc_url(),
        node.cookie_path().display()
    )
}

/// A `[lightning]` node and one `[[buy]]` of `url` every second with `pay = "l402"`, at most
/// `max_sat` a reading, inside a Lightning budget of that much per request.
pub(super) fn l402_buyer_section(url: &str, max_sat: u64) -> String {
    format!(
        r#"[lightning]
listen = "{}"
[[buy]]
url = "{url}"
pay = "l402"
every_secs = 1
max_price = {max_sat}
[budget.lightning]
per_request = {max_sat}
per_payee_per_hour = 1000000
per_day = 1000000
"#,
        free_listen()
    )
}

/// Funds the running buyer agent's node and opens a 500,000 sat channel to the running seller
/// agent's, all through `m2m ln` on their control sockets; returns the miner that confirms it
/// (and keeps mining).
pub(super) async fn open_channel_through_agents(
    rpc: &m2m::node::btc::BitcoinRpc,
    buyer: &Device,
    seller: &Device,
) -> tokio::task::JoinHandle<()> {
    let address = buyer.run_ok(&["ln", "address"]);
    let address = String::from_utf8(address.stdout).unwrap();
    rpc.mine_to(1, address.trim()).await.unwrap();
    mine(rpc, 100).await;
    let info = stdout_json(&seller.run_ok(&["--json", "ln", "info"]));
    let peer = format!(
        "{}@{}",
        info["nodeId"].as_str().unwrap(),
        info["listen"].as_str().unwrap()
    );
    let opened = stdout_json(&buyer.run_ok(&["--json", "ln", "open", &peer, "500000"]));
    assert_eq!(opened["capacitySats"], 500_000, "{opened}");
    start_miner(rpc, Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_pay_over_lightning_through_their_control_sockets() {
    let node = start_bitcoind().await.expect("bitcoind");
    let rpc = node.rpc().clone();
    let (seller, buyer) = (Device::new(), Device::new());
    seller.run_ok(&["--json", "init"]);
    buyer.run_ok(&["--json", "init"]);
    let bitcoind = bitcoind_section(&node);
    let sensor_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sensor_file.path(), "7.5\n").unwrap();
    let seller_listen = free_listen();
    let seller_config = format!(
        r#"{bitcoind}
[lightning]
listen = "{seller_listen}"
[sell.btc]
listen = "127.0.0.1:0"
l402 = true
[[sell.btc.route]]
path = "/temperature"
price_sat = {PRICE_SAT}
[sell.btc.route.sensor]
source = "file"
path = "{}"
"#,
        sensor_file.path().display()
    );
    let mut selling = RunningAgent::start(&seller, &seller_config);
    let ready = selling.wait_for(Duration::from_secs(90), |seen| !seen.is_empty())[0].clone();
    let btc_url = ready["btc"].as_str().unwrap().to_owned();

    let buyer_config = format!(
        "{bitcoind}{}[metrics]\nlisten = \"127.0.0.1:0\"\n",
        l402_buyer_section(&format!("{btc_url}/temperature"), PRICE_SAT)
    );
    let mut buying = RunningAgent::start(&buyer, &buyer_config);
    let ready = buying.wait_for(Duration::from_secs(90), |seen| !seen.is_empty())[0].clone();
    let metrics_url = ready["metrics"].as_str().unwrap().to_owned();

    let miner = open_channel_through_agents(&rpc, &buyer, &seller).await;
    buying.wait_for(Duration::from_secs(120), |seen| {
        count(seen, "payment_sent", "lightning") >= 3
    });
    let channels = stdout_json(&buyer.run_ok(&["--json", "channels"]));
    assert!(
        channels
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["leg"] == "lightning" && c["state"] == "ready"),
        "{channels}"
    );

    let balance = stdout_json(&buyer.run_ok(&["--json", "balance"]));
    let in_channels: u64 = balance["lightning"]["channelSats"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(in_channels > 400_000, "{balance}");
    // A Lightning top-up of the running seller: a unified request with its node's invoice.
    let topup =
        stdout_json(&seller.run_ok(&["--json", "topup", "--chain", "ln", "--amount", "0.0001"]));
    let uri = topup["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("bitcoin:") && uri.contains("lightning="),
        "{topup}"
    );
    // An invoice of the seller's running node, paid by the buyer's.
    let invoice = stdout_json(&seller.run_ok(&["--json", "ln", "invoice", "5000sat"]));
    let invoice = invoice["invoice"].as_str().unwrap().to_owned();
    let paid = stdout_json(&buyer.run_ok(&["--json", "ln", "pay", &invoice]));
    assert_eq!(paid["preimage"].as_str().unwrap().len(), 64, "{paid}");

    // The budget: caps set to what was spent stop the L402 buys, nothing more is paid.
    let report = stdout_json(&buyer.run_ok(&["--json", "budget"]));
    let lightning = &report[2];
    assert_eq!(lightning["leg"], "lightning", "{report}");
    let spent: u64 = lightning["hourByPayee"][0]["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(spent >= 3 * PRICE_SAT, "{report}");
    buyer.run_ok(&[
        "budget",
        "set",
        "--leg",
        "lightning",
        "--per-request",
        &PRICE_SAT.to_string(),
        "--per-payee-per-hour",
        &spent.to_string(),
        "--per-day",
        "1000000",
    ]);
    buying.wait_for(Duration::from_secs(30), |seen| {
        seen.iter()
            .any(|e| e["event"] == "budget_refused" && e["leg"] == "lightning")
    });

    // What the buyer's metrics show: its L402 buys, the refusal, its node and its caps.
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    super::metrics::lint(&metrics);
    let value = |name: &str| -> i64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    assert!(value("m2m_budget_refusals_total{leg=\"lightning\"}") >= 1);
    assert_eq!(value("m2m_lightning_channels{kind=\"usable\"}"), 1);
    assert_eq!(value("m2m_lightning_connected_peers"), 1);
    assert!(value("m2m_lightning_synced_height") > 100);
    assert_eq!(
        value("m2m_budget_cap_units{leg=\"lightning\",cap=\"per_request\"}"),
        PRICE_SAT as i64
    );
    let sent_metric = value("m2m_payments_sent_total{leg=\"lightning\",scheme=\"l402\"}");

    let (bought, sold) = (buying.stop_cleanly(), selling.stop_cleanly());
    miner.abort();
    let paid = total(&bought, "payment_sent", "lightning");
    assert_eq!(
        paid % (u128::from(PRICE_SAT) * 1000),
        0,
        "whole readings, in msat"
    );
    assert_eq!(
        total(&sold, "payment_received", "lightning"),
        paid,
        "paid = received"
    );
    let refused_at = bought
        .iter()
        .position(|e| e["event"] == "budget_refused")
        .unwrap();
    assert_eq!(
        count(&bought[refused_at..], "payment_sent", "lightning"),
        0,
        "nothing is paid once the cap refuses: {bought:?}"
    );
    assert_eq!(
        sent_metric as usize,
        count(&bought, "payment_sent", "lightning"),
        "the metric counts every L402 buy"
    );
    eprintln!(
        "lightning agents: {} L402 readings, {paid} msat",
        count(&bought, "payment_sent", "lightning")
    );
}
