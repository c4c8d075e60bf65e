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
