//! `m2m ln …` and `m2m topup --chain ln`: the device's Lightning node (feature `lightning`).
//!
//! Each command starts the embedded node on the data directory (locked meanwhile), does its
//! work and stops it; the node's state is on disk throughout. A node receives only while it
//! runs: `invoice` and `topup` wait for their payment by default, and `run` keeps the node
//! online (routing, receiving keysends) until Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use clap::{Args, Subcommand};
use serde_json::json;

use super::btc_cmd::{BitcoindArgs, SellArgs, failed, serve_readings};
use super::output::{print_json, qr_code};
use super::{CliError, GlobalArgs, wallet_cmd};
use crate::datadir::DataDir;
use crate::ln::{LnConfig, LnNode, ops};
use crate::store::ChannelStore;

/// How long a payment may take before the command gives up on waiting (it may still complete).
const PAY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a payment waits for channel peers to reconnect after the node starts.
const RECONNECT_WAIT: Duration = Duration::from_secs(20);

/// Where the node listens and how it calls itself.
#[derive(Debug, Args)]
pub struct LnNodeArgs {
    /// Lightning peer-to-peer listening address.
    #[arg(
        long,
        env = "M2M_LN_LISTEN",
        default_value = "0.0.0.0:9735",
        global = true
    )]
    ln_listen: SocketAddr,
    /// The node's public alias.
    #[arg(long, default_value = "m2m-device", global = true)]
    alias: String,
    /// A peer (node id) whose channels need no on-chain reserve here, e.g. the device's hub or
    /// LSP; repeatable.
    #[arg(long = "trust-peer", value_name = "NODE_ID", global = true)]
    trusted_peers: Vec<PublicKey>,
}

/// `m2m ln`.
#[derive(Debug, Subcommand)]
pub enum LnAction {
    /// Print the node id, its address and balances.
    Info,
    /// A new address of the node's on-chain wallet (channels are funded from it).
    Address,
    /// Open a channel to PEER (`NODE_ID@IP:PORT`) locking SATS; waits until it is funded.
    Open {
        /// The peer, `NODE_ID@IP:PORT`.
        peer: String,
        /// Capacity, satoshi.
        sats: u64,
        /// Give the peer this many satoshi at once.
        #[arg(long, default_value_t = 0)]
        push_sats: u64,
        /// Announce the channel (route for others); devices keep theirs private by default.
        #[arg(long)]
        announce: bool,
    },
    /// List the node's channels.
    Channels,
    /// Create an invoice for AMOUNT (`25sat`, `2500msat`, or plain satoshi) and wait for it.
    Invoice {
        /// Amount: `25sat`, `2500msat` or plain satoshi.
        amount: String,
        /// Description shown to the payer.
        #[arg(long, default_value = "m2m device")]
        description: String,
        /// Seconds to stay online waiting for the payment (0: print and exit).
        #[arg(long, default_value_t = 600)]
        wait: u64,
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Pay a BOLT11 invoice.
    Pay {
        /// The invoice.
        invoice: String,
    },
    /// Fetch a reading, paying its L402 challenge over Lightning.
    Get {
        /// The URL.
        url: String,
        /// This many times.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Highest price per reading, satoshi.
        #[arg(long, default_value_t = 1_000)]
        max_price: u64,
    },
    /// Sell readings priced in satoshi, over L402 and `btc-channel`.
    Serve(SellArgs),
    /// Keep the node online (routing, receiving) until Ctrl-C.
    Run,
}

/// How to run the device's node: bitcoind, and the node's own options.
#[derive(Debug, Args)]
pub struct LnOptions {
    #[command(flatten)]
    bitcoind: BitcoindArgs,
    #[command(flatten)]
    node: LnNodeArgs,
}

/// `m2m ln` arguments.
#[derive(Debug, Args)]
pub struct LnArgs {
    #[command(flatten)]
    options: LnOptions,
    #[command(subcommand)]
    action: LnAction,
}

/// A started node with what it runs on.
struct Started {
    data_dir: DataDir,
    keystore: Arc<m2m_wallet::Keystore>,
    rpc: crate::btc::BitcoinRpc,
    runtime: tokio::runtime::Runtime,
    ln: Arc<LnNode>,
}

/// Starts the device's node on `data_dir` (its `lightning` directory) against bitcoind.
/// `durable_receiver`: the node backs a gateway's Lightning sessions ([`LnConfig`]).
pub(super) async fn start_node(
    keys: &m2m_wallet::DeviceKeys,
    data_dir: &DataDir,
    options: &LnOptions,
    durable_receiver: bool,
) -> Result<LnNode, CliError> {
    let (rpc, node) = (options.bitcoind.rpc()?, &options.node);
    let config = LnConfig {
        storage_dir: data_dir.path().join("lightning"),
        listen: node.ln_listen,
        network: keys.network(),
        alias: node.alias.clone(),
        trusted_peers: node.trusted_peers.clone(),
        forward_to_private_channels: false,
        durable_receiver,
    };
    eprintln!("starting the Lightning node…");
    LnNode::start(keys, &rpc, config)
        .await
        .map_err(|e| failed("lightning node")(&e))
}

fn start(global: &GlobalArgs, options: &LnOptions) -> Result<Started, CliError> {
    let rpc = options.bitcoind.rpc()?;
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Terminal)?;
    let ln = runtime.block_on(start_node(keystore.keys(), &data_dir, options, false))?;
    Ok(Started {
        data_dir,
        keystore: Arc::new(keystore),
        rpc,
        runtime,
        ln: Arc::new(ln),
    })
}

