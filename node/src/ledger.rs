//! Every channel of the device, read from its channel store: EVM escrow channels (as payer and as
//! payee) and Bitcoin Taproot channels (either side). It needs no network and no passphrase, so
//! `m2m channels` works on a device that is offline or whose agent is stopped; a running agent
//! answers the same rows through its control socket and adds its Lightning channels.
//!
//! Amounts are the store's: what this device last made durable. A payee's `paid` is what it
//! charged and holds a voucher for; an EVM payer's `paid` is what the seller last confirmed;
//! a payer's `exposure` is the most it ever signed (a Bitcoin payer keeps only that).

use serde::Serialize;

use crate::events::Leg;
use crate::store::btc::BtcRole;
use crate::store::{ChannelStore, StoreError};

/// Which side of a channel this device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It deposited and signs vouchers.
    Payer,
    /// It is paid and claims or closes.
    Payee,
}

/// One channel, as `m2m channels` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRow {
    /// The leg.
    pub leg: Leg,
    /// Our side.
    pub role: Role,
    /// Channel id (hex, `0x`-prefixed on EVM).
    pub id: String,
    /// The other side: an EVM address, a Bitcoin x-only key, a Lightning node id.
    pub peer: String,
    /// The token (EVM) or `BTC`.
    pub asset: String,
    /// Deposit (EVM, as last seen on chain) or capacity (Bitcoin, Lightning), in the leg's unit.
    #[serde(serialize_with = "decimal")]
    pub capacity: u128,
    /// Paid on it so far (see the module doc for which side's view); Lightning channels carry
    /// many payments and show `spendable` instead.
    #[serde(serialize_with = "optional_decimal")]
    pub paid: Option<u128>,
    /// Lightning: what we can send on it now (sat).
    #[serde(serialize_with = "optional_decimal")]
    pub spendable: Option<u128>,
    /// Claimed on chain (EVM payee), if known.
    #[serde(serialize_with = "optional_decimal")]
    pub claimed: Option<u128>,
    /// The most this payer ever signed for (EVM payer).
    #[serde(serialize_with = "optional_decimal")]
    pub exposure: Option<u128>,
    /// `open`, `withdrawing` (EVM: a timed withdrawal is pending), `closing` (Bitcoin: a close
    /// was sent), or Lightning's `ready` / `pending`.
    pub state: &'static str,
    /// Bitcoin: the block height from which the payer can take the funds back.
    pub expiry_height: Option<u32>,
    /// EVM: seconds a payer's withdrawal waits for the payee's last claim.
    pub withdraw_delay_secs: Option<u64>,
    /// EVM payee: when the payer may finish its pending withdrawal (chain time, Unix seconds);
    /// every claim must land before it.
    pub withdraw_ready_at: Option<u64>,
}

/// Reading the channels failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed.
    #[error("reading the channel store")]
    Store(#[from] StoreError),
    /// A saved EVM channel config does not decode.
    #[error("saved config of EVM channel {id}")]
    Config {
        /// The channel.
        id: String,
        /// Why.
        #[source]
        cause: alloy::sol_types::Error,
    },
}

/// Every channel in `store`, EVM first, then Bitcoin.
pub fn channels(store: &ChannelStore) -> Result<Vec<ChannelRow>, LedgerError> {
    let mut rows = evm_channels(store)?;
    rows.extend(btc_channels(store)?);
    Ok(rows)
}

