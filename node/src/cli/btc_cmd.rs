//! `m2m btc …`: the on-chain Bitcoin wallet and Taproot channels, through a bitcoind node.
//!
//! `balance` and `sweep` are the owner's view of the device wallet; `serve` sells readings priced
//! in satoshi (`btc-channel`), with the watcher closing channels before their expiry; `get` pays
//! such readings; `channels`, `close` and `refund` manage the channels themselves.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Address, Amount, FeeRate};
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::print_json;
use super::{CliError, GlobalArgs, wallet_cmd};
use crate::btc::{
    BitcoinRpc, BtcBuyer, BtcBuyerOptions, BtcRoute, BtcSeller, BtcWallet, PayeeChannels,
    PayeePolicy, PayerChannels, RpcAuth, serve_btc,
};
use crate::seller::config::LimitsConfig;
use crate::seller::sensor::{SensorKind, SimulatedSensor};
use crate::store::ChannelStore;
use crate::store::btc::BtcRole;

/// How to reach bitcoind.
#[derive(Debug, Args)]
pub struct BitcoindArgs {
    /// bitcoind JSON-RPC URL.
    #[arg(
        long,
        env = "M2M_BITCOIND_RPC",
        default_value = "http://127.0.0.1:18443/",
        global = true
    )]
    bitcoind: String,
    /// bitcoind's cookie file (else `--rpc-user`/`M2M_BITCOIND_PASSWORD`).
    #[arg(long, env = "M2M_BITCOIND_COOKIE", value_name = "FILE", global = true)]
    cookie: Option<PathBuf>,
    /// RPC user, with the password in `M2M_BITCOIND_PASSWORD`.
    #[arg(long, env = "M2M_BITCOIND_USER", global = true)]
    rpc_user: Option<String>,
    /// Fee rate for transactions, sat/vB.
    #[arg(long, default_value_t = 2, global = true)]
    fee_rate: u32,
}

impl BitcoindArgs {
    /// The RPC client these options describe.
    pub(super) fn rpc(&self) -> Result<BitcoinRpc, CliError> {
        let auth = match (&self.cookie, &self.rpc_user) {
            (Some(cookie), _) => RpcAuth::Cookie(cookie.clone()),
            (None, Some(user)) => RpcAuth::UserPass(
                user.clone(),
                std::env::var("M2M_BITCOIND_PASSWORD").map_err(|_| {
                    CliError::Usage("--rpc-user needs M2M_BITCOIND_PASSWORD".into())
                })?,
            ),
            (None, None) => {
                return Err(CliError::Usage(
                    "say how to reach bitcoind: --cookie FILE (or M2M_BITCOIND_COOKIE), or --rpc-user"
                        .into(),
                ));
            }
        };
        Ok(BitcoinRpc::new(self.bitcoind.clone(), auth))
    }

    /// The fee rate for transactions.
    pub(super) fn fee_rate(&self) -> Result<FeeRate, CliError> {
        FeeRate::from_sat_per_vb(u64::from(self.fee_rate))
            .ok_or_else(|| CliError::Usage("fee rate too large".into()))
    }
}

/// `m2m btc`.
#[derive(Debug, Subcommand)]
pub enum BtcAction {
    /// Sync the wallet and print its balance.
    Balance,
    /// Send every coin of the device wallet to ADDRESS (the owner's sweep).
    Sweep {
        /// Where to.
        address: String,
    },
    /// List the device's Taproot channels.
    Channels,
    /// Payee: broadcast the newest commitment of a channel, co-signed.
    Close {
        /// Channel id (hex).
        channel: String,
    },
    /// Payer: take a channel's output back after its expiry height.
    Refund {
        /// Channel id (hex).
        channel: String,
        /// Fee, satoshi.
        #[arg(long, default_value_t = 500)]
        fee: u64,
    },
    /// Sell readings priced in satoshi over HTTP 402 (`btc-channel`).
    Serve(SellArgs),
    /// Fetch a reading, paying its `btc-channel` 402 (opens a channel on first use).
    Get {
        /// The URL.
        url: String,
        /// This many times.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// New channels lock this many satoshi.
        #[arg(long, default_value_t = 100_000)]
        capacity: u64,
        /// Highest price per reading, satoshi.
        #[arg(long, default_value_t = 1_000)]
        max_price: u64,
        /// The seller's TLS pin (`sha256//…`, as its `m2m address` prints).
        #[arg(long, value_name = "PIN")]
        pin: Option<crate::tls::Pin>,
    },
}

