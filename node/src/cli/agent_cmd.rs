//! `m2m agent …`: run the device agent from `agent.toml` (a thin client of [`crate::agent`]),
//! and talk to a running one through its control socket.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::print_json_line;
use super::secrets::{self, Purpose};
use super::{CliError, GlobalArgs};
use crate::agent::config::BuyLeg;
use crate::agent::control::{self, ControlRequest};
use crate::agent::{Agent, AgentConfig};
use crate::events::{AgentEvent, Leg};

/// `m2m agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: AgentAction,
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Run everything the configuration declares until SIGTERM or Ctrl-C, then stop in order
    /// (claims what is due). Events go to stderr, or as JSON lines to stdout with `--json`.
    Run {
        /// The agent's configuration.
        #[arg(long, default_value = "agent.toml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration and exit (no wallet, no network).
    Check {
        /// The agent's configuration.
        #[arg(long, default_value = "agent.toml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask the agent running on the data directory what runs (addresses, URLs, counters).
    Status,
    /// The channels the running agent is paid on.
    Channels,
    /// Have the running agent fetch URL, paying on its channels.
    Get {
        /// The resource.
        url: String,
        /// The leg that pays.
        #[arg(long, value_enum, default_value = "evm")]
        pay: PayLeg,
        /// Highest price per reading: token units (evm), satoshi (btc, l402).
        #[arg(long, default_value_t = 1_000_000)]
        max_price: u64,
        /// Fetch it this many times.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
    },
    /// The running agent's budgets: each leg's caps, and what was spent in the rolling hour
    /// (per payee) and day.
    Budget,
    /// Replace one leg's caps in the running agent; kept across restarts until `agent.toml`'s
    /// `[budget.<leg>]` changes.
    SetBudget {
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
    },
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

/// The leg that pays a `get` (the names of `agent.toml`'s `pay`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PayLeg {
    Evm,
    Btc,
    L402,
}

impl From<PayLeg> for BuyLeg {
    fn from(leg: PayLeg) -> Self {
        match leg {
            PayLeg::Evm => BuyLeg::Evm,
            PayLeg::Btc => BuyLeg::Btc,
            PayLeg::L402 => BuyLeg::L402,
        }
    }
}

pub(super) fn run(global: &GlobalArgs, args: &AgentArgs) -> Result<(), CliError> {
    match &args.action {
        AgentAction::Check { config } => {
            let config = load(config)?;
            println!(
                "configuration valid: {} EVM seller, {} satoshi seller, {} buys",
                u8::from(config.sell.evm.is_some()),
                u8::from(config.sell.btc.is_some()),
                config.buys.len()
            );
            Ok(())
        }
        AgentAction::Run { config } => run_agent(global, load(config)?),
        AgentAction::Status => show_answer(global, ask(global, &ControlRequest::Status)?),
        AgentAction::Channels => show_answer(global, ask(global, &ControlRequest::Channels)?),
        AgentAction::Get {
            url,
            pay,
            max_price,
            count,
        } => get_through_agent(global, url, (*pay).into(), *max_price, *count),
        AgentAction::Budget => show_budget(global, ask(global, &ControlRequest::Budget)?),
        AgentAction::SetBudget {
            leg,
            per_request,
            per_payee_per_hour,
            per_day,
        } => {
            let request = ControlRequest::SetBudget {
                leg: (*leg).into(),
                per_request: *per_request,
                per_payee_per_hour: *per_payee_per_hour,
                per_day: *per_day,
            };
            show_budget(global, ask(global, &request)?)
        }
    }
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

/// Whether an agent answers on the data directory's control socket.
pub(super) fn agent_running(global: &GlobalArgs) -> bool {
    ask(global, &ControlRequest::Status).is_ok()
}

/// Sends one request to the agent running on the data directory.
fn ask(global: &GlobalArgs, request: &ControlRequest) -> Result<serde_json::Value, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    runtime
        .block_on(control::request(&global.data_dir(), request))
        .map_err(|e| CliError::Usage(crate::events::error_line(&e)))
}

fn show_answer(global: &GlobalArgs, answer: serde_json::Value) -> Result<(), CliError> {
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

/// `count` paid fetches of `url` by the running agent; prints each body (or, with `--json`,
/// what was paid and the body).
pub(super) fn get_through_agent(
    global: &GlobalArgs,
    url: &str,
    pay: BuyLeg,
    max_price: u64,
    count: u32,
) -> Result<(), CliError> {
    let request = ControlRequest::Get {
        url: url.to_owned(),
        pay,
        max_price,
    };
    for _ in 0..count {
        let answer = ask(global, &request)?;
        if global.json {
            super::output::print_json(&answer);
        } else {
            let paid = &answer["paid"];
            eprintln!(
                "paid {} via {} (by the running agent)",
                paid["amount"],
                paid["scheme"].as_str().unwrap_or("?")
            );
            println!("{}", answer["body"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

fn load(path: &std::path::Path) -> Result<AgentConfig, CliError> {
    AgentConfig::load(path).map_err(|e| CliError::Usage(crate::events::error_line(&e)))
}

fn run_agent(global: &GlobalArgs, config: AgentConfig) -> Result<(), CliError> {
    let passphrase = secrets::passphrase(global, Purpose::Open)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    runtime.block_on(async {
        // Listening from the start: a SIGTERM during a slow start is an orderly stop after it.
        let mut stop = super::stop_signals()?;
        let agent = Agent::builder()
            .data_dir(global.data_dir())
            .passphrase(passphrase)
            .config(config)
            .build()
            .await
            .map_err(|e| CliError::Usage(crate::events::error_line(&e)))?;
        let mut events = agent.events();
        let ready = json!({
            "event": "ready",
            "evm": agent.evm_listen().map(|a| format!("http://{a}")),
            "btc": agent.btc_listen().map(|a| format!("http://{a}")),
        });
        if global.json {
            print_json_line(&ready);
        } else {
            eprintln!("agent running ({ready}); SIGTERM or Ctrl-C stops it");
        }
        let signal = loop {
            tokio::select! {
                signal = stop.recv() => break signal,
                event = events.recv() => match event {
                    Ok(event) => show(global.json, &event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        eprintln!("({missed} events not shown: output too slow)");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                },
            }
        };
        eprintln!("{signal}: stopping (in-flight payments settle, due claims are made)");
        let report = agent.stop().await;
        for problem in &report.problems {
            eprintln!("while stopping: {problem}");
        }
        eprintln!("stopped; claimed {} EVM channel(s)", report.evm_claimed);
        Ok(())
    })
}

fn show(json: bool, event: &AgentEvent) {
    if json {
        print_json_line(event);
    } else {
        match serde_json::to_string(event) {
            Ok(line) => eprintln!("{line}"),
            Err(error) => eprintln!("(an event could not be shown: {error})"),
        }
    }
}
