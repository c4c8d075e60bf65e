//! The device agent as real processes: one `m2m agent run` sells readings on EVM (x402 channels
//! on anvil) and on Bitcoin (Taproot channels on regtest); another buys from it on both legs every
//! few hundred milliseconds. Both report typed events as JSON lines, both stop in order on SIGTERM,
//! and every unit is accounted for: what the buyer's events say it paid = what the seller's
//! events say it received = what reached the seller on chain (EVM, claimed at the stop) or in its
//! newest Bitcoin voucher. Its readings come from a `file` sensor the test writes; while the file
//! holds no number, buyers get 503 and pay nothing.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use m2m::contracts::bindings::TestToken;
use m2m::node::tools::start_bitcoind;
use serde_json::Value;

use super::btc_channel::{mine, start_miner};
use super::cli::{Device, stdout_json};
use crate::support::{LocalChain, give_eth, send};

const EVM_PRICE: u128 = 1_000;
const BTC_PRICE: u64 = 25;
/// One voucher of the gateway: three one-second ticks.
const COVER_PRICE: u128 = 3_000;
const TICKS_PER_COVER: u32 = 3;

/// A running agent: its stdout events arrive on `events`.
pub(super) struct RunningAgent {
    child: Child,
    events: mpsc::Receiver<Value>,
    pub(super) seen: Vec<Value>,
    log: tempfile::NamedTempFile,
}

impl RunningAgent {
    pub(super) fn start(device: &Device, config: &str) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), config).unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let config_path = file.path().to_str().unwrap().to_owned();
        let mut child = device.spawn(
            &["--json", "agent", "run", "--config", &config_path],
            log.path(),
        );
        let stdout = child.stdout.take().unwrap();
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            let _config = file; // kept until the agent's output ends
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = sender.send(value);
                }
            }
        });
        Self {
            child,
            events,
            seen: Vec::new(),
            log,
        }
    }

    /// Waits for the first event `wanted` accepts; everything read is kept in `seen`.
    pub(super) fn wait_for(
        &mut self,
        within: Duration,
        wanted: impl Fn(&[Value]) -> bool,
    ) -> &[Value] {
        let deadline = Instant::now() + within;
        while !wanted(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(_) => panic!(
                    "agent: not there within {within:?}; events {:?}; log:\n{}",
                    self.seen,
                    std::fs::read_to_string(self.log.path()).unwrap_or_default()
                ),
            }
        }
        &self.seen
    }

    /// SIGTERM, then the exit status and the rest of the events. An agent that has not exited
    /// within [`STOP_WITHIN`] fails the test with its log (and is killed by `Drop`).
    pub(super) fn stop(mut self) -> (std::process::ExitStatus, Vec<Value>, String) {
        let pid = self.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + STOP_WITHIN;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop within {STOP_WITHIN:?} of SIGTERM; log:\n{}",
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.events.try_iter());
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        (status, std::mem::take(&mut self.seen), log)
    }

    /// [`Self::stop`], asserting a clean exit (the log if not); the events.
    pub(super) fn stop_cleanly(self) -> Vec<Value> {
        let (status, events, log) = self.stop();
        assert!(status.success(), "{log}");
        events
    }
}

