//! Wallet commands: `init`, `address`, `topup`, `backup`.

use std::io::IsTerminal;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use m2m_wallet::topup::{EvmAsset, EvmTopUp, bitcoin_uri, parse_btc_amount, parse_evm_amount};
use m2m_wallet::{
    Addresses, DeviceMetadata, DeviceSeed, EvmAddress, KdfParams, Keystore, Network, SeedLength,
};
use serde::Serialize;

use super::output::{print_json, qr_code};
use super::secrets::{self, Purpose};
use super::{ChainKind, CliError, GlobalArgs};
use crate::datadir::DataDir;

/// Arguments of `m2m init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Bitcoin network for the device's addresses: regtest, signet, testnet or bitcoin.
    #[arg(long, default_value = "regtest", value_parser = parse_network)]
    network: Network,
    /// Owner mode: record the EVM address of the device's owner.
    #[arg(long, value_name = "0xADDRESS", value_parser = parse_evm_address)]
    owner: Option<EvmAddress>,
    /// Restore from existing seed words (read from stdin, or a hidden prompt on a terminal).
    #[arg(long)]
    restore: bool,
    /// Words in a new seed.
    #[arg(long, default_value = "24", value_parser = parse_word_count)]
    words: SeedLength,
    /// Argon2id memory in MiB (at least 19).
    #[arg(long, default_value_t = 19)]
    kdf_memory_mib: u32,
    /// Argon2id passes (at least 2).
    #[arg(long, default_value_t = 2)]
    kdf_iterations: u32,
}

/// Arguments of `m2m topup`.
#[derive(Debug, Args)]
pub struct TopupArgs {
    /// Which chain to be paid on.
    #[arg(long, value_enum)]
    chain: ChainKind,
    /// Amount in whole units: BTC for bitcoin, ether (or whole tokens with --token) for EVM.
    #[arg(long)]
    amount: Option<String>,
    /// EVM chain id (31337 is anvil).
    #[arg(long, default_value_t = 31337)]
    chain_id: u64,
    /// EVM: request an ERC-20 token transfer instead of the native coin.
    #[arg(long, value_name = "0xTOKEN", value_parser = parse_evm_address)]
    token: Option<EvmAddress>,
    /// EVM: decimals of the token given with --token.
    #[arg(long, default_value_t = 18, requires = "token")]
    decimals: u8,
    /// Label shown by the payer's wallet (BIP-21).
    #[arg(long, default_value = "m2m device")]
    label: String,
    /// Do not draw the QR code.
    #[arg(long)]
    no_qr: bool,
    /// Lightning: seconds to stay online waiting for the payment (0: print and exit).
    #[arg(long, default_value_t = 600)]
    wait: u64,
    #[cfg(feature = "lightning")]
    #[command(flatten)]
    ln: super::ln_cmd::LnOptions,
}

/// What a Lightning top-up asks for.
#[cfg_attr(not(feature = "lightning"), allow(dead_code))]
pub(super) struct TopupRequest<'a> {
    pub amount: Option<bitcoin::Amount>,
    pub label: &'a str,
    pub qr: bool,
    pub wait_secs: u64,
}

/// Arguments of `m2m backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Print even when stdout is not a terminal (the words may end up in a file or a log).
    #[arg(long)]
    force: bool,
}

#[derive(Serialize)]
struct DeviceInfo<'a> {
    data_dir: String,
    #[serde(flatten)]
    addresses: &'a Addresses,
    owner: Option<String>,
    created_at_unix: u64,
    /// The pin of the device's TLS key, for buyers (`--pin`, `pin = …`).
    tls_pin: Option<String>,
}

