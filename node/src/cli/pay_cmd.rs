//! `m2m serve`, `m2m get` and `m2m devnet`: selling readings, buying them, and a local chain to
//! try both on.

use std::path::PathBuf;
use std::sync::Arc;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use clap::Args;
use serde_json::json;

use super::output::print_json;
use super::{CliError, GlobalArgs, wallet_cmd};
use crate::agent::config::BuyLeg;
use crate::buyer::{Buyer, BuyerOptions};
use crate::datadir::DataDirError;
use crate::seller::sensor::SimulatedSensor;
use crate::seller::{Seller, SellerConfig, serve as serve_http};
use crate::store::ChannelStore;
use crate::tools::{Foundry, start_anvil_on};

/// `m2m serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The seller configuration (price list, chain, limits).
    #[arg(long, short, value_name = "FILE", default_value = "seller.toml")]
    config: PathBuf,
}

/// `m2m get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The resource to fetch (paying its 402 if needed).
    url: String,
    /// Fetch it this many times. With an agent running on the data directory, the agent
    /// fetches (on its channels, with its deposit settings).
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u32,
    /// Pay only with this scheme (`batch-settlement` or `exact`).
    #[arg(long)]
    scheme: Option<String>,
    /// Refuse any reading priced above this many atomic units.
    #[arg(long, default_value_t = 1_000_000)]
    max_price: u128,
    /// Largest single channel deposit, atomic units.
    #[arg(long, default_value_t = 10_000_000)]
    max_deposit: u128,
    /// A new channel holds this many readings' worth.
    #[arg(long, default_value_t = 100)]
    deposit_readings: u32,
    /// The seller's TLS pin (`sha256//…`, as its `m2m address` prints); without one an https
    /// seller is checked against the system's roots.
    #[arg(long, value_name = "PIN")]
    pin: Option<crate::tls::Pin>,
}

/// `m2m gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway configuration (price per minute, chain, upstreams).
    #[arg(long, short, value_name = "FILE", default_value = "gateway.toml")]
    config: PathBuf,
    /// Lightning sessions (with `lightning_msat_per_minute`): bitcoind and the node.
    #[cfg(feature = "lightning")]
    #[command(flatten)]
    ln: super::ln_cmd::LnOptions,
}

/// `m2m connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The gateway, e.g. `http://127.0.0.1:8118`.
    gateway: String,
    /// Local CONNECT proxy for applications.
    #[arg(long, default_value = "127.0.0.1:8119")]
    listen: std::net::SocketAddr,
    /// The gateway's TLS pin (`sha256//…`, as its `m2m address` prints); without one an https
    /// gateway is checked against the system's roots.
    #[arg(long, value_name = "PIN")]
    pin: Option<crate::tls::Pin>,

    /// Largest single channel deposit, atomic units.
    #[arg(long, default_value_t = 10_000_000)]
    max_deposit: u128,
    /// Pay over Lightning (keysend streams) instead of ticks and vouchers.
    #[cfg(feature = "lightning")]
    #[arg(long)]
    lightning: bool,
    /// Lightning: seconds of connectivity each keysend buys (one is always paid ahead).
    #[cfg(feature = "lightning")]
    #[arg(long, default_value_t = 60, requires = "lightning")]
    period_secs: u64,
    /// Lightning: bitcoind and the node.
    #[cfg(feature = "lightning")]
    #[command(flatten)]
    ln: super::ln_cmd::LnOptions,
}

/// `m2m devnet`.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Port of the local chain's JSON-RPC.
    #[arg(long, default_value_t = 8545)]
    port: u16,
    /// Give this address 100 ETH (for gas) and test tokens; repeatable.
    #[arg(long, value_name = "ADDRESS")]
    fund: Vec<Address>,
    /// Test tokens (atomic units, 6 decimals) per funded address.
    #[arg(long, default_value_t = 100_000_000)]
    tokens: u128,
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)
}

fn failed(what: &str) -> impl Fn(&dyn std::fmt::Display) -> CliError + '_ {
    move |error| CliError::Usage(format!("{what}: {error}"))
}

