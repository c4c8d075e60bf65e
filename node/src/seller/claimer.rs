//! Claiming on chain: every `check_secs` the claimer looks for timed withdrawals the payers
//! started (the contract's `WithdrawInitiated` events) and claims every channel the core's
//! [`ClaimPolicy`] says is due — all of them in one `claimWithSignature` per token (in chunks),
//! followed by a `settle` that moves the claimed funds to the receiver.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, Bytes};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use m2m_contracts::bindings::{BatchSettlement, IBatchSettlement};
use m2m_core::ChannelId;
use m2m_core::payee::ClaimPolicy;

use super::{Seller, SellerChannel, now_secs};
use crate::events::{AgentEvent, Leg};
use crate::evm::ChainError;
use crate::store::RecordWrite;

/// Rows per claim transaction (about 27k gas each, far below a block).
const CLAIM_CHUNK: usize = 200;

pub(super) async fn run(seller: Arc<Seller>) {
    let mut next_block = seller
        .chain
        .provider()
        .get_block_number()
        .await
        .unwrap_or(0);
    // Events before `next_block` are never scanned: whatever happened while this seller was
    // down (a payer's timed withdrawal above all) is read from each channel's state instead,
    // before the first claim pass, which then claims at once what a withdrawal puts at risk.
    let mut synced = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(seller.config.claim.check_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !synced {
            match resync_from_chain(&seller).await {
                Ok(pending) => {
                    synced = true;
                    if pending > 0 {
                        tracing::warn!(
                            channels = pending,
                            "timed withdrawals started while down; claiming now"
                        );
                    }
                }
                // Retried on the next tick; the event scan still starts where it should.
                Err(error) => tracing::warn!(%error, "reading channel state from the chain"),
            }
        }
        if let Err(error) = watch_withdrawals(&seller, &mut next_block).await {
            tracing::warn!(%error, "watching withdrawals");
        }
        match claim_due(&seller, &seller.claim_policy).await {
            Ok(0) => {}
            Ok(claimed) => tracing::info!(channels = claimed, "claimed and settled"),
            Err(error) => tracing::warn!(%error, "claiming"),
        }
    }
}

/// Reads every known channel's state from the chain (deposit, claimed, pending withdrawal);
/// returns how many have a withdrawal pending.
async fn resync_from_chain(seller: &Seller) -> Result<usize, ChainError> {
    let ids: Vec<ChannelId> = seller.lock_channels().keys().copied().collect();
    let mut pending = 0;
    for id in ids {
        if sync_channel(seller, id).await? {
            pending += 1;
        }
    }
    Ok(pending)
}

/// Mirrors one channel's on-chain state into its payee record (durably); whether a timed
/// withdrawal is pending on it.
async fn sync_channel(seller: &Seller, id: ChannelId) -> Result<bool, ChainError> {
    let Some(entry) = seller.lock_channels().get(&id).cloned() else {
        return Ok(false);
    };
    let state = seller.chain.channel(B256::from(id.0)).await?;
    let mut channel = entry.lock().await;
    let terms = *channel.payee.terms();
    let Ok(record) = channel.payee.on_chain_update(
        terms.amount(state.usable_balance()),
        terms.amount(state.total_claimed),
        state.withdrawal.map(|(_, since)| since),
    ) else {
        return Ok(false);
    };
    // Under the channel's lock: a voucher accepted meanwhile must not be overwritten by this
    // older snapshot of the record.
    persist(seller, id, record).await;
    drop(channel);
    Ok(record.withdraw_pending_since.is_some())
}

/// Marks channels whose payer started a timed withdrawal, so the next pass claims them.
async fn watch_withdrawals(seller: &Seller, next_block: &mut u64) -> Result<(), ChainError> {
    let provider = seller.chain.provider();
    let rpc = |what| move |source| ChainError::Rpc { what, source };
    let latest = provider
        .get_block_number()
        .await
        .map_err(rpc("reading the block number"))?;
    if latest < *next_block {
        return Ok(());
    }
    let filter = Filter::new()
        .address(seller.chain.settlement())
        .event_signature(BatchSettlement::WithdrawInitiated::SIGNATURE_HASH)
        .from_block(*next_block)
        .to_block(latest);
    let logs = provider
        .get_logs(&filter)
        .await
        .map_err(rpc("reading withdrawal events"))?;
    for log in logs {
        let Ok(event) = BatchSettlement::WithdrawInitiated::decode_log(&log.inner) else {
            continue;
        };
        if sync_channel(seller, ChannelId(event.channelId.0)).await? {
            tracing::warn!(channel = %event.channelId, "payer started a timed withdrawal; claiming now");
        }
    }
    *next_block = latest + 1;
    Ok(())
}

/// Claims every channel due under `policy`; returns how many were claimed.
pub(super) async fn claim_due(seller: &Seller, policy: &ClaimPolicy) -> Result<usize, ChainError> {
    let entries: Vec<_> = seller.lock_channels().values().cloned().collect();
    let now = now_secs();
    let mut due: Vec<(
        alloy::primitives::Address,
        ChannelId,
        u128,
        IBatchSettlement::VoucherClaim,
    )> = Vec::new();
    for entry in &entries {
        let channel = entry.lock().await;
        if let Some(request) = channel.payee.claim_decision(policy, now) {
            due.push((
                channel.config.token,
                request.voucher.channel_id,
                request.total_claimed_units,
                claim_row(&channel, &request.voucher, request.total_claimed_units),
            ));
        }
    }
    let mut claimed = 0;
    let mut tokens: Vec<_> = due.iter().map(|(token, ..)| *token).collect();
    tokens.sort();
    tokens.dedup();
    for token in tokens {
        let rows: Vec<_> = due.iter().filter(|(t, ..)| *t == token).collect();
        for chunk in rows.chunks(CLAIM_CHUNK) {
            let claims = chunk.iter().map(|(.., row)| row.clone()).collect();
            seller
                .chain
                .claim_and_settle(claims, seller.receiver, token)
                .await?;
            seller
                .stats
                .claims
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (_, id, total, _) in chunk {
                let entry = seller.lock_channels().get(id).cloned();
                let Some(entry) = entry else { continue };
                let mut channel = entry.lock().await;
                let amount = channel.payee.terms().amount(*total);
                if let Ok(record) = channel.payee.on_claimed(amount, now_secs()) {
                    persist(seller, *id, record).await;
                }
                claimed += 1;
            }
        }
    }
    if claimed > 0 {
        seller.events.publish(|| AgentEvent::ClaimConfirmed {
            leg: Leg::Evm,
            channels: claimed,
        });
    }
    Ok(claimed)
}

fn claim_row(
    channel: &SellerChannel,
    voucher: &m2m_core::Voucher,
    total: u128,
) -> IBatchSettlement::VoucherClaim {
    IBatchSettlement::VoucherClaim {
        voucher: IBatchSettlement::Voucher {
            channel: channel.config.clone(),
            maxClaimableAmount: voucher.max_claimable_units,
        },
        signature: Bytes::copy_from_slice(&voucher.signature.0),
        totalClaimed: total,
    }
}

/// The claimed state is a mirror of the chain: losing it only means re-reading the chain, so a
/// failed write is logged, not fatal.
async fn persist(seller: &Seller, id: ChannelId, record: m2m_core::payee::PayeeRecord) {
    if let Err(error) = seller
        .store
        .submit(RecordWrite::Payee(id, record))
        .durable()
        .await
    {
        tracing::error!(channel = %B256::from(id.0), %error, "persisting claim state");
    }
}