/// How long a command waits for in-flight HTLCs to settle before it stops the node.
const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// Lets in-flight HTLCs settle (a payer waits for the fulfilment of what this node claimed
/// until it comes back otherwise), then stops the node.
pub(super) async fn settle_and_stop(ln: &LnNode) -> Result<(), CliError> {
    let settled = ln
        .settle_and_stop(SETTLE_WAIT)
        .await
        .map_err(|e| failed("stopping the node")(&e))?;
    if !settled {
        eprintln!("stopped with HTLCs in flight; they settle at the next start");
    }
    Ok(())
}

/// Parses `25sat`, `2500msat` or `25` (satoshi) into msat.
fn parse_msat(text: &str) -> Result<u64, CliError> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("msat") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix("sat") {
        (n, 1_000)
    } else {
        (text, 1_000)
    };
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|msat| *msat > 0)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "amount {text:?}: give a positive `25sat`, `2500msat` or satoshi number"
            ))
        })
}

/// Runs `m2m ln …`: on a node of its own, or through the agent that holds the data directory.
pub(super) fn run(global: &GlobalArgs, args: &LnArgs) -> Result<(), CliError> {
    // An agent holds the data directory and keeps the node online: ask it (no bitcoind
    // arguments needed).
    if super::control_client::agent_running(global) {
        return through_agent(global, &args.action);
    }
    let started = start(global, &args.options)?;
    let ln = started.ln.clone();
    let result = started
        .runtime
        .block_on(act(global, &args.action, &started));
    let stopped = started.runtime.block_on(settle_and_stop(&ln));
    result?;
    stopped
}

async fn act(global: &GlobalArgs, action: &LnAction, started: &Started) -> Result<(), CliError> {
    let ln = &started.ln;
    match action {
        LnAction::Info => print_data(
            global,
            &ops::info(ln).await.map_err(|e| failed("info")(&e))?,
        ),
        LnAction::Address => {
            let answer = ops::address(ln).map_err(|e| failed("address")(&e))?;
            println!("{}", answer["address"].as_str().unwrap_or_default());
        }
        LnAction::Open {
            peer,
            sats,
            push_sats,
            announce,
        } => {
            eprintln!("negotiating with {peer}…");
            let opened = ops::open(ln, peer, *sats, *push_sats, *announce)
                .await
                .map_err(|e| failed("open")(&e))?;
            eprintln!("funding broadcast; the channel is usable after its confirmations");
            print_data(global, &opened);
        }
        LnAction::Channels => print_data(global, &channels_json(ln)),
        LnAction::Invoice {
            amount,
            description,
            wait,
            no_qr,
        } => {
            let msat = parse_msat(amount)?;
            let invoice = ln
                .invoice(msat, description, ops::INVOICE_EXPIRY_SECS)
                .map_err(|e| failed("invoice")(&e))?;
            let text = invoice.to_string();
            show_request(global, &text, &text, !no_qr);
            wait_paid(ln, &invoice, *wait).await?;
        }
        LnAction::Pay { invoice } => {
            await_peers(ln).await;
            let paid = ops::pay(ln, invoice, PAY_TIMEOUT)
                .await
                .map_err(|e| failed("pay")(&e))?;
            print_data(global, &paid);
        }
        LnAction::Get {
            url,
            count,
            max_price,
        } => {
            let http = crate::http_client::client();
            await_peers(ln).await;
            for _ in 0..*count {
                let fetched =
                    crate::ln::l402::get(&http, ln, url, max_price * 1_000, None, PAY_TIMEOUT)
                        .await
                        .map_err(|e| failed(url)(&e))?;
                if fetched.paid_msat > 0 {
                    eprintln!("paid {} msat via L402", fetched.paid_msat);
                }
                if fetched.status != 200 {
                    return Err(CliError::Usage(format!(
                        "{url}: HTTP {} {}",
                        fetched.status,
                        String::from_utf8_lossy(&fetched.body)
                    )));
                }
                println!("{}", String::from_utf8_lossy(&fetched.body));
            }
        }
        LnAction::Serve(sell) => {
            let store = Arc::new(
                ChannelStore::open(&started.data_dir).map_err(|e| failed("channel store")(&e))?,
            );
            let issuer = crate::ln::l402::L402Issuer::new(
                ln.clone(),
                store.clone(),
                started.keystore.keys(),
            )
            .map_err(|e| failed("L402")(&e))?;
            let readings = sell.readings()?;
            eprintln!("node {}@{}", ln.node_id(), ln.listen_address());
            serve_readings(
                &store,
                &started.rpc,
                &started.keystore,
                readings,
                Some(Arc::new(issuer)),
            )
            .await?;
        }
        LnAction::Run => {
            let mut stop = super::stop_signals()?;
            println!(
                "node {}@{} online (Ctrl-C stops)",
                ln.node_id(),
                ln.listen_address()
            );
            let _ = stop.recv().await;
            eprintln!("stopping: {} msat received in all", ln.received_msat());
        }
    }
    Ok(())
}

