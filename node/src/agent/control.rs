//! The control socket: while an agent runs, other `m2m` commands reach it here instead of
//! failing on the data-directory lock. A Unix socket at `<data dir>/control.sock` (mode 0600,
//! inside the 0700 data directory: only the device's user can connect), one JSON request per
//! line, one JSON answer per line (`docs/protocols/control.md`). Requests go through the same
//! code as the agent's own work (a `get` is a buy of the running agent, on its channels), so
//! nothing is paid or persisted twice.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::buying::{self, LegBuyers};
use super::config::{BudgetConfig, BuyConfig, BuyLeg};
use crate::btc::BtcSeller;
use crate::budget::{BudgetCaps, leg_name};
use crate::events::{EventBus, Leg};
use crate::seller::Seller;

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Longest request line accepted (a request is a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// What runs: listening addresses, device addresses, counters.
    Status,
    /// Every channel of the device: each leg, either side (`crate::ledger`).
    Channels,
    /// What the device holds on each leg it runs (`crate::balances`).
    Balance,
    /// The next step of an EVM payer channel's timed withdrawal (`crate::evm::withdraw`).
    Withdraw {
        /// The channel id, `0x` + 64 hex digits.
        channel: String,
    },
    /// One paid fetch by the running agent, on its channels and within `max_price`.
    Get {
        /// The resource.
        url: String,
        /// The leg that pays.
        pay: BuyLeg,
        /// Highest price: token units (evm), satoshi (btc, l402). (A `u64`: serde reads an
        /// internally tagged request through a buffer that has no 128-bit integers.)
        max_price: u64,
    },
    /// The Lightning node: id, address, balances.
    LnInfo,
    /// A new address of the Lightning node's on-chain wallet.
    LnAddress,
    /// Opens a Lightning channel and waits until its funding is broadcast.
    LnOpen {
        /// `NODE_ID@IP:PORT`.
        peer: String,
        /// Capacity (sat).
        sats: u64,
        /// Given to the peer at once (sat).
        #[serde(default)]
        push_sats: u64,
        /// Announce it for routing.
        #[serde(default)]
        announce: bool,
    },
    /// A BOLT11 invoice the running node receives.
    LnInvoice {
        /// Amount (msat).
        amount_msat: u64,
        /// What the payer sees.
        description: String,
    },
    /// Pays a BOLT11 invoice from the running node.
    LnPay {
        /// The invoice.
        invoice: String,
    },
    /// Every leg's caps and what was spent in the rolling hour (per payee) and day.
    Budget,
    /// Replaces one leg's caps (kept across restarts until `agent.toml` changes that leg's).
    SetBudget {
        /// The leg.
        leg: Leg,
        /// Most one payment may be (token units on evm, sat on btc and lightning).
        per_request: u64,
        /// Most one payee may receive in any rolling hour.
        per_payee_per_hour: u64,
        /// Most all payees together may receive in any rolling day.
        per_day: u64,
    },
    /// The dashboard's URL with this run's token (`m2m dashboard`).
    Dashboard,
}

