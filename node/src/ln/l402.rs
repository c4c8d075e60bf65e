//! L402 (formerly LSAT): HTTP 402 paid over Lightning.
//!
//! - Challenge: `WWW-Authenticate: L402 macaroon="<base64>", invoice="<bolt11>"`; the macaroon's
//!   identifier is `version (u16 BE, 0) ‖ payment hash ‖ token id`, with the caveat
//!   `m2m_route=<path>` so a token bought for one reading does not open another route.
//! - Redemption: `Authorization: L402 <base64 macaroon>:<hex preimage>` (the `LSAT` scheme name
//!   is accepted too). Valid when the macaroon verifies under our root key, the route caveat
//!   matches, and SHA-256(preimage) is the identifier's payment hash — only our node releases
//!   that preimage, when it settles the invoice.
//! - Pay per reading: a token pays for one reading. It is marked redeemed in the store (fsync)
//!   before the reading is served; a replay is refused.
//!
//! The root key is derived from the device's Lightning entropy, so it survives restarts without
//! a secret file of its own.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bitcoin::Amount;
use bitcoin::hashes::{Hash, sha256};

use super::{LnError, LnNode};
use crate::l402_wire::{Macaroon, parse_authorization};
pub use crate::l402_wire::{SCHEMES, parse_challenge};
use crate::store::ChannelStore;
use crate::x402::btc::hex;

