//! The dashboard in a real browser: two `m2m agent run` processes on anvil sell a reading to
//! each other and buy the other's every second until their daily budget (five readings) says
//! no. Headless Chromium opens each agent's dashboard from the URL `m2m dashboard` printed, waits
//! for live data, and what the page shows — payments each way, the channel table, the budget
//! gauge, the token balance, the top-up QR codes — is checked against the control API
//! (`m2m channels`, `m2m balance`) and with `/metrics` (linted). The API refuses a missing or wrong token; the token never
//! shows in `agent status` or the ready line. A screenshot of each page is kept in
//! `$CARGO_TARGET_DIR/m2m-artifacts/` (the README's picture is one of them).

use std::time::Duration;

use alloy::primitives::{Address, U256};
use m2m::contracts::bindings::TestToken;
use serde_json::Value;

use super::agent::{RunningAgent, count, free_listen};
use super::browser::{Browser, artifact};
use super::cli::{Device, stdout_json};
use crate::support::{LocalChain, give_eth, send};

const PRICE: u128 = 1_000;
/// Readings each agent's budget lets it buy in a day.
const READINGS: u128 = 5;

/// What the page shows, read in one go.
const READ_PAGE: &str = r##"
const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
const digits = (t) => t === null ? null : t.replace(/[^0-9]/g, "");
return {
  ready: document.body.dataset.ready,
  hash: location.hash,
  problem: document.getElementById("problem").hidden ? null : text("problem"),
  state: text("state"),
  ethereum: text("ethereum"),
  received: digits(text("total-evm-received-count")),
  receivedAmount: digits(text("total-evm-received-amount")),
  sent: digits(text("total-evm-sent-count")),
  sentAmount: digits(text("total-evm-sent-amount")),
  channelCount: text("channel-count"),
  rows: [...document.querySelectorAll("#channels tbody tr[data-id]")].map((tr) => ({
    id: tr.dataset.id,
    role: tr.dataset.role,
    paid: digits(tr.querySelector("[data-field=paid]").textContent),
  })),
  budget: text("budget-evm"),
  tokens: [...document.querySelectorAll("#balances .value[id^='balance-evm-0x']")].map((e) => ({
    token: e.id.slice("balance-evm-".length),
    balance: digits(e.textContent),
  })),
  topups: [...document.querySelectorAll("#topups figure")].map((f) => ({
    leg: f.dataset.leg,
    uri: f.querySelector(".uri").textContent,
    qrWidth: f.querySelector("img") ? f.querySelector("img").naturalWidth : 0,
  })),
  lines: [...document.querySelectorAll("#chart g[data-series]")].map((g) => g.dataset.series),
  bars: document.querySelectorAll("#chart rect").length,
  unclaimed: digits(text("channels-evm-unclaimed")),
  earned: digits(text("channels-evm-earned")),
  events: [...document.querySelectorAll("#events li[data-event]")].map((li) => li.dataset.event),
};
"##;

fn agent_config(rpc: &str, token: Address, listen: &str, other: &str, path: &str) -> String {
    format!(
        r#"
[budget.evm]
per_request = {PRICE}
per_payee_per_hour = 1000000000
per_day = {per_day}
[sell.evm]
listen = "{listen}"
rpc_url = "{rpc}"
network = "eip155:31337"
[sell.evm.claim]
check_secs = 1
[[sell.evm.route]]
path = "{path}"
price = "{PRICE}"
asset = "{token}"
[[buy]]
url = "http://{other}"
pay = "evm"
every_secs = 1
max_price = {PRICE}
[metrics]
listen = "127.0.0.1:0"
"#,
        per_day = READINGS * PRICE,
    )
}