/// The control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No agent runs on this data directory (no socket, or nobody answers it).
    #[error("no agent answers at {path}")]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the agent failed midway.
    #[error("control socket: {0}")]
    Io(#[source] std::io::Error),
    /// The agent's answer was not understood.
    #[error("control socket: unreadable answer")]
    Garbled(#[source] serde_json::Error),
    /// The agent refused or failed the request; its reason.
    #[error("the running agent: {0}")]
    Refused(String),
}

/// What the socket's requests act on.
pub(super) struct ControlTarget {
    pub evm: Option<Arc<Seller>>,
    pub btc: Option<Arc<BtcSeller>>,
    pub buyers: Arc<LegBuyers>,
    /// The channels `channels` lists.
    pub store: Arc<crate::store::ChannelStore>,
    /// The device wallet (its EVM address, for `balance`).
    pub signer: crate::evm::SharedSigner,
    /// Where EVM balances are read, if the agent knows a chain.
    pub evm_endpoint: Option<crate::balances::EvmEndpoint>,
    /// The Bitcoin wallet, if the agent runs bitcoind.
    pub btc_wallet: Option<Arc<crate::btc::BtcWallet>>,
    /// The Lightning node, whose channels `channels` adds.
    #[cfg(feature = "lightning")]
    pub ln: Option<Arc<crate::ln::LnNode>>,
    /// `agent.toml`'s caps: a `set_budget` is kept until these change.
    pub budget_config: BudgetConfig,
    /// A `get` is reported like the agent's own buys.
    pub events: Arc<EventBus>,
    /// The fixed part of `status` (addresses, listening URLs).
    pub status: Value,
    /// The dashboard's URL with its token, when the `[metrics]` listener serves it.
    pub dashboard: Option<String>,
}

/// Binds `<data dir>/control.sock` and answers on it until the task is aborted. A socket file
/// left by a crashed agent is replaced: the data-directory lock proves nobody else serves it.
pub(super) fn serve(dir: &Path, target: Arc<ControlTarget>) -> std::io::Result<JoinHandle<()>> {
    let path = dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer_connection(stream, target.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "control socket");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn answer_connection(stream: UnixStream, target: Arc<ControlTarget>) {
    let (reader, mut writer) = stream.into_split();
    // Only the device's own user can connect (0600 socket in a 0700 directory), so a line is
    // read whole and then judged by its length.
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = if line.len() > MAX_REQUEST_BYTES {
            json!({ "ok": false, "error": "request too long" })
        } else {
            match serde_json::from_str::<ControlRequest>(&line) {
                Ok(request) => match handle(&request, &target).await {
                    Ok(result) => json!({ "ok": true, "result": result }),
                    Err(error) => json!({ "ok": false, "error": error }),
                },
                Err(error) => json!({ "ok": false, "error": format!("bad request: {error}") }),
            }
        };
        let mut text = answer.to_string();
        text.push('\n');
        if writer.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Answers one request (also for the dashboard, which asks only what changes nothing).
pub(super) async fn handle(
    request: &ControlRequest,
    target: &ControlTarget,
) -> Result<Value, String> {
    match request {
        ControlRequest::Status => {
            let mut status = target.status.clone();
            status["evmPaidReadings"] = json!(target.evm.as_ref().map(|s| s.paid_readings()));
            status["btcPaidReadings"] = json!(target.btc.as_ref().map(|s| s.paid_readings()));
            Ok(status)
        }
        ControlRequest::Channels => {
            #[allow(unused_mut)] // appended to with Lightning
            let mut rows = crate::ledger::channels(&target.store)
                .map_err(|e| crate::events::error_line(&e))?;
            #[cfg(feature = "lightning")]
            if let Some(ln) = &target.ln {
                rows.extend(crate::ledger::lightning_channels(ln));
            }
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        ControlRequest::Balance => balance(target).await,
        ControlRequest::Withdraw { channel } => withdraw(channel, target).await,
        ControlRequest::Get {
            url,
            pay,
            max_price,
        } => {
            let buy = BuyConfig {
                url: url.clone(),
                pay: *pay,
                every_secs: 1,
                max_price: u128::from(*max_price),
                max_deposit: None,
                capacity_sat: 0,
                pin: None,
                ticks: false,
            };
            let (payment, body) =
                buying::buy_and_report(&buy, &target.buyers, &target.events).await?;
            Ok(json!({
                "paid": payment,
                "body": String::from_utf8_lossy(&body),
            }))
        }
        ControlRequest::LnInfo
        | ControlRequest::LnAddress
        | ControlRequest::LnOpen { .. }
        | ControlRequest::LnInvoice { .. }
        | ControlRequest::LnPay { .. } => lightning(request, target).await,
        ControlRequest::Budget => Ok(budget_report(target)),
        ControlRequest::Dashboard => target
            .dashboard
            .as_ref()
            .map(|url| json!({ "url": url }))
            .ok_or_else(|| {
                "this agent serves no dashboard (add [metrics] to agent.toml; \
                 dashboard = false turns it off)"
                    .to_owned()
            }),
        ControlRequest::SetBudget {
            leg,
            per_request,
            per_payee_per_hour,
            per_day,
        } => {
            let caps = BudgetCaps {
                per_request: u128::from(*per_request),
                per_payee_per_hour: u128::from(*per_payee_per_hour),
                per_day: u128::from(*per_day),
            };
            caps.check()
                .map_err(|field| format!("{field} must be positive"))?;
            let config_now = target
                .budget_config
                .caps()
                .into_iter()
                .find(|(l, _)| l == leg)
                .map(|(_, caps)| caps);
            target
                .buyers
                .budgets
                .set(*leg, caps, config_now)
                .await
                .map_err(|e| crate::events::error_line(&e))?;
            Ok(budget_report(target))
        }
    }
}

/// `balance`: each leg the agent runs; a leg that cannot be read says why instead.
async fn balance(target: &ControlTarget) -> Result<Value, String> {
    let line = |e: &dyn std::error::Error| json!({ "error": crate::events::error_line(e) });
    let evm = match &target.evm_endpoint {
        Some(endpoint) => {
            // The tokens of the device's channels too (a buyer's, which no route names).
            let mut endpoint = endpoint.clone();
            if let Ok(rows) = crate::ledger::channels(&target.store) {
                endpoint.tokens.extend(
                    rows.iter()
                        .filter(|row| row.leg == Leg::Evm)
                        .filter_map(|row| row.asset.parse::<alloy::primitives::Address>().ok()),
                );
            }
            crate::balances::evm(&endpoint, target.signer.clone())
                .await
                .unwrap_or_else(|e| line(&e))
        }
        None => Value::Null,
    };
    let bitcoin = match &target.btc_wallet {
        Some(wallet) => crate::balances::bitcoin(wallet)
            .await
            .unwrap_or_else(|e| line(&e)),
        None => Value::Null,
    };
    #[cfg(feature = "lightning")]
    let lightning = target
        .ln
        .as_deref()
        .map_or(Value::Null, crate::balances::lightning);
    #[cfg(not(feature = "lightning"))]
    let lightning = Value::Null;
    Ok(json!({ "evm": evm, "bitcoin": bitcoin, "lightning": lightning }))
}

/// `withdraw`: one step on the agent's EVM chain, from the channel config in its store.
async fn withdraw(channel: &str, target: &ControlTarget) -> Result<Value, String> {
    let line = |e: &dyn std::error::Error| crate::events::error_line(e);
    let id: alloy::primitives::B256 = channel
        .parse()
        .map_err(|_| format!("{channel:?} is not a 0x + 64 hex digit channel id"))?;
    let endpoint = target
        .evm_endpoint
        .as_ref()
        .ok_or("this agent knows no EVM chain (add [evm] rpc_url to agent.toml)")?;
    let client = crate::evm::SettlementClient::connect(
        &endpoint.rpc_url,
        target.signer.clone(),
        endpoint.settlement,
    )
    .await
    .map_err(|e| line(&e))?;
    let step = crate::evm::withdraw::withdraw_step(&client, &target.store, id)
        .await
        .map_err(|e| line(&e))?;
    Ok(step.to_json())
}

/// How long a `ln_pay` waits for its outcome.
#[cfg(feature = "lightning")]
const LN_PAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The `ln_*` requests, on the agent's node (`crate::ln::ops`, as `m2m ln` runs them).
#[cfg(feature = "lightning")]
async fn lightning(request: &ControlRequest, target: &ControlTarget) -> Result<Value, String> {
    use crate::ln::ops;
    let ln = target
        .ln
        .as_ref()
        .ok_or("this agent runs no Lightning node (no [lightning] in agent.toml)")?;
    let answer = match request {
        ControlRequest::LnInfo => ops::info(ln).await,
        ControlRequest::LnAddress => ops::address(ln),
        ControlRequest::LnOpen {
            peer,
            sats,
            push_sats,
            announce,
        } => ops::open(ln, peer, *sats, *push_sats, *announce).await,
        ControlRequest::LnInvoice {
            amount_msat,
            description,
        } => ops::invoice(ln, *amount_msat, description),
        ControlRequest::LnPay { invoice } => ops::pay(ln, invoice, LN_PAY_TIMEOUT).await,
        _ => return Err("not a Lightning request".into()),
    };
    answer.map_err(|e| crate::events::error_line(&e))
}

#[cfg(not(feature = "lightning"))]
async fn lightning(_request: &ControlRequest, _target: &ControlTarget) -> Result<Value, String> {
    Err("this build has no Lightning".into())
}

/// The budgets as JSON; amounts are decimal strings (they are 128-bit).
fn budget_report(target: &ControlTarget) -> Value {
    let legs: Vec<Value> = target
        .buyers
        .budgets
        .report(crate::now_secs())
        .into_iter()
        .map(|leg| {
            let pairs = |pairs: Vec<(String, u128)>, key: &str| -> Vec<Value> {
                pairs
                    .into_iter()
                    .map(|(name, spent)| json!({ key: name, "spent": spent.to_string() }))
                    .collect()
            };
            json!({
                "leg": leg_name(leg.leg),
                "caps": leg.caps.map(|caps| json!({
                    "perRequest": caps.per_request.to_string(),
                    "perPayeePerHour": caps.per_payee_per_hour.to_string(),
                    "perDay": caps.per_day.to_string(),
                })),
                "source": leg.source,
                "day": pairs(leg.day, "asset"),
                "hourByPayee": pairs(leg.payees, "payee"),
            })
        })
        .collect();
    Value::Array(legs)
}

/// Sends `request` to the agent running on `data_dir` and returns its `result`.
pub async fn request(data_dir: &Path, request: &ControlRequest) -> Result<Value, ControlError> {
    let path = data_dir.join(SOCKET_FILE);
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::NotRunning {
            path: path.clone(),
            source,
        })?;
    let (reader, mut writer) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(ControlError::Garbled)?;
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .await
        .map_err(ControlError::Io)?;
    let mut answer = String::new();
    BufReader::new(reader)
        .read_line(&mut answer)
        .await
        .map_err(ControlError::Io)?;
    let answer: Value = serde_json::from_str(&answer).map_err(ControlError::Garbled)?;
    if answer["ok"] == true {
        Ok(answer["result"].clone())
    } else {
        Err(ControlError::Refused(
            answer["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let get: ControlRequest = serde_json::from_str(
            r#"{"request":"get","url":"http://x/t","pay":"evm","max_price":1000}"#,
        )
        .unwrap();
        assert!(matches!(
            get,
            ControlRequest::Get {
                max_price: 1000,
                ..
            }
        ));
        assert!(serde_json::from_str::<ControlRequest>(r#"{"request":"status"}"#).is_ok());
        assert!(serde_json::from_str::<ControlRequest>(r#"{"request":"format_disk"}"#).is_err());
        assert!(
            serde_json::from_str::<ControlRequest>(
                r#"{"request":"get","url":"http://x/t","pay":"evm","max_price":1,"max_deposit":9}"#
            )
            .is_err(),
            "unknown fields are refused"
        );
    }
}