/// The buyer restarts (no periodic buys): what its budgets spent before is still counted, so a
/// cap set just above it lets exactly one more reading through on each leg, and the next is
/// refused before anything is paid. Returns the restarted agent's events.
fn budgets_hold_across_a_restart(
    buyer: &Device,
    config: &str,
    before: &[Value],
    [evm_url, btc_url]: [&str; 2],
) -> Vec<Value> {
    let mut again = RunningAgent::start(buyer, config);
    again.wait_for(Duration::from_secs(60), |seen| !seen.is_empty());
    let report = stdout_json(&buyer.run_ok(&["--json", "agent", "budget"]));
    for (index, (leg, url, price)) in [
        ("evm", evm_url, EVM_PRICE),
        ("btc", btc_url, u128::from(BTC_PRICE)),
    ]
    .into_iter()
    .enumerate()
    {
        let budget = &report[index];
        assert_eq!(
            (budget["leg"].as_str(), budget["source"].as_str()),
            (Some(leg), Some("config")),
            "{report}"
        );
        let payees = budget["hourByPayee"].as_array().unwrap();
        assert_eq!(payees.len(), 1, "one seller is one payee: {report}");
        let spent: u128 = payees[0]["spent"].as_str().unwrap().parse().unwrap();
        // A voucher sent while the sensor was broken counts too (it left the device).
        assert!(
            spent >= total(before, "payment_sent", leg) && spent > 0,
            "{leg}: {spent}, {report}"
        );
        let hour = (spent + price).to_string();
        buyer.run_ok(&[
            "agent",
            "set-budget",
            "--leg",
            leg,
            "--per-request",
            &price.to_string(),
            "--per-payee-per-hour",
            &hour,
            "--per-day",
            "1000000000",
        ]);
        let get = |buyer: &Device| {
            buyer.run(&[
                "agent",
                "get",
                &format!("{url}/temperature"),
                "--pay",
                leg,
                "--max-price",
                &price.to_string(),
            ])
        };
        let once = get(buyer);
        assert!(
            once.status.success(),
            "{}",
            String::from_utf8_lossy(&once.stderr)
        );
        let refused = get(buyer);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("budget"),
            "{leg}: {stderr}"
        );
        assert!(
            stderr.contains("hour"),
            "{leg}: the payee's hourly cap refuses: {stderr}"
        );
    }
    // The payer takes its EVM deposit back through the running agent (the withdrawal starts;
    // the seller's claim at its stop still wins, so conservation below holds).
    let channels = stdout_json(&buyer.run_ok(&["--json", "channels"]));
    let evm = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["leg"] == "evm")
        .unwrap();
    let started = stdout_json(&buyer.run_ok(&["--json", "withdraw", evm["id"].as_str().unwrap()]));
    assert_eq!(started["withdrawal"], "started", "{started}");
    assert!(started["amount"].as_str().unwrap().parse::<u128>().unwrap() > 0);
    let shown = buyer.run_ok(&["agent", "budget"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("set at run time"), "{shown}");
    let (status, events, log) = again.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "budget_refused")
            .count(),
        2,
        "{events:?}"
    );
    events
}

/// Vouchers paid for connectivity.
fn covers(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| {
            e["event"] == "payment_sent"
                && e["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/cover"))
        })
        .count()
}

