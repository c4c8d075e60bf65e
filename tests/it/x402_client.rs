//! Interoperability: the x402 reference client (`@x402/evm` 2.27 from npm, run by Node) opens a
//! channel on our contract and pays with its vouchers. Our contract, at the canonical addresses
//! on anvil, accepts its EIP-3009 deposit and its voucher signatures, and our Rust channel id
//! equals the client's.

use std::io::Write;
use std::process::{Command, Stdio};

use alloy::primitives::aliases::U40;
use alloy::primitives::{B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use m2m::contracts::bindings::{BatchSettlement, ChannelConfig, IBatchSettlement, TestToken};
use m2m::contracts::eip712;
use m2m::node::tools::{BundleFile, GuardedChild, NpmBundle};
use m2m::node::x402::batch::BatchPayload;

use crate::support::{LocalChain, send};

/// The x402 reference software (client, fetch wrapper, express seller) from npm, pinned.
pub const REFERENCE: NpmBundle = NpmBundle {
    name: "x402-reference-2.27.0",
    package_json: include_str!("../interop/package.json"),
    package_lock: include_str!("../interop/package-lock.json"),
    files: &[
        BundleFile {
            name: "x402-client.mjs",
            contents: include_str!("../interop/x402-client.mjs"),
            executable: false,
        },
        BundleFile {
            name: "x402-fetch-client.mjs",
            contents: include_str!("../interop/x402-fetch-client.mjs"),
            executable: false,
        },
        BundleFile {
            name: "x402-express-seller.mjs",
            contents: include_str!("../interop/x402-express-seller.mjs"),
            executable: false,
        },
    ],
};

/// Starts `node SCRIPT` in the reference bundle with `input` written to its stdin; stderr goes
/// to the test output. Killed when dropped, or by the reaper if the test process dies.
pub fn spawn_reference(script: &str, input: &serde_json::Value) -> GuardedChild {
    let dir = REFERENCE
        .ensure(|_| Ok(()))
        .expect("install the x402 reference packages from npm");
    let mut child = GuardedChild::spawn(
        Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("node is needed for the interop tests");
    child
        .child()
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.to_string().as_bytes())
        .expect("write the script's input");
    child
}

/// Runs a reference script to completion; returns its JSON output.
pub fn run_reference(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let mut child = spawn_reference(script, input);
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.child().stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(child.child().wait().unwrap().success(), "{script} failed");
    serde_json::from_slice(&stdout).expect("script output is JSON")
}

pub fn hex_key(signer: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::primitives::hex::encode(signer.to_bytes()))
}

fn field<'a>(json: &'a serde_json::Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(json, |value, key| &value[*key])
        .as_str()
        .unwrap_or_else(|| panic!("missing {path:?} in {json}"))
}

