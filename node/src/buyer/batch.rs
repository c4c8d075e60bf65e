//! Paying with a `batch-settlement` channel: deposit when low, one voucher per reading,
//! persisted before it leaves; the seller's response checked before the next voucher.

use std::sync::Arc;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolStruct;
use m2m_contracts::bindings::ChannelConfig;
use m2m_contracts::eip712;
use m2m_core::payer::PayerChannel;
use m2m_core::{Amount, ChannelId, ChannelTerms, EvmAddress, Signature65, Voucher};
use serde_json::{Value, json};

use super::carrier::{PaidAnswer, PaymentCarrier};
use super::{Buyer, BuyerError, Fetched, asset_of, bump, refused};
use crate::channel_crypto::WalletVoucherSigner;
use crate::store::RecordWrite;
use crate::x402::codes;
use crate::x402::types::{PaymentRequired, PaymentRequirements};

/// A channel with one seller, as derived from its offer.
#[derive(Debug)]
pub(super) struct ChannelContext {
    terms: ChannelTerms,
    config_json: Value,
}

/// At most this many corrective-402 resynchronisations per reading.
const MAX_RESYNCS: usize = 1;

impl Buyer {
    pub(super) async fn pay_batch(
        &self,
        carrier: &impl PaymentCarrier,
        required: &PaymentRequired,
        offer: &PaymentRequirements,
        price: u128,
    ) -> Result<Fetched, BuyerError> {
        let context = self.channel_context(offer)?;
        let terms = context.terms;
        let entry = self.payer_channel(terms)?;
        // Held across the exchange: one reading at a time per channel, and the response is
        // checked before the next voucher is signed.
        let mut channel = entry.lock().await;
        let opening = channel.record().deposit_units == 0;
        let price_amount = terms.amount(price);
        for attempt in 0..=MAX_RESYNCS {
            let (payload, deposit) = self
                .batch_payload(&mut channel, &context, offer, price_amount)
                .await?;
            let message = Self::paid_message(required, offer, payload);
            let (status, body, settled) = match carrier.carry(message).await? {
                PaidAnswer::PaymentRequired(corrective) => {
                    if attempt < MAX_RESYNCS && self.resync(&mut channel, &corrective).await? {
                        continue;
                    }
                    return Err(refused(corrective));
                }
                PaidAnswer::Served {
                    status,
                    body,
                    settlement,
                } => (
                    status,
                    body,
                    settlement.ok_or_else(|| {
                        BuyerError::SellerMisbehaved("served without PAYMENT-RESPONSE".into())
                    })?,
                ),
            };
            let (charge, balance) = check_settlement(&channel, &settled, price)?;
            let record = channel.on_charged(terms.amount(charge), price_amount)?;
            let record = if balance >= record.charged_units && balance != record.deposit_units {
                channel.set_deposit(terms.amount(balance))?
            } else {
                record
            };
            // Not awaited: the charged total is a convenience (a lost one is restored by the
            // seller's corrective 402, proven by our own signature); the exposure that matters was
            // durable before the voucher left. The next write of this channel supersedes it.
            drop(
                self.store
                    .submit(RecordWrite::Payer(terms.channel_id, record)),
            );
            bump(&self.stats.vouchers);
            if deposit {
                bump(&self.stats.deposits);
                if opening {
                    self.events
                        .publish(|| crate::events::AgentEvent::ChannelOpened {
                            leg: crate::events::Leg::Evm,
                            id: format!("{}", alloy::primitives::B256::from(terms.channel_id.0)),
                        });
                }
            }
            return Ok(Fetched {
                status,
                body,
                settlement: Some(settled),
                paid: Some((offer.scheme.clone(), charge)),
            });
        }
        Err(BuyerError::Refused {
            code: codes::BATCH_CUMULATIVE_MISMATCH.into(),
        })
    }

