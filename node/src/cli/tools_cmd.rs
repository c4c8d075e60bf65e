//! `m2m tools …`: provision and show the pinned local tools.

use clap::Subcommand;
use serde::Serialize;

use super::output::print_json;
use super::{CliError, GlobalArgs};
use crate::tools::{FOUNDRY_VERSION, Foundry, SOLC_VERSION, ensure_bitcoind};

/// What to do with the local tools.
#[derive(Debug, Subcommand)]
pub enum ToolsAction {
    /// Provision anvil/forge/cast, solc and bitcoind into the per-user cache (no-op when cached),
    /// verify them, and print their paths. A first run builds bitcoind (many minutes).
    Install,
    /// Provision bitcoind only (found on the machine, or built once) and print its path.
    Bitcoind,
}

#[derive(Serialize)]
struct ToolPaths {
    foundry_version: &'static str,
    solc_version: &'static str,
    anvil: String,
    forge: String,
    cast: String,
    solc: String,
    bitcoind: String,
}

pub(super) fn run(global: &GlobalArgs, action: &ToolsAction) -> Result<(), CliError> {
    match action {
        ToolsAction::Install => {
            let foundry = Foundry::ensure()?;
            foundry.verify()?;
            let bitcoind = ensure_bitcoind()?;
            let paths = ToolPaths {
                foundry_version: FOUNDRY_VERSION,
                solc_version: SOLC_VERSION,
                anvil: foundry.anvil.display().to_string(),
                forge: foundry.forge.display().to_string(),
                cast: foundry.cast.display().to_string(),
                solc: foundry.solc.display().to_string(),
                bitcoind: bitcoind.display().to_string(),
            };
            if global.json {
                print_json(&paths);
            } else {
                println!("anvil  {}", paths.anvil);
                println!("forge  {}", paths.forge);
                println!("cast   {}", paths.cast);
                println!(
                    "solc   {}  (solc-js {SOLC_VERSION}; use FOUNDRY_SOLC={} forge build)",
                    paths.solc, paths.solc
                );
                println!("bitcoind {}", paths.bitcoind);
            }
            Ok(())
        }
        ToolsAction::Bitcoind => {
            let bitcoind = ensure_bitcoind()?;
            if global.json {
                print_json(&serde_json::json!({ "bitcoind": bitcoind }));
            } else {
                println!("{}", bitcoind.display());
            }
            Ok(())
        }
    }
}
