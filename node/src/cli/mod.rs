//! The `m2m` command line: argument parsing, logging setup, dispatch and error reporting.
//!
//! Data goes to stdout (as JSON with `--json`); logs and progress go to stderr.

mod agent_cmd;
mod btc_cmd;
mod channels_cmd;
mod control_client;
#[cfg(feature = "lightning")]
mod ln_cmd;
mod output;
mod owner_cmd;
mod pay_cmd;
mod secrets;
mod tools_cmd;
mod wallet_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::datadir::DataDirError;
use crate::tools::ToolError;

/// M2M micropayment node: a payment agent for autonomous devices.
#[derive(Debug, Parser)]
#[command(
    name = "m2m",
    version,
    about = "M2M micropayment node: a payment agent for autonomous devices",
    long_about = None,
    after_help = "The default build also has `m2m sim [quick|FILE.toml]`, the fleet simulator."
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory of the device (keystore, channel store); locked while in use.
    #[arg(long, global = true, env = "M2M_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print data as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Read the keystore passphrase from this file (first line). Else `M2M_PASSPHRASE`, else a prompt.
    #[arg(long, global = true, env = "M2M_PASSPHRASE_FILE", value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the device wallet (encrypted keystore) and print its addresses.
    Init(wallet_cmd::InitArgs),
    /// Run the device agent: everything `agent.toml` declares, in one long-running process.
    Agent(agent_cmd::AgentArgs),
    /// Print the device's addresses.
    Address,
    /// Every channel of the device, each leg and either side (from the running agent, or the
    /// store when none runs).
    Channels,
    /// The running agent's spending caps and what was spent; `set` changes a leg's caps.
    Budget(channels_cmd::BudgetArgs),
    /// What the device holds on each leg (from the running agent; else EVM from --rpc-url).
    Balance(channels_cmd::BalanceArgs),
    /// Take an EVM payer channel's deposit back (timed withdrawal: start, then finish).
    Withdraw(channels_cmd::WithdrawArgs),
    /// Print the running agent's dashboard URL (with this run's token; open it in a browser).
    Dashboard,
    /// Print a top-up request (BIP-21 or EIP-681 URI) and its QR code.
    Topup(wallet_cmd::TopupArgs),
    /// Print the seed words for a paper backup (terminal only).
    Backup(wallet_cmd::BackupArgs),
    /// Ownership through a thing registry (XMPP): the device's claim QR, an owner's claim.
    Owner(owner_cmd::OwnerArgs),
    /// Sell sensor readings over HTTP 402 (x402 v2) from a price list.
    Serve(pay_cmd::ServeArgs),
    /// Fetch a resource, paying its HTTP 402 from the device wallet within limits.
    Get(pay_cmd::GetArgs),
    /// Sell connectivity by the minute: a CONNECT proxy paid with ticks and vouchers.
    Gateway(pay_cmd::GatewayArgs),
    /// Buy connectivity from a gateway by the minute; applications use a local CONNECT proxy.
    Connect(pay_cmd::ConnectArgs),
    /// Run a local EVM chain (anvil) with the settlement contracts and a test token.
    Devnet(pay_cmd::DevnetArgs),
    /// The on-chain Bitcoin wallet and Taproot channels (balance, sweep, serve, get, close, refund).
    Btc(btc_cmd::BtcArgs),
    /// The Lightning node: open channels, invoices, payments, L402 readings (info, open, pay, …).
    #[cfg(feature = "lightning")]
    Ln(ln_cmd::LnArgs),
    /// Provision and inspect the pinned local tools (anvil, forge, cast, solc, bitcoind).
    Tools {
        #[command(subcommand)]
        action: tools_cmd::ToolsAction,
    },
}

/// Which chain a top-up is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChainKind {
    /// An EVM chain (EIP-681).
    Evm,
    /// Bitcoin (BIP-21).
    Btc,
    /// Lightning: a BOLT11 invoice inside a unified BIP-21 request (the node waits online).
    Ln,
}

