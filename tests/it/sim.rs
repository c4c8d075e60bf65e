//! The simulator end to end: a short scenario with every fault on must pass its conservation
//! check, and each fault must actually have happened and been handled; the Bitcoin leg beside
//! it must account for every satoshi, the Lightning leg for every millisatoshi, and the MQTT leg
//! (with a broker restart) for every unit, its unpaid subscriber opening nothing.

use m2m::sim::run::{RunOptions, run};
use m2m::sim::scenario::Scenario;

const SCENARIO: &str = r#"
name = "faults"
duration_secs = 12
seed = 3
[sellers]
count = 3
price = 1000
claim_threshold = 20000
[buyers]
count = 5
readings_per_sec = 5.0
exact_share = 0.1
deposit_readings = 20
top_up = 5000000
[faults]
seller_restart_every_secs = 4
seller_down_ms = 300
lost_response_rate = 0.1
overcharging_sellers = 1
forging_buyers = 1
withdrawing_buyers = 1
[gateways]
count = 1
ticks_per_voucher = 3
clients = 1
session_secs = 4
[bitcoin]
sellers = 1
buyers = 2
price_sat = 50
readings_per_sec = 5.0
capacity_sat = 100000
top_up_sat = 500000
block_interval_ms = 500
[lightning]
sellers = 1
buyers = 2
price_sat = 10
readings_per_sec = 5.0
channel_sat = 1000000
top_up_sat = 100000
[mqtt]
sellers = 1
subscribers = 3
price = 1000
publish_every_ms = 400
broker_restarts = 1
top_up = 10000000
ticks_per_voucher = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_fleet_conserves_every_unit() {
    let out = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(SCENARIO).unwrap();
    let options = RunOptions {
        out_dir: out.path().to_owned(),
        progress: false,
    };
    let report = run(&scenario, &options).await.expect("the run completes");
    println!("{}", report.markdown());
    assert!(report.passed, "violations: {:?}", report.audit.violations);
    assert!(report.audit.violations.is_empty());
    let figures = &report.figures;
    assert!(figures.vouchers > 50, "vouchers paid: {}", figures.vouchers);
    assert!(figures.exact > 0, "exact payments happened");
    assert!(
        figures.sellers_caught >= 1,
        "the overcharging seller was caught"
    );
    assert!(report.forgeries_refused > 0 && report.forgeries_served == 0);
    assert!(
        report.restarts >= 2,
        "sellers restarted: {}",
        report.restarts
    );
    assert!(report.lost_responses > 0, "responses were dropped");
    assert_eq!(report.withdrawals, 1, "the withdrawing payer withdrew");
    assert!(report.audit.channels >= 4);
    let roaming = report.roaming.as_ref().expect("hotspots ran");
    assert!(
        roaming.sessions >= 1 && roaming.requests >= 2,
        "{roaming:?}"
    );
    assert_eq!(roaming.not_cut, 0);
    assert!(roaming.cutoffs.2 < 2_000, "cut within 2 s: {roaming:?}");
    assert!(roaming.minutes_sold > 0.0);
    assert_eq!(
        roaming.revenue as f64,
        roaming.minutes_sold * 60_000.0,
        "revenue is exactly the minutes sold"
    );
    let bitcoin = report.bitcoin.as_ref().expect("the Bitcoin leg ran");
    assert!(bitcoin.violations.is_empty(), "{:?}", bitcoin.violations);
    assert!(bitcoin.paid > 20, "{bitcoin:?}");
    assert_eq!(bitcoin.channels, 2, "one channel per buyer");
    assert_eq!(
        bitcoin.sellers_received,
        bitcoin.paid * 50,
        "paid readings × price, to the satoshi"
    );
    let lightning = report.lightning.as_ref().expect("the Lightning leg ran");
    assert!(
        lightning.violations.is_empty(),
        "{:?}",
        lightning.violations
    );
    assert_eq!(lightning.top_ups, 2, "both buyers topped up over Lightning");
    assert!(lightning.paid > 20, "{lightning:?}");
    assert_eq!(
        lightning.sellers_received_msat,
        lightning.paid * 10_000,
        "paid readings × price, to the millisatoshi"
    );
    assert!(lightning.routing_fees_msat > 0, "the hub routed for a fee");
    let mqtt = report.mqtt.as_ref().expect("the MQTT leg ran");
    assert!(mqtt.violations.is_empty(), "{:?}", mqtt.violations);
    assert_eq!(mqtt.broker_restarts, 1);
    assert!(mqtt.paid > 20, "{mqtt:?}");
    assert!(
        mqtt.unpaid_seen.0 > 0 && mqtt.unpaid_seen.1 == 0,
        "{mqtt:?}"
    );
    for file in [
        "summary.md",
        "summary.json",
        "payments.svg",
        "latency.svg",
        "gas_per_payment.svg",
        "conservation.svg",
        "report.html",
    ] {
        let bytes = std::fs::read(out.path().join(file)).unwrap();
        assert!(bytes.len() > 300, "{file} written");
    }
    the_page_shows_the_run(&report, &out.path().join("report.html")).await;
}

/// `report.html` in headless Chromium, opened from the file as a user would: the verdict, a
/// plot with one series per leg, latency with p50 and p99, the conservation picture, the
/// summary tables and a row per device; a screenshot is kept.
async fn the_page_shows_the_run(report: &m2m::sim::report::RunReport, page: &std::path::Path) {
    let browser = crate::browser::Browser::start(1280, 1000).await;
    browser.open(&format!("file://{}", page.display())).await;
    let shown = browser
        .run(
            r##"
const svgText = (id) => [...document.querySelectorAll("#" + id + " svg text")].map((t) => t.textContent).join("|");
const plotWidth = (id) => { const s = document.querySelector("#" + id + " svg"); return s ? s.getBoundingClientRect().width : 0; };
return {
  verdict: document.getElementById("verdict").textContent,
  payments: svgText("plot-payments"),
  latency: svgText("plot-latency"),
  conservation: svgText("plot-conservation"),
  widths: ["plot-payments", "plot-latency", "plot-conservation", "plot-gas"].map(plotWidth),
  sections: [...document.querySelectorAll("section.summary h2")].map((h) => h.textContent),
  devices: document.querySelectorAll("#devices tbody tr").length,
  violations: document.querySelectorAll(".violation").length,
};
"##,
        )
        .await;
    assert_eq!(shown["verdict"], "PASS", "{shown}");
    let payments = shown["payments"].as_str().unwrap();
    for leg in ["EVM", "Bitcoin", "Lightning", "MQTT", "gateway"] {
        assert!(
            payments.contains(&format!("{leg} (")),
            "{leg} in {payments}"
        );
    }
    let latency = shown["latency"].as_str().unwrap();
    assert!(
        latency.contains("p50") && latency.contains("p99") && latency.contains("log"),
        "{latency}"
    );
    let conservation = shown["conservation"].as_str().unwrap();
    for asset in ["test token", "satoshi", "millisatoshi", "MQTT leg"] {
        assert!(conservation.contains(asset), "{asset} in {conservation}");
    }
    for width in shown["widths"].as_array().unwrap() {
        assert!(
            width.as_f64().unwrap() > 300.0,
            "every plot is drawn: {shown}"
        );
    }
    assert_eq!(
        shown["sections"].as_array().unwrap().len(),
        report.sections().len(),
        "{shown}"
    );
    assert_eq!(
        shown["devices"].as_u64().unwrap() as usize,
        report.device_rows().len()
    );
    assert_eq!(shown["violations"], 0);
    browser
        .screenshot(&crate::browser::artifact("sim-report.png"))
        .await;
    browser.close().await;
}