pub(super) fn init(global: &GlobalArgs, args: &InitArgs) -> Result<(), CliError> {
    let data_dir = DataDir::open(&global.data_dir())?;
    let keystore_path = data_dir.keystore_path();
    if keystore_path.exists() {
        return Err(m2m_wallet::KeystoreError::AlreadyExists(keystore_path).into());
    }
    let seed = if args.restore {
        secrets::seed_words()?
    } else {
        DeviceSeed::generate(args.words)?
    };
    let kdf = KdfParams {
        memory_kib: args.kdf_memory_mib.saturating_mul(1024),
        iterations: args.kdf_iterations,
        ..KdfParams::default()
    };
    kdf.validate()?;
    let passphrase = secrets::passphrase(global, Purpose::Create)?;
    let created_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let metadata = DeviceMetadata {
        network: args.network,
        owner: args.owner,
        created_at_unix,
    };
    let keystore = Keystore::create(&keystore_path, &passphrase, kdf, metadata, seed)?;
    tracing::info!(path = %keystore_path.display(), "keystore created");
    print_device(global, &data_dir, &keystore);
    if !global.json && !args.restore {
        eprintln!(
            "Write down the seed words now: `m2m backup` shows them. Without them a lost keystore is lost money."
        );
    }
    Ok(())
}

pub(super) fn address(global: &GlobalArgs) -> Result<(), CliError> {
    let (data_dir, keystore) = open(global)?;
    print_device(global, &data_dir, &keystore);
    Ok(())
}

pub(super) fn topup(global: &GlobalArgs, args: &TopupArgs) -> Result<(), CliError> {
    if args.chain == ChainKind::Ln {
        if args.token.is_some() {
            return Err(CliError::Usage(
                "--token applies to --chain evm only".into(),
            ));
        }
        let request = TopupRequest {
            amount: args.amount.as_deref().map(parse_btc_amount).transpose()?,
            label: &args.label,
            qr: !args.no_qr,
            wait_secs: args.wait,
        };
        #[cfg(feature = "lightning")]
        return super::ln_cmd::topup(global, &args.ln, &request);
        #[cfg(not(feature = "lightning"))]
        {
            let _ = request;
            return Err(CliError::Usage(
                "this build has no Lightning (build with the `lightning` feature)".into(),
            ));
        }
    }
    let (evm_address, bitcoin_address) = device_addresses(global)?;
    let (uri, address, amount_base_units) = match args.chain {
        ChainKind::Ln => unreachable!("handled above"),
        ChainKind::Btc => {
            if args.token.is_some() {
                return Err(CliError::Usage(
                    "--token applies to --chain evm only".into(),
                ));
            }
            let amount = args.amount.as_deref().map(parse_btc_amount).transpose()?;
            let address = bitcoin_address;
            (
                bitcoin_uri(&address, amount, Some(&args.label)),
                address.to_string(),
                amount.map(|a| a.to_sat().to_string()),
            )
        }
        ChainKind::Evm => {
            let (asset, decimals) = match args.token {
                Some(token) => (EvmAsset::Erc20 { token }, args.decimals),
                None => (EvmAsset::Native, 18),
            };
            let amount = args
                .amount
                .as_deref()
                .map(|a| parse_evm_amount(a, decimals))
                .transpose()?;
            let to = evm_address;
            let request = EvmTopUp {
                to,
                chain_id: args.chain_id,
                asset,
                amount,
            };
            (
                request.to_string(),
                to.to_checksum(None),
                amount.map(|a| a.to_string()),
            )
        }
    };
    if global.json {
        #[derive(Serialize)]
        struct TopUp<'a> {
            chain: &'a str,
            uri: &'a str,
            address: &'a str,
            amount_base_units: Option<String>,
        }
        let chain = if args.chain == ChainKind::Btc {
            "btc"
        } else {
            "evm"
        };
        print_json(&TopUp {
            chain,
            uri: &uri,
            address: &address,
            amount_base_units,
        });
        return Ok(());
    }
    println!("{uri}");
    if !args.no_qr {
        match qr_code(&uri) {
            Some(code) => println!("{code}"),
            None => eprintln!("(URI too long for a QR code)"),
        }
    }
    Ok(())
}

