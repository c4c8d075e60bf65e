//! Priced MQTT topics in the agent: `[sell.mqtt]` publishes the routes of `[sell.evm]` as
//! topics (one sealed reading per topic every `publish_every_secs`) and takes payments for their
//! keys through the EVM seller (and, with `lightning_msat`, over the agent's Lightning node with
//! hold invoices); each `[[buy]]` whose url is `mqtt:<topic>` buys the newest reading of its
//! topic every `every_secs` with the agent's EVM buyer (its budget, its channels), or with
//! `pay = "l402"` from its Lightning node (inside the `lightning` budget).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AgentError;
use super::config::{AgentConfig, BuyConfig};
use super::legs::{EvmLeg, Shared};
use crate::buyer::Buyer;
use crate::events::{AgentEvent, EventBus, Leg, Payment};
use crate::mqtt::buyer::{MqttBuyError, MqttBuyer, MqttBuyerOptions, PaidReading};
use crate::mqtt::config::{BrokerConfig, TOPIC_URL_PREFIX};
use crate::mqtt::seller::{MqttSeller, MqttSellerHandle, MqttSellerOptions};
use crate::mqtt::{MqttEndpoint, pack};

/// How long one purchase may take (a seller that does not answer must not hold the entry).
const BUY_TIMEOUT: Duration = Duration::from_secs(60);

fn endpoint(broker: &BrokerConfig) -> Result<MqttEndpoint, AgentError> {
    broker
        .endpoint()
        .map_err(|e| AgentError::leg("the MQTT broker settings")(Box::new(e)))
}

/// The priced topics of `[sell.mqtt]`, on the EVM leg's seller.
pub(super) async fn start_seller(
    config: &AgentConfig,
    shared: &Shared<'_>,
    evm: Option<&EvmLeg>,
    #[cfg(feature = "lightning")] ln: Option<&Arc<crate::ln::LnNode>>,
) -> Result<Option<MqttSellerHandle>, AgentError> {
    // (Validation makes [sell.evm] and [mqtt] part of any [sell.mqtt].)
    let (Some(sell), Some(evm), Some(broker)) = (&config.sell.mqtt, evm, &config.mqtt) else {
        return Ok(None);
    };
    let options = MqttSellerOptions {
        mask: sell.mask(),
        keys_on_sale: sell.keys_on_sale,
        publish_every: Some(Duration::from_secs(sell.publish_every_secs)),
        ticks_per_voucher: sell.ticks_per_voucher,
        #[cfg(feature = "lightning")]
        lightning: match (sell.lightning_msat, ln) {
            (Some(price_msat), Some(ln)) => Some(
                crate::mqtt::seller::LightningSales::new(
                    ln.clone(),
                    shared.keystore.keys(),
                    price_msat,
                )
                .map_err(|e| AgentError::leg("the MQTT seller's Lightning sales")(Box::new(e)))?,
            ),
            _ => None,
        },
        ..MqttSellerOptions::default()
    };
    #[cfg(not(feature = "lightning"))]
    if sell.lightning_msat.is_some() {
        return Err(AgentError::NoLightning("sell.mqtt.lightning_msat"));
    }
    let handle = MqttSeller::start(
        evm.seller.clone(),
        shared.keystore.clone(),
        &endpoint(broker)?,
        options,
    )
    .await
    .map_err(|e| AgentError::leg("the MQTT seller")(Box::new(e)))?;
    Ok(Some(handle))
}

/// The entries that buy on priced topics.
pub(super) fn topic_buys(config: &AgentConfig) -> impl Iterator<Item = (&BuyConfig, &str)> {
    config
        .buys
        .iter()
        .filter_map(|buy| Some((buy, buy.url.strip_prefix(TOPIC_URL_PREFIX)?)))
}

