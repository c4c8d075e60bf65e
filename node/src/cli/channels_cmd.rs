//! `m2m channels` and `m2m budget`: the device's channels on every leg and its spending caps.
//! With an agent running they come from it through the control socket (Lightning channels
//! included); without one, `channels` reads the channel store itself (no network, no
//! passphrase), while budgets belong to a running agent.

use clap::{Args, Subcommand};

use super::control_client::{self, SetBudgetArgs};
use super::{CliError, GlobalArgs};
use crate::agent::control::ControlRequest;
use crate::ledger::ChannelRow;

/// `m2m budget`.
#[derive(Debug, Args)]
pub struct BudgetArgs {
    #[command(subcommand)]
    action: Option<BudgetAction>,
}

#[derive(Debug, Subcommand)]
enum BudgetAction {
    /// Replace one leg's caps (kept across restarts until `agent.toml` changes that leg's).
    Set(SetBudgetArgs),
}

/// `m2m budget [set …]`: the running agent's budgets.
pub(super) fn budget(global: &GlobalArgs, args: &BudgetArgs) -> Result<(), CliError> {
    match &args.action {
        None => control_client::budget(global, None),
        Some(BudgetAction::Set(set)) => control_client::budget(global, Some(set)),
    }
}

/// `m2m channels`: from the running agent, else from the store.
pub(super) fn channels(global: &GlobalArgs) -> Result<(), CliError> {
    let rows = if control_client::agent_running(global) {
        let answer = control_client::ask(global, &ControlRequest::Channels)?;
        if global.json {
            return control_client::show_answer(global, answer);
        }
        answer.as_array().cloned().unwrap_or_default()
    } else {
        let data_dir = crate::datadir::DataDir::open(&global.data_dir())?;
        let store = crate::store::ChannelStore::open(&data_dir)
            .map_err(|e| CliError::Usage(crate::events::error_line(&e)))?;
        let rows: Vec<ChannelRow> = crate::ledger::channels(&store)
            .map_err(|e| CliError::Usage(crate::events::error_line(&e)))?;
        let answer = serde_json::to_value(rows).unwrap_or_default();
        if global.json {
            return control_client::show_answer(global, answer);
        }
        answer.as_array().cloned().unwrap_or_default()
    };
    if rows.is_empty() {
        println!("no channels");
    }
    for row in rows {
        let text = |key: &str| match &row[key] {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!(
            "{} {} {} peer {} capacity {} paid {} ({})",
            text("leg"),
            text("role"),
            text("id"),
            text("peer"),
            text("capacity"),
            if row["paid"].is_null() {
                format!("- spendable {}", text("spendable"))
            } else {
                text("paid")
            },
            text("state"),
        );
    }
    Ok(())
}

/// `m2m withdraw`.
#[derive(Debug, Args)]
pub struct WithdrawArgs {
    /// The EVM channel id (0x + 64 hex digits, as `m2m channels` shows it).
    channel: alloy::primitives::B256,
    /// The chain's JSON-RPC endpoint.
    #[arg(long, value_name = "URL")]
    rpc_url: String,
    /// The settlement contract (default: the canonical deployment).
    #[arg(long, value_name = "ADDRESS")]
    settlement: Option<alloy::primitives::Address>,
    /// Wait out the delay and finish the withdrawal in one run (else run again once it is due).
    #[arg(long)]
    wait: bool,
}

/// `m2m withdraw CHANNEL`: the EVM payer's deposit back, in the contract's two timed steps.
pub(super) fn withdraw(global: &GlobalArgs, args: &WithdrawArgs) -> Result<(), CliError> {
    use crate::evm::withdraw::{WithdrawStep, withdraw_step};
    let line = |e: &dyn std::error::Error| CliError::Usage(crate::events::error_line(e));
    let (data_dir, keystore) = super::wallet_cmd::open(global)?;
    let store = crate::store::ChannelStore::open(&data_dir).map_err(|e| line(&e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    runtime.block_on(async {
        let settlement = args
            .settlement
            .unwrap_or(m2m_contracts::CANONICAL_SETTLEMENT);
        let client = crate::evm::SettlementClient::connect(
            &args.rpc_url,
            std::sync::Arc::new(keystore),
            settlement,
        )
        .await
        .map_err(|e| line(&e))?;
        loop {
            let step = withdraw_step(&client, &store, args.channel)
                .await
                .map_err(|e| line(&e))?;
            let (event, amount, ready_at, tx) = match step {
                WithdrawStep::Started {
                    amount,
                    ready_at,
                    tx,
                } => ("started", amount, Some(ready_at), Some(tx)),
                WithdrawStep::Waiting { amount, ready_at } => {
                    ("waiting", amount, Some(ready_at), None)
                }
                WithdrawStep::Finished { amount, tx } => ("finished", amount, None, Some(tx)),
                WithdrawStep::Empty => ("empty", 0, None, None),
            };
            if global.json {
                super::output::print_json_line(&serde_json::json!({
                    "withdrawal": event,
                    "amount": amount.to_string(),
                    "readyAt": ready_at,
                    "tx": tx,
                }));
            } else {
                match (event, ready_at) {
                    ("empty", _) => eprintln!("nothing left to withdraw"),
                    ("finished", _) => eprintln!("withdrawn: {amount} units back to the payer"),
                    (_, Some(at)) => eprintln!(
                        "withdrawal of {amount} units {event}; it can finish at chain time {at}{}",
                        if args.wait {
                            " (waiting)"
                        } else {
                            ": run this again then"
                        }
                    ),
                    _ => {}
                }
            }
            let Some(ready_at) = ready_at.filter(|_| args.wait) else {
                return Ok(());
            };
            // Wait on the contract's clock: poll the newest block's time until it is due.
            while client.chain_time().await.map_err(|e| line(&e))? < ready_at {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    })
}