pub(super) fn serve(global: &GlobalArgs, args: &ServeArgs) -> Result<(), CliError> {
    let config = SellerConfig::load(&args.config).map_err(|e| failed("seller config")(&e))?;
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    let store = ChannelStore::open(&data_dir).map_err(|e| failed("channel store")(&e))?;
    let device = format!("{:#x}", m2m_wallet::Signer::evm_address(&keystore));
    let tls = super::server_tls(config.tls, config.listen, &keystore)?;
    runtime()?.block_on(async move {
        let on_shutdown = config.claim.on_shutdown;
        let seller = Seller::start(config, Arc::new(keystore), store, Arc::new(SimulatedSensor::new(&device)))
            .await
            .map_err(|e| failed("starting the seller")(&e))?;
        let server = serve_http(seller.clone(), None, tls)
            .await
            .map_err(|e| failed("listening")(&e))?;
        let claimer = tokio::spawn(seller.clone().run_claimer());
        let info = json!({
            "listening": server.url(),
            "payTo": seller.receiver(),
            "routes": seller.routes().map(|r| json!({ "path": r.config.path, "price": r.price.to_string() })).collect::<Vec<_>>(),
        });
        let mut stop = super::stop_signals()?;
        if global.json {
            print_json(&info);
        } else {
            println!("selling readings at {} (Ctrl-C stops)", server.url());
            for route in seller.routes() {
                println!("  {}  {} units per reading", route.config.path, route.price);
            }
        }
        let _ = stop.recv().await;
        eprintln!("stopping: {} paid readings served", seller.paid_readings());
        server.shutdown().await;
        claimer.abort();
        if on_shutdown {
            match seller.claim_all().await {
                Ok(count) => eprintln!("claimed {count} channel(s) on chain"),
                Err(error) => eprintln!("claiming on shutdown failed (the next start claims): {error}"),
            }
        }
        drop(data_dir);
        Ok(())
    })
}

pub(super) fn get(global: &GlobalArgs, args: &GetArgs) -> Result<(), CliError> {
    let (data_dir, keystore) = match wallet_cmd::open(global) {
        // An agent runs on this device: it buys for us, on its channels.
        Err(CliError::DataDir(DataDirError::InUse { .. }))
            if super::control_client::agent_running(global) =>
        {
            if args.scheme.is_some() {
                return Err(CliError::Usage(
                    "--scheme: the running agent chooses the scheme; stop it to pick one".into(),
                ));
            }
            if args.pin.is_some() {
                return Err(CliError::Usage(
                    "--pin: the running agent buys with the pins of its agent.toml ([[buy]] pin)"
                        .into(),
                ));
            }
            return super::agent_cmd::get_through_agent(
                global,
                &args.url,
                BuyLeg::Evm,
                u64::try_from(args.max_price).unwrap_or(u64::MAX),
                args.count,
            );
        }
        opened => opened?,
    };
    let store = ChannelStore::open(&data_dir).map_err(|e| failed("channel store")(&e))?;
    let mut options = BuyerOptions {
        max_price: Some(args.max_price),
        max_deposit: Some(args.max_deposit),
        deposit_readings: args.deposit_readings,
        trust: super::trust_of(&args.url, args.pin)?,
        ..BuyerOptions::default()
    };
    if let Some(scheme) = &args.scheme {
        options.prefer = vec![scheme.clone()];
    }
    let buyer = Buyer::new(Arc::new(keystore), store, options);
    runtime()?.block_on(async {
        for _ in 0..args.count {
            let fetched = buyer.get(&args.url).await.map_err(|e| failed(&args.url)(&e))?;
            let body = String::from_utf8_lossy(&fetched.body).into_owned();
            if global.json {
                print_json(&json!({
                    "status": fetched.status,
                    "paid": fetched.paid.as_ref().map(|(scheme, amount)| json!({ "scheme": scheme, "amount": amount.to_string() })),
                    "transaction": fetched.settlement.as_ref().map(|s| s.transaction.clone()).filter(|t| !t.is_empty()),
                    "body": serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::String(body)),
                }));
            } else {
                if let Some((scheme, amount)) = &fetched.paid {
                    eprintln!("paid {amount} via {scheme}");
                }
                println!("{body}");
            }
        }
        Ok::<_, CliError>(())
    })?;
    drop(data_dir);
    Ok(())
}