    /// The channel we use with the seller of `offer` (computed once per offer: the channel id is
    /// three keccaks, the JSON a few allocations).
    fn channel_context(
        &self,
        offer: &PaymentRequirements,
    ) -> Result<Arc<ChannelContext>, BuyerError> {
        let extra = offer.extra.as_ref();
        let key = format!(
            "{}|{}|{}|{:?}|{:?}",
            offer.network,
            offer.pay_to,
            offer.asset,
            extra.and_then(|e| e.get("receiverAuthorizer")),
            extra.and_then(|e| e.get("withdrawDelay")),
        );
        let lock = || {
            self.contexts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(context) = lock().get(&key) {
            return Ok(context.clone());
        }
        let (config, terms) = self.channel_terms(offer)?;
        // The config is kept beside the payer record (as the seller keeps its own), so the
        // channel can be listed and withdrawn from without the seller's offer. Once per seller
        // and process, before the first voucher's record.
        self.store.save_terms(
            &terms.channel_id,
            &alloy::sol_types::SolValue::abi_encode(&config),
        )?;
        let context = Arc::new(ChannelContext {
            config_json: config_json(&config),
            terms,
        });
        Ok(lock().entry(key).or_insert(context).clone())
    }

    /// The channel config we use with this seller, and the core's terms for it.
    fn channel_terms(
        &self,
        offer: &PaymentRequirements,
    ) -> Result<(ChannelConfig, ChannelTerms), BuyerError> {
        let extra = offer.extra.as_ref();
        let receiver_authorizer: Address = extra
            .and_then(|e| e.get("receiverAuthorizer")?.as_str()?.parse().ok())
            .filter(|a: &Address| !a.is_zero())
            .ok_or_else(|| BuyerError::Protocol("extra.receiverAuthorizer missing".into()))?;
        let withdraw_delay = extra
            .and_then(|e| e.get("withdrawDelay")?.as_u64())
            .unwrap_or(m2m_contracts::MIN_WITHDRAW_DELAY_SECS);
        let me = self.signer.evm_address();
        let asset = asset_of(offer)?;
        let m2m_core::Asset::Erc20 { chain_id, token } = asset else {
            return Err(BuyerError::Protocol("not an EVM asset".into()));
        };
        let config = ChannelConfig {
            payer: me,
            payerAuthorizer: me,
            receiver: offer
                .pay_to
                .parse()
                .map_err(|_| BuyerError::Protocol(format!("payTo {}", offer.pay_to)))?,
            receiverAuthorizer: receiver_authorizer,
            token: Address::from(token),
            withdrawDelay: alloy::primitives::aliases::U40::saturating_from(withdraw_delay),
            salt: self.options.salt,
        };
        let domain = eip712::settlement_domain(chain_id, self.options.settlement);
        let id = eip712::channel_id(&domain, &config);
        let terms = ChannelTerms {
            channel_id: ChannelId(id.0),
            asset,
            domain_separator: domain.separator().0,
            payer_authorizer: EvmAddress(me.0.0),
        };
        Ok((config, terms))
    }

    /// The channel's state: in memory, else from the store, else new (empty).
    fn payer_channel(
        &self,
        terms: ChannelTerms,
    ) -> Result<Arc<tokio::sync::Mutex<PayerChannel>>, BuyerError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = channels.get(&terms.channel_id) {
            return Ok(entry.clone());
        }
        let channel = match self.store.load_payer(&terms.channel_id)? {
            Some(record) => PayerChannel::restore(terms, record)?,
            None => PayerChannel::open(terms, terms.amount(0))?,
        };
        let entry = Arc::new(tokio::sync::Mutex::new(channel));
        channels.insert(terms.channel_id, entry.clone());
        Ok(entry)
    }

    /// Signs the voucher for this reading (with a deposit when the channel cannot cover it) and
    /// persists the new exposure before returning the payload.
    async fn batch_payload(
        &self,
        channel: &mut PayerChannel,
        context: &ChannelContext,
        offer: &PaymentRequirements,
        price: Amount,
    ) -> Result<(Value, bool), BuyerError> {
        let signer = WalletVoucherSigner(&*self.signer);
        let config_json = &context.config_json;
        if channel.remaining().base_units() >= price.base_units() {
            let prepared = channel.prepare_payment(price, &signer)?;
            self.persist(channel, prepared.record).await?;
            let voucher = channel.commit(prepared);
            return Ok((
                json!({ "type": "voucher", "channelConfig": config_json, "voucher": voucher_json(&voucher) }),
                false,
            ));
        }
        let amount = self.deposit_amount(channel, offer, price.base_units());
        // Sign against the deposit-to-be; record only the exposure (the deposit is adopted
        // once the seller reports it on chain).
        let mut trial = channel.clone();
        trial.set_deposit(
            channel
                .terms()
                .amount(channel.record().deposit_units.saturating_add(amount)),
        )?;
        let prepared = trial.prepare_payment(price, &signer)?;
        let mut record = prepared.record;
        record.deposit_units = channel.record().deposit_units;
        self.persist(channel, record).await?;
        let voucher = channel.commit(prepared);
        let authorization = self.deposit_authorization(channel, offer, amount)?;
        Ok((
            json!({
                "type": "deposit",
                "channelConfig": config_json,
                "voucher": voucher_json(&voucher),
                "deposit": { "amount": amount.to_string(), "authorization": { "erc3009Authorization": authorization } },
            }),
            true,
        ))
    }

