//! `m2m owner`: a device's claim string (`qr`, on the device) and an owner's claim of a device
//! through a thing registry (`claim`, with the owner's XMPP account).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, qr_code};
use super::{CliError, GlobalArgs, wallet_cmd};
use crate::xmpp::discovery::claim;
use crate::xmpp::ownership::{Ownership, claim_tags};
use crate::xmpp::{XmppEndpoint, connect};

/// `m2m owner`.
#[derive(Debug, Args)]
pub struct OwnerArgs {
    #[command(subcommand)]
    command: OwnerCommand,
}

#[derive(Debug, Subcommand)]
enum OwnerCommand {
    /// Print this device's claim string (`IoTDisco;…`, with its secret KEY) and its QR code, for
    /// its owner to scan. Show it only to the owner.
    Qr {
        /// The model name in the claim tags.
        #[arg(long, default_value = "m2m-agent")]
        model: String,
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Claim a device through its registry with the string its QR code shows; prints the
    /// device's JID.
    Claim {
        /// The device's claim string (`IoTDisco;…`).
        claim: String,
        /// The registry's JID (an account's full JID, or a component's domain).
        #[arg(long)]
        registry: String,
        #[command(flatten)]
        account: XmppAccountArgs,
    },
}

/// The XMPP account a command logs in with.
#[derive(Debug, Args)]
struct XmppAccountArgs {
    /// The server's client port (direct TLS), e.g. 127.0.0.1:5223.
    #[arg(long, value_name = "HOST:PORT")]
    server: SocketAddr,
    /// The account's JID.
    #[arg(long)]
    jid: String,
    /// A file whose first line is the account's password.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// The server's CA certificates (PEM).
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,
}

impl XmppAccountArgs {
    fn endpoint(&self) -> Result<XmppEndpoint, CliError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
        };
        let password = read(&self.password_file)?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(XmppEndpoint {
            address: self.server,
            jid: jid(&self.jid)?,
            password,
            ca_pem: read(&self.ca_file)?,
        })
    }
}

fn jid(text: &str) -> Result<tokio_xmpp::jid::Jid, CliError> {
    tokio_xmpp::jid::Jid::new(text).map_err(|e| CliError::Usage(format!("JID {text:?}: {e}")))
}

pub(super) fn owner(global: &GlobalArgs, args: &OwnerArgs) -> Result<(), CliError> {
    match &args.command {
        OwnerCommand::Qr { model, no_qr } => qr(global, model, *no_qr),
        OwnerCommand::Claim {
            claim: text,
            registry,
            account,
        } => {
            let tags = m2m_core::discovery::decode_claim(text)
                .map_err(|e| CliError::Usage(format!("the claim string: {e}")))?;
            let (registry, endpoint) = (jid(registry)?, account.endpoint()?);
            let thing = super::pay_cmd::runtime()?.block_on(async move {
                let mut session = connect(&endpoint).await?;
                let claimed = claim(&mut session, &registry, &tags).await;
                session.close().await;
                Ok::<_, CliError>(claimed?)
            })?;
            if global.json {
                print_json(&json!({ "thing": thing.to_string() }));
            } else {
                println!("{thing}");
            }
            Ok(())
        }
    }
}

fn qr(global: &GlobalArgs, model: &str, no_qr: bool) -> Result<(), CliError> {
    let (data_dir, keystore) = wallet_cmd::open(global)?;
    let ownership = Ownership::load(data_dir.path())?;
    let tags = claim_tags(keystore.keys(), ownership.generation, model)?;
    let text = m2m_core::discovery::encode_claim(&tags);
    if global.json {
        print_json(&json!({
            "claim": text,
            "generation": ownership.generation,
            "owner": ownership.owner,
        }));
        return Ok(());
    }
    if let Some(owner) = &ownership.owner {
        eprintln!("note: this device is owned by {owner} already");
    }
    println!("{text}");
    if !no_qr && let Some(code) = qr_code(&text) {
        println!("{code}");
    }
    Ok(())
}