/// How long a challenge's invoice stays payable.
pub const INVOICE_EXPIRY_SECS: u32 = 600;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum L402Error {
    /// The header is not `L402 <macaroon>:<preimage>`.
    #[error("malformed L402 authorization")]
    Malformed,
    /// The macaroon is not ours, or was altered.
    #[error("macaroon signature does not verify")]
    BadMacaroon,
    /// The token was bought for another route.
    #[error("token is for another route")]
    WrongRoute,
    /// The preimage does not match the payment hash.
    #[error("preimage does not match the invoice")]
    BadPreimage,
    /// The token was used already.
    #[error("token already redeemed")]
    Redeemed,
    /// Recording the redemption failed: nothing is served.
    #[error("recording the token: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The Lightning node failed (making an invoice, paying).
    #[error(transparent)]
    Ln(#[from] LnError),
    /// The server's answer is not an L402 challenge (client side).
    #[error("no L402 challenge: {0}")]
    NoChallenge(String),
    /// HTTP failed (client side).
    #[error("request: {0}")]
    Http(#[from] reqwest::Error),
    /// The price is above the client's maximum.
    #[error("price {0} msat is above the maximum")]
    TooExpensive(u64),
    /// The budget refused the payment (or could not record it); nothing was paid.
    #[error("budget")]
    Budget(#[source] crate::budget::BudgetsError),
}

/// Fresh challenges kept per route and price: unpaid requests reuse them instead of each
/// minting an invoice the node must store (a flood of unpaid requests makes at most this many
/// invoices per route every half expiry). Concurrent buyers rarely share one; when two do, the
/// second payment of the same invoice fails and its buyer asks again.
pub const CHALLENGE_POOL: usize = 32;

/// A challenge handed out and not yet redeemed.
struct Pooled {
    challenge: String,
    payment_hash: [u8; 32],
    minted: std::time::Instant,
}

/// Mints challenges and redeems tokens for a seller.
pub struct L402Issuer {
    ln: Arc<LnNode>,
    store: Arc<ChannelStore>,
    root_key: [u8; 32],
    pool: std::sync::Mutex<std::collections::HashMap<(String, u64), Vec<Pooled>>>,
    turn: std::sync::atomic::AtomicUsize,
    minted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for L402Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L402Issuer").finish_non_exhaustive()
    }
}

impl L402Issuer {
    /// An issuer selling through `ln`, recording redemptions in `store`; the root key comes from
    /// `keys`' Lightning entropy.
    pub fn new(
        ln: Arc<LnNode>,
        store: Arc<ChannelStore>,
        keys: &m2m_wallet::DeviceKeys,
    ) -> Result<Self, L402Error> {
        let root_key = super::seed_secret(keys, b"m2m/l402/root-key/v1")?;
        Ok(Self {
            ln,
            store,
            root_key,
            pool: std::sync::Mutex::default(),
            turn: std::sync::atomic::AtomicUsize::new(0),
            minted: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Invoices minted so far (each unpaid request does not mint one: see [`CHALLENGE_POOL`]).
    pub fn minted(&self) -> u64 {
        self.minted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock_pool(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, u64), Vec<Pooled>>> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `WWW-Authenticate` value for one reading of `route` at `price`.
    pub fn challenge(&self, route: &str, price: Amount) -> Result<String, L402Error> {
        // Reused while younger than half its invoice's life: a buyer has time left to pay it.
        let fresh = Duration::from_secs(u64::from(INVOICE_EXPIRY_SECS) / 2);
        let key = (route.to_owned(), price.to_sat());
        {
            let mut pool = self.lock_pool();
            let pooled = pool.entry(key.clone()).or_default();
            pooled.retain(|entry| entry.minted.elapsed() < fresh);
            if pooled.len() >= CHALLENGE_POOL {
                let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(pooled[turn % pooled.len()].challenge.clone());
            }
        }
        let (challenge, payment_hash) = self.mint(route, price)?;
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock_pool().entry(key).or_default().push(Pooled {
            challenge: challenge.clone(),
            payment_hash,
            minted: std::time::Instant::now(),
        });
        Ok(challenge)
    }

    /// A new invoice and its macaroon: the challenge and the payment hash.
    fn mint(&self, route: &str, price: Amount) -> Result<(String, [u8; 32]), L402Error> {
        let invoice = self.ln.invoice(
            price.to_sat() * 1_000,
            &format!("m2m reading {route}"),
            INVOICE_EXPIRY_SECS,
        )?;
        let mut identifier = vec![0u8, 0u8];
        identifier.extend_from_slice(invoice.payment_hash().as_byte_array());
        let mut token_id = [0u8; 32];
        getrandom::getrandom(&mut token_id)
            .map_err(|e| LnError::Input(format!("randomness: {e}")))?;
        identifier.extend_from_slice(&token_id);
        let macaroon = Macaroon::mint(
            &self.root_key,
            "m2m",
            identifier,
            vec![format!("m2m_route={route}").into_bytes()],
        );
        let challenge = format!(
            "L402 macaroon=\"{}\", invoice=\"{invoice}\"",
            STANDARD.encode(macaroon.encode())
        );
        Ok((challenge, *invoice.payment_hash().as_byte_array()))
    }

    /// Checks an `Authorization` value for `route` and marks the token redeemed (durably).
    /// Returns the payment hash.
    pub fn redeem(
        &self,
        route: &str,
        authorization: &str,
        now_secs: u64,
    ) -> Result<[u8; 32], L402Error> {
        let (macaroon, preimage) =
            parse_authorization(authorization).ok_or(L402Error::Malformed)?;
        if !macaroon.verify(&self.root_key) {
            return Err(L402Error::BadMacaroon);
        }
        let wanted = format!("m2m_route={route}").into_bytes();
        if macaroon.caveats != [wanted] {
            return Err(L402Error::WrongRoute);
        }
        // Identifier: version 0 (2 bytes) ‖ payment hash (32) ‖ token id (32).
        let identifier = macaroon.identifier.as_slice();
        if identifier.len() != 66 || identifier[..2] != [0, 0] {
            return Err(L402Error::Malformed);
        }
        let payment_hash: [u8; 32] = identifier[2..34].try_into().expect("32 bytes");
        if sha256::Hash::hash(&preimage).to_byte_array() != payment_hash {
            return Err(L402Error::BadPreimage);
        }
        if !self.store.redeem_token(&payment_hash, now_secs)? {
            return Err(L402Error::Redeemed);
        }
        // Paid: its challenge is handed out no more.
        for pooled in self.lock_pool().values_mut() {
            pooled.retain(|entry| entry.payment_hash != payment_hash);
        }
        Ok(payment_hash)
    }
}

/// A reading bought over L402.
#[derive(Debug, Clone)]
pub struct L402Fetched {
    /// HTTP status of the paid request.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// What the invoice asked, msat (0 if the resource was free).
    pub paid_msat: u64,
}

/// Fetches `url`, paying its L402 challenge from `ln` when one comes (at most `max_msat`, and
/// inside `budget`'s `lightning` leg if given; the payee is the invoice's node).
pub async fn get(
    http: &reqwest::Client,
    ln: &LnNode,
    url: &str,
    max_msat: u64,
    budget: Option<&crate::budget::Budgets>,
    timeout: Duration,
) -> Result<L402Fetched, L402Error> {
    let first = http.get(url).send().await?;
    if first.status() != reqwest::StatusCode::PAYMENT_REQUIRED {
        let status = first.status().as_u16();
        return Ok(L402Fetched {
            status,
            body: first.bytes().await?.to_vec(),
            paid_msat: 0,
        });
    }
    let challenge = first
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge)
        .ok_or_else(|| L402Error::NoChallenge(url.to_owned()))?;
    let (macaroon, invoice) = challenge;
    // Parsed once: checked against the limit, then paid.
    let invoice = invoice
        .parse::<ldk_node::lightning_invoice::Bolt11Invoice>()
        .map_err(|e| L402Error::NoChallenge(format!("invoice: {e}")))?;
    let amount = invoice.amount_milli_satoshis().unwrap_or(u64::MAX);
    if amount > max_msat {
        return Err(L402Error::TooExpensive(amount));
    }
    if let Some(budget) = budget {
        let payee = invoice.recover_payee_pub_key().to_string();
        budget
            .authorize(
                crate::events::Leg::Lightning,
                m2m_core::Asset::Bitcoin,
                &payee,
                u128::from(amount),
            )
            .await
            .map_err(L402Error::Budget)?;
    }
    let paid = ln.pay_invoice(&invoice, timeout).await?;
    let preimage = hex(&paid.preimage);
    let response = http
        .get(url)
        .header(
            reqwest::header::AUTHORIZATION,
            format!("L402 {macaroon}:{preimage}"),
        )
        .send()
        .await?;
    Ok(L402Fetched {
        status: response.status().as_u16(),
        body: response.bytes().await?.to_vec(),
        paid_msat: amount,
    })
}
