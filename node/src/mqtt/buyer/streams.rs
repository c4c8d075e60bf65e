//! Tick streams on a priced topic (see [`super::wire`]): the buyer's side. Where the sheet
//! offers K ticks per voucher (and [`super::MqttBuyerOptions::ticks`] is on), the first voucher
//! opens a stream with a fresh hash chain; the next K readings are each paid with one tick (the
//! next preimage: one SHA-256 for the seller to check); the voucher after them pays for those K
//! readings and its own. The budget sees each voucher, which pays up to K + 1 readings at once.

use std::collections::HashMap;

use m2m_core::ticks::TickChain;

use super::{MqttBuyError, MqttBuyer, MqttCarrier};
use crate::buyer::BuyerError;
use crate::mqtt::wire;
use crate::x402::codes;
use crate::x402::headers::{self, PAYMENT_REQUIRED};
use crate::x402::types::{PaymentRequired, SettlementResponse};

/// Ticks in one chain (a new stream, and a voucher, once it is spent).
const CHAIN_LENGTH: u32 = 65_536;

/// A stream with one seller's topic.
pub(super) struct BuyerStream {
    chain: TickChain,
    /// Readings paid by ticks since the last voucher.
    uncovered: u32,
}

/// The open streams, by topic (one purchase at a time per buyer holds the lock).
pub(super) type Streams = tokio::sync::Mutex<HashMap<String, BuyerStream>>;

/// What one purchase in a stream paid.
pub(super) struct StreamPaid {
    /// The answer's payload (the wrapped key).
    pub(super) body: Vec<u8>,
    /// The voucher's settlement (none for a tick).
    pub(super) settlement: Option<SettlementResponse>,
    /// What the payment was worth: the voucher's amount, or one reading's price for a tick.
    pub(super) paid: u128,
    /// Paid with a tick.
    pub(super) by_tick: bool,
}

fn hex(bytes: &[u8]) -> String {
    alloy::primitives::hex::encode(bytes)
}

impl MqttBuyer {
    /// Pays for `key_id` on `topic` in a stream of `k` ticks per voucher at `price` a reading.
    pub(super) async fn pay_in_stream(
        &self,
        topic: &str,
        sheet: &PaymentRequired,
        key_id: &[u8],
        max_price: Option<u128>,
        (k, price): (u32, u128),
    ) -> Result<StreamPaid, MqttBuyError> {
        let mut streams = self.streams.lock().await;
        if let Some(stream) = streams.get_mut(topic)
            && stream.uncovered < k
            && let Some(tick) = stream.chain.next_tick()
        {
            let properties = vec![
                (wire::TICK_ANCHOR.to_owned(), hex(&stream.chain.anchor())),
                (wire::TICK.to_owned(), hex(&tick.preimage)),
            ];
            let answer = self
                .exchange(topic, key_id, properties)
                .await
                .map_err(MqttBuyError::Pay)?;
            match wire::user_property(&answer, PAYMENT_REQUIRED) {
                None => {
                    stream.uncovered += 1;
                    return Ok(StreamPaid {
                        body: answer.payload.to_vec(),
                        settlement: None,
                        paid: price,
                        by_tick: true,
                    });
                }
                Some(text) => {
                    let code = headers::decode::<PaymentRequired>(text)
                        .ok()
                        .and_then(|r| r.error)
                        .unwrap_or_default();
                    if code == codes::TICKS_VOUCHER_DUE {
                        // The seller counts K on credit: the voucher below covers them.
                        stream.uncovered = k;
                    } else if code == codes::TICK_INVALID {
                        // The seller forgot the stream (a restart): a voucher opens a new one.
                        streams.remove(topic);
                    } else {
                        return Err(MqttBuyError::Pay(BuyerError::Refused { code }));
                    }
                }
            }
        }
        // A voucher: it covers the open stream's ticks and pays for this reading, or opens a
        // stream.
        match streams.get_mut(topic) {
            Some(stream) => {
                let readings = stream.uncovered + 1;
                let extra = vec![(wire::TICK_ANCHOR.to_owned(), hex(&stream.chain.anchor()))];
                let paid = self
                    .voucher(topic, sheet, key_id, max_price, readings, extra)
                    .await?;
                stream.uncovered = 0;
                if stream.chain.remaining() < k {
                    // Nearly spent: the next voucher opens a stream with a new chain.
                    streams.remove(topic);
                }
                Ok(paid)
            }
            None => {
                self.open_stream(&mut streams, topic, sheet, key_id, max_price)
                    .await
            }
        }
    }

    /// A voucher for this reading that opens a new stream.
    async fn open_stream(
        &self,
        streams: &mut HashMap<String, BuyerStream>,
        topic: &str,
        sheet: &PaymentRequired,
        key_id: &[u8],
        max_price: Option<u128>,
    ) -> Result<StreamPaid, MqttBuyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| {
            MqttBuyError::Pay(BuyerError::Signer(m2m_wallet::SignerError::Entropy(e)))
        })?;
        let chain = TickChain::new(seed, CHAIN_LENGTH);
        seed.fill(0);
        let extra = vec![
            (wire::TICK_ANCHOR.to_owned(), hex(&chain.anchor())),
            (wire::TICK_LENGTH.to_owned(), CHAIN_LENGTH.to_string()),
        ];
        let paid = self
            .voucher(topic, sheet, key_id, max_price, 1, extra)
            .await?;
        streams.insert(
            topic.to_owned(),
            BuyerStream {
                chain,
                uncovered: 0,
            },
        );
        Ok(paid)
    }

    /// A voucher for `readings` readings, with the stream's `extra` properties.
    async fn voucher(
        &self,
        topic: &str,
        sheet: &PaymentRequired,
        key_id: &[u8],
        max_price: Option<u128>,
        readings: u32,
        extra: Vec<(String, String)>,
    ) -> Result<StreamPaid, MqttBuyError> {
        let carrier = MqttCarrier {
            mqtt: self,
            topic,
            key_id,
            extra,
        };
        let fetched = self
            .buyer
            .pay_over_for(&carrier, sheet, max_price, readings)
            .await
            .map_err(MqttBuyError::Pay)?;
        Ok(StreamPaid {
            body: fetched.body,
            settlement: fetched.settlement,
            paid: fetched.paid.map_or(0, |(_, paid)| paid),
            by_tick: false,
        })
    }
}
