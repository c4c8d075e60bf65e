//! Priced MQTT topics in the agent: `[sell.mqtt]` publishes the routes of `[sell.evm]` as
//! topics (one sealed reading per topic every `publish_every_secs`) and takes payments for their
//! keys through the EVM seller; each `[[buy]]` whose url is `mqtt:<topic>` buys the newest
//! reading of its topic every `every_secs` with the agent's EVM buyer (its budget, its channels).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AgentError;
use super::config::{AgentConfig, BuyConfig};
use super::legs::{EvmLeg, Shared};
use crate::buyer::Buyer;
use crate::events::{AgentEvent, EventBus, Leg, Payment};
use crate::mqtt::buyer::{MqttBuyer, MqttBuyerOptions};
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
        ..MqttSellerOptions::default()
    };
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
        tasks.push(tokio::spawn(run(
            buy.clone(),
            topic.to_owned(),
            mqtt.clone(),
            readings,
            shared.events.clone(),
        )));
    }
    Ok(Some((mqtt, tasks)))
}

/// One entry: every `every_secs`, the newest reading received, if it was not bought already.
async fn run(
    buy: BuyConfig,
    topic: String,
    mqtt: Arc<MqttBuyer>,
    mut readings: mpsc::UnboundedReceiver<Vec<u8>>,
    events: Arc<EventBus>,
) {
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
        let outcome = tokio::time::timeout(
            BUY_TIMEOUT,
            mqtt.buy_with(&topic, signed, Some(buy.max_price), buy.ticks),
        )
        .await;
        events.publish(match outcome {
            // A tick pays nothing yet: the stream's next voucher pays for it (and is the event).
            Ok(Ok(paid)) if paid.by_tick => {
                bought_key = Some(paid.key_id.clone());
                continue;
            }
            Ok(Ok(paid)) => {
                bought_key = Some(paid.key_id.clone());
                AgentEvent::PaymentSent(Payment {
                    leg: Leg::Evm,
                    scheme: crate::x402::batch::SCHEME.into(),
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
