//! `m2m sim [SCENARIO] [--out DIR]`: run a scenario and print its summary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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

fn execute(args: &SimArgs) -> Result<bool, crate::SimError> {
    let scenario = Scenario::load(&args.scenario)?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("sim-report").join(&scenario.name));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::SimError::Setup(e.to_string()))?;
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
    let options = RunOptions {
        out_dir,
        progress: !args.quiet,
    };
    let report = runtime.block_on(run(&scenario, &options))?;
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
