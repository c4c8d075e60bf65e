//! HTTP interop with x402 software nobody here wrote (npm, pinned, run by Node):
//! - the reference buyer (`@x402/fetch` + `@x402/evm`, schemes `exact` and `batch-settlement`)
//!   pays our seller, the batch channel living in our contract at the canonical address;
//! - our buyer pays a reference seller (`@x402/express` with the reference facilitator);
//! - the same reference seller settles through our facilitator endpoints instead.

use m2m::node::tools::GuardedChild;
use std::io::{BufRead, BufReader};

use alloy::primitives::U256;
use m2m::contracts::bindings::TestToken;
use m2m::node::buyer::{Buyer, BuyerOptions};
use m2m::node::datadir::DataDir;
use m2m::node::store::ChannelStore;
use sha2::Digest;

use crate::paid_http::start_seller;
use crate::support::{LocalChain, funded_device, send};
use crate::x402_client::{hex_key, run_reference, spawn_reference};

/// The API key the reference seller presents to our facilitator.
const FACILITATOR_KEY: &str = "interop facilitator key";

/// A reference express seller, killed on drop.
struct ExpressSeller {
    _child: GuardedChild,
    url: String,
}

impl ExpressSeller {
    fn start(input: &serde_json::Value) -> Self {
        let mut child = spawn_reference("x402-express-seller.mjs", input);
        let mut line = String::new();
        BufReader::new(child.child().stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = serde_json::from_str::<serde_json::Value>(&line)
            .expect("express prints its port")["port"]
            .as_u64()
            .unwrap();
        Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}/weather"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_clients_and_sellers_interoperate_with_ours() {
    let chain = LocalChain::start(31337).await;
    let token = TestToken::new(chain.token, &chain.facilitator);
    let seller_keys = funded_device(&chain, 10u128.pow(20)).await;
    let dirs = tempfile::tempdir().unwrap();
    // Our seller is also a facilitator for the reference seller below, for callers with the key.
    let facilitator = format!(
        "facilitator = true\nfacilitator_api_keys_sha256 = [\"{}\"]\n",
        alloy::primitives::hex::encode(sha2::Sha256::digest(FACILITATOR_KEY))
    );
    let (seller, _server, base) = start_seller(
        &chain,
        &seller_keys,
        &dirs.path().join("seller"),
        &facilitator,
    )
    .await;
    let http = reqwest::Client::new();
    for key in [None, Some("guessed")] {
        let mut settle = http
            .post(format!("{base}/settle"))
            .json(&serde_json::json!({}));
        if let Some(key) = key {
            settle = settle.bearer_auth(key);
        }
        assert_eq!(
            settle.send().await.unwrap().status(),
            401,
            "no gas spent for a caller without the key ({key:?})"
        );
    }

    // The reference buyer pays our seller, with each scheme.
    let reference_buyer = chain.account(1);
    send(
        token.mint(reference_buyer.address(), U256::from(10_000_000u64)),
        "mint",
    )
    .await;
    for (scheme, count) in [("exact", 2), ("batch-settlement", 5)] {
        let output = run_reference(
            "x402-fetch-client.mjs",
            &serde_json::json!({
                "url": format!("{base}/temperature"),
                "payerKey": hex_key(&reference_buyer),
                "scheme": scheme,
                "count": count,
                "asset": chain.token.to_checksum(None),
                "maxAmountPerPayment": "1000000",
            }),
        );
        let results = output["results"].as_array().unwrap();
        assert_eq!(results.len(), count);
        for result in results {
            assert_eq!(result["status"], 200, "{scheme}: {result}");
            assert!(
                result["body"]
                    .as_str()
                    .unwrap()
                    .contains("\"n\":\"simulated:temperature\"")
            );
            assert_eq!(result["settlement"]["success"], true);
        }
        if scheme == "batch-settlement" {
            let last = &results[count - 1]["settlement"]["extra"]["channelState"];
            assert_eq!(
                last["chargedCumulativeAmount"],
                (count as u128 * crate::paid_http::PRICE).to_string()
            );
        }
    }
    assert_eq!(
        seller.claim_all().await.unwrap(),
        1,
        "the reference client's channel is claimed"
    );
    assert_eq!(
        token.balanceOf(seller.receiver()).call().await.unwrap(),
        U256::from(7 * crate::paid_http::PRICE),
        "2 exact transfers + 5 vouchers reached the seller"
    );

    // Our buyer pays the reference seller, settled by the reference facilitator, then by ours.
    let buyer_keys = funded_device(&chain, 0).await;
    send(
        token.mint(
            m2m::wallet::Signer::evm_address(&*buyer_keys),
            U256::from(1_000_000u64),
        ),
        "mint",
    )
    .await;
    let buyer_dir = DataDir::open(&dirs.path().join("buyer")).unwrap();
    let buyer = Buyer::new(
        buyer_keys,
        ChannelStore::open(&buyer_dir).unwrap(),
        BuyerOptions::default(),
    );
    let pay_to = chain.account(3).address();
    let mut config = serde_json::json!({
        "rpcUrl": chain.anvil.endpoint(),
        "chainId": 31337,
        "facilitatorKey": hex_key(&chain.account(2)),
        "payTo": pay_to.to_checksum(None),
        "asset": chain.token.to_checksum(None),
        "price": "2500",
        "tokenName": token.name().call().await.unwrap(),
        "tokenVersion": token.version().call().await.unwrap(),
    });
    for facilitator in ["reference", "ours"] {
        if facilitator == "ours" {
            config["facilitatorUrl"] = serde_json::Value::String(base.clone());
            config["facilitatorApiKey"] = serde_json::Value::String(FACILITATOR_KEY.into());
        }
        let express = ExpressSeller::start(&config);
        let fetched = buyer
            .get(&express.url)
            .await
            .unwrap_or_else(|e| panic!("{facilitator} facilitator: {e}"));
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.paid, Some(("exact".into(), 2500)));
        let body: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
        assert_eq!(body["report"], "sunny");
    }
    assert_eq!(
        token.balanceOf(pay_to).call().await.unwrap(),
        U256::from(5000u64)
    );
}