/// A free loopback address for a listener of the agent.
pub(super) fn free_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Opens a tunnel through the local CONNECT proxy at `proxy` to a loopback echo service and
/// returns what came back for "ping".
async fn echo_through(proxy: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = echo.accept().await.unwrap();
        let mut buffer = [0u8; 4];
        stream.read_exact(&mut buffer).await.unwrap();
        stream.write_all(&buffer).await.unwrap();
    });
    let mut tunnel = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tunnel
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tunnel.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut answer = [0u8; 4];
    tunnel.read_exact(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// How long an agent may take to stop: the servers' grace, the claims, Lightning's settling.
const STOP_WITHIN: Duration = Duration::from_secs(120);

impl Drop for RunningAgent {
    /// A test that fails midway must not leave its agent running (after `stop` it has exited).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of `event` amounts on `leg`.
pub(super) fn total(events: &[Value], event: &str, leg: &str) -> u128 {
    events
        .iter()
        .filter(|e| e["event"] == event && e["leg"] == leg)
        .map(|e| e["amount"].as_u64().unwrap() as u128)
        .sum()
}

pub(super) fn count(events: &[Value], event: &str, leg: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == event && e["leg"] == leg)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_sell_and_buy_on_evm_and_bitcoin_and_stop_in_order() {
    let chain = LocalChain::start(31337).await;
    let node = start_bitcoind().await.expect("bitcoind");
    let rpc = node.rpc().clone();
    let (seller, buyer) = (Device::new(), Device::new());
    let seller_info = stdout_json(&seller.run_ok(&["--json", "init"]));
    let buyer_info = stdout_json(&buyer.run_ok(&["--json", "init"]));
    let address = |info: &Value| {
        info["ethereum"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap()
    };
    let (seller_evm, buyer_evm) = (address(&seller_info), address(&buyer_info));

    // The seller pays gas (it relays deposits and claims); the buyer holds tokens and satoshi.
    give_eth(&chain, seller_evm, 10u128.pow(20)).await;
    // The buyer pays gas only for its own withdrawal at the end.
    give_eth(&chain, buyer_evm, 10u128.pow(18)).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    send(token.mint(buyer_evm, U256::from(10_000_000u64)), "mint").await;
    rpc.mine_to(1, buyer_info["bitcoin"].as_str().unwrap())
        .await
        .unwrap();
    mine(&rpc, 100).await;
    let miner = start_miner(&rpc, Duration::from_millis(300));

    let bitcoind = format!(
        "[bitcoind]\nurl = \"{}\"\ncookie = \"{}\"\n",
        node.rpc_url(),
        node.cookie_path().display()
    );
    let sensor_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sensor_file.path(), "21.5\n").unwrap();
    let sensor = format!(
        "source = \"file\"\npath = \"{}\"\nname = \"room-temperature\"\nunit = \"Cel\"\n",
        sensor_file.path().display()
    );
    let seller_config = format!(
        r#"{bitcoind}
[sell.evm]
listen = "127.0.0.1:0"
tls = "on"
rpc_url = "{rpc}"
network = "eip155:31337"
[sell.evm.claim]
check_secs = 1
[[sell.evm.route]]
path = "/temperature"
price = "{EVM_PRICE}"
asset = "{token}"
[sell.evm.route.sensor]
{sensor}
[sell.btc]
listen = "127.0.0.1:0"
[[sell.btc.route]]
path = "/temperature"
price_sat = {BTC_PRICE}
[sell.btc.route.sensor]
{sensor}
[gateway]
listen = "127.0.0.1:0"
tls = "on"
rpc_url = "{rpc}"
network = "eip155:31337"
asset = "{token}"
price_per_minute = {per_minute}
ticks_per_voucher = {TICKS_PER_COVER}
upstreams = ["127.0.0.1:*"]
"#,
        rpc = chain.anvil.endpoint(),
        token = chain.token,
        per_minute = COVER_PRICE / u128::from(TICKS_PER_COVER) * 60,
    );
    // The EVM seller and the gateway speak TLS with the seller's seed-derived key; the buyer
    // pins the key `m2m init` printed.
    let pin = seller_info["tls_pin"].as_str().unwrap().to_owned();
    let mut selling = RunningAgent::start(&seller, &seller_config);
    let ready = selling.wait_for(Duration::from_secs(60), |seen| !seen.is_empty())[0].clone();
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["tlsPin"], pin.as_str(), "{ready}");
    let (evm_url, btc_url, gateway_url) = (
        ready["evm"].as_str().unwrap().to_owned(),
        ready["btc"].as_str().unwrap().to_owned(),
        ready["gateway"].as_str().unwrap().to_owned(),
    );
    let proxy = free_listen();

    let budgets = format!(
        "[budget.evm]\nper_request = {COVER_PRICE}\nper_payee_per_hour = 1000000000\nper_day = 1000000000\n\
         [budget.btc]\nper_request = {BTC_PRICE}\nper_payee_per_hour = 1000000\nper_day = 1000000\n"
    );
    let buyer_config = format!(
        r#"{bitcoind}{budgets}
[evm]
rpc_url = "{rpc}"
[[buy]]
url = "{evm_url}/temperature"
pin = "{pin}"
pay = "evm"
every_secs = 1
max_price = {EVM_PRICE}
[[buy]]
url = "{btc_url}/temperature"
pay = "btc"
every_secs = 1
max_price = {BTC_PRICE}
capacity_sat = 50000
[[buy]]
url = "{evm_url}/temperature"
pay = "evm"
every_secs = 1
max_price = {too_little}
[[connect]]
gateway = "{gateway_url}"
pin = "{pin}"
listen = "{proxy}"
"#,
        too_little = EVM_PRICE - 1,
        rpc = chain.anvil.endpoint(),
    );
    let mut buying = RunningAgent::start(&buyer, &buyer_config);
    buying.wait_for(Duration::from_secs(90), |seen| {
        count(seen, "payment_sent", "evm") >= 5
            && count(seen, "payment_sent", "btc") >= 3
            && covers(seen) >= 1
    });
    // An application on the buyer reaches a loopback service through the paid session.
    assert_eq!(
        echo_through(&proxy).await,
        "ping",
        "the tunnel runs while it is paid"
    );
    // While both run, other commands reach them through their control sockets: the data
    // directories are locked, yet `m2m get` buys through the running agent, on its channel.
    let socket = buyer.data_dir.join("control.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the device's user may talk to the agent"
    );
    let status = stdout_json(&seller.run_ok(&["--json", "agent", "status"]));
    assert_eq!(status["evm"], evm_url.as_str());
    let manual = stdout_json(&buyer.run_ok(&[
        "--json",
        "get",
        &format!("{evm_url}/temperature"),
        "--max-price",
        &EVM_PRICE.to_string(),
    ]));
    assert_eq!(manual["paid"]["leg"], "evm", "{manual}");
    let reading: Value = serde_json::from_str(manual["body"].as_str().unwrap()).unwrap();
    assert_eq!(reading[0]["n"], "room-temperature", "{manual}");
    assert_eq!(reading[0]["v"], 21.5, "{manual}");

    // The sensor breaks: buyers are answered 503 and nothing is charged (the conservation checks
    // at the end hold across it); it is fixed, and buying goes on.
    std::fs::write(sensor_file.path(), "unplugged\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (url, pay, max_price) in [
        (&evm_url, "evm", EVM_PRICE),
        (&btc_url, "btc", u128::from(BTC_PRICE)),
    ] {
        let broken = buyer.run(&[
            "agent",
            "get",
            &format!("{url}/temperature"),
            "--pay",
            pay,
            "--max-price",
            &max_price.to_string(),
        ]);
        let stderr = String::from_utf8_lossy(&broken.stderr);
        assert!(
            !broken.status.success() && stderr.contains("503") && stderr.contains("no number"),
            "{stderr}"
        );
    }
    std::fs::write(sensor_file.path(), "22.25\n").unwrap();
    let before = (
        count(&buying.seen, "payment_sent", "evm"),
        count(&buying.seen, "payment_sent", "btc"),
    );
    buying.wait_for(Duration::from_secs(30), |seen| {
        count(seen, "payment_sent", "evm") >= before.0 + 2
            && count(seen, "payment_sent", "btc") >= before.1 + 2
    });
    // `m2m balance` through the agent: what the buyer holds plus what it deposited is what it
    // was given; its Bitcoin wallet has its coins.
    let balance = stdout_json(&buyer.run_ok(&["--json", "balance"]));
    let held: u128 = balance["evm"]["tokens"][0]["balance"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let deposited: u128 = stdout_json(&buyer.run_ok(&["--json", "channels"]))
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["leg"] == "evm")
        .map(|c| c["capacity"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(held + deposited, 10_000_000, "{balance}");
    let sats: u64 = balance["bitcoin"]["confirmedSats"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(sats > 0, "{balance}");
    // A top-up request needs only the device's address: the running agent gives it.
    let topup = stdout_json(&buyer.run_ok(&["--json", "topup", "--chain", "evm", "--amount", "1"]));
    assert_eq!(
        topup["address"].as_str().unwrap().to_lowercase(),
        balance["evm"]["address"].as_str().unwrap(),
        "{topup}"
    );
    // Each leg's channel opening was an event of the buyer.
    for leg in ["evm", "btc"] {
        assert!(
            buying
                .seen
                .iter()
                .any(|e| e["event"] == "channel_opened" && e["leg"] == leg),
            "{leg}: {:?}",
            buying.seen
        );
    }
    // `m2m channels` lists each leg's channel on both devices, through their agents.
    for (device, role) in [(&seller, "payee"), (&buyer, "payer")] {
        let channels = stdout_json(&device.run_ok(&["--json", "channels"]));
        for leg in ["evm", "btc"] {
            let row = channels
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["leg"] == leg && c["role"] == role)
                .unwrap_or_else(|| panic!("a {leg} {role} channel: {channels}"));
            let amount = if row["paid"].is_null() {
                &row["exposure"]
            } else {
                &row["paid"]
            };
            assert!(
                amount.as_str().unwrap().parse::<u128>().unwrap() > 0,
                "{row}"
            );
        }
    }
    let busy = buyer.run(&[
        "get",
        &format!("{evm_url}/temperature"),
        "--scheme",
        "exact",
    ]);
    assert!(
        !busy.status.success(),
        "a scheme cannot be forced on a running agent"
    );

    let (status, mut bought, log) = buying.stop();
    assert!(
        status.success(),
        "the buyer stops cleanly on SIGTERM: {status}\n{log}"
    );
    bought.extend(budgets_hold_across_a_restart(
        &buyer,
        &format!(
            "{bitcoind}{budgets}[evm]\nrpc_url = \"{}\"\n[pins]\n\"{evm_url}\" = \"{pin}\"\n",
            chain.anvil.endpoint()
        ),
        &bought,
        [&evm_url, &btc_url],
    ));
    let (status, sold, log) = selling.stop();
    assert!(
        status.success(),
        "the seller stops cleanly on SIGTERM: {status}\n{log}"
    );
    assert!(log.contains("claimed 1 EVM channel(s)"), "{log}");
    assert!(
        !seller.data_dir.join("control.sock").exists(),
        "the socket goes with the agent"
    );
    miner.abort();

    // The entry whose cap is below the price is refused every time, before anything is paid.
    let refused = bought
        .iter()
        .filter(|e| e["event"] == "buy_failed")
        .map(|e| e["reason"].as_str().unwrap())
        .collect::<Vec<_>>();
    assert!(refused.iter().any(|r| r.contains("limit")), "{bought:?}");
    // The other failures are the broken sensor's 503s and, after the restart, the two budget
    // refusals (each unpaid: conservation holds below).
    assert!(
        refused.iter().all(|r| r.contains("price 1000 is above")
            || r.contains("503")
            || r.contains("budget refuses")),
        "{refused:?}"
    );

    // EVM: paid = received = claimed and settled to the seller, to the unit.
    let paid = total(&bought, "payment_sent", "evm");
    assert!(paid >= 5 * EVM_PRICE);
    assert_eq!(total(&sold, "payment_received", "evm"), paid);
    let settled = token
        .balanceOf(seller_evm)
        .call()
        .await
        .unwrap()
        .to::<u128>();
    assert_eq!(settled, paid, "claimed at the stop and settled");
    // Bitcoin: paid = received = the seller's newest voucher on its channel.
    let paid = total(&bought, "payment_sent", "btc");
    assert!(paid >= 3 * u128::from(BTC_PRICE));
    assert_eq!(total(&sold, "payment_received", "btc"), paid);
    let cookie = node.cookie_path();
    let channels = stdout_json(&seller.run_ok(&[
        "--json",
        "btc",
        "--bitcoind",
        node.rpc_url(),
        "--cookie",
        cookie.to_str().unwrap(),
        "channels",
    ]));
    let vouchered: u64 = channels
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["role"] == "payee")
        .map(|c| c["paid"].as_u64().unwrap())
        .sum();
    assert_eq!(u128::from(vouchered), paid);
    // With both agents stopped, `m2m channels` reads the stores: the buyer's rows say what the
    // seller's say, on both legs.
    let rows = |device: &Device, leg: &str, key: &str| -> u128 {
        let channels = stdout_json(&device.run_ok(&["--json", "channels"]));
        channels
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["leg"] == leg)
            .map(|c| c[key].as_str().unwrap().parse::<u128>().unwrap())
            .sum()
    };
    assert_eq!(rows(&seller, "btc", "paid"), paid);
    // The Bitcoin payer keeps what it signed: the vouchers the broken sensor turned away too.
    assert!(rows(&buyer, "btc", "exposure") >= paid);
    assert_eq!(rows(&seller, "evm", "paid"), settled);
    assert_eq!(rows(&buyer, "evm", "paid"), settled);
    eprintln!(
        "agents: {} EVM and {} Bitcoin payments, {} EVM units claimed, {paid} sat vouchered",
        count(&bought, "payment_sent", "evm"),
        count(&bought, "payment_sent", "btc"),
        settled
    );
}