/// `m2m ln …` while an agent runs: the same operations on the agent's node.
fn through_agent(global: &GlobalArgs, action: &LnAction) -> Result<(), CliError> {
    use super::control_client::ask;
    use crate::agent::control::ControlRequest;
    let request = match action {
        LnAction::Info => ControlRequest::LnInfo,
        LnAction::Address => ControlRequest::LnAddress,
        LnAction::Open {
            peer,
            sats,
            push_sats,
            announce,
        } => ControlRequest::LnOpen {
            peer: peer.clone(),
            sats: *sats,
            push_sats: *push_sats,
            announce: *announce,
        },
        LnAction::Channels => {
            let rows = ask(global, &ControlRequest::Channels)?;
            let lightning: Vec<_> = rows
                .as_array()
                .into_iter()
                .flatten()
                .filter(|row| row["leg"] == "lightning")
                .cloned()
                .collect();
            print_data(global, &json!(lightning));
            return Ok(());
        }
        LnAction::Invoice {
            amount,
            description,
            no_qr,
            ..
        } => {
            let request = ControlRequest::LnInvoice {
                amount_msat: parse_msat(amount)?,
                description: description.clone(),
            };
            let answer = ask(global, &request)?;
            let text = answer["invoice"].as_str().unwrap_or_default();
            show_request(global, text, text, !no_qr);
            eprintln!("the running agent receives the payment");
            return Ok(());
        }
        LnAction::Pay { invoice } => ControlRequest::LnPay {
            invoice: invoice.clone(),
        },
        LnAction::Get {
            url,
            count,
            max_price,
        } => {
            return super::agent_cmd::get_through_agent(
                global,
                url,
                crate::agent::config::BuyLeg::L402,
                *max_price,
                *count,
            );
        }
        LnAction::Serve(_) | LnAction::Run => {
            return Err(CliError::Usage(
                "an agent runs on this data directory and keeps the node online: sell through its agent.toml".into(),
            ));
        }
    };
    let answer = ask(global, &request)?;
    if matches!(action, LnAction::Address) {
        println!("{}", answer["address"].as_str().unwrap_or_default());
    } else {
        print_data(global, &answer);
    }
    Ok(())
}

/// Gives the node's channel peers a moment to reconnect after the start (a payment needs a
/// usable channel); goes on regardless after [`RECONNECT_WAIT`], the payment then says why.
async fn await_peers(ln: &LnNode) {
    let reconnected = |channels: &[ldk_node::ChannelDetails]| {
        channels.iter().all(|c| !c.is_channel_ready || c.is_usable)
    };
    if reconnected(&ln.channels()) {
        return;
    }
    eprintln!("waiting for channel peers to reconnect…");
    let _ = ln
        .wait_channels("channel peers", RECONNECT_WAIT, reconnected)
        .await;
}

/// The node's channels as `m2m ln channels` prints them.
fn channels_json(ln: &LnNode) -> serde_json::Value {
    let listed: Vec<_> = ln
        .channels()
        .iter()
        .map(|c| {
            json!({
                "channelId": c.channel_id.to_string(),
                "peer": c.counterparty_node_id.to_string(),
                "funding": c.funding_txo.map(|o| o.to_string()),
                "capacitySats": c.channel_value_sats,
                "outboundMsat": c.outbound_capacity_msat,
                "inboundMsat": c.inbound_capacity_msat,
                "ready": c.is_channel_ready,
                "usable": c.is_usable,
                "announced": c.is_announced,
                "confirmations": c.confirmations,
            })
        })
        .collect();
    json!(listed)
}

fn print_data(global: &GlobalArgs, value: &serde_json::Value) {
    if global.json {
        print_json(value);
    } else {
        println!("{value:#}");
    }
}

