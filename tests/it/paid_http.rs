//! Pay per reading over HTTP 402, end to end on anvil: our seller (`m2m serve`'s library form)
//! and our buyer, both with device wallets; channels opened by EIP-3009 deposits the seller
//! relays; vouchers persisted on both sides; claims and settlement on chain; conservation of the
//! token checked to the unit. Then the hostile cases: forged and replayed payments, oversized
//! and slow headers, a flood from one client.

use std::sync::Arc;

use alloy::primitives::U256;
use alloy::providers::Provider;
use m2m::contracts::bindings::TestToken;
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::datadir::DataDir;
use m2m::node::seller::sensor::SimulatedSensor;
use m2m::node::seller::{Seller, SellerConfig, ServerHandle, serve};
use m2m::node::store::ChannelStore;
use m2m::node::x402::headers;
use m2m::node::x402::types::PaymentRequired;

use crate::support::{LocalChain, seller_and_buyer, send};

pub const PRICE: u128 = 1_000;
const MINTED: u128 = 10_000_000;

fn seller_config(chain: &LocalChain, extra: &str) -> SellerConfig {
    SellerConfig::parse(&format!(
        r#"
        listen = "127.0.0.1:0"
        rpc_url = "{rpc}"
        network = "eip155:31337"
        {extra}
        [claim]
        check_secs = 1
        threshold = "50000"
        [[route]]
        path = "/temperature"
        price = "{PRICE}"
        asset = "{token}"
        description = "outdoor temperature"
        [[route]]
        path = "/humidity"
        price = "{PRICE}"
        asset = "{token}"
        schemes = ["exact"]
        sensor = "humidity"
        "#,
        rpc = chain.anvil.endpoint(),
        token = chain.token,
    ))
    .expect("seller config")
}

/// A channel store in a fresh data directory (the directory lock is released: tests reopen).
pub fn open_store(dir: &std::path::Path) -> ChannelStore {
    let data_dir = DataDir::open(dir).unwrap();
    ChannelStore::open(&data_dir).unwrap()
}

