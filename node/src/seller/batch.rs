//! The `batch-settlement` scheme, seller side: check the channel config against our terms,
//! relay deposits on chain, check the voucher with the channel core, persist, then let the
//! caller serve.
//!
//! Each channel is serialised by its own async mutex, held from the check to the durable write,
//! so vouchers on one channel are ordered while channels run in parallel and share fsyncs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy::primitives::{B256, U256};
use m2m_contracts::bindings::ChannelConfig;
use m2m_contracts::eip712;
use m2m_core::payee::PayeeChannel;
use m2m_core::{ChannelError, ChannelId, Voucher, VoucherVerifier};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Route, Seller, SellerChannel, encode_config, now_secs};
use crate::evm::OnChainChannel;
use crate::store::RecordWrite;
use crate::x402::batch::{BatchPayload, ChannelConfigJson, Deposit};
use crate::x402::codes;
use crate::x402::types::SettlementResponse;

/// Why a payment was not accepted: an x402 error code, a message, and for a corrective 402 the
/// channel state to add to the requirements' `extra`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    /// The spec's error code.
    pub(crate) code: &'static str,
    /// For logs and humans.
    pub(crate) message: String,
    /// Merged into the batch-settlement requirements' `extra` (corrective 402).
    pub(crate) extra: Option<Value>,
    /// The server itself failed (answer 500, not 402).
    pub(crate) internal: bool,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extra: None,
            internal: false,
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            internal: true,
            ..Self::new(codes::UNEXPECTED, message)
        }
    }
}

impl Seller {
    /// Checks and records a batch-settlement payment of `price` (one reading of `route`, or what
    /// a tick stream's voucher covers). On `Ok` the payment is durable and the reading may be
    /// served with the returned `PAYMENT-RESPONSE`.
    pub(crate) async fn pay_batch(
        &self,
        route: &Route,
        payload: &Value,
        price: u128,
    ) -> Result<SettlementResponse, Refusal> {
        let payload = BatchPayload::deserialize(payload)
            .map_err(|e| Refusal::new(codes::BATCH_PAYLOAD_TYPE, e.to_string()))?;
        let (config_json, voucher_json, deposit) = match &payload {
            BatchPayload::Deposit {
                channel_config,
                voucher,
                deposit,
            } => (channel_config, voucher, Some(deposit)),
            BatchPayload::Voucher {
                channel_config,
                voucher,
            } => (channel_config, voucher, None),
            BatchPayload::Refund { .. } => {
                return Err(Refusal::new(
                    codes::BATCH_REFUND_PAYLOAD,
                    "cooperative refunds are not offered on reading routes; use the timed withdrawal",
                ));
            }
        };
        let config = self.check_config(route, config_json)?;
        let id = B256::from(eip712::channel_id(self.chain.domain(), &config));
        if voucher_json.channel_id != id {
            return Err(Refusal::new(
                codes::BATCH_CHANNEL_ID_MISMATCH,
                format!(
                    "voucher names {} but the config hashes to {id}",
                    voucher_json.channel_id
                ),
            ));
        }
        let voucher = voucher_json
            .to_core()
            .map_err(|e| Refusal::new(codes::BATCH_VOUCHER_SIGNATURE, e.to_string()))?;
        // Nothing is created or written for a channel until the chain shows money in it: forged
        // or unfunded payments change nothing.
        let channel_id = ChannelId(id.0);
        let known = self.lock_channels().get(&channel_id).cloned();
        let (entry, fresh, transaction) = match (known, deposit) {
            (Some(entry), None) => (entry, None, String::new()),
            (known, Some(deposit)) => {
                if let Some(entry) = &known {
                    // A deposit whose voucher is not above what was charged is an old payment
                    // sent again: refused before any transaction goes out.
                    let channel = entry.lock().await;
                    let charged = channel.payee.record().charged_units;
                    if voucher.max_claimable_units <= charged {
                        let mismatch = ChannelError::CumulativeMismatch {
                            expected_units: charged.saturating_add(price),
                            found_units: voucher.max_claimable_units,
                        };
                        return Err(refusal_for(&channel, mismatch));
                    }
                }
                let terms = self.terms_of(&config, channel_id);
                let (tx, state) = self
                    .relay_deposit(&config, &terms, &voucher, deposit)
                    .await?;
                let entry = match known {
                    Some(entry) => entry,
                    None => self.create_entry(channel_id, &config)?,
                };
                (entry, Some(state), tx)
            }
            (None, None) => {
                let state = self.read_channel(id).await?;
                if state.balance == 0 {
                    return Err(Refusal::new(
                        codes::BATCH_CHANNEL_NOT_FOUND,
                        "no deposit on chain for this channel; send a deposit payload",
                    ));
                }
                (
                    self.create_entry(channel_id, &config)?,
                    Some(state),
                    String::new(),
                )
            }
        };
        let mut channel = entry.lock().await;
        if let Some(state) = fresh {
            adopt_chain_state(&mut channel, &state)?;
        }
        let charge = price;
        let price = channel.payee.terms().amount(price);
        let accepted = channel
            .payee
            .accept(&voucher, price, price, &self.verifier)
            .map_err(|error| refusal_for(&channel, error))?;
        self.store
            .submit(RecordWrite::Payee(ChannelId(id.0), accepted.record))
            .durable()
            .await
            .map_err(|e| Refusal::internal(format!("persisting the voucher: {e}")))?;
        channel.payee.commit(accepted);
        self.stats.batch_paid.fetch_add(1, Ordering::Relaxed);
        Ok(SettlementResponse {
            success: true,
            error_reason: None,
            payer: Some(format!("{:#x}", channel.config.payer)),
            transaction,
            network: self.config.network.clone(),
            amount: Some(String::new()),
            extra: Some(json!({
                "chargedAmount": charge.to_string(),
                "channelState": channel_state_json(&channel),
            })),
            extensions: None,
        })
    }

