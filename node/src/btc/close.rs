//! The cooperative close (MuSig2 key path, 154 vB) between a payer and a payee.
//!
//! Payer: [`PayerChannels::close_cooperatively`] makes a fresh nonce, signs a close request
//! with its channel key, and hands both to `ask` (the transport: HTTP for a seller). It checks
//! the payee's answer — an amount no higher than it signed, a valid partial signature — adds its
//! own part, checks the aggregate against the output key and broadcasts. The channel is marked
//! closing before anything is sent, so no payment races the close.
//!
//! Payee: [`PayeeChannels::cosign_close`] checks the request is the payer's, persists "closing at
//! the newest voucher" (no voucher is accepted after that, since the payer could broadcast this
//! close instead of a later commitment), then signs as the last signer with a fresh nonce.

use std::future::Future;

use bitcoin::secp256k1::{Message, schnorr};
use bitcoin::{Amount, Txid};
use m2m_contracts::btc::musig::{PayeeCloseSignature, close_request_digest, new_nonce};
use m2m_core::ChannelId;
use m2m_wallet::SchnorrKey;
use musig2::{AggNonce, PubNonce};

use super::channels::{BtcChannelsError, PayeeChannels, PayerChannels, hex};

/// A payer's request to close cooperatively.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// The channel.
    pub channel_id: [u8; 32],
    /// The payer's public nonce.
    pub payer_nonce: PubNonce,
    /// The payer's BIP-340 signature over [`close_request_digest`].
    pub payer_signature: schnorr::Signature,
}

fn fresh_seed() -> Result<[u8; 32], BtcChannelsError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| BtcChannelsError::Signer(m2m_wallet::SignerError::Entropy(e)))?;
    Ok(seed)
}

impl PayerChannels {
    /// Closes a channel cooperatively; `ask` carries the request to the payee and returns its
    /// answer. Returns the close's txid.
    pub async fn close_cooperatively<F, Fut>(
        &self,
        id: &[u8; 32],
        ask: F,
    ) -> Result<Txid, BtcChannelsError>
    where
        F: FnOnce(CloseRequest) -> Fut,
        Fut: Future<Output = Result<PayeeCloseSignature, BtcChannelsError>>,
    {
        let (channel, signed) = {
            let channels = self.channels.lock().await;
            let payer = channels
                .get(id)
                .ok_or_else(|| BtcChannelsError::Unknown(hex(id)))?;
            (payer.channel().clone(), payer.signed())
        };
        // From here on no payment is made on this channel, whatever the payee answers.
        self.store.mark_btc_closing(&ChannelId(*id), signed)?;
        self.closing.lock().await.insert(*id);

        let parties = channel.terms().parties;
        let secnonce = new_nonce(fresh_seed()?, &parties.payer, None);
        let payer_nonce = secnonce.public_nonce();
        let payer_signature = self.signer.sign_schnorr(
            &close_request_digest(id, &payer_nonce),
            SchnorrKey::ScriptPath,
        )?;
        let answer = ask(CloseRequest {
            channel_id: *id,
            payer_nonce: payer_nonce.clone(),
            payer_signature,
        })
        .await?;
        if answer.cumulative > signed {
            return Err(BtcChannelsError::CloseRefused(format!(
                "the payee asks {} but only {signed} was signed",
                answer.cumulative
            )));
        }
        channel.verify_payee_partial(&answer, &payer_nonce)?;
        let close = channel.cooperative_close(answer.cumulative)?;
        let message = channel.cooperative_sighash(&close);
        let aggnonce = AggNonce::sum([&payer_nonce, &answer.nonce]);
        let ours = self.signer.sign_musig2_partial(
            &channel.signing_context()?,
            secnonce,
            &aggnonce,
            &message,
        )?;
        let close =
            channel.finalize_cooperative(answer.cumulative, &aggnonce, [ours, answer.partial])?;
        Ok(self.wallet.broadcast(&close).await?)
    }
}

impl PayeeChannels {
    /// Co-signs a cooperative close at the newest voucher, for the payer only.
    pub async fn cosign_close(
        &self,
        request: &CloseRequest,
    ) -> Result<PayeeCloseSignature, BtcChannelsError> {
        let id = request.channel_id;
        let payee = self.channel(&id).await?;
        let payee = payee.lock().await;
        let channel = payee.channel();
        let parties = channel.terms().parties;
        let digest = close_request_digest(&id, &request.payer_nonce);
        m2m_contracts::btc::SECP
            .verify_schnorr(
                &request.payer_signature,
                &Message::from_digest(digest),
                &parties.payer,
            )
            .map_err(|_| BtcChannelsError::CloseRefused("not signed by the payer".into()))?;
        let cumulative = payee.latest().map_or(Amount::ZERO, |v| v.cumulative);
        if cumulative == Amount::ZERO {
            return Err(BtcChannelsError::NoVoucher);
        }
        let close = channel.cooperative_close(cumulative)?;
        let message = channel.cooperative_sighash(&close);
        // Durable before the signature leaves: later vouchers would not be covered by this close.
        self.store.mark_btc_closing(&ChannelId(id), cumulative)?;
        self.closing.lock().await.insert(id);

        let secnonce = new_nonce(fresh_seed()?, &parties.payee, Some(&message));
        let nonce = secnonce.public_nonce();
        let aggnonce = AggNonce::sum([&request.payer_nonce, &nonce]);
        let partial = self.signer.sign_musig2_partial(
            &channel.signing_context()?,
            secnonce,
            &aggnonce,
            &message,
        )?;
        Ok(PayeeCloseSignature {
            cumulative,
            nonce,
            partial,
        })
    }
}