/// `m2m btc` arguments.
#[derive(Debug, Args)]
pub struct BtcArgs {
    #[command(flatten)]
    node: BitcoindArgs,
    #[command(subcommand)]
    action: BtcAction,
}

pub(super) fn failed(what: &str) -> impl Fn(&dyn std::fmt::Display) -> CliError + '_ {
    move |error| CliError::Usage(format!("{what}: {error}"))
}

fn channel_id(text: &str) -> Result<[u8; 32], CliError> {
    crate::x402::btc::unhex32(text)
        .ok_or_else(|| CliError::Usage(format!("{text:?} is not a 64-hex-digit channel id")))
}

/// Runs `m2m btc …`.
/// Parses `PATH=SATS` routes.
pub(super) fn parse_routes(routes: &[String]) -> Result<Vec<BtcRoute>, CliError> {
    routes
        .iter()
        .map(|text| {
            let (path, sats) = text
                .split_once('=')
                .filter(|(p, _)| p.starts_with('/'))
                .ok_or_else(|| CliError::Usage(format!("route {text:?} is not PATH=SATS")))?;
            let price = sats.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                CliError::Usage(format!("price {sats:?} is not a positive satoshi amount"))
            })?;
            Ok(BtcRoute {
                path: path.into(),
                price: Amount::from_sat(price),
                sensor: SensorKind::Temperature,
                source: None,
            })
        })
        .collect()
}

/// How `m2m btc serve` and `m2m ln serve` sell readings for satoshi.
#[derive(Debug, Args)]
pub struct SellArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8402")]
    listen: std::net::SocketAddr,
    /// A priced route `PATH=SATS` (e.g. `/temperature=25`); repeatable.
    #[arg(long = "route", value_name = "PATH=SATS", required = true)]
    routes: Vec<String>,
    /// Confirmations a channel's funding needs.
    #[arg(long, default_value_t = 1)]
    min_confirmations: u32,
    /// TLS: auto (TLS unless loopback), on, off (loopback only), plaintext-beyond-loopback.
    #[arg(long, value_enum, default_value = "auto")]
    tls: crate::tls::TlsMode,
    /// Sustained requests per second per client address.
    #[arg(long)]
    rate_per_client: Option<u32>,
    /// Burst allowance per client address.
    #[arg(long)]
    burst_per_client: Option<u32>,
    /// Concurrent connections served.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Largest request body (bytes).
    #[arg(long)]
    max_body_bytes: Option<usize>,
}

impl SellArgs {
    /// What these flags sell, and the server limits (defaults where a flag is absent).
    pub(super) fn readings(&self) -> Result<Readings, CliError> {
        let defaults = LimitsConfig::default();
        Ok(Readings {
            listen: self.listen,
            routes: parse_routes(&self.routes)?,
            min_confirmations: self.min_confirmations,
            tls: self.tls,
            limits: LimitsConfig {
                rate_per_client: self.rate_per_client.unwrap_or(defaults.rate_per_client),
                burst_per_client: self.burst_per_client.unwrap_or(defaults.burst_per_client),
                max_connections: self.max_connections.unwrap_or(defaults.max_connections),
                max_body_bytes: self.max_body_bytes.unwrap_or(defaults.max_body_bytes),
                ..defaults
            },
        })
    }
}

