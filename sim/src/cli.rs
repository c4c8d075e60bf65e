//! `m2m sim [SCENARIO] [--out DIR]`: run a scenario and print its summary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use m2m_node::shutdown::ShutdownSignals;
use m2m_node::tools::{Foundry, ensure_bitcoind};

use crate::SimError;
use crate::run::{RunOptions, run};
use crate::scenario::Scenario;

/// Run a fleet of simulated devices against a local chain (anvil, provisioned on first use).
#[derive(Debug, Parser)]
#[command(name = "m2m sim")]
pub struct SimArgs {
    /// `quick` (built in, about a minute) or a scenario TOML file.
    #[arg(default_value = "quick")]
    scenario: String,
    /// Folder for summary.md, summary.json and the plots (default: sim-report/<scenario>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the summary as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Entry point for `m2m sim …` (`args` starts with `sim`).
pub fn main(args: &[std::ffi::OsString]) -> ExitCode {
    m2m_node::tls::install_crypto_provider();
    let args = SimArgs::parse_from(args);
    match execute(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Provisions (once per machine) every tool the scenario needs before anything starts, so that
/// a first run's long builds happen up front with their own progress, not inside a timed leg.
fn provision_tools(scenario: &Scenario) -> Result<(), SimError> {
    Foundry::ensure().map_err(|e| SimError::Setup(format!("tools: {e}")))?;
    let legs = [
        (scenario.bitcoin.sellers, scenario.bitcoin.buyers),
        (scenario.lightning.sellers, scenario.lightning.buyers),
    ];
    if legs
        .iter()
        .any(|&(sellers, buyers)| sellers > 0 && buyers > 0)
    {
        ensure_bitcoind().map_err(|e| SimError::Setup(format!("bitcoind: {e}")))?;
    }
    Ok(())
}

fn execute(args: &SimArgs) -> Result<bool, SimError> {
    let scenario = Scenario::load(&args.scenario)?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("sim-report").join(&scenario.name));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| SimError::Setup(e.to_string()))?;
    if !args.quiet {
        eprintln!(
            "simulating `{}`: {} sellers, {} buyers, {} s (report in {})",
            scenario.name,
            scenario.sellers.count,
            scenario.buyers.count,
            scenario.duration_secs,
            out_dir.display()
        );
    }
    // Listening before anything starts (provisioning runs the tools too): a SIGTERM at any
    // point is an orderly stop, never the default action's abrupt death.
    let mut stop = {
        let _runtime = runtime.enter();
        ShutdownSignals::listen().map_err(|e| SimError::Setup(e.to_string()))?
    };
    provision_tools(&scenario)?;
    let options = RunOptions {
        out_dir,
        progress: !args.quiet,
    };
    let report = runtime.block_on(async {
        // Ctrl-C and SIGTERM end the run early: dropping it stops every chain and device.
        tokio::select! {
            report = run(&scenario, &options) => report,
            signal = stop.recv() => {
                // Exit at once, without unwinding the run: a Lightning node still starting on a
                // blocking thread would log into a storage folder its dropped run had removed,
                // and ldk-node panics there (an abort). The reaper stops every chain when this
                // process is gone, as it does after a SIGKILL.
                eprintln!("error: {}", SimError::Interrupted(signal));
                std::process::exit(1);
            }
        }
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{}", report.markdown());
    }
    Ok(report.passed)
}