    async fn persist(
        &self,
        channel: &PayerChannel,
        record: m2m_core::payer::PayerRecord,
    ) -> Result<(), BuyerError> {
        self.store
            .submit(RecordWrite::Payer(channel.terms().channel_id, record))
            .durable()
            .await?;
        Ok(())
    }

    /// How much to deposit: enough for `deposit_readings` (or the seller's hint), capped.
    fn deposit_amount(
        &self,
        channel: &PayerChannel,
        offer: &PaymentRequirements,
        price: u128,
    ) -> u128 {
        let hint = offer
            .extra
            .as_ref()
            .and_then(|e| e.get("minDeposit")?.as_str()?.parse::<u128>().ok())
            .unwrap_or(0);
        let wanted = price
            .saturating_mul(u128::from(self.options.deposit_readings))
            .max(hint);
        let record = channel.record();
        let shortfall = record
            .charged_units
            .saturating_add(price)
            .saturating_sub(record.deposit_units);
        let capped = self
            .options
            .max_deposit
            .map_or(wanted, |cap| wanted.min(cap));
        capped.max(shortfall)
    }

    /// An EIP-3009 `receiveWithAuthorization` moving `amount` into the channel via the collector.
    fn deposit_authorization(
        &self,
        channel: &PayerChannel,
        offer: &PaymentRequirements,
        amount: u128,
    ) -> Result<Value, BuyerError> {
        let (name, version) = offer_token_names(offer)?;
        let chain_id = crate::evm::parse_eip155(&offer.network).unwrap_or_default();
        let token: Address = offer
            .asset
            .parse()
            .map_err(|_| BuyerError::Protocol("asset".into()))?;
        let mut salt = [0u8; 32];
        getrandom::getrandom(&mut salt).map_err(m2m_wallet::SignerError::Entropy)?;
        let salt = U256::from_be_bytes(salt);
        let valid_before = U256::from(crate::now_secs() + offer.max_timeout_seconds.max(60));
        let authorization = eip712::ReceiveWithAuthorization {
            from: self.signer.evm_address(),
            to: self.options.erc3009_collector,
            value: U256::from(amount),
            validAfter: U256::ZERO,
            validBefore: valid_before,
            nonce: eip712::deposit_nonce(B256::from(channel.terms().channel_id.0), salt),
        };
        let domain = eip712::token_domain(name, version, chain_id, token);
        let signature = self
            .signer
            .sign_evm_digest(&authorization.eip712_signing_hash(&domain))?;
        Ok(json!({
            "validAfter": "0",
            "validBefore": valid_before.to_string(),
            "salt": format!("{salt:#x}"),
            "signature": Bytes::from(signature.as_bytes().to_vec()),
        }))
    }

