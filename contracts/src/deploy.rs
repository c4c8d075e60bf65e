//! Deploying the settlement contracts.
//!
//! [`deploy`] puts fresh instances anywhere. [`install_canonical`] places the same runtime code
//! at the scheme's canonical addresses on an anvil chain (`anvil_setCode`), where the x402
//! reference client looks for it; the contracts keep no constructor-set storage for exactly this.

use alloy::primitives::{Address, Bytes};
use alloy::providers::Provider;

use crate::bindings::{BatchSettlement, ERC3009DepositCollector, TestToken};
use crate::{CANONICAL_ERC3009_COLLECTOR, CANONICAL_SETTLEMENT};

/// A deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Sending or confirming a deployment transaction failed.
    #[error("deploying {contract}: {source}")]
    Contract {
        /// Which contract.
        contract: &'static str,
        /// The cause.
        #[source]
        source: alloy::contract::Error,
    },
    /// A JSON-RPC call (e.g. `anvil_setCode`) failed.
    #[error("{method}: {source}")]
    Rpc {
        /// The method.
        method: &'static str,
        /// The cause.
        #[source]
        source: alloy::transports::TransportError,
    },
}

/// Addresses of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// `BatchSettlement`.
    pub settlement: Address,
    /// `ERC3009DepositCollector`, bound to `settlement`.
    pub erc3009_collector: Address,
}

/// Deploys a settlement contract and its EIP-3009 collector from the provider's wallet.
pub async fn deploy<P: Provider>(provider: &P) -> Result<Deployment, DeployError> {
    let settlement = deploy_settlement(provider).await?;
    let collector = deploy_collector(provider, settlement).await?;
    Ok(Deployment {
        settlement,
        erc3009_collector: collector,
    })
}

/// Places the contracts at [`CANONICAL_SETTLEMENT`] and [`CANONICAL_ERC3009_COLLECTOR`] on anvil.
pub async fn install_canonical<P: Provider>(provider: &P) -> Result<Deployment, DeployError> {
    let settlement_template = deploy_settlement(provider).await?;
    // The collector's immutable names the settlement it serves: build it for the canonical one.
    let collector_template = deploy_collector(provider, CANONICAL_SETTLEMENT).await?;
    for (template, target) in [
        (settlement_template, CANONICAL_SETTLEMENT),
        (collector_template, CANONICAL_ERC3009_COLLECTOR),
    ] {
        let code: Bytes =
            provider
                .get_code_at(template)
                .await
                .map_err(|source| DeployError::Rpc {
                    method: "eth_getCode",
                    source,
                })?;
        let _: () = provider
            .raw_request("anvil_setCode".into(), (target, code))
            .await
            .map_err(|source| DeployError::Rpc {
                method: "anvil_setCode",
                source,
            })?;
    }
    Ok(Deployment {
        settlement: CANONICAL_SETTLEMENT,
        erc3009_collector: CANONICAL_ERC3009_COLLECTOR,
    })
}

/// Deploys the test token (6 decimals, EIP-2612, EIP-3009, open minting) for local chains.
pub async fn deploy_test_token<P: Provider>(provider: &P) -> Result<Address, DeployError> {
    let token = TestToken::deploy(provider)
        .await
        .map_err(|source| DeployError::Contract {
            contract: "TestToken",
            source,
        })?;
    Ok(*token.address())
}

async fn deploy_settlement<P: Provider>(provider: &P) -> Result<Address, DeployError> {
    let settlement =
        BatchSettlement::deploy(provider)
            .await
            .map_err(|source| DeployError::Contract {
                contract: "BatchSettlement",
                source,
            })?;
    Ok(*settlement.address())
}

/// Deploys an EIP-3009 collector that forwards to `settlement`.
async fn deploy_collector<P: Provider>(
    provider: &P,
    settlement: Address,
) -> Result<Address, DeployError> {
    let collector = ERC3009DepositCollector::deploy(provider, settlement)
        .await
        .map_err(|source| DeployError::Contract {
            contract: "ERC3009DepositCollector",
            source,
        })?;
    Ok(*collector.address())
}