    /// The config must name us as receiver and authorizer, the route's token and our delay.
    fn check_config(
        &self,
        route: &Route,
        config: &ChannelConfigJson,
    ) -> Result<ChannelConfig, Refusal> {
        if config.receiver != self.receiver {
            return Err(Refusal::new(
                codes::BATCH_RECEIVER_MISMATCH,
                "receiver is not this seller",
            ));
        }
        if config.receiver_authorizer != self.receiver_authorizer {
            return Err(Refusal::new(
                codes::BATCH_RECEIVER_AUTHORIZER_MISMATCH,
                "receiverAuthorizer is not this seller's",
            ));
        }
        if config.token != route.config.asset {
            return Err(Refusal::new(
                codes::BATCH_TOKEN_MISMATCH,
                "token is not the route's asset",
            ));
        }
        if config.withdraw_delay != self.config.withdraw_delay_secs {
            return Err(Refusal::new(
                codes::BATCH_WITHDRAW_DELAY_MISMATCH,
                format!("withdrawDelay must be {}", self.config.withdraw_delay_secs),
            ));
        }
        if config.payer.is_zero() || config.payer_authorizer.is_zero() {
            return Err(Refusal::new(
                codes::BATCH_PAYLOAD_TYPE,
                "payer and payerAuthorizer must be set (EIP-1271 payers are not supported)",
            ));
        }
        config
            .to_contract()
            .map_err(|e| Refusal::new(codes::BATCH_WITHDRAW_DELAY_MISMATCH, e.to_string()))
    }

    /// A funded channel's entry, created (and its config saved durably) on first sight.
    fn create_entry(
        &self,
        id: ChannelId,
        config: &ChannelConfig,
    ) -> Result<Arc<tokio::sync::Mutex<SellerChannel>>, Refusal> {
        if let Some(entry) = self.lock_channels().get(&id) {
            return Ok(entry.clone());
        }
        // Once per channel: the config must be on disk before any of its vouchers is
        // acknowledged, so the claimer can always rebuild the claim.
        self.store
            .save_terms(&id, &encode_config(config))
            .map_err(|e| Refusal::internal(format!("saving channel terms: {e}")))?;
        let terms = self.terms_of(config, id);
        let payee = PayeeChannel::open(terms, terms.amount(0), now_secs())
            .map_err(|e| Refusal::internal(e.to_string()))?;
        let mut channels = self.lock_channels();
        let entry = channels.entry(id).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(SellerChannel {
                config: config.clone(),
                payee,
            }))
        });
        Ok(entry.clone())
    }

    async fn read_channel(&self, id: B256) -> Result<OnChainChannel, Refusal> {
        self.chain
            .channel(id)
            .await
            .map_err(|e| Refusal::new(codes::BATCH_RPC_READ_FAILED, e.to_string()))
    }

    /// Submits the payer's EIP-3009 deposit through the collector; returns the transaction and the
    /// channel's state after it.
    async fn relay_deposit(
        &self,
        config: &ChannelConfig,
        terms: &m2m_core::ChannelTerms,
        voucher: &Voucher,
        deposit: &Deposit,
    ) -> Result<(String, OnChainChannel), Refusal> {
        let amount: u128 = deposit
            .amount
            .parse()
            .ok()
            .filter(|amount| *amount > 0)
            .ok_or_else(|| {
                Refusal::new(
                    codes::BATCH_PAYLOAD_TYPE,
                    "deposit.amount must be a positive integer",
                )
            })?;
        let Some(auth) = &deposit.authorization.erc3009_authorization else {
            return Err(Refusal::new(
                codes::BATCH_ERC3009_REQUIRED,
                "only EIP-3009 deposits are accepted",
            ));
        };
        let number = |text: &str, what: &'static str| {
            parse_uint(text)
                .ok_or_else(|| Refusal::new(codes::BATCH_PAYLOAD_TYPE, format!("bad {what}")))
        };
        let valid_after = number(&auth.valid_after, "validAfter")?;
        let valid_before = number(&auth.valid_before, "validBefore")?;
        let salt = number(&auth.salt, "salt")?;
        if valid_before <= U256::from(now_secs()) {
            return Err(Refusal::new(
                codes::BATCH_VALID_BEFORE_EXPIRED,
                "authorization expired",
            ));
        }
        if valid_after > U256::from(now_secs()) {
            return Err(Refusal::new(
                codes::BATCH_VALID_AFTER_IN_FUTURE,
                "authorization not yet valid",
            ));
        }
        // Refuse a deposit whose voucher is not even the payer's before spending gas on it.
        let digest = m2m_core::voucher_digest(
            &terms.domain_separator,
            &terms.channel_id,
            voucher.max_claimable_units,
        );
        if !self
            .verifier
            .is_valid(&digest, &voucher.signature, &terms.payer_authorizer)
        {
            return Err(Refusal::new(
                codes::BATCH_VOUCHER_SIGNATURE,
                "voucher is not signed by payerAuthorizer",
            ));
        }
        let data = eip712::erc3009_collector_data(valid_after, valid_before, salt, &auth.signature);
        let tx = self
            .chain
            .deposit(config.clone(), amount, self.config.erc3009_collector, data)
            .await
            .map_err(|e| Refusal::new(codes::BATCH_DEPOSIT_TRANSACTION_FAILED, e.to_string()))?;
        let state = self.read_channel(B256::from(terms.channel_id.0)).await?;
        tracing::info!(channel = %B256::from(terms.channel_id.0), amount, %tx, "deposit relayed");
        Ok((format!("{tx:#x}"), state))
    }
}

