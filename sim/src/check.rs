//! The end-of-run checks: timed withdrawals completed, and conservation of the token — read from
//! the chain and from every device's store — to the unit.

use std::collections::HashMap;

use alloy::network::EthereumWallet;
use alloy::primitives::aliases::U40;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use m2m_contracts::bindings::{BatchSettlement, ChannelConfig, TestToken};
use m2m_contracts::eip712;
use m2m_core::ChannelId;
use m2m_node::evm::WalletTxSigner;
use m2m_node::x402::types::PaymentRequired;
use m2m_wallet::{DeviceKeys, Signer};
use serde::Serialize;

use crate::SimError;
use crate::adversary::OverchargingSeller;
use crate::fleet::SimBuyer;
use crate::run::{CHAIN_ID, Chain, ChainRef};

/// A timed withdrawal a buyer started.
#[derive(Debug, Clone)]
pub struct Withdrawal {
    keys: std::sync::Arc<DeviceKeys>,
    config: ChannelConfig,
    rpc: String,
    settlement: Address,
}

/// The buyer withdraws half of what is unclaimed in its channel with the first seller (paying
/// its own gas: the owner sends it some ether first, through the chain's dev account).
pub(crate) async fn start_withdrawal(
    chain: &ChainRef,
    keys: &std::sync::Arc<DeviceKeys>,
    terms: &PaymentRequired,
) -> Result<Option<Withdrawal>, SimError> {
    let Some(offer) = terms
        .accepts
        .iter()
        .find(|o| o.scheme == "batch-settlement")
    else {
        return Ok(None);
    };
    let extra = offer.extra.clone().unwrap_or_default();
    let parse = |text: &str| {
        text.parse::<Address>()
            .map_err(|_| SimError::Setup(format!("address {text}")))
    };
    let me = keys.evm_address();
    let config = ChannelConfig {
        payer: me,
        payerAuthorizer: me,
        receiver: parse(&offer.pay_to)?,
        receiverAuthorizer: parse(extra["receiverAuthorizer"].as_str().unwrap_or_default())?,
        token: parse(&offer.asset)?,
        withdrawDelay: U40::from(extra["withdrawDelay"].as_u64().unwrap_or(900)),
        salt: B256::ZERO,
    };
    let provider = provider_for(&chain.rpc, keys)?;
    let _: serde_json::Value = provider
        .raw_request("anvil_setBalance".into(), (me, U256::from(10u128.pow(18))))
        .await
        .map_err(SimError::rpc)?;
    let settlement = BatchSettlement::new(chain.settlement, &provider);
    let id = eip712::channel_id(
        &eip712::settlement_domain(CHAIN_ID, chain.settlement),
        &config,
    );
    let state = settlement
        .channels(id)
        .call()
        .await
        .map_err(SimError::contract)?;
    let unclaimed = state.balance.saturating_sub(state.totalClaimed);
    if unclaimed < 2 {
        return Ok(None); // no channel with this seller yet
    }
    crate::confirm(settlement.initiateWithdraw(config.clone(), unclaimed / 2)).await?;
    Ok(Some(Withdrawal {
        keys: keys.clone(),
        config,
        rpc: chain.rpc.clone(),
        settlement: chain.settlement,
    }))
}

fn provider_for(
    rpc: &str,
    keys: &std::sync::Arc<DeviceKeys>,
) -> Result<alloy::providers::DynProvider, SimError> {
    let url = rpc.parse().map_err(|_| SimError::Setup("rpc url".into()))?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::new(WalletTxSigner(keys.clone())))
        .connect_http(url)
        .erased())
}

/// Moves the chain past every withdrawal delay and finalizes them.
pub(crate) async fn finalize_withdrawals(
    chain: &Chain,
    withdrawals: &[Withdrawal],
) -> Result<(), SimError> {
    if withdrawals.is_empty() {
        return Ok(());
    }
    let longest = withdrawals
        .iter()
        .map(|w| w.config.withdrawDelay.to::<u64>())
        .max()
        .unwrap_or(0);
    let _: serde_json::Value = chain
        .owner
        .raw_request("evm_increaseTime".into(), (longest + 1,))
        .await
        .map_err(SimError::rpc)?;
    let _: serde_json::Value = chain
        .owner
        .raw_request("evm_mine".into(), ())
        .await
        .map_err(SimError::rpc)?;
    for withdrawal in withdrawals {
        let provider = provider_for(&withdrawal.rpc, &withdrawal.keys)?;
        crate::confirm(
            BatchSettlement::new(withdrawal.settlement, &provider)
                .finalizeWithdraw(withdrawal.config.clone()),
        )
        .await?;
    }
    Ok(())
}

/// A device that is paid: a seller or a gateway, with its payment state if it is running.
pub(crate) struct Earner {
    pub(crate) kind: &'static str,
    pub(crate) address: Address,
    pub(crate) seller: Option<std::sync::Arc<m2m_node::seller::Seller>>,
}