/// What a reading seller serves.
pub(super) struct Readings {
    pub listen: std::net::SocketAddr,
    pub routes: Vec<BtcRoute>,
    pub min_confirmations: u32,
    pub tls: crate::tls::TlsMode,
    pub limits: LimitsConfig,
}

/// The type of the optional L402 issuer (a unit without the `lightning` feature).
#[cfg(feature = "lightning")]
pub(super) type L402 = Option<Arc<crate::ln::l402::L402Issuer>>;
/// The type of the optional L402 issuer (a unit without the `lightning` feature).
#[cfg(not(feature = "lightning"))]
pub(super) type L402 = Option<()>;

/// Sells readings for satoshi (`btc-channel`, and L402 with an issuer) until Ctrl-C, with the
/// watcher closing channels before their expiry.
pub(super) async fn serve_readings(
    store: &Arc<ChannelStore>,
    rpc: &BitcoinRpc,
    keystore: &Arc<m2m_wallet::Keystore>,
    readings: Readings,
    l402: L402,
) -> Result<(), CliError> {
    let policy = PayeePolicy {
        min_confirmations: readings.min_confirmations,
        ..PayeePolicy::default()
    };
    let payee = Arc::new(
        PayeeChannels::load(store.clone(), rpc.clone(), keystore.clone(), policy)
            .map_err(|e| failed("channels")(&e))?,
    );
    let network = rpc.caip2().await.map_err(|e| failed("bitcoind")(&e))?;
    let seller = BtcSeller::new(
        payee.clone(),
        &policy,
        network,
        readings.routes,
        Arc::new(SimulatedSensor::new("btc")),
    );
    #[cfg(feature = "lightning")]
    let seller = match l402 {
        Some(issuer) => seller.with_l402(issuer),
        None => seller,
    };
    #[cfg(not(feature = "lightning"))]
    let _ = l402;
    let seller = Arc::new(seller);
    let listener = tokio::net::TcpListener::bind(readings.listen)
        .await
        .map_err(|e| failed("listen")(&e))?;
    let tls = super::server_tls(readings.tls, readings.listen, keystore)?;
    let server = serve_btc(seller.clone(), listener, &readings.limits, tls)
        .map_err(|e| failed("listen")(&e))?;
    let watcher = tokio::spawn(payee.run_watcher(Duration::from_secs(30)));
    let mut stop = super::stop_signals()?;
    println!(
        "selling readings for satoshi at {} (Ctrl-C stops)",
        server.url()
    );
    let _ = stop.recv().await;
    eprintln!("stopping: {} paid readings served", seller.paid_readings());
    watcher.abort();
    server.shutdown().await;
    Ok(())
}

