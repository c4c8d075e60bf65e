//! Paying with `exact`: one EIP-3009 `transferWithAuthorization` per reading, signed here and
//! submitted on chain by the seller (or its facilitator).

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolStruct;
use m2m_contracts::eip712::{self, TransferWithAuthorization};
use serde_json::json;

use super::batch::offer_token_names;
use super::carrier::{PaidAnswer, PaymentCarrier};
use super::{Buyer, BuyerError, Fetched, bump, refused};
use crate::x402::types::{PaymentRequired, PaymentRequirements};

impl Buyer {
    pub(super) async fn pay_exact(
        &self,
        carrier: &impl PaymentCarrier,
        required: &PaymentRequired,
        offer: &PaymentRequirements,
        price: u128,
    ) -> Result<Fetched, BuyerError> {
        let (name, version) = offer_token_names(offer)?;
        let chain_id = crate::evm::parse_eip155(&offer.network).unwrap_or_default();
        let parse = |text: &str, what: &str| {
            text.parse::<Address>()
                .map_err(|_| BuyerError::Protocol(format!("{what} {text}")))
        };
        let (token, pay_to) = (
            parse(&offer.asset, "asset")?,
            parse(&offer.pay_to, "payTo")?,
        );
        let mut nonce = [0u8; 32];
        getrandom::getrandom(&mut nonce).map_err(m2m_wallet::SignerError::Entropy)?;
        let valid_before = crate::now_secs() + offer.max_timeout_seconds.max(30);
        let authorization = TransferWithAuthorization {
            from: self.signer.evm_address(),
            to: pay_to,
            value: U256::from(price),
            validAfter: U256::ZERO,
            validBefore: U256::from(valid_before),
            nonce: B256::from(nonce),
        };
        let domain = eip712::token_domain(name, version, chain_id, token);
        let signature = self
            .signer
            .sign_evm_digest(&authorization.eip712_signing_hash(&domain))?;
        let payload = json!({
            "signature": Bytes::from(signature.as_bytes().to_vec()),
            "authorization": {
                "from": authorization.from,
                "to": authorization.to,
                "value": price.to_string(),
                "validAfter": "0",
                "validBefore": valid_before.to_string(),
                "nonce": authorization.nonce,
            },
        });
        let message = Self::paid_message(required, offer, payload);
        let (status, body, settled) = match carrier.carry(message).await? {
            PaidAnswer::PaymentRequired(refusal) => return Err(refused(refusal)),
            PaidAnswer::Served {
                status,
                body,
                settlement,
            } => (status, body, settlement),
        };
        match &settled {
            Some(s) if s.success && !s.transaction.is_empty() => {}
            _ => {
                return Err(BuyerError::SellerMisbehaved(
                    "served without a successful exact settlement".into(),
                ));
            }
        }
        bump(&self.stats.exact);
        Ok(Fetched {
            status,
            body,
            settlement: settled,
            paid: Some((offer.scheme.clone(), price)),
        })
    }
}
