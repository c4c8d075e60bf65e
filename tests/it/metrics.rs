//! The agent's Prometheus metrics: an agent selling readings on anvil with a `[metrics]`
//! listener, a buyer paying for some, and the scrape — counted exactly, the channel gauges read
//! from the store, and the text accepted by `promtool check metrics` (Debian `prometheus`,
//! installed when missing).

use std::io::Write;
use std::process::{Command, Stdio};

use alloy::primitives::U256;
use m2m::contracts::bindings::TestToken;
use m2m::node::agent::{Agent, AgentConfig};
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::wallet::Passphrase;

use crate::cli::{Device, PASSPHRASE, stdout_json};
use crate::paid_http::{open_store, start_withdrawal};
use crate::support::{LocalChain, funded_device, give_eth, send};

const PRICE: u128 = 1_000;
const READINGS: u128 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_counts_what_it_sold_and_promtool_accepts_the_text() {
    let chain = LocalChain::start(31337).await;
    let device = Device::new();
    let info = stdout_json(&device.run_ok(&["--json", "init"]));
    let seller = info["ethereum"].as_str().unwrap().parse().unwrap();
    give_eth(&chain, seller, 10u128.pow(20)).await;
    let config = AgentConfig::parse(&format!(
        r#"
        [sell.evm]
        listen = "127.0.0.1:0"
        rpc_url = "{rpc}"
        network = "eip155:31337"
        [[sell.evm.route]]
        path = "/temperature"
        price = "{PRICE}"
        asset = "{token}"
        [metrics]
        listen = "127.0.0.1:0"
        "#,
        rpc = chain.anvil.endpoint(),
        token = chain.token,
    ))
    .unwrap();
    let agent = Agent::builder()
        .data_dir(&device.data_dir)
        .passphrase(Passphrase::new(PASSPHRASE.to_owned()).unwrap())
        .config(config)
        .build()
        .await
        .unwrap();

    let buyer_keys = funded_device(&chain, 0).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let holder = m2m::wallet::Signer::evm_address(&*buyer_keys);
    send(token.mint(holder, U256::from(1_000_000u64)), "mint").await;
    let dir = tempfile::tempdir().unwrap();
    let buyer = Buyer::new(
        buyer_keys.clone(),
        open_store(dir.path()),
        BuyerOptions::default(),
    );
    let base = agent.status()["evm"].as_str().unwrap().to_owned();
    for _ in 0..READINGS {
        let fetched = buyer.get(&format!("{base}/temperature")).await.unwrap();
        assert_eq!(fetched.status, 200);
    }

    // Prometheus asks for OpenMetrics; a plain client (curl, promtool's input) gets text 0.0.4.
    let url = agent.status()["metrics"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let scrape = |accept: &'static str| {
        let request = client.get(&url).header("accept", accept);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let kind = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (kind, response.text().await.unwrap())
        }
    };
    let (kind, openmetrics) =
        scrape("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5").await;
    assert_eq!(kind, m2m::node::metrics::CONTENT_TYPE);
    assert!(openmetrics.ends_with("# EOF\n"));
    let (kind, text) = scrape("*/*").await;
    assert_eq!(kind, m2m::node::metrics::PROMETHEUS_CONTENT_TYPE);
    let evm = r#"leg="evm",scheme="batch-settlement""#;
    for expected in [
        format!("m2m_payments_received_total{{{evm}}} {READINGS}\n"),
        format!("m2m_received_units_total{{{evm}}} {}\n", READINGS * PRICE),
        "m2m_channels{leg=\"evm\",role=\"payee\"} 1\n".to_owned(),
        format!(
            "m2m_channel_paid_units{{leg=\"evm\",role=\"payee\"}} {}\n",
            READINGS * PRICE
        ),
        format!("m2m_unclaimed_units{{leg=\"evm\"}} {}\n", READINGS * PRICE),
        // Every paid reading was one GET answered 200 by the EVM seller.
        format!(
            "m2m_http_request_duration_seconds_count{{server=\"evm\",method=\"GET\",status=\"200\"}} {READINGS}\n"
        ),
        // The scrape before this one was timed too.
        "m2m_http_request_duration_seconds_count{server=\"metrics\",method=\"GET\",status=\"200\"} 1\n"
            .to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "{expected:?} missing from\n{text}"
        );
    }

    lint(&text);

    // The payer starts a timed withdrawal: the seller sees it (and claims at once), and its
    // deadline shows as a timestamp until the withdrawal is finished.
    let seller = agent.evm_seller().unwrap().clone();
    start_withdrawal(&chain, &buyer_keys, &seller).await;
    let deadline_line = "m2m_withdrawal_deadline_timestamp_seconds{leg=\"evm\"} ";
    let started = std::time::Instant::now();
    let deadline: u64 = loop {
        let (_, text) = scrape("*/*").await;
        if let Some(value) = text.lines().find_map(|l| l.strip_prefix(deadline_line)) {
            lint(&text);
            break value.parse().unwrap();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no withdrawal deadline in\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        deadline > now && deadline <= now + 900 + 60,
        "the payer may finish 900 s after it started: {deadline} vs now {now}"
    );
    agent.stop().await;
}

/// `promtool check metrics` on `text`; fails the test with what promtool said.
pub fn lint(text: &str) {
    let promtool = m2m::node::tools::promtool().expect("promtool");
    let mut lint = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let linted = lint.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
}