pub(super) fn run(global: &GlobalArgs, args: &BtcArgs) -> Result<(), CliError> {
    let rpc = args.node.rpc()?;
    let fee_rate = args.node.fee_rate()?;
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    let store = Arc::new(ChannelStore::open(&data_dir).map_err(|e| failed("channel store")(&e))?);
    let keystore = Arc::new(keystore);
    let wallet = Arc::new(
        BtcWallet::open(keystore.keys(), store.clone(), rpc.clone())
            .map_err(|e| failed("wallet")(&e))?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    runtime.block_on(async {
        wallet.sync().await.map_err(|e| failed("wallet sync")(&e))?;
        match &args.action {
            BtcAction::Balance => {
                let balance = wallet.balance().await;
                let address = wallet.receive_address().await;
                if global.json {
                    print_json(&json!({
                        "address": address.to_string(),
                        "confirmed": balance.confirmed.to_sat(),
                        "pending": (balance.trusted_pending + balance.untrusted_pending).to_sat(),
                        "immature": balance.immature.to_sat(),
                    }));
                } else {
                    println!("address   {address}");
                    println!("confirmed {}", balance.confirmed);
                    println!(
                        "pending   {}",
                        balance.trusted_pending + balance.untrusted_pending
                    );
                    println!("immature  {}", balance.immature);
                }
            }
            BtcAction::Sweep { address } => {
                let to = Address::from_str(address)
                    .map_err(|e| failed("address")(&e))?
                    .require_network(keystore.keys().network())
                    .map_err(|e| failed("address")(&e))?;
                let txid = wallet
                    .sweep(&to, fee_rate)
                    .await
                    .map_err(|e| failed("sweep")(&e))?;
                println!("{txid}");
            }
            BtcAction::Channels => {
                let channels = store.btc_channels().map_err(|e| failed("store")(&e))?;
                let mut listed = Vec::new();
                for (role, terms) in channels {
                    let id = m2m_contracts::btc::channel_id(&terms.funding.outpoint);
                    let key = m2m_core::ChannelId(id);
                    let amount = match role {
                        BtcRole::Payer => store.load_btc_signed(&key),
                        BtcRole::Payee => store
                            .load_btc_voucher(&key)
                            .map(|v| v.map_or(Amount::ZERO, |v| v.cumulative)),
                    }
                    .map_err(|e| failed("store")(&e))?;
                    let open = rpc
                        .tx_out(&terms.funding.outpoint)
                        .await
                        .map_err(|e| failed("bitcoind")(&e))?
                        .is_some();
                    listed.push(json!({
                        "id": crate::x402::btc::channel_id_hex(&id),
                        "role": format!("{role:?}").to_lowercase(),
                        "capacity": terms.funding.capacity.to_sat(),
                        "paid": amount.to_sat(),
                        "expiryHeight": terms.parties.expiry_height,
                        "open": open,
                    }));
                }
                if global.json {
                    print_json(&json!(listed));
                } else {
                    for channel in listed {
                        println!("{channel}");
                    }
                }
            }
            BtcAction::Close { channel } => {
                let payee = PayeeChannels::load(
                    store.clone(),
                    rpc.clone(),
                    keystore.clone(),
                    PayeePolicy::default(),
                )
                .map_err(|e| failed("channels")(&e))?;
                let txid = payee
                    .close(&channel_id(channel)?)
                    .await
                    .map_err(|e| failed("close")(&e))?;
                println!("{txid}");
            }
            BtcAction::Refund { channel, fee } => {
                let payer = PayerChannels::load(store.clone(), wallet.clone(), keystore.clone())
                    .map_err(|e| failed("channels")(&e))?;
                let txid = payer
                    .refund(&channel_id(channel)?, Amount::from_sat(*fee))
                    .await
                    .map_err(|e| failed("refund")(&e))?;
                println!("{txid}");
            }
            BtcAction::Serve(sell) => {
                serve_readings(&store, &rpc, &keystore, sell.readings()?, None).await?;
            }
            BtcAction::Get {
                url,
                count,
                capacity,
                max_price,
                pin,
            } => {
                let payer = Arc::new(
                    PayerChannels::load(store.clone(), wallet.clone(), keystore.clone())
                        .map_err(|e| failed("channels")(&e))?,
                );
                let options = BtcBuyerOptions {
                    capacity: Amount::from_sat(*capacity),
                    max_price: Amount::from_sat(*max_price),
                    fee_rate,
                    trust: super::trust_of(url, *pin)?,
                    ..BtcBuyerOptions::default()
                };
                let buyer = BtcBuyer::new(payer, rpc.clone(), options)
                    .await
                    .map_err(|e| failed("bitcoind")(&e))?;
                for _ in 0..*count {
                    let fetched = buyer.get(url).await.map_err(|e| failed(url)(&e))?;
                    if let Some(paid) = fetched.paid {
                        eprintln!("paid {paid} via btc-channel");
                    }
                    println!("{}", String::from_utf8_lossy(&fetched.body));
                }
            }
        }
        Ok::<_, CliError>(())
    })?;
    drop(data_dir);
    Ok(())
}