/// Everything that can make a command fail, each keeping its cause.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The keystore refused.
    #[error(transparent)]
    Keystore(#[from] m2m_wallet::KeystoreError),
    /// Seed words were not accepted.
    #[error(transparent)]
    Seed(#[from] m2m_wallet::SeedError),
    /// The data directory refused.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A local tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// An amount was not accepted.
    #[error(transparent)]
    Amount(#[from] m2m_wallet::topup::AmountError),
    /// The user's input was not usable.
    #[error("{0}")]
    Usage(String),
    /// Talking to the terminal failed.
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
    /// The ownership record or the claim tags.
    #[error(transparent)]
    Ownership(#[from] crate::xmpp::ownership::OwnershipError),
    /// The XMPP login.
    #[error(transparent)]
    Xmpp(#[from] crate::xmpp::XmppError),
    /// The thing registry.
    #[error(transparent)]
    Discovery(#[from] crate::xmpp::discovery::DiscoveryError),
}

/// Entry point of the `m2m` binary.
pub fn main() -> ExitCode {
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", crate::events::error_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let global = &cli.global;
    match &cli.command {
        Command::Init(args) => wallet_cmd::init(global, args),
        Command::Agent(args) => agent_cmd::run(global, args),
        Command::Address => wallet_cmd::address(global),
        Command::Channels => channels_cmd::channels(global),
        Command::Budget(args) => channels_cmd::budget(global, args),
        Command::Withdraw(args) => channels_cmd::withdraw(global, args),
        Command::Balance(args) => channels_cmd::balance(global, args),
        Command::Dashboard => control_client::dashboard(global),
        Command::Topup(args) => wallet_cmd::topup(global, args),
        Command::Backup(args) => wallet_cmd::backup(global, args),
        Command::Owner(args) => owner_cmd::owner(global, args),
        Command::Serve(args) => pay_cmd::serve(global, args),
        Command::Get(args) => pay_cmd::get(global, args),
        Command::Devnet(args) => pay_cmd::devnet(global, args),
        Command::Gateway(args) => pay_cmd::gateway(global, args),
        Command::Connect(args) => pay_cmd::connect(global, args),
        Command::Btc(args) => btc_cmd::run(global, args),
        #[cfg(feature = "lightning")]
        Command::Ln(args) => ln_cmd::run(global, args),
        Command::Tools { action } => tools_cmd::run(global, action),
    }
}

/// SIGINT and SIGTERM, listened for from now on (make it before announcing readiness).
/// How a listener the command line starts speaks (see [`crate::tls::ServerTls::resolve`]).
fn server_tls(
    mode: crate::tls::TlsMode,
    listen: std::net::SocketAddr,
    keystore: &m2m_wallet::Keystore,
) -> Result<crate::tls::ServerTls, CliError> {
    let identity = crate::tls::DeviceIdentity::derive(keystore.keys())
        .map_err(|e| CliError::Usage(format!("TLS identity: {}", crate::events::error_line(&e))))?;
    crate::tls::ServerTls::resolve(mode, listen, &identity)
        .map_err(|e| CliError::Usage(crate::events::error_line(&e)))
}

/// The trust of a command that buys from `url`, with its `--pin` if given.
fn trust_of(url: &str, pin: Option<crate::tls::Pin>) -> Result<crate::tls::Trust, CliError> {
    match pin {
        Some(pin) => {
            crate::tls::Trust::pinned(url, pin).map_err(|e| CliError::Usage(format!("--pin: {e}")))
        }
        None => Ok(crate::tls::Trust::default()),
    }
}

fn stop_signals() -> Result<crate::shutdown::ShutdownSignals, CliError> {
    crate::shutdown::ShutdownSignals::listen().map_err(CliError::Terminal)
}

impl GlobalArgs {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::datadir::default_data_dir)
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