pub(super) fn gateway(global: &GlobalArgs, args: &GatewayArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| failed(&args.config.display().to_string())(&e))?;
    let config = crate::gateway::GatewayConfig::parse(&text).map_err(CliError::Usage)?;
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    let store = ChannelStore::open(&data_dir).map_err(|e| failed("channel store")(&e))?;
    let tls = super::server_tls(config.tls, config.listen, &keystore)?;
    runtime()?.block_on(async move {
        let keystore = Arc::new(keystore);
        let gateway = crate::gateway::Gateway::start(config, keystore.clone(), store)
            .await
            .map_err(CliError::Usage)?;
        #[cfg(feature = "lightning")]
        let lightning = match gateway.config().lightning_msat_per_minute {
            Some(_) => {
                let ln =
                    super::ln_cmd::start_node(keystore.keys(), &data_dir, &args.ln, true).await?;
                gateway.accept_lightning(&ln).map_err(CliError::Usage)?;
                eprintln!(
                    "Lightning sessions paid to {}@{}",
                    ln.node_id(),
                    ln.listen_address()
                );
                Some(ln)
            }
            None => None,
        };
        #[cfg(not(feature = "lightning"))]
        if gateway.config().lightning_msat_per_minute.is_some() {
            return Err(CliError::Usage(
                "lightning_msat_per_minute needs a build with the `lightning` feature".into(),
            ));
        }
        let server = crate::gateway::serve(gateway.clone(), None, tls)
            .await
            .map_err(|e| failed("listening")(&e))?;
        let claimer = tokio::spawn(gateway.seller().clone().run_claimer());
        let config = gateway.config();
        let mut stop = super::stop_signals()?;
        println!(
            "selling connectivity at {} for {} units per minute (Ctrl-C stops)",
            server.url(),
            config.price_per_minute
        );
        let _ = stop.recv().await;
        server.shutdown().await;
        claimer.abort();
        #[cfg(feature = "lightning")]
        if let Some(ln) = lightning
            && let Err(error) = super::ln_cmd::settle_and_stop(&ln).await
        {
            eprintln!("{error}");
        }
        match gateway.seller().claim_all().await {
            Ok(count) => eprintln!("claimed {count} channel(s) on chain"),
            Err(error) => eprintln!("claiming on shutdown failed (the next start claims): {error}"),
        }
        drop(data_dir);
        Ok(())
    })
}

pub(super) fn connect(global: &GlobalArgs, args: &ConnectArgs) -> Result<(), CliError> {
    #[cfg(feature = "lightning")]
    if args.lightning {
        return connect_lightning(global, args);
    }
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    let store = ChannelStore::open(&data_dir).map_err(|e| failed("channel store")(&e))?;
    let options = BuyerOptions {
        max_deposit: Some(args.max_deposit),
        trust: super::trust_of(&args.gateway, args.pin)?,
        ..BuyerOptions::default()
    };
    let buyer = Arc::new(Buyer::new(Arc::new(keystore), store, options));
    runtime()?.block_on(async move {
        let client = crate::gateway::client::connect(&args.gateway, buyer, args.listen)
            .await
            .map_err(|e| failed(&args.gateway)(&e))?;
        let mut stop = super::stop_signals()?;
        println!(
            "paying {} by the minute; point applications at the local proxy (HTTP CONNECT or SOCKS5) {} (Ctrl-C stops)",
            args.gateway, client.local_addr
        );
        let _ = stop.recv().await;
        eprintln!(
            "stopped after {} ticks and {} vouchers",
            client.ticks.load(std::sync::atomic::Ordering::Relaxed),
            client.covers.load(std::sync::atomic::Ordering::Relaxed)
        );
        drop(data_dir);
        Ok(())
    })
}

