//! The agent's periodic buys: each `[[buy]]` entry fetches its URL every `every_secs`, paying on
//! its leg within its own price cap, and reports each outcome as an event. One buyer per leg is
//! shared by the entries (its channels live in the agent's store), so two entries paying the
//! same seller use one channel and never race each other's vouchers.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::Amount;
use tokio::task::JoinHandle;

use super::AgentError;
use super::config::{AgentConfig, BuyConfig, BuyLeg, ConnectConfig};
use super::legs::{Legs, Shared};
use crate::btc::{BtcBuyer, BtcBuyerOptions, PayerChannels};
use crate::buyer::{Buyer, BuyerOptions};
use crate::events::{AgentEvent, EventBus, Leg, Payment};

/// How long one paid fetch may take before it counts as failed (a hung seller must not hold the
/// entry's turn for ever).
const BUY_TIMEOUT: Duration = Duration::from_secs(120);

/// The buyers the entries (and the control socket's `get`) share.
pub(super) struct LegBuyers {
    /// The budgets every leg's buyer spends within.
    pub budgets: Arc<crate::budget::Budgets>,
    /// The sellers' pinned TLS keys (the EVM and Bitcoin buyers hold their own copies).
    #[cfg(feature = "lightning")]
    trust: crate::tls::Trust,
    evm: Arc<Buyer>,
    btc: Option<Arc<BtcBuyer>>,
    #[cfg(feature = "lightning")]
    ln: Option<Arc<crate::ln::LnNode>>,
}

/// What [`start`] started: the buyers, one task per `[[buy]]` and `[[connect]]` entry, and
/// the MQTT buyer of the `mqtt:` entries.
pub(super) type Started = (
    Arc<LegBuyers>,
    Vec<JoinHandle<()>>,
    Option<Arc<crate::mqtt::buyer::MqttBuyer>>,
);

/// The buyers, and one task per `[[buy]]` entry.
pub(super) async fn start(
    config: &AgentConfig,
    shared: &Shared<'_>,
    legs: &Legs,
) -> Result<Started, AgentError> {
    // Every leg the agent can pay on gets its buyer, so the control socket's `get` works
    // without a `[[buy]]` entry for that leg.
    let trust = config
        .trust()
        .map_err(|e| AgentError::leg("the buyers' TLS pins")(Box::new(e)))?;
    let evm = {
        let options = BuyerOptions {
            trust: trust.clone(),
            // Each entry caps its own price per call; the deposit cap is the largest asked.
            max_deposit: config.buys.iter().filter_map(|b| b.max_deposit).max(),
            budget: Some(shared.budgets.clone()),
            ..BuyerOptions::default()
        };
        let buyer = Buyer::new(shared.keystore.clone(), shared.store.clone(), options);
        buyer.events.attach(shared.events.clone());
        Arc::new(buyer)
    };
    let btc = match &legs.bitcoin {
        Some(bitcoin) => {
            let payer = PayerChannels::load(
                shared.store.clone(),
                bitcoin.wallet.clone(),
                shared.keystore.clone(),
            )
            .map_err(|e| AgentError::leg("the Bitcoin payer")(Box::new(e)))?;
            let capacity = config
                .buys
                .iter()
                .filter(|b| b.pay == BuyLeg::Btc)
                .map(|b| b.capacity_sat)
                .max()
                .unwrap_or(crate::btc::BtcBuyerOptions::default().capacity.to_sat());
            let options = BtcBuyerOptions {
                capacity: Amount::from_sat(capacity),
                max_price: Amount::MAX_MONEY,
                fee_rate: bitcoin.fee_rate,
                trust: trust.clone(),
                ..BtcBuyerOptions::default()
            };
            let buyer = BtcBuyer::new(Arc::new(payer), bitcoin.rpc.clone(), options)
                .await
                .map_err(|e| AgentError::leg("the Bitcoin buyer")(Box::new(e)))?
                .with_budget(shared.budgets.clone());
            buyer.events.attach(shared.events.clone());
            Some(Arc::new(buyer))
        }
        None => None,
    };
    #[cfg(not(feature = "lightning"))]
    if config.buys.iter().any(|buy| buy.pay == BuyLeg::L402) {
        return Err(AgentError::NoLightning("pay = \"l402\""));
    }
    let buyers = Arc::new(LegBuyers {
        budgets: shared.budgets.clone(),
        #[cfg(feature = "lightning")]
        trust,
        evm,
        btc,
        #[cfg(feature = "lightning")]
        ln: legs.ln.clone(),
    });
    let mut tasks: Vec<_> = config
        .buys
        .iter()
        .filter(|buy| !buy.url.starts_with(crate::mqtt::config::TOPIC_URL_PREFIX))
        .map(|buy| tokio::spawn(run(buy.clone(), buyers.clone(), shared.events.clone())))
        .collect();
    let topics = super::priced_topics::start_buys(
        config,
        shared,
        buyers.evm.clone(),
        #[cfg(feature = "lightning")]
        legs.ln.clone(),
    );
    let mqtt = match topics.await? {
        Some((mqtt, entries)) => {
            tasks.extend(entries);
            Some(mqtt)
        }
        None => None,
    };
    for connect in &config.connects {
        let (connect, buyer) = (connect.clone(), buyers.evm.clone());
        tasks.push(tokio::spawn(connected(
            connect,
            buyer,
            shared.events.clone(),
        )));
    }
    Ok((buyers, tasks, mqtt))
}