pub async fn start_seller(
    chain: &LocalChain,
    keys: &Arc<m2m::wallet::DeviceKeys>,
    dir: &std::path::Path,
    extra: &str,
) -> (Arc<Seller>, ServerHandle, String) {
    let data_dir = DataDir::open(dir).unwrap();
    let store = ChannelStore::open(&data_dir).unwrap();
    drop(data_dir); // tests reopen the store in-process; the CLI keeps the lock for its lifetime
    let sensor = Arc::new(SimulatedSensor::new("seller"));
    let seller = Seller::start(seller_config(chain, extra), keys.clone(), store, sensor)
        .await
        .expect("start seller");
    let server = serve(seller.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .expect("serve");
    let base = format!("http://{}", server.local_addr);
    (seller, server, base)
}

/// The payer (`buyer_keys`) starts a timed withdrawal of its channel to `seller` (given gas for
/// it); returns the settlement contract as the payer sees it, and the channel id.
pub async fn start_withdrawal(
    chain: &LocalChain,
    buyer_keys: &Arc<m2m::wallet::DeviceKeys>,
    seller: &Seller,
) -> (
    m2m::contracts::bindings::BatchSettlement::BatchSettlementInstance<impl Provider + use<>>,
    alloy::primitives::B256,
) {
    let _: serde_json::Value = chain
        .facilitator
        .raw_request(
            "anvil_setBalance".into(),
            (
                m2m::wallet::Signer::evm_address(&**buyer_keys),
                U256::from(10u128.pow(18)),
            ),
        )
        .await
        .unwrap();
    let as_buyer = alloy::providers::ProviderBuilder::new()
        .wallet(alloy::network::EthereumWallet::new(
            m2m::node::evm::WalletTxSigner(buyer_keys.clone()),
        ))
        .connect_http(chain.anvil.endpoint().parse().unwrap());
    let settlement =
        m2m::contracts::bindings::BatchSettlement::new(chain.deployment.settlement, as_buyer);
    let config = m2m::contracts::bindings::ChannelConfig {
        payer: m2m::wallet::Signer::evm_address(&**buyer_keys),
        payerAuthorizer: m2m::wallet::Signer::evm_address(&**buyer_keys),
        receiver: seller.receiver(),
        receiverAuthorizer: seller.chain().provider_address(),
        token: chain.token,
        withdrawDelay: alloy::primitives::aliases::U40::from(900u64),
        salt: alloy::primitives::B256::ZERO,
    };
    let id = m2m::contracts::eip712::channel_id(seller.chain().domain(), &config);
    send(
        settlement.initiateWithdraw(config, 10_000),
        "initiateWithdraw",
    )
    .await;
    (settlement, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_pays_seller_per_reading_with_vouchers_and_exact() {
    let chain = LocalChain::start(31337).await;
    let (seller_keys, buyer_keys) = seller_and_buyer(&chain, MINTED).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let dirs = tempfile::tempdir().unwrap();
    let (seller, server, base) =
        start_seller(&chain, &seller_keys, &dirs.path().join("seller"), "").await;

    // Unpaid: 402 with the price list in PAYMENT-REQUIRED.
    let http = reqwest::Client::new();
    let unpaid = http
        .get(format!("{base}/temperature"))
        .send()
        .await
        .unwrap();
    assert_eq!(unpaid.status(), 402);
    let required: PaymentRequired =
        headers::decode(unpaid.headers()["PAYMENT-REQUIRED"].to_str().unwrap()).unwrap();
    assert_eq!(required.accepts.len(), 2);
    assert_eq!(required.accepts[0].scheme, "batch-settlement");
    assert_eq!(required.accepts[0].amount, PRICE.to_string());
    assert_eq!(
        http.get(format!("{base}/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // 150 readings by voucher: two deposits of 100 readings each, relayed by the seller.
    let buyer_dir = DataDir::open(&dirs.path().join("buyer")).unwrap();
    let buyer = Buyer::new(
        buyer_keys.clone(),
        ChannelStore::open(&buyer_dir).unwrap(),
        BuyerOptions::default(),
    );
    for _ in 0..150 {
        let fetched = buyer
            .get(&format!("{base}/temperature"))
            .await
            .expect("paid reading");
        assert_eq!(fetched.status, 200);
        let senml: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
        assert_eq!(senml[0]["n"], "simulated:temperature");
        assert_eq!(fetched.paid, Some(("batch-settlement".into(), PRICE)));
    }
    let deposits = buyer
        .stats
        .deposits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(deposits, 2, "a deposit of 100 readings, then one top-up");

    // 3 readings by exact: the seller settles each transfer itself.
    for _ in 0..3 {
        let fetched = buyer
            .get(&format!("{base}/humidity"))
            .await
            .expect("exact reading");
        let settlement = fetched.settlement.unwrap();
        assert!(settlement.transaction.starts_with("0x"), "{settlement:?}");
    }

    // The payer starts a timed withdrawal: the seller's claimer sees the event and claims at once
    // (its threshold of 50 readings was never reached, its interval is an hour).
    let claimer = tokio::spawn(seller.clone().run_claimer());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // claimer's first look
    let (settlement, id) = start_withdrawal(&chain, &buyer_keys, &seller).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while settlement.channels(id).call().await.unwrap().totalClaimed < 150 * PRICE {
        assert!(
            std::time::Instant::now() < deadline,
            "the claimer did not claim during the withdrawal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    claimer.abort();

    // Nothing left to claim; check every unit of the token.
    let claimed = seller.claim_all().await.expect("claim");
    assert_eq!(claimed, 0, "already claimed because of the withdrawal");
    server.shutdown().await;
    let balance = |who| {
        let token = token.clone();
        async move { token.balanceOf(who).call().await.unwrap().to::<u128>() }
    };
    let seller_got = balance(seller.receiver()).await;
    let buyer_left = balance(m2m::wallet::Signer::evm_address(&*buyer_keys)).await;
    let escrow = balance(chain.deployment.settlement).await;
    assert_eq!(seller_got, 153 * PRICE, "150 vouchers + 3 exact transfers");
    assert_eq!(
        escrow,
        200 * PRICE - 150 * PRICE,
        "unspent deposit stays in escrow"
    );
    assert_eq!(seller_got + buyer_left + escrow, MINTED, "conservation");
    println!(
        "paid http: 150 vouchers, 2 deposits, 3 exact; seller {seller_got}, buyer {buyer_left}, escrow {escrow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_that_never_answers_costs_one_timeout_not_a_frozen_buyer() {
    // Accepts connections and reads nothing back: a hung seller.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || listener.incoming().collect::<Vec<_>>());
    let seed = m2m::wallet::DeviceSeed::generate(m2m::wallet::SeedLength::Words12).unwrap();
    let keys = m2m::wallet::DeviceKeys::derive(&seed, m2m::wallet::Network::Regtest).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = BuyerOptions {
        timeout: std::time::Duration::from_secs(1),
        ..BuyerOptions::default()
    };
    let buyer = Buyer::new(Arc::new(keys), open_store(dir.path()), options);
    let started = std::time::Instant::now();
    let outcome = buyer.get(&format!("http://{address}/temperature")).await;
    assert!(outcome.is_err(), "no answer is an error");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "given up after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_caps_the_payee_not_the_port_it_answers_on() {
    use m2m::node::budget::{BudgetCaps, Budgets, BudgetsError};
    use m2m::node::events::Leg;
    let chain = LocalChain::start(31337).await;
    let (seller_keys, buyer_keys) = seller_and_buyer(&chain, MINTED).await;
    let dirs = tempfile::tempdir().unwrap();
    // One seller (one payTo) answering on two ports.
    let (seller, _server_a, first) =
        start_seller(&chain, &seller_keys, &dirs.path().join("seller"), "").await;
    let server_b = serve(seller.clone(), None, m2m::node::tls::ServerTls::Plain)
        .await
        .expect("second listener");
    let second = format!("http://{}", server_b.local_addr);
    let caps = BudgetCaps {
        per_request: PRICE,
        per_payee_per_hour: 3 * PRICE,
        per_day: 100 * PRICE,
    };
    let store = open_store(&dirs.path().join("buyer"));
    let budgets = Budgets::load(store.clone(), &[(Leg::Evm, caps)]).unwrap();
    let options = BuyerOptions {
        budget: Some(std::sync::Arc::new(budgets)),
        ..BuyerOptions::default()
    };
    let buyer = Buyer::new(buyer_keys, store, options);
    for base in [&first, &first, &second] {
        let fetched = buyer.get(&format!("{base}/temperature")).await.unwrap();
        assert_eq!(fetched.paid.unwrap().1, PRICE);
    }
    let refused = buyer.get(&format!("{second}/temperature")).await;
    assert!(
        matches!(
            refused,
            Err(m2m::node::buyer::BuyerError::Budget(
                BudgetsError::Refused {
                    cause: m2m::core::budget::BudgetError::PeerHourly { .. },
                    ..
                }
            ))
        ),
        "the fourth reading from the same payee is over its hourly cap, whatever the port: {refused:?}"
    );
}
