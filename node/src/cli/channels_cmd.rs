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
    /// The chain's JSON-RPC endpoint (not needed when an agent runs: it knows its chain).
    #[arg(long, value_name = "URL")]
    rpc_url: Option<String>,
    /// The settlement contract (default: the canonical deployment).
    #[arg(long, value_name = "ADDRESS")]
    settlement: Option<alloy::primitives::Address>,
    /// Wait out the delay and finish the withdrawal in one run (else run again once it is due).
    #[arg(long)]
    wait: bool,
}

/// How often `--wait` looks again.
const WITHDRAW_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// `m2m withdraw CHANNEL`: the EVM payer's deposit back, in the contract's two timed steps —
/// by the running agent when one holds the data directory, else here.
pub(super) fn withdraw(global: &GlobalArgs, args: &WithdrawArgs) -> Result<(), CliError> {
    let line = |e: &dyn std::error::Error| CliError::Usage(crate::events::error_line(e));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    if control_client::agent_running(global) {
        let request = ControlRequest::Withdraw {
            channel: format!("{}", args.channel),
        };
        loop {
            let step = control_client::ask(global, &request)?;
            if !show_withdrawal(global, &step, args.wait) {
                return Ok(());
            }
            runtime.block_on(tokio::time::sleep(WITHDRAW_POLL));
        }
    }
    let rpc_url = args.rpc_url.as_deref().ok_or_else(|| {
        CliError::Usage("--rpc-url: no agent runs on this data directory to know the chain".into())
    })?;
    let (data_dir, keystore) = super::wallet_cmd::open(global)?;
    let store = crate::store::ChannelStore::open(&data_dir).map_err(|e| line(&e))?;
    runtime.block_on(async {
        let settlement = args
            .settlement
            .unwrap_or(m2m_contracts::CANONICAL_SETTLEMENT);
        let client = crate::evm::SettlementClient::connect(
            rpc_url,
            std::sync::Arc::new(keystore),
            settlement,
        )
        .await
        .map_err(|e| line(&e))?;
        loop {
            let step = crate::evm::withdraw::withdraw_step(&client, &store, args.channel)
                .await
                .map_err(|e| line(&e))?;
            if !show_withdrawal(global, &step.to_json(), args.wait) {
                return Ok(());
            }
            tokio::time::sleep(WITHDRAW_POLL).await;
        }
    })
}

/// Prints one withdrawal step; `true` when `wait` asks to look again (it is not finished).
fn show_withdrawal(global: &GlobalArgs, step: &serde_json::Value, wait: bool) -> bool {
    let text = |key: &str| step[key].as_str().unwrap_or_default().to_owned();
    let (event, amount) = (text("withdrawal"), text("amount"));
    if global.json {
        super::output::print_json_line(step);
    } else {
        match event.as_str() {
            "empty" => eprintln!("nothing left to withdraw"),
            "finished" => eprintln!("withdrawn: {amount} units back to the payer"),
            _ => eprintln!(
                "withdrawal of {amount} units {event}; it can finish at chain time {}{}",
                step["readyAt"],
                if wait {
                    " (waiting)"
                } else {
                    ": run this again then"
                }
            ),
        }
    }
    wait && matches!(event.as_str(), "started" | "waiting")
}

/// `m2m balance`.
#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Without a running agent: the EVM chain's JSON-RPC endpoint to read.
    #[arg(long, value_name = "URL")]
    rpc_url: Option<String>,
    /// Without a running agent: a token to show (repeatable).
    #[arg(long = "token", value_name = "ADDRESS")]
    tokens: Vec<alloy::primitives::Address>,
}

/// `m2m balance`: every leg from the running agent, else the EVM leg from `--rpc-url`.
pub(super) fn balance(global: &GlobalArgs, args: &BalanceArgs) -> Result<(), CliError> {
    let answer = if control_client::agent_running(global) {
        control_client::ask(global, &ControlRequest::Balance)?
    } else {
        let Some(rpc_url) = &args.rpc_url else {
            return Err(CliError::Usage(
                "no agent runs on this data directory: give --rpc-url (and --token) for the EVM \
                 leg; `m2m btc balance` and `m2m ln info` show the others"
                    .into(),
            ));
        };
        let (_data_dir, keystore) = super::wallet_cmd::open(global)?;
        let endpoint = crate::balances::EvmEndpoint {
            rpc_url: rpc_url.clone(),
            settlement: m2m_contracts::CANONICAL_SETTLEMENT,
            tokens: args.tokens.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Terminal)?;
        let evm = runtime
            .block_on(crate::balances::evm(
                &endpoint,
                std::sync::Arc::new(keystore),
            ))
            .map_err(|e| CliError::Usage(crate::events::error_line(&e)))?;
        serde_json::json!({ "evm": evm, "bitcoin": null, "lightning": null })
    };
    if global.json {
        return control_client::show_answer(global, answer);
    }
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
    for (leg, value) in answer.as_object().into_iter().flatten() {
        if value.is_null() {
            continue;
        }
        if let Some(error) = value.get("error") {
            println!("{leg}: {}", text(error));
            continue;
        }
        match leg.as_str() {
            "evm" => {
                println!(
                    "evm {} (chain {}): {} wei",
                    text(&value["address"]),
                    value["chainId"],
                    text(&value["wei"])
                );
                for token in value["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "  token {}: {}",
                        text(&token["token"]),
                        text(&token["balance"])
                    );
                }
            }
            "bitcoin" => println!(
                "bitcoin {}: {} sat confirmed, {} pending, {} immature",
                text(&value["address"]),
                text(&value["confirmedSats"]),
                text(&value["pendingSats"]),
                text(&value["immatureSats"])
            ),
            _ => println!(
                "lightning {}: {} sat on chain, {} sat in channels",
                text(&value["nodeId"]),
                text(&value["onchainSats"]),
                text(&value["channelSats"])
            ),
        }
    }
    Ok(())
}