/// `m2m --json` `args` on `device`, parsed.
fn json(device: &Device, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    stdout_json(&device.run_ok(&all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_in_a_browser_what_the_control_api_says() {
    let chain = LocalChain::start(31337).await;
    let (alice, bob) = (Device::new(), Device::new());
    let token = TestToken::new(chain.token, &chain.facilitator);
    for device in [&alice, &bob] {
        let info = json(device, &["init"]);
        let address: Address = info["ethereum"].as_str().unwrap().parse().unwrap();
        give_eth(&chain, address, 10u128.pow(20)).await;
        send(token.mint(address, U256::from(1_000_000u64)), "mint").await;
    }
    let rpc = chain.anvil.endpoint();
    let (alice_listen, bob_listen) = (free_listen(), free_listen());
    let mut agents = [
        (
            &alice,
            agent_config(
                &rpc,
                chain.token,
                &alice_listen,
                &format!("{bob_listen}/humidity"),
                "/temperature",
            ),
        ),
        (
            &bob,
            agent_config(
                &rpc,
                chain.token,
                &bob_listen,
                &format!("{alice_listen}/temperature"),
                "/humidity",
            ),
        ),
    ]
    .map(|(device, config)| RunningAgent::start(device, &config));
    for agent in &mut agents {
        let ready = agent.wait_for(Duration::from_secs(60), |seen| !seen.is_empty())[0].clone();
        assert_eq!(ready["event"], "ready", "{ready}");
        assert!(
            ready["dashboard"].as_str().unwrap().ends_with("/dashboard"),
            "the ready line names the page, without its token: {ready}"
        );
    }
    // Each buys until its budget refuses the sixth reading.
    for agent in &mut agents {
        agent.wait_for(Duration::from_secs(90), |seen| {
            count(seen, "payment_sent", "evm") == READINGS as usize
                && seen.iter().any(|e| e["event"] == "budget_refused")
        });
    }

    let browser = Browser::start(1280, 1700).await;
    for (name, device) in [("alice", &alice), ("bob", &bob)] {
        let url = json(device, &["dashboard"])["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let (base, token) = url
            .split_once("#token=")
            .expect("the token is in the fragment");
        assert_eq!(token.len(), 64, "{url}");
        let status = json(device, &["agent", "status"]);
        assert!(!status.to_string().contains(token), "status shows no token");
        // The same payments in the metrics, linted by promtool.
        let scrape = reqwest::get(status["metrics"].as_str().unwrap())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let evm = r#"leg="evm",scheme="batch-settlement""#;
        for expected in [
            format!("m2m_payments_received_total{{{evm}}} {READINGS}\n"),
            format!("m2m_payments_sent_total{{{evm}}} {READINGS}\n"),
            format!("m2m_sent_units_total{{{evm}}} {}\n", READINGS * PRICE),
        ] {
            assert!(
                scrape.contains(&expected),
                "{expected:?} missing from\n{scrape}"
            );
        }
        crate::metrics::lint(&scrape);
        refuses_without_the_token(base).await;

        browser.open(&url).await;
        let page = browser
            .wait_for(READ_PAGE, Duration::from_secs(30), |page| {
                page["ready"] == "1"
                    && page["received"] == READINGS.to_string()
                    && page["sent"] == READINGS.to_string()
            })
            .await;
        assert_eq!(page["hash"], "", "the token left the address bar: {page}");
        assert_eq!(page["problem"], Value::Null, "{page}");
        assert_eq!(page["state"], "live");
        assert_eq!(page["receivedAmount"], (READINGS * PRICE).to_string());
        assert_eq!(page["sentAmount"], (READINGS * PRICE).to_string());
        assert_eq!(page["ethereum"], status["ethereum"]);
        assert_eq!(
            page["lines"],
            serde_json::json!(["evm received", "evm sent"])
        );
        assert!(
            page["budget"]
                .as_str()
                .unwrap()
                .contains("5 000 of 5 000 today (100 %)"),
            "{page}"
        );
        assert!(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "budget_refused"),
            "{page}"
        );

        // The channel table is the store's, row for row (one channel each way).
        let channels = json(device, &["channels"]);
        let from_api: Vec<Value> = channels
            .as_array()
            .unwrap()
            .iter()
            .map(|row| serde_json::json!({ "id": row["id"], "role": row["role"], "paid": row["paid"] }))
            .collect();
        assert_eq!(page["rows"], Value::Array(from_api), "{page}");
        assert_eq!(page["channelCount"], "2");
        for row in page["rows"].as_array().unwrap() {
            assert_eq!(row["paid"], (READINGS * PRICE).to_string(), "{row}");
        }

        // Balances come from the chain: a fresh page shows what `m2m balance` reads, once no
        // claim is under way between the two reads.
        let mut tries = 0;
        let tokens = loop {
            browser.open(&url).await;
            let shown = browser
                .wait_for(READ_PAGE, Duration::from_secs(30), |p| p["ready"] == "1")
                .await;
            let balance = json(device, &["balance"]);
            let from_api: Vec<Value> = balance["evm"]["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| serde_json::json!({ "token": t["token"], "balance": t["balance"] }))
                .collect();
            if shown["tokens"] == Value::Array(from_api.clone()) {
                break shown["tokens"].clone();
            }
            tries += 1;
            assert!(tries < 10, "page {shown} vs API {from_api:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
        let shown = browser.run(READ_PAGE).await;
        let topups = shown["topups"].as_array().unwrap();
        let legs: Vec<&str> = topups.iter().map(|t| t["leg"].as_str().unwrap()).collect();
        assert_eq!(
            legs,
            ["evm", "evm", "btc"],
            "ETH, the token, bitcoin: {shown}"
        );
        for topup in topups {
            assert!(
                topup["qrWidth"].as_u64().unwrap() > 100,
                "the QR code shows: {topup}"
            );
        }
        assert!(
            topups[0]["uri"].as_str().unwrap().starts_with("ethereum:")
                && topups[2]["uri"].as_str().unwrap().starts_with("bitcoin:"),
            "{shown}"
        );
        browser
            .screenshot(&artifact(&format!("dashboard-{name}.png")))
            .await;
    }
    browser.close().await;

    for agent in agents {
        let (status, _, log) = agent.stop();
        assert!(status.success(), "{log}");
    }
}

/// The API answers 401 without the token or with a wrong one; the page itself (no data) loads
/// with its security headers.
async fn refuses_without_the_token(base: &str) {
    let http = reqwest::Client::new();
    let api = base.replace("/dashboard", "/dashboard/api/summary");
    for authorization in [None, Some(format!("Bearer {}", "0".repeat(64)))] {
        let mut request = http.get(&api);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
    }
    let page = http.get(base).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
}