/// One MQTT buyer (persistent session) for every `mqtt:` entry, and a task per entry.
pub(super) async fn start_buys(
    config: &AgentConfig,
    shared: &Shared<'_>,
    buyer: Arc<Buyer>,
    #[cfg(feature = "lightning")] ln: Option<Arc<crate::ln::LnNode>>,
) -> Result<Option<(Arc<MqttBuyer>, Vec<JoinHandle<()>>)>, AgentError> {
    let Some(broker) = &config.mqtt else {
        return Ok(None); // (validation: an mqtt: entry needs [mqtt])
    };
    if topic_buys(config).next().is_none() {
        return Ok(None);
    }
    let options = MqttBuyerOptions {
        clean_start: false,
        ..MqttBuyerOptions::default()
    };
    let mqtt = MqttBuyer::connect(buyer, shared.keystore.clone(), &endpoint(broker)?, options)
        .await
        .map_err(|e| AgentError::leg("the MQTT buyer")(Box::new(e)))?;
    let mqtt = Arc::new(mqtt);
    let mut tasks = Vec::new();
    for (buy, topic) in topic_buys(config) {
        let readings = mqtt
            .subscribe(topic)
            .await
            .map_err(|e| AgentError::leg("the MQTT buyer")(Box::new(e)))?;
        let purchase = Purchase {
            buy: buy.clone(),
            topic: topic.to_owned(),
            mqtt: mqtt.clone(),
            #[cfg(feature = "lightning")]
            budgets: shared.budgets.clone(),
            #[cfg(feature = "lightning")]
            ln: ln.clone(),
        };
        tasks.push(tokio::spawn(run(purchase, readings, shared.events.clone())));
    }
    Ok(Some((mqtt, tasks)))
}

/// One `mqtt:` entry and what it pays with.
struct Purchase {
    buy: BuyConfig,
    topic: String,
    mqtt: Arc<MqttBuyer>,
    #[cfg(feature = "lightning")]
    budgets: Arc<crate::budget::Budgets>,
    #[cfg(feature = "lightning")]
    ln: Option<Arc<crate::ln::LnNode>>,
}

impl Purchase {
    /// Buys `signed`: a voucher or tick on the EVM leg, or a hold invoice over Lightning.
    async fn buy(&self, signed: &[u8]) -> Result<(Leg, &'static str, PaidReading), MqttBuyError> {
        let buy = &self.buy;
        #[cfg(feature = "lightning")]
        if buy.pay == super::config::BuyLeg::L402 {
            let ln = self.ln.as_ref().ok_or(MqttBuyError::NoLightning)?;
            let max_msat = u64::try_from(buy.max_price)
                .unwrap_or(u64::MAX)
                .saturating_mul(1000);
            let paid = self
                .mqtt
                .buy_by_lightning(ln, &self.topic, signed, max_msat, Some(&self.budgets))
                .await?;
            return Ok((Leg::Lightning, crate::mqtt::wire::LN_SCHEME, paid));
        }
        let paid = self
            .mqtt
            .buy_with(&self.topic, signed, Some(buy.max_price), buy.ticks)
            .await?;
        Ok((Leg::Evm, crate::x402::batch::SCHEME, paid))
    }
}

/// One entry: every `every_secs`, the newest reading received, if it was not bought already.
async fn run(
    purchase: Purchase,
    mut readings: mpsc::UnboundedReceiver<Vec<u8>>,
    events: Arc<EventBus>,
) {
    let buy = &purchase.buy;
    let mut ticker = tokio::time::interval(Duration::from_secs(buy.every_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bought_key: Option<Vec<u8>> = None;
    let mut newest: Option<Vec<u8>> = None;
    loop {
        ticker.tick().await;
        while let Ok(reading) = readings.try_recv() {
            newest = Some(reading);
        }
        let Some(signed) = &newest else {
            continue;
        };
        // The key id (unchecked here; `buy` checks the signature) tells a new reading from
        // the one already bought.
        let key_id = pack::key_id_of(signed);
        if key_id.is_some() && key_id == bought_key {
            continue;
        }
        let outcome = tokio::time::timeout(BUY_TIMEOUT, purchase.buy(signed)).await;
        events.publish(match outcome {
            // A tick pays nothing yet: the stream's next voucher pays for it (and is the event).
            Ok(Ok((_, _, paid))) if paid.by_tick => {
                bought_key = Some(paid.key_id.clone());
                continue;
            }
            Ok(Ok((leg, scheme, paid))) => {
                bought_key = Some(paid.key_id.clone());
                AgentEvent::PaymentSent(Payment {
                    leg,
                    scheme: scheme.into(),
                    amount: paid.price,
                    resource: buy.url.clone(),
                })
            }
            Ok(Err(error)) => {
                let reason = crate::events::error_line(&error);
                tracing::warn!(url = %buy.url, %reason, "buy failed");
                AgentEvent::BuyFailed {
                    url: buy.url.clone(),
                    reason,
                }
            }
            Err(_) => AgentEvent::BuyFailed {
                url: buy.url.clone(),
                reason: format!("no key within {} s", BUY_TIMEOUT.as_secs()),
            },
        });
    }
}
