//! One device key, several clients: the EVM seller, the gateway and the control socket each hold
//! a `SettlementClient` of the same key. Their transactions, sent at the same time on a real
//! anvil, must all be mined: no nonce handed out twice, none skipped (a transaction behind a
//! skipped nonce is never mined, and waiting for it once froze an agent's stop).

use alloy::primitives::U256;
use m2m::contracts::CANONICAL_SETTLEMENT;
use m2m::contracts::bindings::TestToken;
use m2m::node::evm::{SettlementClient, SharedSigner};

use crate::support::{LocalChain, funded_device};

const CLIENTS: usize = 3;
const SENDS_PER_CLIENT: u64 = 15;

#[tokio::test]
async fn clients_of_one_key_send_at_once_and_every_transaction_is_mined() {
    let chain = LocalChain::start(31337).await;
    let device = funded_device(&chain, 10u128.pow(20)).await;
    let signer: SharedSigner = device.clone();
    let holder = m2m::wallet::Signer::evm_address(&*device);
    let mut sends = tokio::task::JoinSet::new();
    for index in 0..CLIENTS as u64 {
        let client = SettlementClient::connect(
            &chain.anvil.endpoint(),
            signer.clone(),
            CANONICAL_SETTLEMENT,
        )
        .await
        .unwrap();
        let token_address = chain.token;
        sends.spawn(async move {
            let token = TestToken::new(token_address, client.provider());
            for n in 0..SENDS_PER_CLIENT {
                let amount = U256::from(1 + index * 1_000 + n);
                client
                    .send(token.mint(holder, amount), "minting")
                    .await
                    .unwrap_or_else(|error| panic!("client {index}, send {n}: {error}"));
            }
        });
    }
    let all_mined = async {
        while let Some(done) = sends.join_next().await {
            done.expect("a sending client");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all_mined)
        .await
        .expect("every send mined within a minute");

    let expected: u64 = (0..CLIENTS as u64)
        .flat_map(|index| (0..SENDS_PER_CLIENT).map(move |n| 1 + index * 1_000 + n))
        .sum();
    let token = TestToken::new(chain.token, &chain.facilitator);
    let minted = token.balanceOf(holder).call().await.unwrap();
    assert_eq!(minted, U256::from(expected), "every mint landed once");
}