pub(super) fn devnet(global: &GlobalArgs, args: &DevnetArgs) -> Result<(), CliError> {
    let foundry = Foundry::ensure()?;
    let anvil = start_anvil_on(&foundry, 31337, args.port)?;
    runtime()?.block_on(async {
        let deployer = PrivateKeySigner::from(anvil.instance().keys()[0].clone());
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(deployer))
            .connect_http(
                anvil
                    .endpoint()
                    .parse()
                    .map_err(|e| failed("anvil endpoint")(&e))?,
            )
            .erased();
        let deployment = m2m_contracts::deploy::install_canonical(&provider)
            .await
            .map_err(|e| failed("installing the contracts")(&e))?;
        let token = m2m_contracts::deploy::deploy_test_token(&provider)
            .await
            .map_err(|e| failed("deploying the test token")(&e))?;
        let token_contract = m2m_contracts::bindings::TestToken::new(token, &provider);
        for address in &args.fund {
            let _: serde_json::Value = provider
                .raw_request(
                    "anvil_setBalance".into(),
                    (address, U256::from(10u128.pow(20))),
                )
                .await
                .map_err(|e| failed("funding")(&e))?;
            token_contract
                .mint(*address, U256::from(args.tokens))
                .send()
                .await
                .map_err(|e| failed("minting")(&e))?
                .get_receipt()
                .await
                .map_err(|e| failed("minting")(&e))?;
        }
        let info = json!({
            "rpcUrl": anvil.endpoint(),
            "network": "eip155:31337",
            "settlement": deployment.settlement,
            "erc3009Collector": deployment.erc3009_collector,
            "token": token,
            "funded": args.fund,
        });
        let mut stop = super::stop_signals()?;
        if global.json {
            print_json(&info);
        } else {
            println!(
                "local chain at {} (eip155:31337); Ctrl-C stops it",
                anvil.endpoint()
            );
            println!("  settlement  {}", deployment.settlement);
            println!("  test token  {token}  (\"Test USD\", 6 decimals, EIP-3009)");
            for address in &args.fund {
                println!(
                    "  funded      {address}: 100 ETH, {} token units",
                    args.tokens
                );
            }
        }
        let _ = stop.recv().await;
        Ok::<_, CliError>(())
    })?;
    drop(anvil);
    Ok(())
}

/// `m2m connect --lightning`: the session paid by keysend streams from the device's node.
#[cfg(feature = "lightning")]
fn connect_lightning(global: &GlobalArgs, args: &ConnectArgs) -> Result<(), CliError> {
    if args.period_secs == 0 {
        return Err(CliError::Usage("--period-secs must be positive".into()));
    }
    let trust = super::trust_of(&args.gateway, args.pin)?;
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    runtime()?.block_on(async move {
        let ln = Arc::new(
            super::ln_cmd::start_node(keystore.keys(), &data_dir, &args.ln, false).await?,
        );
        let period = std::time::Duration::from_secs(args.period_secs);
        let connected =
            crate::ln::stream::connect_lightning(&args.gateway, ln.clone(), args.listen, period, &trust)
                .await;
        let outcome = match connected {
            Ok(client) => {
                let mut stop = super::stop_signals()?;
                println!(
                    "paying {} over Lightning every {} s; point applications at the local proxy (HTTP CONNECT or SOCKS5) {} (Ctrl-C stops)",
                    args.gateway, args.period_secs, client.local_addr
                );
                let _ = stop.recv().await;
                eprintln!(
                    "stopped after {} keysends, {} msat",
                    client.payments.load(std::sync::atomic::Ordering::Relaxed),
                    client.paid_msat.load(std::sync::atomic::Ordering::Relaxed)
                );
                Ok(())
            }
            Err(error) => Err(failed(&args.gateway)(&error)),
        };
        let stopped = super::ln_cmd::settle_and_stop(&ln).await;
        outcome?;
        stopped
    })
}