/// Mirrors the chain into the payee record; a channel first seen with claims on chain starts
/// charged at the claimed total (nothing below it can be claimed again).
fn adopt_chain_state(channel: &mut SellerChannel, state: &OnChainChannel) -> Result<(), Refusal> {
    let terms = *channel.payee.terms();
    let mut record = *channel.payee.record();
    record.deposit_units = state.usable_balance();
    record.claimed_units = state.total_claimed;
    record.charged_units = record.charged_units.max(state.total_claimed);
    record.withdraw_pending_since = state.withdrawal.map(|(_, since)| since);
    channel.payee =
        PayeeChannel::restore(terms, record).map_err(|e| Refusal::internal(e.to_string()))?;
    Ok(())
}

/// The `channelState` object the reference client reads from responses and corrective 402s.
pub(crate) fn channel_state_json(channel: &SellerChannel) -> Value {
    let record = channel.payee.record();
    json!({
        "channelId": format!("{:#x}", B256::from(channel.payee.terms().channel_id.0)),
        "balance": record.deposit_units.to_string(),
        "totalClaimed": record.claimed_units.to_string(),
        "withdrawRequestedAt": record.withdraw_pending_since.unwrap_or(0),
        "refundNonce": "0",
        "chargedCumulativeAmount": record.charged_units.to_string(),
    })
}

/// Maps a core refusal to the scheme's error code; a cumulative mismatch becomes a corrective
/// 402 carrying the state and the newest voucher the payer signed.
fn refusal_for(channel: &SellerChannel, error: ChannelError) -> Refusal {
    let message = error.to_string();
    match error {
        ChannelError::CumulativeMismatch { found_units, .. } => {
            let record = channel.payee.record();
            let code = if found_units < record.claimed_units {
                codes::BATCH_CUMULATIVE_BELOW_CLAIMED
            } else {
                codes::BATCH_CUMULATIVE_MISMATCH
            };
            let voucher_state = record.latest.map(|voucher| {
                json!({
                    "signedMaxClaimable": voucher.max_claimable_units.to_string(),
                    "signature": format!("0x{}", alloy::primitives::hex::encode(voucher.signature.0)),
                })
            });
            let mut extra = json!({ "channelState": channel_state_json(channel) });
            if let Some(state) = voucher_state {
                extra["voucherState"] = state;
            }
            Refusal {
                extra: Some(extra),
                ..Refusal::new(code, message)
            }
        }
        // The payer's view of the balance is stale (e.g. a withdrawal is pending): tell it.
        ChannelError::ExceedsDeposit { .. } => Refusal {
            extra: Some(json!({ "channelState": channel_state_json(channel) })),
            ..Refusal::new(codes::BATCH_CUMULATIVE_EXCEEDS_BALANCE, message)
        },
        ChannelError::InvalidSignature => Refusal::new(codes::BATCH_VOUCHER_SIGNATURE, message),
        ChannelError::WrongChannel { .. } => {
            Refusal::new(codes::BATCH_CHANNEL_ID_MISMATCH, message)
        }
        _ => Refusal::new(codes::BATCH_PAYLOAD_TYPE, message),
    }
}

/// A uint256 written as decimal or 0x-hex (clients write salts either way).
pub(crate) fn parse_uint(text: &str) -> Option<U256> {
    match text.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.len() <= 64 => U256::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}