/// What the conservation check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Tokens the owner put into the fleet.
    pub topped_up: String,
    /// Held by buyers at the end.
    pub buyers: String,
    /// Held by honest sellers and gateways.
    pub sellers: String,
    /// Held by overcharging sellers (must be 0: they can claim nothing).
    pub cheats: String,
    /// Still in escrow (deposited, not claimed, not withdrawn).
    pub escrow: String,
    /// Channels audited.
    pub channels: usize,
    /// Total charged by sellers (= claimed on chain after the final claim).
    pub charged: String,
    /// Every violation found; the run fails if any.
    pub violations: Vec<String>,
    /// Each device at the end (also written to `devices.csv`).
    #[serde(skip)]
    pub devices: Vec<DeviceRow>,
}

/// One device at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    /// `buyer`, `seller` or `overcharging-seller`.
    pub kind: &'static str,
    /// Its EVM address.
    pub address: Address,
    /// Test tokens it holds.
    pub tokens: U256,
    /// Channels it is paid on (sellers).
    pub channels: usize,
    /// Total it charged (sellers).
    pub charged: u128,
}

/// Checks, to the unit: buyers + sellers + cheats + escrow = tokens topped up; for every channel,
/// the seller's charged total equals what is claimed on chain and never exceeds what the payer's
/// store says it signed.
pub(crate) async fn conservation(
    chain: &Chain,
    earners: &[Earner],
    buyers: &[std::sync::Arc<SimBuyer>],
    cheats: &[(std::sync::Arc<DeviceKeys>, OverchargingSeller)],
    topped_up: U256,
) -> Result<Audit, SimError> {
    let token = TestToken::new(chain.token, &chain.owner);
    let settlement = BatchSettlement::new(chain.settlement, &chain.owner);
    let balance = |who: Address| {
        let token = token.clone();
        async move {
            token
                .balanceOf(who)
                .call()
                .await
                .map_err(SimError::contract)
        }
    };
    let mut audit = Audit::default();
    let (mut in_buyers, mut in_sellers, mut in_cheats) = (U256::ZERO, U256::ZERO, U256::ZERO);
    for buyer in buyers {
        let tokens = balance(buyer.keys.evm_address()).await?;
        in_buyers += tokens;
        audit.devices.push(DeviceRow {
            kind: "buyer",
            address: buyer.keys.evm_address(),
            tokens,
            channels: 0,
            charged: 0,
        });
    }
    for earner in earners {
        let tokens = balance(earner.address).await?;
        in_sellers += tokens;
        let (mut channels, mut charged) = (0, 0);
        if let Some(live) = &earner.seller {
            let summaries = live.channel_summaries().await;
            channels = summaries.len();
            charged = summaries.iter().map(|c| c.charged).sum();
        }
        audit.devices.push(DeviceRow {
            kind: earner.kind,
            address: earner.address,
            tokens,
            channels,
            charged,
        });
    }
    for (cheat, _) in cheats {
        let tokens = balance(cheat.evm_address()).await?;
        in_cheats += tokens;
        audit.devices.push(DeviceRow {
            kind: "overcharging-seller",
            address: cheat.evm_address(),
            tokens,
            channels: 0,
            charged: 0,
        });
    }
    let escrow = balance(chain.settlement).await?;
    let owner_left = balance(chain.owner_address).await?;
    let held = in_buyers + in_sellers + in_cheats + escrow + owner_left;
    if held != topped_up {
        audit
            .violations
            .push(format!("tokens: held {held} != topped up {topped_up}"));
    }
    if in_cheats != U256::ZERO {
        audit
            .violations
            .push(format!("overcharging sellers obtained {in_cheats}"));
    }
    let stores: HashMap<Address, &SimBuyer> = buyers
        .iter()
        .map(|b| (b.keys.evm_address(), b.as_ref()))
        .collect();
    let mut charged_total = 0u128;
    for earner in earners {
        let Some(live) = &earner.seller else {
            continue;
        };
        for channel in live.channel_summaries().await {
            audit.channels += 1;
            charged_total += channel.charged;
            let on_chain = settlement
                .channels(channel.id)
                .call()
                .await
                .map_err(SimError::contract)?;
            if on_chain.totalClaimed != channel.charged {
                audit.violations.push(format!(
                    "channel {}: charged {} but {} claimed on chain",
                    channel.id, channel.charged, on_chain.totalClaimed
                ));
            }
            let signed = stores
                .get(&channel.payer)
                .and_then(|b| b.store.load_payer(&ChannelId(channel.id.0)).ok().flatten())
                .map(|record| record.highest_signed_units);
            match signed {
                Some(signed) if signed >= channel.charged => {}
                other => audit.violations.push(format!(
                    "channel {}: seller charged {} but the payer signed at most {other:?}",
                    channel.id, channel.charged
                )),
            }
        }
    }
    audit.topped_up = topped_up.to_string();
    audit.buyers = in_buyers.to_string();
    audit.sellers = in_sellers.to_string();
    audit.cheats = in_cheats.to_string();
    audit.escrow = escrow.to_string();
    audit.charged = charged_total.to_string();
    Ok(audit)
}
