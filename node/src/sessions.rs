//! Channel sessions: the core's machines bound to the store, with the persistence contract
//! enforced in one place.
//!
//! - [`PayerSession::pay`] signs the next voucher, waits until the new "highest signed" record is
//!   durable, and only then returns the voucher for sending.
//! - [`PayeeSession::accept`] checks a voucher, waits until the accepted state is durable, and
//!   only then returns (the caller serves after it returns `Ok`).
//!
//! Each session serialises its own channel (a mutex), so one channel's updates are ordered, while
//! different channels run in parallel and share fsyncs through the store's group commit.

use std::sync::Mutex;

use m2m_core::payee::PayeeChannel;
use m2m_core::payer::PayerChannel;
use m2m_core::{Amount, ChannelError, ChannelTerms, Voucher, VoucherSigner, VoucherVerifier};

use crate::store::{ChannelStore, RecordWrite, StoreError};

/// A session operation failed; the channel state is unchanged unless the store failed after
/// the write was queued (then the process must restart and reload).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The channel rules refused.
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    /// Persisting failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The payer side of one channel, durable.
#[derive(Debug)]
pub struct PayerSession<'s> {
    store: &'s ChannelStore,
    channel: Mutex<PayerChannel>,
}

impl<'s> PayerSession<'s> {
    /// Loads the channel from the store, or opens it with `deposit` if the store has none.
    pub fn load_or_open(
        store: &'s ChannelStore,
        terms: ChannelTerms,
        deposit: Amount,
    ) -> Result<Self, SessionError> {
        let channel = match store.load_payer(&terms.channel_id)? {
            Some(record) => PayerChannel::restore(terms, record)?,
            None => {
                let channel = PayerChannel::open(terms, deposit)?;
                store.persist(RecordWrite::Payer(terms.channel_id, *channel.record()))?;
                channel
            }
        };
        Ok(Self {
            store,
            channel: Mutex::new(channel),
        })
    }

    /// Signs the next voucher for a request priced at most `price`; returns it once the payer's
    /// exposure is on disk.
    pub fn pay<S: VoucherSigner>(
        &self,
        price: Amount,
        signer: &S,
    ) -> Result<Voucher, SessionError> {
        let mut channel = self.lock();
        let prepared = channel.prepare_payment(price, signer)?;
        self.store.persist(RecordWrite::Payer(
            channel.terms().channel_id,
            prepared.record,
        ))?;
        Ok(channel.commit(prepared))
    }

    /// Records what the payee charged for a request priced at most `price`.
    pub fn charged(&self, charge: Amount, price: Amount) -> Result<(), SessionError> {
        let mut channel = self.lock();
        let record = channel.on_charged(charge, price)?;
        self.store
            .persist(RecordWrite::Payer(channel.terms().channel_id, record))?;
        Ok(())
    }

    /// A copy of the current channel state.
    pub fn snapshot(&self) -> PayerChannel {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PayerChannel> {
        self.channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The payee side of one channel, durable.
#[derive(Debug)]
pub struct PayeeSession<'s> {
    store: &'s ChannelStore,
    channel: Mutex<PayeeChannel>,
}

impl<'s> PayeeSession<'s> {
    /// Loads the channel from the store, or opens it with `deposit` seen on chain at `now_secs`.
    pub fn load_or_open(
        store: &'s ChannelStore,
        terms: ChannelTerms,
        deposit: Amount,
        now_secs: u64,
    ) -> Result<Self, SessionError> {
        let channel = match store.load_payee(&terms.channel_id)? {
            Some(record) => PayeeChannel::restore(terms, record)?,
            None => {
                let channel = PayeeChannel::open(terms, deposit, now_secs)?;
                store.persist(RecordWrite::Payee(terms.channel_id, *channel.record()))?;
                channel
            }
        };
        Ok(Self {
            store,
            channel: Mutex::new(channel),
        })
    }

    /// Checks and durably records a voucher paying `charge` for a request priced at most
    /// `price`. Serve the request only after this returned `Ok`.
    pub fn accept<V: VoucherVerifier>(
        &self,
        voucher: &Voucher,
        price: Amount,
        charge: Amount,
        verifier: &V,
    ) -> Result<(), SessionError> {
        let mut channel = self.lock();
        let accepted = channel.accept(voucher, price, charge, verifier)?;
        self.store.persist(RecordWrite::Payee(
            channel.terms().channel_id,
            accepted.record,
        ))?;
        channel.commit(accepted);
        Ok(())
    }

    /// A copy of the current channel state (e.g. for a corrective 402 or a claim decision).
    pub fn snapshot(&self) -> PayeeChannel {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PayeeChannel> {
        self.channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
