//! Talking to the agent running on the data directory through its control socket
//! (`crate::agent::control`): one request, its answer, and the budget commands built on it.

use clap::Args;

use super::{CliError, GlobalArgs};
use crate::agent::control::{self, ControlRequest};
use crate::events::Leg;

/// A leg's new caps.
#[derive(Debug, Args)]
pub(super) struct SetBudgetArgs {
    /// The leg.
    #[arg(long, value_enum)]
    leg: BudgetLeg,
    /// Most one payment may be: token units (evm), satoshi (btc, lightning).
    #[arg(long)]
    per_request: u64,
    /// Most one payee may receive in any rolling hour.
    #[arg(long)]
    per_payee_per_hour: u64,
    /// Most all payees together may receive in any rolling day.
    #[arg(long)]
    per_day: u64,
}

/// A leg with a budget (the names of `agent.toml`'s `[budget.<leg>]`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BudgetLeg {
    Evm,
    Btc,
    Lightning,
}

impl From<BudgetLeg> for Leg {
    fn from(leg: BudgetLeg) -> Self {
        match leg {
            BudgetLeg::Evm => Leg::Evm,
            BudgetLeg::Btc => Leg::Btc,
            BudgetLeg::Lightning => Leg::Lightning,
        }
    }
}

/// Whether an agent answers on the data directory's control socket.
pub(super) fn agent_running(global: &GlobalArgs) -> bool {
    ask(global, &ControlRequest::Status).is_ok()
}

/// Sends one request to the agent running on the data directory.
pub(super) fn ask(
    global: &GlobalArgs,
    request: &ControlRequest,
) -> Result<serde_json::Value, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    runtime
        .block_on(control::request(&global.data_dir(), request))
        .map_err(|e| CliError::Usage(crate::events::error_line(&e)))
}

pub(super) fn show_answer(global: &GlobalArgs, answer: serde_json::Value) -> Result<(), CliError> {
    if global.json {
        super::output::print_json(&answer);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    }
    Ok(())
}

/// `m2m dashboard`: the URL (with its token) of the running agent's dashboard; `--json` gives
/// `{ "url": … }`.
pub(super) fn dashboard(global: &GlobalArgs) -> Result<(), CliError> {
    let answer = ask(global, &ControlRequest::Dashboard)?;
    if global.json {
        super::output::print_json(&answer);
    } else {
        println!("{}", answer["url"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// Shows the running agent's budgets, after changing one leg's caps if `set` says so.
pub(super) fn budget(global: &GlobalArgs, set: Option<&SetBudgetArgs>) -> Result<(), CliError> {
    let request = match set {
        None => ControlRequest::Budget,
        Some(set) => ControlRequest::SetBudget {
            leg: set.leg.into(),
            per_request: set.per_request,
            per_payee_per_hour: set.per_payee_per_hour,
            per_day: set.per_day,
        },
    };
    show_budget(global, ask(global, &request)?)
}

/// The budget answer: JSON with `--json`, else one block per leg.
fn show_budget(global: &GlobalArgs, answer: serde_json::Value) -> Result<(), CliError> {
    if global.json {
        return show_answer(global, answer);
    }
    for leg in answer.as_array().into_iter().flatten() {
        let name = leg["leg"].as_str().unwrap_or("?");
        let caps = &leg["caps"];
        if caps.is_null() {
            println!("{name}: no budget");
            continue;
        }
        let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
        println!(
            "{name}: per request {}, per payee per hour {}, per day {} ({})",
            text(&caps["perRequest"]),
            text(&caps["perPayeePerHour"]),
            text(&caps["perDay"]),
            if leg["source"] == "set" {
                "set at run time"
            } else {
                "from agent.toml"
            },
        );
        for day in leg["day"].as_array().into_iter().flatten() {
            println!(
                "  spent today on {}: {}",
                text(&day["asset"]),
                text(&day["spent"])
            );
        }
        for payee in leg["hourByPayee"].as_array().into_iter().flatten() {
            println!(
                "  spent this hour to {}: {}",
                text(&payee["payee"]),
                text(&payee["spent"])
            );
        }
    }
    Ok(())
}