/// The device's EVM and Bitcoin addresses: from the keystore, or from the running agent when
/// it holds the data directory (a top-up request needs only the addresses).
pub(super) fn device_addresses(
    global: &GlobalArgs,
) -> Result<(EvmAddress, bitcoin::Address), CliError> {
    match open(global) {
        Ok((_data_dir, keystore)) => Ok((
            m2m_wallet::Signer::evm_address(&keystore),
            keystore.keys().bitcoin_address(),
        )),
        Err(CliError::DataDir(crate::datadir::DataDirError::InUse { .. }))
            if super::control_client::agent_running(global) =>
        {
            let status =
                super::control_client::ask(global, &crate::agent::control::ControlRequest::Status)?;
            let garbled = || CliError::Usage("the running agent's addresses are unreadable".into());
            let evm = status["ethereum"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(garbled)?;
            let bitcoin = status["bitcoin"]
                .as_str()
                .and_then(|a| a.parse::<bitcoin::Address<_>>().ok())
                .map(|a| a.assume_checked())
                .ok_or_else(garbled)?;
            Ok((evm, bitcoin))
        }
        Err(error) => Err(error),
    }
}

pub(super) fn backup(global: &GlobalArgs, args: &BackupArgs) -> Result<(), CliError> {
    if !std::io::stdout().is_terminal() && !args.force {
        return Err(CliError::Usage(
            "stdout is not a terminal; refusing to print seed words where they may be stored (use --force)".into(),
        ));
    }
    let (_data_dir, keystore) = open(global)?;
    let words = keystore.backup_words();
    println!(
        "Seed words ({}): write them on paper, keep them offline.",
        words.split(' ').count()
    );
    for (index, word) in words.split(' ').enumerate() {
        println!("{:>2}. {word}", index + 1);
    }
    Ok(())
}

pub(super) fn open(global: &GlobalArgs) -> Result<(DataDir, Keystore), CliError> {
    let data_dir = DataDir::open(&global.data_dir())?;
    let keystore_path = data_dir.keystore_path();
    if !keystore_path.exists() {
        return Err(m2m_wallet::KeystoreError::NotFound(keystore_path).into());
    }
    let passphrase = secrets::passphrase(global, Purpose::Open)?;
    let keystore = Keystore::open(&keystore_path, &passphrase)?;
    Ok((data_dir, keystore))
}

fn print_device(global: &GlobalArgs, data_dir: &DataDir, keystore: &Keystore) {
    let addresses = keystore.addresses();
    let metadata = keystore.metadata();
    let info = DeviceInfo {
        data_dir: data_dir.path().display().to_string(),
        addresses: &addresses,
        owner: metadata.owner.map(|owner| owner.to_checksum(None)),
        created_at_unix: metadata.created_at_unix,
        tls_pin: crate::tls::DeviceIdentity::derive(keystore.keys())
            .ok()
            .map(|identity| identity.pin().to_string()),
    };
    if global.json {
        print_json(&info);
        return;
    }
    println!("data dir          {}", info.data_dir);
    println!(
        "bitcoin ({:<7})  {}",
        addresses.network.to_string(),
        addresses.bitcoin
    );
    println!("ethereum          {}", addresses.ethereum);
    println!("taproot key       {}", addresses.taproot_internal_key);
    if let Some(pin) = &info.tls_pin {
        println!("tls pin           {pin}");
    }
    if let Some(owner) = &info.owner {
        println!("owner             {owner}");
    }
}

fn parse_network(text: &str) -> Result<Network, String> {
    Network::from_str(text)
        .map_err(|_| format!("unknown network {text:?}; use regtest, signet, testnet or bitcoin"))
}

fn parse_word_count(text: &str) -> Result<SeedLength, String> {
    match text {
        "12" => Ok(SeedLength::Words12),
        "24" => Ok(SeedLength::Words24),
        _ => Err("a seed has 12 or 24 words".into()),
    }
}

fn parse_evm_address(text: &str) -> Result<EvmAddress, String> {
    EvmAddress::from_str(text).map_err(|e| format!("not an EVM address ({e})"))
}
