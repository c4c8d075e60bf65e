//! Shared set-up for the on-chain tests: anvil with the settlement contracts at the x402
//! canonical addresses and a test token, providers signing as anvil's funded accounts, and a
//! helper that sends a contract call and reports its gas.

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use m2m::contracts::deploy::{Deployment, deploy_test_token, install_canonical};
use m2m::node::tools::{AnvilHandle, Foundry, start_anvil};

/// A local chain ready for channel tests.
pub struct LocalChain {
    /// The running anvil (stopped on drop).
    pub anvil: AnvilHandle,
    /// Signs as anvil account 0: deploys, relays, and pays gas for others.
    pub facilitator: DynProvider,
    /// The contracts, at the canonical addresses.
    pub deployment: Deployment,
    /// The test token (6 decimals, EIP-3009, open minting).
    pub token: Address,
}

impl LocalChain {
    /// Starts anvil with `chain_id` and installs the contracts and a token.
    pub async fn start(chain_id: u64) -> Self {
        m2m::node::tls::install_crypto_provider();
        let foundry = Foundry::ensure().expect("provision local tools");
        let anvil = start_anvil(&foundry, chain_id).unwrap();
        let facilitator = provider_for(&anvil, 0);
        let deployment = install_canonical(&facilitator).await.unwrap();
        let token = deploy_test_token(&facilitator).await.unwrap();
        Self {
            anvil,
            facilitator,
            deployment,
            token,
        }
    }

    /// anvil's funded account `index` as a local signer.
    pub fn account(&self, index: usize) -> PrivateKeySigner {
        PrivateKeySigner::from(self.anvil.instance().keys()[index].clone())
    }

    /// A provider that signs as anvil account `index`.
    pub fn provider(&self, index: usize) -> DynProvider {
        provider_for(&self.anvil, index)
    }
}

fn provider_for(anvil: &AnvilHandle, index: usize) -> DynProvider {
    let signer = PrivateKeySigner::from(anvil.instance().keys()[index].clone());
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(anvil.endpoint().parse().expect("anvil endpoint"))
        .erased()
}

/// Sends `call`, waits for its receipt, checks it succeeded, prints and returns its gas.
pub async fn send<P: Provider, D: CallDecoder>(call: CallBuilder<P, D>, what: &str) -> u64 {
    let pending = call.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let receipt = pending
        .get_receipt()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(receipt.status(), "{what} reverted");
    println!("gas {what}: {}", receipt.gas_used);
    receipt.gas_used
}

/// Sets `address`'s ETH on `chain` to `wei` (gas for a device's own transactions).
pub async fn give_eth(chain: &LocalChain, address: alloy::primitives::Address, wei: u128) {
    let _: serde_json::Value = chain
        .facilitator
        .raw_request(
            "anvil_setBalance".into(),
            (address, alloy::primitives::U256::from(wei)),
        )
        .await
        .expect("anvil_setBalance");
}

/// A device wallet (fresh seed) holding `eth` wei for gas on `chain`.
pub async fn funded_device(
    chain: &LocalChain,
    eth: u128,
) -> std::sync::Arc<m2m::wallet::DeviceKeys> {
    let seed = m2m::wallet::DeviceSeed::generate(m2m::wallet::SeedLength::Words12).unwrap();
    let keys = m2m::wallet::DeviceKeys::derive(&seed, m2m::wallet::Network::Regtest).unwrap();
    give_eth(chain, m2m::wallet::Signer::evm_address(&keys), eth).await;
    std::sync::Arc::new(keys)
}

/// A seller device with gas (100 ETH: it relays deposits and claims) and a buyer device holding
/// `tokens` units of the test token (no gas: its deposits are relayed).
pub async fn seller_and_buyer(
    chain: &LocalChain,
    tokens: u128,
) -> (
    std::sync::Arc<m2m::wallet::DeviceKeys>,
    std::sync::Arc<m2m::wallet::DeviceKeys>,
) {
    let seller = funded_device(chain, 10u128.pow(20)).await;
    let buyer = funded_device(chain, 0).await;
    let token = m2m::contracts::bindings::TestToken::new(chain.token, &chain.facilitator);
    let holder = m2m::wallet::Signer::evm_address(&*buyer);
    send(
        token.mint(holder, alloy::primitives::U256::from(tokens)),
        "mint",
    )
    .await;
    (seller, buyer)
}

/// The test token held by `seller`, by `buyer` and in the settlement contract (the channels'
/// deposits): where every unit of a seller–buyer run ended up.
pub async fn token_split(
    chain: &LocalChain,
    seller: Address,
    buyer: Address,
) -> (u128, u128, u128) {
    let token = m2m::contracts::bindings::TestToken::new(chain.token, &chain.facilitator);
    let balance = |who| {
        let token = token.clone();
        async move { token.balanceOf(who).call().await.unwrap().to::<u128>() }
    };
    (
        balance(seller).await,
        balance(buyer).await,
        balance(chain.deployment.settlement).await,
    )
}
