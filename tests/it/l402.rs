//! L402 on a real regtest Lightning channel: a seller's satoshi-priced readings answer 402 with
//! an L402 challenge beside the x402 offer; a buyer pays the invoice from its ldk-node and gets
//! the reading with `Authorization: L402 <macaroon>:<preimage>` (or `LSAT`). Each token buys one
//! reading: replays, tokens for another route and altered macaroons are refused.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bitcoin::Amount;
use m2m::node::btc::{BtcRoute, BtcSeller, PayeePolicy, serve_btc};
use m2m::node::budget::{BudgetCaps, Budgets, BudgetsError};
use m2m::node::events::Leg;
use m2m::node::l402_wire::Macaroon;
use m2m::node::ln::l402::{self, L402Issuer};
use m2m::node::seller::config::LimitsConfig;
use m2m::node::seller::sensor::{SensorKind, SimulatedSensor};

use super::btc_channel::BtcDevice;
use super::lightning::{Agent, channel_between};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_paid_with_l402_one_token_each() {
    let bitcoind = m2m::node::tools::start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = bitcoind.rpc().clone();
    let (buyer_agent, seller_agent) = (Agent::new("buyer"), Agent::new("seller"));
    let buyer = buyer_agent.start(&rpc).await;
    let seller_ln = Arc::new(seller_agent.start(&rpc).await);

    // A direct channel buyer → seller.
    channel_between(&rpc, &buyer, &seller_ln, Amount::from_sat(1_000_000), true).await;

    // The seller: satoshi-priced routes, x402 `btc-channel` and L402 on each.
    let device = BtcDevice::new(&rpc);
    let policy = PayeePolicy::default();
    let payee = Arc::new(device.payee(&rpc, policy));
    let issuer = Arc::new(
        L402Issuer::new(seller_ln.clone(), device.store.clone(), seller_agent.keys()).unwrap(),
    );
    let routes = ["/temperature", "/humidity"].map(|path| BtcRoute {
        path: path.into(),
        price: Amount::from_sat(30),
        sensor: SensorKind::Temperature,
        source: None,
    });
    let seller = Arc::new(
        BtcSeller::new(
            payee,
            &policy,
            rpc.caip2().await.unwrap(),
            routes.to_vec(),
            Arc::new(SimulatedSensor::new("l402-seller")),
        )
        .with_l402(issuer.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve_btc(
        seller.clone(),
        listener,
        &LimitsConfig::default(),
        m2m::node::tls::ServerTls::Plain,
    )
    .unwrap();
    let url = format!("http://{}/temperature", server.local_addr);
    let http = reqwest::Client::new();

    // The buyer's Lightning budget: 150 sat an hour to this payee is five readings.
    let budget_dir = tempfile::tempdir().unwrap();
    let caps = BudgetCaps {
        per_request: 30,
        per_payee_per_hour: 150,
        per_day: 10_000,
    };
    let budgets = Budgets::load(
        super::paid_http::open_store(budget_dir.path()),
        &[(Leg::Lightning, caps)],
    )
    .unwrap();
    for _ in 0..5 {
        let fetched = l402::get(&http, &buyer, &url, 100_000, Some(&budgets), WAIT)
            .await
            .unwrap();
        assert_eq!(
            fetched.status,
            200,
            "{}",
            String::from_utf8_lossy(&fetched.body)
        );
        assert_eq!(fetched.paid_msat, 30_000);
        assert!(String::from_utf8_lossy(&fetched.body).contains("Cel"));
    }
    assert_eq!(seller.paid_readings(), 5);
    let refused = l402::get(&http, &buyer, &url, 100_000, Some(&budgets), WAIT).await;
    assert!(
        matches!(
            &refused,
            Err(l402::L402Error::Budget(BudgetsError::Refused { .. }))
        ),
        "the sixth reading is over the payee's hourly cap: {refused:?}"
    );
    assert_eq!(
        seller.paid_readings(),
        5,
        "nothing was paid (the total at the end agrees)"
    );

    // One token by hand, to try it twice, on another route, and altered.
    let unpaid = http.get(&url).send().await.unwrap();
    assert_eq!(unpaid.status(), 402);
    let challenge = unpaid.headers()[reqwest::header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        unpaid.headers().contains_key("payment-required"),
        "x402 offered too"
    );
    let (macaroon, invoice) = l402::parse_challenge(&challenge).unwrap();
    let paid = buyer.pay(&invoice, WAIT).await.unwrap();
    let preimage: String = paid.preimage.iter().map(|b| format!("{b:02x}")).collect();
    let get = |url: String, authorization: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .header(reqwest::header::AUTHORIZATION, authorization)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let other_route = url.replace("/temperature", "/humidity");
    assert_eq!(
        get(other_route, format!("L402 {macaroon}:{preimage}")).await,
        402
    );
    let mut altered = Macaroon::decode(
        &base64::engine::general_purpose::STANDARD
            .decode(&macaroon)
            .unwrap(),
    )
    .unwrap();
    altered.caveats = vec![b"m2m_route=/humidity".to_vec()];
    let altered = base64::engine::general_purpose::STANDARD.encode(altered.encode());
    assert_eq!(
        get(
            url.replace("/temperature", "/humidity"),
            format!("L402 {altered}:{preimage}")
        )
        .await,
        402,
        "a caveat rewritten without the root key"
    );
    assert_eq!(
        get(url.clone(), format!("L402 {macaroon}:{}", "00".repeat(32))).await,
        402
    );
    // The former scheme name works; the token then is spent.
    assert_eq!(
        get(url.clone(), format!("LSAT {macaroon}:{preimage}")).await,
        200
    );
    assert_eq!(
        get(url.clone(), format!("L402 {macaroon}:{preimage}")).await,
        402
    );
    assert_eq!(seller.paid_readings(), 6);

    // A flood of unpaid requests mints a bounded number of invoices: challenges are reused.
    let before = issuer.minted();
    for _ in 0..100 {
        let unpaid = http.get(&url).send().await.unwrap();
        assert_eq!(unpaid.status(), 402);
        assert!(
            unpaid
                .headers()
                .contains_key(reqwest::header::WWW_AUTHENTICATE)
        );
    }
    let minted = issuer.minted() - before;
    assert!(
        minted <= l402::CHALLENGE_POOL as u64,
        "100 unpaid requests minted {minted} invoices"
    );
    assert_eq!(seller_ln.received_msat(), 6 * 30_000);
    server.shutdown().await;
    buyer.stop().await.unwrap();
    seller_ln.stop().await.unwrap();
}