fn evm_channels(store: &ChannelStore) -> Result<Vec<ChannelRow>, LedgerError> {
    use m2m_contracts::bindings::ChannelConfig;
    let mut rows = Vec::new();
    for (id, bytes) in store.all_terms()? {
        let id_hex = format!("{}", alloy::primitives::B256::from(id.0));
        let config =
            <ChannelConfig as alloy::sol_types::SolValue>::abi_decode(&bytes).map_err(|cause| {
                LedgerError::Config {
                    id: id_hex.clone(),
                    cause,
                }
            })?;
        let row = |role, peer: alloy::primitives::Address| ChannelRow {
            leg: Leg::Evm,
            role,
            id: id_hex.clone(),
            peer: format!("{peer:#x}"),
            asset: format!("{:#x}", config.token),
            capacity: 0,
            paid: None,
            spendable: None,
            claimed: None,
            exposure: None,
            state: "open",
            expiry_height: None,
            withdraw_delay_secs: Some(config.withdrawDelay.to::<u64>()),
            withdraw_ready_at: None,
        };
        if let Some(record) = store.load_payer(&id)? {
            rows.push(ChannelRow {
                capacity: record.deposit_units,
                paid: Some(record.charged_units),
                exposure: Some(record.highest_signed_units),
                ..row(Role::Payer, config.receiver)
            });
        }
        if let Some(record) = store.load_payee(&id)? {
            rows.push(ChannelRow {
                capacity: record.deposit_units,
                paid: Some(record.charged_units),
                claimed: Some(record.claimed_units),
                withdraw_ready_at: record
                    .withdraw_pending_since
                    .map(|since| since.saturating_add(config.withdrawDelay.to::<u64>())),
                state: if record.withdraw_pending_since.is_some() {
                    "withdrawing"
                } else {
                    "open"
                },
                ..row(Role::Payee, config.payer)
            });
        }
    }
    Ok(rows)
}

fn btc_channels(store: &ChannelStore) -> Result<Vec<ChannelRow>, LedgerError> {
    let closing: Vec<_> = store.btc_closing()?.into_iter().map(|(id, _)| id).collect();
    let mut rows = Vec::new();
    for (role, terms) in store.btc_channels()? {
        let id = m2m_core::ChannelId(m2m_contracts::btc::channel_id(&terms.funding.outpoint));
        // A Bitcoin payer keeps only the most it signed (receipts are checked, not stored): that
        // is its exposure; the payee's newest voucher is what it was paid.
        let sats = |amount: bitcoin::Amount| Some(u128::from(amount.to_sat()));
        let (role, peer, paid, exposure) = match role {
            BtcRole::Payer => (
                Role::Payer,
                terms.parties.payee,
                None,
                sats(store.load_btc_signed(&id)?),
            ),
            BtcRole::Payee => (
                Role::Payee,
                terms.parties.payer,
                sats(
                    store
                        .load_btc_voucher(&id)?
                        .map_or(bitcoin::Amount::ZERO, |voucher| voucher.cumulative),
                ),
                None,
            ),
        };
        rows.push(ChannelRow {
            leg: Leg::Btc,
            role,
            id: crate::x402::btc::channel_id_hex(&id.0),
            peer: peer.to_string(),
            asset: "BTC".into(),
            capacity: u128::from(terms.funding.capacity.to_sat()),
            paid,
            spendable: None,
            claimed: None,
            exposure,
            state: if closing.contains(&id) {
                "closing"
            } else {
                "open"
            },
            expiry_height: Some(terms.parties.expiry_height),
            withdraw_delay_secs: None,
            withdraw_ready_at: None,
        });
    }
    Ok(rows)
}

/// The running Lightning node's channels (capacity and what we can send now, in sat).
#[cfg(feature = "lightning")]
pub fn lightning_channels(ln: &crate::ln::LnNode) -> Vec<ChannelRow> {
    ln.channels()
        .into_iter()
        .map(|channel| ChannelRow {
            leg: Leg::Lightning,
            role: if channel.is_outbound {
                Role::Payer
            } else {
                Role::Payee
            },
            id: channel.channel_id.to_string(),
            peer: channel.counterparty_node_id.to_string(),
            asset: "BTC".into(),
            capacity: u128::from(channel.channel_value_sats),
            paid: None,
            spendable: Some(u128::from(channel.outbound_capacity_msat / 1000)),
            claimed: None,
            exposure: None,
            state: if channel.is_channel_ready {
                "ready"
            } else {
                "pending"
            },
            expiry_height: None,
            withdraw_delay_secs: None,
            withdraw_ready_at: None,
        })
        .collect()
}

fn optional_decimal<S: serde::Serializer>(
    value: &Option<u128>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

fn decimal<S: serde::Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