    /// Adopts a corrective 402's state if it is proven by our own voucher; `false` if the 402 is
    /// not corrective.
    async fn resync(
        &self,
        channel: &mut PayerChannel,
        corrective: &PaymentRequired,
    ) -> Result<bool, BuyerError> {
        let code = corrective.error.as_deref().unwrap_or_default();
        let Some(extra) = corrective
            .accepts
            .iter()
            .find(|o| o.scheme == crate::x402::batch::SCHEME)
            .and_then(|o| o.extra.as_ref())
        else {
            return Ok(false);
        };
        let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u128>().ok());
        if code == codes::BATCH_CUMULATIVE_EXCEEDS_BALANCE {
            // Our balance is stale; believing a lower one only makes us deposit (into our own
            // channel) on the retry, so it needs no proof.
            let terms = *channel.terms();
            return match number(&extra["channelState"]["balance"]) {
                Some(balance) if balance < channel.record().deposit_units => {
                    let record = channel.set_deposit(terms.amount(balance))?;
                    self.persist(channel, record).await?;
                    Ok(true)
                }
                _ => Ok(false),
            };
        }
        if code != codes::BATCH_CUMULATIVE_MISMATCH && code != codes::BATCH_CUMULATIVE_BELOW_CLAIMED
        {
            return Ok(false);
        }
        let charged = number(&extra["channelState"]["chargedCumulativeAmount"]);
        let signed = number(&extra["voucherState"]["signedMaxClaimable"]);
        let signature = extra["voucherState"]["signature"]
            .as_str()
            .and_then(|s| alloy::primitives::hex::decode(s).ok())
            .and_then(|b| <[u8; 65]>::try_from(b).ok());
        let (Some(charged), Some(signed), Some(signature)) = (charged, signed, signature) else {
            return Ok(false);
        };
        let voucher = Voucher {
            channel_id: channel.terms().channel_id,
            max_claimable_units: signed,
            signature: Signature65(signature),
        };
        let terms = *channel.terms();
        let record = channel
            .resync(terms.amount(charged), &voucher, &self.verifier)
            .map_err(|e| BuyerError::SellerMisbehaved(format!("corrective 402 not proven: {e}")))?;
        self.store
            .submit(RecordWrite::Payer(terms.channel_id, record))
            .durable()
            .await?;
        bump(&self.stats.resyncs);
        Ok(true)
    }
}

/// Checks the seller's `PAYMENT-RESPONSE` against what we signed; returns (charge, balance).
fn check_settlement(
    channel: &PayerChannel,
    settled: &crate::x402::types::SettlementResponse,
    price: u128,
) -> Result<(u128, u128), BuyerError> {
    let misbehaved = |what: &str| BuyerError::SellerMisbehaved(what.to_owned());
    if !settled.success {
        return Err(misbehaved("served with an unsuccessful settlement"));
    }
    let extra = settled
        .extra
        .as_ref()
        .ok_or_else(|| misbehaved("no extra in PAYMENT-RESPONSE"))?;
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u128>().ok());
    let charge = number(&extra["chargedAmount"]).ok_or_else(|| misbehaved("no chargedAmount"))?;
    if charge > price {
        return Err(misbehaved("charged more than the price"));
    }
    let state = &extra["channelState"];
    let expected = channel.record().charged_units + charge;
    if number(&state["chargedCumulativeAmount"]) != Some(expected) {
        return Err(misbehaved("chargedCumulativeAmount does not add up"));
    }
    let id = format!("{:#x}", B256::from(channel.terms().channel_id.0));
    if state["channelId"].as_str().map(str::to_ascii_lowercase) != Some(id) {
        return Err(misbehaved("response names another channel"));
    }
    Ok((charge, number(&state["balance"]).unwrap_or(0)))
}

pub(super) fn offer_token_names(
    offer: &PaymentRequirements,
) -> Result<(String, String), BuyerError> {
    let extra = offer.extra.as_ref();
    let field = |key: &str| extra.and_then(|e| e.get(key)?.as_str().map(str::to_owned));
    match (field("name"), field("version")) {
        (Some(name), Some(version)) => Ok((name, version)),
        _ => Err(BuyerError::Protocol(
            "extra.name and extra.version are required".into(),
        )),
    }
}

fn config_json(config: &ChannelConfig) -> Value {
    json!({
        "payer": config.payer,
        "payerAuthorizer": config.payerAuthorizer,
        "receiver": config.receiver,
        "receiverAuthorizer": config.receiverAuthorizer,
        "token": config.token,
        "withdrawDelay": config.withdrawDelay.to::<u64>(),
        "salt": config.salt,
    })
}

fn voucher_json(voucher: &Voucher) -> Value {
    json!({
        "channelId": B256::from(voucher.channel_id.0),
        "maxClaimableAmount": voucher.max_claimable_units.to_string(),
        "signature": Bytes::copy_from_slice(&voucher.signature.0),
    })
}
