//! The EVM payer takes its deposit back: a timed withdrawal on the settlement contract, in two
//! steps with the channel's `withdrawDelay` between them (the payee claims its vouchers in that
//! time; what it claims wins). [`withdraw_step`] does whichever step is due and says what
//! happened, so `m2m withdraw` can be run again (or wait) until the funds are back.
//!
//! The channel's config comes from the store (the buyer saves it before its first voucher); the
//! payer record's deposit is lowered once the withdrawal has paid out, so the buyer never signs
//! against money that left.

use alloy::primitives::B256;
use m2m_contracts::bindings::ChannelConfig;

use super::{ChainError, SettlementClient};
use crate::store::{ChannelStore, RecordWrite, StoreError};

/// What [`withdraw_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawStep {
    /// A withdrawal of `amount` began; it can finish from `ready_at` (chain time, seconds).
    Started {
        /// What was asked back.
        amount: u128,
        /// When it can finish.
        ready_at: u64,
        /// The transaction.
        tx: B256,
    },
    /// A withdrawal is pending and cannot finish before `ready_at`.
    Waiting {
        /// What was asked back.
        amount: u128,
        /// When it can finish.
        ready_at: u64,
    },
    /// The withdrawal finished: `amount` went back to the payer.
    Finished {
        /// What came back (at most what was asked; less if the payee claimed meanwhile).
        amount: u128,
        /// The transaction.
        tx: B256,
    },
    /// Nothing is left in the channel to take back.
    Empty,
}

impl WithdrawStep {
    /// As `m2m withdraw --json` and the control socket show it: `withdrawal` (`started`,
    /// `waiting`, `finished`, `empty`), `amount` (decimal string), `readyAt`, `tx`.
    pub fn to_json(&self) -> serde_json::Value {
        let (event, amount, ready_at, tx) = match *self {
            WithdrawStep::Started {
                amount,
                ready_at,
                tx,
            } => ("started", amount, Some(ready_at), Some(tx)),
            WithdrawStep::Waiting { amount, ready_at } => ("waiting", amount, Some(ready_at), None),
            WithdrawStep::Finished { amount, tx } => ("finished", amount, None, Some(tx)),
            WithdrawStep::Empty => ("empty", 0, None, None),
        };
        serde_json::json!({
            "withdrawal": event,
            "amount": amount.to_string(),
            "readyAt": ready_at,
            "tx": tx,
        })
    }
}

/// A withdrawal could not be done.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    /// The store has no EVM channel with this id.
    #[error("no EVM channel {0} in this device's store")]
    UnknownChannel(B256),
    /// This device is not the channel's payer.
    #[error("this device is not the payer of channel {0} (only the payer withdraws)")]
    NotPayer(B256),
    /// The saved config does not decode.
    #[error("saved config of channel {id}")]
    Config {
        /// The channel.
        id: B256,
        /// Why.
        #[source]
        cause: alloy::sol_types::Error,
    },
    /// The chain refused or failed (gas needs ETH on the device's address).
    #[error(transparent)]
    Chain(#[from] Box<ChainError>),
    /// The store failed.
    #[error("recording the withdrawal")]
    Store(#[from] StoreError),
}

/// The saved config of channel `id`, if this device pays on it.
pub fn payer_config(
    store: &ChannelStore,
    id: B256,
    payer: alloy::primitives::Address,
) -> Result<ChannelConfig, WithdrawError> {
    let (_, bytes) = store
        .all_terms()?
        .into_iter()
        .find(|(channel, _)| channel.0 == id.0)
        .ok_or(WithdrawError::UnknownChannel(id))?;
    let config = <ChannelConfig as alloy::sol_types::SolValue>::abi_decode(&bytes)
        .map_err(|cause| WithdrawError::Config { id, cause })?;
    if config.payer != payer && config.payerAuthorizer != payer {
        return Err(WithdrawError::NotPayer(id));
    }
    Ok(config)
}

/// Starts the withdrawal of everything unclaimed, or finishes a pending one whose delay has
/// passed, or says how long it still waits.
pub async fn withdraw_step(
    client: &SettlementClient,
    store: &ChannelStore,
    id: B256,
) -> Result<WithdrawStep, WithdrawError> {
    let config = payer_config(store, id, client.provider_address())?;
    let delay: u64 = config.withdrawDelay.to();
    let chain = |error| WithdrawError::Chain(Box::new(error));
    let channel = client.channel(id).await.map_err(chain)?;
    match channel.withdrawal {
        None => {
            let available = channel.balance.saturating_sub(channel.total_claimed);
            if available == 0 {
                return Ok(WithdrawStep::Empty);
            }
            let tx = client
                .initiate_withdraw(config, available)
                .await
                .map_err(chain)?;
            let started = client
                .channel(id)
                .await
                .map_err(chain)?
                .withdrawal
                .map_or(0, |(_, at)| at);
            Ok(WithdrawStep::Started {
                amount: available,
                ready_at: started + delay,
                tx,
            })
        }
        Some((amount, started)) => {
            let ready_at = started + delay;
            if client.chain_time().await.map_err(chain)? < ready_at {
                return Ok(WithdrawStep::Waiting { amount, ready_at });
            }
            let before = channel.balance;
            let tx = client.finalize_withdraw(config).await.map_err(chain)?;
            let after = client.channel(id).await.map_err(chain)?;
            if let Some(mut record) = store.load_payer(&m2m_core::ChannelId(id.0))? {
                record.deposit_units = after.balance;
                store
                    .submit(RecordWrite::Payer(m2m_core::ChannelId(id.0), record))
                    .durable()
                    .await?;
            }
            Ok(WithdrawStep::Finished {
                amount: before.saturating_sub(after.balance),
                tx,
            })
        }
    }
}