/// How long a `[[connect]]` waits before trying an unreachable gateway again.
const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// One `[[connect]]` session for as long as the agent runs: opened (retried while the gateway
/// cannot be reached), then paid by its ticker; aborting the task drops the client, which stops
/// paying and closes the local proxy.
async fn connected(connect: ConnectConfig, buyer: Arc<Buyer>, events: Arc<EventBus>) {
    loop {
        let opened = crate::gateway::client::connect_reporting(
            &connect.gateway,
            buyer.clone(),
            connect.listen,
            Some(events.clone()),
        )
        .await;
        match opened {
            Ok(client) => {
                tracing::info!(gateway = %connect.gateway, proxy = %client.local_addr, "connected");
                std::future::pending::<()>().await;
                drop(client);
            }
            Err(error) => {
                tracing::warn!(gateway = %connect.gateway, %error, "no session yet");
                events.publish(AgentEvent::BuyFailed {
                    url: connect.gateway.clone(),
                    reason: crate::events::error_line(&error),
                });
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        }
    }
}

/// One entry, for as long as the agent runs.
async fn run(buy: BuyConfig, buyers: Arc<LegBuyers>, events: Arc<EventBus>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(buy.every_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let _ = buy_and_report(&buy, &buyers, &events).await;
    }
}

/// [`once`], then its outcome as an event (`payment_sent` or `buy_failed`).
pub(super) async fn buy_and_report(
    buy: &BuyConfig,
    buyers: &LegBuyers,
    events: &EventBus,
) -> Result<(Payment, Vec<u8>), String> {
    let outcome = once(buy, buyers).await;
    events.publish(match &outcome {
        Ok((payment, _)) => AgentEvent::PaymentSent(payment.clone()),
        Err(reason) => {
            tracing::warn!(url = %buy.url, %reason, "buy failed");
            AgentEvent::BuyFailed {
                url: buy.url.clone(),
                reason: reason.clone(),
            }
        }
    });
    outcome
}

/// One paid fetch within [`BUY_TIMEOUT`]: what it paid and the body it bought, or why it did
/// not go through (one line, for the event).
async fn once(buy: &BuyConfig, buyers: &LegBuyers) -> Result<(Payment, Vec<u8>), String> {
    tokio::time::timeout(BUY_TIMEOUT, fetch(buy, buyers))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", BUY_TIMEOUT.as_secs())))
}

async fn fetch(buy: &BuyConfig, buyers: &LegBuyers) -> Result<(Payment, Vec<u8>), String> {
    let line = |error: &dyn std::error::Error| crate::events::error_line(error);
    let (leg, scheme, amount, body) = match buy.pay {
        BuyLeg::Evm => {
            let buyer = &buyers.evm;
            let fetched = buyer
                .get_within(&buy.url, Some(buy.max_price))
                .await
                .map_err(|e| line(&e))?;
            if fetched.status != 200 {
                return Err(answered(fetched.status, &fetched.body));
            }
            let (scheme, amount) = fetched.paid.unwrap_or_default();
            (Leg::Evm, scheme, amount, fetched.body)
        }
        BuyLeg::Btc => {
            let buyer = buyers.btc.as_ref().ok_or("no Bitcoin buyer")?;
            let max = Amount::from_sat(u64::try_from(buy.max_price).unwrap_or(u64::MAX));
            let fetched = buyer
                .get_within(&buy.url, max)
                .await
                .map_err(|e| line(&e))?;
            if fetched.status != 200 {
                return Err(answered(fetched.status, &fetched.body));
            }
            let paid = fetched.paid.map_or(0, |amount| amount.to_sat());
            (
                Leg::Btc,
                "btc-channel".to_owned(),
                u128::from(paid),
                fetched.body,
            )
        }
        BuyLeg::L402 => l402(buy, buyers).await?,
    };
    let payment = Payment {
        leg,
        scheme,
        amount,
        resource: buy.url.clone(),
    };
    Ok((payment, body))
}

/// An unpaid answer other than a reading, as the event's reason.
fn answered(status: u16, body: &[u8]) -> String {
    format!(
        "the seller answered {status}: {}",
        crate::http_client::failure_message(body)
    )
}

#[cfg(feature = "lightning")]
async fn l402(buy: &BuyConfig, buyers: &LegBuyers) -> Result<(Leg, String, u128, Vec<u8>), String> {
    let ln = buyers.ln.as_ref().ok_or("no Lightning node")?;
    let max_msat = u64::try_from(buy.max_price)
        .unwrap_or(u64::MAX)
        .saturating_mul(1000);
    let http = crate::http_client::client_trusting(BUY_TIMEOUT, 8, &buyers.trust);
    let budget = Some(&*buyers.budgets);
    let fetched = crate::ln::l402::get(&http, ln, &buy.url, max_msat, budget, BUY_TIMEOUT)
        .await
        .map_err(|e| crate::events::error_line(&e))?;
    if fetched.status != 200 {
        return Err(answered(fetched.status, &fetched.body));
    }
    let paid = u128::from(fetched.paid_msat);
    Ok((Leg::Lightning, "l402".into(), paid, fetched.body))
}

#[cfg(not(feature = "lightning"))]
async fn l402(
    _buy: &BuyConfig,
    _buyers: &LegBuyers,
) -> Result<(Leg, String, u128, Vec<u8>), String> {
    Err("this build has no Lightning".into())
}
