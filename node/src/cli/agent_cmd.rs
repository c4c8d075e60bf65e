//! `m2m agent …`: run the device agent from `agent.toml` (a thin client of [`crate::agent`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::print_json_line;
use super::secrets::{self, Purpose};
use super::{CliError, GlobalArgs};
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
    }
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