/// Prints a payment request (and its QR code) for the payer.
fn show_request(global: &GlobalArgs, uri: &str, invoice: &str, qr: bool) {
    if global.json {
        print_json(&json!({ "chain": "ln", "uri": uri, "invoice": invoice }));
        return;
    }
    println!("{uri}");
    if qr {
        match qr_code(uri) {
            Some(code) => println!("{code}"),
            None => eprintln!("(request too long for a QR code)"),
        }
    }
}

/// Stays online until `invoice` is paid or `wait_secs` pass (0: not at all).
async fn wait_paid(
    ln: &LnNode,
    invoice: &ldk_node::lightning_invoice::Bolt11Invoice,
    wait_secs: u64,
) -> Result<(), CliError> {
    if wait_secs == 0 {
        return Ok(());
    }
    eprintln!("waiting up to {wait_secs} s for the payment (the node must stay online)…");
    let received = ln
        .wait_received(
            invoice.payment_hash().to_byte_array(),
            Duration::from_secs(wait_secs),
        )
        .await
        .map_err(|e| failed("invoice")(&e))?;
    eprintln!("paid: {received} msat received");
    Ok(())
}

/// `m2m topup --chain ln`: a unified BIP-21 request (the device's on-chain address and a BOLT11
/// invoice), then online until it is paid.
pub(super) fn topup(
    global: &GlobalArgs,
    options: &LnOptions,
    request: &wallet_cmd::TopupRequest<'_>,
) -> Result<(), CliError> {
    if super::control_client::agent_running(global) {
        // The agent's node receives it; the request is made there.
        let amount = request.amount.ok_or_else(|| {
            CliError::Usage("give --amount: the running agent makes invoices for an amount".into())
        })?;
        let answer = super::control_client::ask(
            global,
            &crate::agent::control::ControlRequest::LnInvoice {
                amount_msat: amount.to_sat().saturating_mul(1_000),
                description: request.label.to_owned(),
            },
        )?;
        let invoice = answer["invoice"].as_str().unwrap_or_default();
        let (_, address) = wallet_cmd::device_addresses(global)?;
        let uri =
            m2m_wallet::topup::unified_uri(&address, Some(amount), Some(request.label), invoice);
        show_request(global, &uri, invoice, request.qr);
        eprintln!("the running agent receives the payment");
        return Ok(());
    }
    let started = start(global, options)?;
    let ln = started.ln.clone();
    let result = started.runtime.block_on(async {
        let msat = request.amount.map_or(0, |a| a.to_sat() * 1_000);
        let invoice = if msat == 0 {
            ln.inner()
                .bolt11_payment()
                .receive_variable_amount(
                    &ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
                        ldk_node::lightning_invoice::Description::new(request.label.to_owned())
                            .map_err(|e| failed("label")(&e))?,
                    ),
                    3_600,
                )
                .map_err(|e| failed("invoice")(&e))?
        } else {
            ln.invoice(msat, request.label, 3_600)
                .map_err(|e| failed("invoice")(&e))?
        };
        let address = started.keystore.keys().bitcoin_address();
        let uri = m2m_wallet::topup::unified_uri(
            &address,
            request.amount,
            Some(request.label),
            &invoice.to_string(),
        );
        show_request(global, &uri, &invoice.to_string(), request.qr);
        wait_paid(&ln, &invoice, request.wait_secs).await
    });
    let stopped = started.runtime.block_on(settle_and_stop(&ln));
    result?;
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ln::ops::parse_peer;

    #[test]
    fn amounts_and_peers_are_checked() {
        assert_eq!(parse_msat("25").unwrap(), 25_000);
        assert_eq!(parse_msat("25sat").unwrap(), 25_000);
        assert_eq!(parse_msat("2500msat").unwrap(), 2_500);
        for bad in ["0", "0msat", "-1", "1.5sat", "lots", "99999999999999999999"] {
            assert!(parse_msat(bad).is_err(), "{bad}");
        }
        let id = "02".to_owned() + &"11".repeat(32);
        assert!(
            parse_peer(&format!("{id}@127.0.0.1:9735")).is_err(),
            "not on the curve"
        );
        let key = bitcoin::secp256k1::PublicKey::from_secret_key(
            &bitcoin::secp256k1::Secp256k1::new(),
            &bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap(),
        );
        assert_eq!(
            parse_peer(&format!("{key}@127.0.0.1:9735")).unwrap(),
            (key, "127.0.0.1:9735".parse().unwrap())
        );
        assert!(parse_peer(&key.to_string()).is_err(), "no address");
        assert!(
            parse_peer(&format!("{key}@host:9735")).is_err(),
            "not an IP"
        );
    }
}
