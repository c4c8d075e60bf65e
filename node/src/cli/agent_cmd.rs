//! `m2m agent …`: run the device agent from `agent.toml` (a thin client of [`crate::agent`]),
//! and talk to a running one through its control socket.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::control_client::{self, ask};
use super::output::print_json_line;
use super::secrets::{self, Purpose};
use super::{CliError, GlobalArgs};
use crate::agent::config::BuyLeg;
use crate::agent::control::ControlRequest;
use crate::agent::{Agent, AgentConfig};
use crate::events::AgentEvent;

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
    /// Every channel of the running agent (each leg, either side; as `m2m channels`).
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
    SetBudget(control_client::SetBudgetArgs),
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
        AgentAction::Status => {
            control_client::show_answer(global, ask(global, &ControlRequest::Status)?)
        }
        AgentAction::Channels => super::channels_cmd::channels(global),
        AgentAction::Get {
            url,
            pay,
            max_price,
            count,
        } => get_through_agent(global, url, (*pay).into(), *max_price, *count),
        AgentAction::Budget => control_client::budget(global, None),
        AgentAction::SetBudget(set) => control_client::budget(global, Some(set)),
    }
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
        let status = agent.status();
        let ready = json!({
            "event": "ready",
            "tlsPin": status["tlsPin"],
            "evm": status["evm"],
            "btc": status["btc"],
            "gateway": status["gateway"],
            "metrics": status["metrics"],
            // Without its token (a credential stays out of logs): `m2m dashboard` prints it.
            "dashboard": status["dashboard"],
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
