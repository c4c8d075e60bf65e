//! The `exact` scheme, seller side: the seller is its own facilitator. It checks the EIP-3009
//! authorization, submits `transferWithAuthorization` itself and serves only once the transfer
//! is mined — the receipt on chain is the durable record.

use std::sync::atomic::Ordering;

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::sol_types::SolStruct;
use m2m_contracts::eip712::{self, TransferWithAuthorization};
use serde::Deserialize;
use serde_json::Value;

use super::batch::Refusal;
use super::{Seller, now_secs};
use crate::x402::codes;
use crate::x402::exact::ExactPayload;
use crate::x402::types::{PaymentRequirements, SettlementResponse};

/// An authorization that passed every off-chain and read-only check.
#[derive(Debug)]
pub(crate) struct VerifiedExact {
    pub(crate) token: Address,
    pub(crate) authorization: TransferWithAuthorization,
    pub(crate) signature: Signature,
}

/// Seconds of validity an authorization must still have, so it cannot expire in flight.
const MIN_REMAINING_VALIDITY_SECS: u64 = 6;

impl Seller {
    /// Checks an `exact` payload against `requirements`: recipient, value, validity window,
    /// signature, unused nonce and the payer's balance.
    pub(crate) async fn verify_exact(
        &self,
        requirements: &PaymentRequirements,
        payload: &Value,
    ) -> Result<VerifiedExact, Refusal> {
        if requirements.network != self.config.network {
            return Err(Refusal::new(
                codes::INVALID_NETWORK,
                "network is not this chain",
            ));
        }
        let payload = ExactPayload::deserialize(payload)
            .map_err(|e| Refusal::new(codes::INVALID_PAYLOAD, e.to_string()))?;
        let auth = payload.authorization.to_typed().ok_or_else(|| {
            Refusal::new(
                codes::INVALID_PAYLOAD,
                "authorization numbers must be decimal",
            )
        })?;
        let token: Address = requirements.asset.parse().map_err(|_| {
            Refusal::new(
                codes::INVALID_PAYMENT_REQUIREMENTS,
                "asset is not an address",
            )
        })?;
        let pay_to: Address = requirements.pay_to.parse().map_err(|_| {
            Refusal::new(
                codes::INVALID_PAYMENT_REQUIREMENTS,
                "payTo is not an address",
            )
        })?;
        if auth.to != pay_to {
            return Err(Refusal::new(
                codes::EXACT_RECIPIENT_MISMATCH,
                "authorization pays someone else",
            ));
        }
        if requirements.amount.parse::<U256>().ok() != Some(auth.value) {
            return Err(Refusal::new(codes::EXACT_VALUE, "value is not the price"));
        }
        let now = U256::from(now_secs());
        if auth.validBefore < now + U256::from(MIN_REMAINING_VALIDITY_SECS) {
            return Err(Refusal::new(
                codes::EXACT_VALID_BEFORE,
                "authorization expires too soon",
            ));
        }
        if auth.validAfter > now {
            return Err(Refusal::new(
                codes::EXACT_VALID_AFTER,
                "authorization is not valid yet",
            ));
        }
        let (name, version) = token_domain_names(requirements).ok_or_else(|| {
            Refusal::new(
                codes::INVALID_PAYMENT_REQUIREMENTS,
                "extra.name and extra.version are required",
            )
        })?;
        let domain = eip712::token_domain(name, version, self.chain.chain_id(), token);
        let digest = auth.eip712_signing_hash(&domain);
        let signature = Signature::try_from(payload.signature.as_ref())
            .map_err(|_| Refusal::new(codes::EXACT_SIGNATURE, "signature is not 65 bytes"))?;
        if signature.recover_address_from_prehash(&digest).ok() != Some(auth.from) {
            return Err(Refusal::new(
                codes::EXACT_SIGNATURE,
                "signature is not the payer's",
            ));
        }
        let used = self
            .chain
            .authorization_used(token, auth.from, auth.nonce)
            .await
            .map_err(|e| Refusal::new(codes::EXACT_TRANSACTION_FAILED, e.to_string()))?;
        if used || self.exact_nonce_taken(auth.from, auth.nonce) {
            return Err(Refusal::new(
                codes::EXACT_NONCE_USED,
                "authorization already used",
            ));
        }
        let balance = self
            .chain
            .token_balance(token, auth.from)
            .await
            .map_err(|e| Refusal::new(codes::EXACT_TRANSACTION_FAILED, e.to_string()))?;
        if balance < auth.value {
            return Err(Refusal::new(
                codes::EXACT_INSUFFICIENT_BALANCE,
                "payer balance is below the price",
            ));
        }
        Ok(VerifiedExact {
            token,
            authorization: auth,
            signature,
        })
    }

    /// Verifies, then submits the transfer and waits for it to be mined.
    pub(crate) async fn settle_exact(
        &self,
        requirements: &PaymentRequirements,
        payload: &Value,
    ) -> Result<SettlementResponse, Refusal> {
        let verified = self.verify_exact(requirements, payload).await?;
        let key = (verified.authorization.from, verified.authorization.nonce);
        if !self.lock_exact_nonces().insert(key) {
            return Err(Refusal::new(
                codes::EXACT_NONCE_USED,
                "authorization already being settled",
            ));
        }
        let outcome = self
            .chain
            .transfer_with_authorization(
                verified.token,
                &verified.authorization,
                &verified.signature,
            )
            .await;
        let tx = match outcome {
            Ok(tx) => tx,
            Err(error) => {
                self.lock_exact_nonces().remove(&key);
                return Err(Refusal::new(
                    codes::EXACT_TRANSACTION_FAILED,
                    error.to_string(),
                ));
            }
        };
        self.stats.exact_paid.fetch_add(1, Ordering::Relaxed);
        Ok(SettlementResponse {
            success: true,
            error_reason: None,
            payer: Some(verified.authorization.from.to_checksum(None)),
            transaction: format!("{tx:#x}"),
            network: self.config.network.clone(),
            amount: Some(verified.authorization.value.to_string()),
            extra: None,
            extensions: None,
        })
    }

    fn exact_nonce_taken(&self, from: Address, nonce: B256) -> bool {
        self.lock_exact_nonces().contains(&(from, nonce))
    }

    fn lock_exact_nonces(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<(Address, B256)>> {
        self.exact_nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The token's EIP-712 `name` and `version` from the requirements' `extra`.
fn token_domain_names(requirements: &PaymentRequirements) -> Option<(String, String)> {
    let extra = requirements.extra.as_ref()?;
    Some((
        extra.get("name")?.as_str()?.to_owned(),
        extra.get("version")?.as_str()?.to_owned(),
    ))
}
