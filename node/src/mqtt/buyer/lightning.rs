//! Buying a reading's key over Lightning (the sheet's [`wire::LN_SCHEME`] offer; the scheme is
//! in [`m2m_core::hold`]): ask the seller for a hold invoice, check it against the sheet, pay it
//! from the device's node inside its Lightning budget, and open the wrapped key that came with
//! the invoice using the payment's preimage. Nothing is paid for an invoice that asks more than
//! the sheet, names another node, or has expired.

use std::str::FromStr;

use bitcoin::secp256k1::PublicKey;
use ldk_node::lightning_invoice::Bolt11Invoice;
use m2m_core::hold;

use super::{MqttBuyError, MqttBuyer, PaidReading, bad_sheet};
use crate::budget::Budgets;
use crate::buyer::PaidAnswer;
use crate::events::Leg;
use crate::ln::LnNode;
use crate::mqtt::wire;

/// Why an invoice was not paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceRefusal {
    /// The answer carries no invoice, or one that does not parse.
    #[error("no BOLT11 invoice in the answer")]
    Missing,
    /// It asks another amount than the sheet.
    #[error("the invoice asks {invoice} msat, the sheet {sheet}")]
    Amount {
        /// Asked by the invoice.
        invoice: u64,
        /// Offered by the sheet.
        sheet: u64,
    },
    /// Over the buyer's cap.
    #[error("the invoice asks {0} msat, above this purchase's cap")]
    TooExpensive(u64),
    /// It pays another node than the sheet names.
    #[error("the invoice pays another node than the sheet")]
    Payee,
    /// It has expired.
    #[error("the invoice has expired")]
    Expired,
}

impl MqttBuyer {
    /// Buys the reading `signed` (as received on `topic`) over Lightning from `ln`: at most
    /// `max_msat`, inside `budget`'s Lightning leg if given. The reading's price is then
    /// [`PaidReading::price`] in msat.
    pub async fn buy_by_lightning(
        &self,
        ln: &LnNode,
        topic: &str,
        signed: &[u8],
        max_msat: u64,
        budget: Option<&Budgets>,
    ) -> Result<PaidReading, MqttBuyError> {
        let (sheet, seller, checked) = self.checked_reading(topic, signed).await?;
        let offer = sheet
            .accepts
            .iter()
            .find(|offer| offer.scheme == wire::LN_SCHEME)
            .ok_or_else(|| bad_sheet(topic, "no Lightning offer"))?;
        let price_msat: u64 = offer
            .amount
            .parse()
            .map_err(|_| bad_sheet(topic, "Lightning amount"))?;
        let payee =
            PublicKey::from_str(&offer.pay_to).map_err(|_| bad_sheet(topic, "Lightning payTo"))?;
        if price_msat > max_msat {
            return Err(MqttBuyError::Invoice(InvoiceRefusal::TooExpensive(
                price_msat,
            )));
        }
        let key_id = &checked.sealed.key_id;
        let ask = vec![(wire::LN_HOLD.to_owned(), "1".to_owned())];
        let answer = self
            .exchange(topic, key_id, ask)
            .await
            .map_err(MqttBuyError::Pay)?;
        if let PaidAnswer::PaymentRequired(refusal) =
            super::inbox::read_answer(&answer).map_err(MqttBuyError::Pay)?
        {
            return Err(MqttBuyError::Refused(refusal.error.unwrap_or_default()));
        }
        let invoice = wire::user_property(&answer, wire::LN_INVOICE)
            .and_then(|text| Bolt11Invoice::from_str(text).ok())
            .ok_or(MqttBuyError::Invoice(InvoiceRefusal::Missing))?;
        check_invoice(&invoice, price_msat, &payee).map_err(MqttBuyError::Invoice)?;
        if let Some(budget) = budget {
            budget
                .authorize(
                    Leg::Lightning,
                    m2m_core::Asset::Bitcoin,
                    &payee.to_string(),
                    u128::from(price_msat),
                )
                .await
                .map_err(MqttBuyError::Budget)?;
        }
        let paid = ln
            .pay_invoice(&invoice, self.options.lightning_timeout)
            .await
            .map_err(MqttBuyError::Lightning)?;
        // Paid: the preimage is the other half of the wrap's secret.
        let (shared, parties) = self.wrap_secret(&checked, seller);
        let secret = hold::bind(&shared, &paid.preimage);
        let (key_id, reading) = Self::open_wrapped(&checked, &secret, &parties, &answer.payload)
            .map_err(MqttBuyError::Key)?;
        Ok(PaidReading {
            reading,
            price: u128::from(price_msat),
            key_id,
            settlement: None,
            by_tick: false,
            by_lightning: true,
        })
    }
}

/// Whether `invoice` is what the sheet offered: `price_msat` to `payee`, still payable.
fn check_invoice(
    invoice: &Bolt11Invoice,
    price_msat: u64,
    payee: &PublicKey,
) -> Result<(), InvoiceRefusal> {
    let asked = invoice.amount_milli_satoshis().unwrap_or(u64::MAX);
    if asked != price_msat {
        return Err(InvoiceRefusal::Amount {
            invoice: asked,
            sheet: price_msat,
        });
    }
    if invoice.recover_payee_pub_key() != *payee {
        return Err(InvoiceRefusal::Payee);
    }
    if invoice.is_expired() {
        return Err(InvoiceRefusal::Expired);
    }
    Ok(())
}