#[tokio::test]
async fn the_x402_reference_client_pays_our_contract() {
    let chain = LocalChain::start(31337).await;
    let payer = chain.account(5);
    let voucher_signer = chain.account(6);
    let receiver = chain.account(7).address();
    let receiver_authorizer = chain.account(8).address();
    let (provider, deployment, token_address) = (&chain.facilitator, chain.deployment, chain.token);
    let token = TestToken::new(token_address, provider);
    send(
        token.mint(payer.address(), U256::from(5_000_000u64)),
        "mint",
    )
    .await;

    let request = serde_json::json!({
        "payerKey": hex_key(&payer),
        "voucherSignerKey": hex_key(&voucher_signer),
        "chainId": 31337,
        "asset": token_address.to_checksum(None),
        "payTo": receiver.to_checksum(None),
        "receiverAuthorizer": receiver_authorizer.to_checksum(None),
        "withdrawDelay": 900,
        "tokenName": token.name().call().await.unwrap(),
        "tokenVersion": token.version().call().await.unwrap(),
        "price": "1000",
        "depositAmount": "2000000",
        "laterCumulative": "7000",
        "salt": format!("{:#x}", B256::with_last_byte(42)),
    });
    let paid = run_reference("x402-client.mjs", &request);

    let config = ChannelConfig {
        payer: payer.address(),
        payerAuthorizer: voucher_signer.address(),
        receiver,
        receiverAuthorizer: receiver_authorizer,
        token: token_address,
        withdrawDelay: U40::from(900),
        salt: B256::with_last_byte(42),
    };
    let domain = eip712::settlement_domain(31337, deployment.settlement);
    let channel_id = eip712::channel_id(&domain, &config);
    assert_eq!(
        field(&paid, &["channelId"]).parse::<B256>().unwrap(),
        channel_id,
        "client and Rust agree on the id"
    );

    // Our typed x402 form reads the client's JSON: same config, and a voucher the core accepts.
    let typed: BatchPayload =
        serde_json::from_value(paid["deposit"].clone()).expect("client deposit payload");
    let BatchPayload::Deposit {
        channel_config,
        voucher,
        ..
    } = typed
    else {
        panic!("not a deposit payload")
    };
    assert_eq!(channel_config.to_contract().unwrap(), config);
    let core_voucher = voucher.to_core().unwrap();
    assert_eq!(
        (core_voucher.channel_id.0, core_voucher.max_claimable_units),
        (channel_id.0, 1000)
    );
    let terms = m2m::core::ChannelTerms {
        channel_id: core_voucher.channel_id,
        asset: m2m::core::Asset::Erc20 {
            chain_id: 31337,
            token: token_address.0.0,
        },
        domain_separator: domain.separator().0,
        payer_authorizer: m2m::core::EvmAddress(voucher_signer.address().0.0),
    };
    let payee = m2m::core::payee::PayeeChannel::open(terms, terms.amount(2_000_000), 0).unwrap();
    let price = terms.amount(1000);
    let verifier = m2m::node::channel_crypto::Secp256k1Verifier::default();
    let accepted = payee
        .accept(&core_voucher, price, price, &verifier)
        .expect("the core accepts the client's voucher");
    assert_eq!(accepted.record.charged_units, 1000);

    // The facilitator submits the client's EIP-3009 deposit through the canonical collector.
    let auth = &paid["deposit"]["deposit"]["authorization"]["erc3009Authorization"];
    let data = eip712::erc3009_collector_data(
        field(auth, &["validAfter"]).parse().unwrap(),
        field(auth, &["validBefore"]).parse().unwrap(),
        field(auth, &["salt"]).parse().unwrap(),
        &field(auth, &["signature"]).parse::<Bytes>().unwrap(),
    );
    let settlement = BatchSettlement::new(deployment.settlement, provider);
    let deposit = settlement.deposit(
        config.clone(),
        2_000_000,
        deployment.erc3009_collector,
        data,
    );
    send(deposit, "client deposit (EIP-3009) accepted").await;

    // The receiver claims the client's later voucher (charging less than its ceiling), then settles.
    let voucher_signature: Bytes = field(&paid, &["later", "signature"]).parse().unwrap();
    let row = IBatchSettlement::VoucherClaim {
        voucher: IBatchSettlement::Voucher {
            channel: config,
            maxClaimableAmount: 7000,
        },
        signature: voucher_signature,
        totalClaimed: 6500,
    };
    let receiver_provider = chain.provider(7);
    let as_receiver = BatchSettlement::new(deployment.settlement, &receiver_provider);
    let claim = as_receiver.claim(vec![row]);
    send(claim, "client voucher claimed").await;
    send(settlement.settle(receiver, token_address), "settle").await;
    assert_eq!(
        token.balanceOf(receiver).call().await.unwrap(),
        U256::from(6500)
    );
    let channel = settlement.channels(channel_id).call().await.unwrap();
    assert_eq!((channel.balance, channel.totalClaimed), (2_000_000, 6500));
    assert_eq!(
        token.balanceOf(deployment.settlement).call().await.unwrap(),
        U256::from(2_000_000 - 6500)
    );
}
