//! Tick streams on a priced topic (see [`super::wire`]): the seller's side. A stream is the
//! core's `TickStream` on the payer's channel, opened by a voucher payment that names an
//! anchor; each tick (one SHA-256 to check) buys one reading's key, at most K of them on credit;
//! the next voucher naming the anchor must add what the ticks bought plus its own reading, and
//! covers them. Streams live in memory: after a restart a buyer opens a new one with its next
//! voucher, and at most K readings (already served) are lost, by design, as in the gateway.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy::primitives::Address;
use m2m_core::ChannelId;
use m2m_core::key_wrap::{self, WrapParties};
use m2m_core::ticks::{TickCommitment, TickError, TickStream};
use rumqttc::v5::mqttbytes::v5::Publish;
use secp256k1::PublicKey;

use super::{MqttSeller, lock, random};
use crate::mqtt::wire;
use crate::seller::Route;
use crate::seller::batch::Refusal;
use crate::x402::codes;

/// Longest chain a stream may commit to.
const MAX_CHAIN: u32 = 1 << 24;

/// One stream: its ticks, whose it is, and the answer to its last tick (for redelivery).
pub(super) struct Stream {
    ticks: TickStream,
    payer: (Address, PublicKey),
    last_tick: Option<([u8; 32], Vec<u8>, Vec<u8>)>,
}

impl Stream {
    /// Whose stream it is (the voucher signer that opened it).
    pub(super) fn payer(&self) -> Address {
        self.payer.0
    }
}

/// The tick streams of a seller, by anchor.
pub(super) type Streams =
    std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<tokio::sync::Mutex<Stream>>>>;

/// What a voucher payment says of a stream.
pub(super) struct StreamRequest {
    pub(super) anchor: [u8; 32],
    /// Set on the payment that opens the stream.
    pub(super) length: Option<u32>,
}

/// The stream part of a payment message, if any (a malformed one is refused).
pub(super) fn stream_request(
    properties: &[(String, String)],
) -> Result<Option<StreamRequest>, Refusal> {
    let Some(anchor) = wire::property(properties, wire::TICK_ANCHOR) else {
        return Ok(None);
    };
    let bad = |why: &str| Refusal::new(codes::INVALID_PAYLOAD, why);
    let anchor =
        wire::hex32(anchor).ok_or_else(|| bad("m2m-tick-anchor is not 32 bytes of hex"))?;
    let length = match wire::property(properties, wire::TICK_LENGTH) {
        None => None,
        Some(text) => Some(
            text.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_CHAIN).contains(n))
                .ok_or_else(|| bad("m2m-tick-length must be 1 to 2^24"))?,
        ),
    };
    Ok(Some(StreamRequest { anchor, length }))
}

fn tick_refusal(error: TickError) -> Refusal {
    let code = match error {
        TickError::VoucherDue => codes::TICKS_VOUCHER_DUE,
        _ => codes::TICK_INVALID,
    };
    Refusal::new(code, error.to_string())
}

impl MqttSeller {
    /// The stream a voucher payment names, locked for the payment's duration, and the readings
    /// the voucher must pay for (its own and those its stream's ticks bought).
    pub(super) async fn stream_for_voucher(
        &self,
        request: Option<&StreamRequest>,
    ) -> (Option<tokio::sync::OwnedMutexGuard<Stream>>, u32) {
        let Some(request) = request else {
            return (None, 1);
        };
        let stream = lock(&self.streams).get(&request.anchor).cloned();
        match stream {
            Some(stream) => {
                let stream = stream.lock_owned().await;
                let readings = stream.ticks.uncovered() + 1;
                (Some(stream), readings)
            }
            None => (None, 1),
        }
    }

    /// After a voucher naming a stream was taken: its ticks are covered, or it is opened.
    pub(super) fn after_voucher(
        &self,
        request: Option<&StreamRequest>,
        stream: Option<tokio::sync::OwnedMutexGuard<Stream>>,
        route: &Route,
        channel: &str,
        payer: (Address, PublicKey),
    ) {
        let (Some(request), Some(k)) = (request, self.options.ticks_per_voucher) else {
            return;
        };
        if let Some(mut stream) = stream {
            stream.ticks.on_covered();
            return;
        }
        let (Some(length), Some(id)) = (
            request.length,
            wire::hex32(channel.trim_start_matches("0x")),
        ) else {
            return;
        };
        let asset = m2m_core::Asset::Erc20 {
            chain_id: self.seller.config().chain_id(),
            token: route.config.asset.0.0,
        };
        let commitment = TickCommitment {
            channel_id: ChannelId(id),
            anchor: request.anchor,
            tick_price: m2m_core::Amount::new(asset, route.price),
            length,
        };
        let stream = Stream {
            ticks: TickStream::new(commitment, k, u64::MAX),
            payer,
            last_tick: None,
        };
        lock(&self.streams).insert(request.anchor, Arc::new(tokio::sync::Mutex::new(stream)));
    }

    /// One tick for the key `key_id` (on sale on `topic`): the answer's property and the key
    /// wrapped for the stream's payer.
    pub(super) async fn take_tick(
        &self,
        request: &Publish,
        properties: &[(String, String)],
        reading_key: [u8; 32],
    ) -> Result<((&'static str, String), Vec<u8>), Refusal> {
        let key_id = request.payload.to_vec();
        let unknown = || Refusal::new(codes::TICK_INVALID, "no such tick stream here");
        let anchor = wire::property(properties, wire::TICK_ANCHOR)
            .and_then(wire::hex32)
            .ok_or_else(unknown)?;
        let preimage = wire::property(properties, wire::TICK)
            .and_then(wire::hex32)
            .ok_or_else(|| Refusal::new(codes::TICK_INVALID, "m2m-tick is not 32 bytes of hex"))?;
        let stream = lock(&self.streams)
            .get(&anchor)
            .cloned()
            .ok_or_else(unknown)?;
        let mut stream = stream.lock().await;
        let uncovered =
            |stream: &Stream| (wire::TICKS_UNCOVERED, stream.ticks.uncovered().to_string());
        if let Some((last, id, wrapped)) = &stream.last_tick
            && *last == preimage
            && *id == key_id
        {
            self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            return Ok((uncovered(&stream), wrapped.clone()));
        }
        let (payer, buyer_key) = stream.payer;
        let shared = self.signer.evm_key_agreement(&buyer_key);
        let parties = WrapParties {
            seller: self.signer.evm_address().0.0,
            buyer: payer.0.0,
        };
        let nonce = random().map_err(|_| Refusal::new(codes::UNEXPECTED, "no randomness"))?;
        let wrapped = key_wrap::wrap(&shared, &parties, &key_id, &reading_key, nonce)
            .map_err(|e| Refusal::new(codes::UNEXPECTED, e.to_string()))?;
        stream
            .ticks
            .on_ticks(&preimage, 1, crate::now_secs())
            .map_err(tick_refusal)?;
        stream.last_tick = Some((preimage, key_id, wrapped.clone()));
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        Ok((uncovered(&stream), wrapped))
    }
}
