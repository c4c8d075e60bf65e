//! Hash-chain ticks: picopayments that cost one SHA-256 to check.
//!
//! The payer picks a secret seed `c_0` and publishes the anchor `c_n = H^n(c_0)` in a
//! [`TickCommitment`] (with the tick price). Tick `k` reveals `c_{n-k}`; the payee checks
//! `H(c_{n-k}) == c_{n-k+1}`, so each tick proves the payer released one more unit of value without
//! a signature. Every K ticks (or T seconds) the payer signs an ordinary voucher covering them;
//! the payee never lets more than K ticks run on credit and stops service when a due voucher
//! does not come.
//!
//! The payer keeps a checkpoint every [`CHECKPOINT_SPACING`] links and rebuilds one segment at a
//! time, so a chain of a million ticks needs ~125 KiB and about two hashes per tick.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::amount::Amount;
use crate::voucher::ChannelId;

/// Links between stored checkpoints on the payer side.
pub const CHECKPOINT_SPACING: u32 = 256;

/// SHA-256 of one 32-byte link.
pub fn hash_link(link: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(link).into()
}

/// What the payer publishes before streaming: anchor, price per tick, and chain length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickCommitment {
    /// The channel the ticks pay on.
    pub channel_id: ChannelId,
    /// `c_n`.
    pub anchor: [u8; 32],
    /// Value of one tick.
    pub tick_price: Amount,
    /// `n`: how many ticks the chain holds.
    pub length: u32,
}

/// One revealed link: tick number `index` (1-based) with preimage `c_{n-index}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// 1-based tick number.
    pub index: u32,
    /// The revealed link.
    pub preimage: [u8; 32],
}

/// The payer's chain.
#[derive(Clone)]
pub struct TickChain {
    length: u32,
    revealed: u32,
    /// `checkpoints[j] = c_{j * CHECKPOINT_SPACING}`.
    checkpoints: Vec<[u8; 32]>,
    /// Links `c_{segment_start} ..` of the segment the next reveals come from.
    segment: Vec<[u8; 32]>,
    segment_start: u32,
    anchor: [u8; 32],
}

impl core::fmt::Debug for TickChain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TickChain")
            .field("length", &self.length)
            .field("revealed", &self.revealed)
            .finish()
    }
}

impl TickChain {
    /// Builds a chain of `length` ticks from a secret `seed` (entropy supplied by the caller).
    pub fn new(seed: [u8; 32], length: u32) -> Self {
        let mut checkpoints = Vec::with_capacity((length / CHECKPOINT_SPACING + 1) as usize);
        let mut link = seed;
        for i in 0..length {
            if i % CHECKPOINT_SPACING == 0 {
                checkpoints.push(link);
            }
            link = hash_link(&link);
        }
        Self {
            length,
            revealed: 0,
            checkpoints,
            segment: Vec::new(),
            segment_start: u32::MAX,
            anchor: link,
        }
    }

    /// `c_n`, to publish in a [`TickCommitment`].
    pub fn anchor(&self) -> [u8; 32] {
        self.anchor
    }

    /// How many ticks are left.
    pub fn remaining(&self) -> u32 {
        self.length - self.revealed
    }

    /// Reveals the next tick, or `None` when the chain is used up.
    pub fn next_tick(&mut self) -> Option<Tick> {
        if self.revealed == self.length {
            return None;
        }
        self.revealed += 1;
        let position = self.length - self.revealed; // reveal c_position
        let start = position - position % CHECKPOINT_SPACING;
        if start != self.segment_start {
            self.load_segment(start);
        }
        Some(Tick {
            index: self.revealed,
            preimage: self.segment[(position - start) as usize],
        })
    }

    fn load_segment(&mut self, start: u32) {
        self.segment.clear();
        let mut link = self.checkpoints[(start / CHECKPOINT_SPACING) as usize];
        let end = (start + CHECKPOINT_SPACING).min(self.length);
        for _ in start..end {
            self.segment.push(link);
            link = hash_link(&link);
        }
        self.segment_start = start;
    }
}

/// Why a tick was refused; the stream is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickError {
    /// The preimage does not hash to the last accepted link.
    BadPreimage,
    /// More ticks than the chain holds.
    ChainExhausted,
    /// Accepting would put more than the credit limit on credit: a voucher is due first.
    VoucherDue,
    /// A tick count of zero.
    ZeroCount,
}

impl core::fmt::Display for TickError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TickError::BadPreimage => "tick preimage does not extend the chain",
            TickError::ChainExhausted => "tick chain exhausted",
            TickError::VoucherDue => "too many ticks on credit: a voucher is due",
            TickError::ZeroCount => "tick count must be at least one",
        })
    }
}

impl core::error::Error for TickError {}

/// The payee's view of a tick stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickStream {
    commitment: TickCommitment,
    /// At most this many ticks unpaid by a voucher (K).
    credit_limit: u32,
    /// A voucher is due this long after the first uncovered tick (T).
    voucher_interval_secs: u64,
    last_link: [u8; 32],
    received: u32,
    covered: u32,
    first_uncovered_at: Option<u64>,
}

impl TickStream {
    /// Starts verifying a stream with credit limit `credit_limit` (K) and voucher interval T.
    pub fn new(commitment: TickCommitment, credit_limit: u32, voucher_interval_secs: u64) -> Self {
        Self {
            commitment,
            credit_limit: credit_limit.max(1),
            voucher_interval_secs,
            last_link: commitment.anchor,
            received: 0,
            covered: 0,
            first_uncovered_at: None,
        }
    }

    /// The commitment.
    pub fn commitment(&self) -> &TickCommitment {
        &self.commitment
    }

    /// Accepts `count` ticks proven by one preimage (`H^count(preimage)` = last link).
    /// Returns the number of ticks received so far.
    pub fn on_ticks(
        &mut self,
        preimage: &[u8; 32],
        count: u32,
        now_secs: u64,
    ) -> Result<u32, TickError> {
        if count == 0 {
            return Err(TickError::ZeroCount);
        }
        let received = self
            .received
            .checked_add(count)
            .ok_or(TickError::ChainExhausted)?;
        if received > self.commitment.length {
            return Err(TickError::ChainExhausted);
        }
        if received - self.covered > self.credit_limit {
            return Err(TickError::VoucherDue);
        }
        let mut link = *preimage;
        for _ in 0..count {
            link = hash_link(&link);
        }
        if link != self.last_link {
            return Err(TickError::BadPreimage);
        }
        self.last_link = *preimage;
        self.received = received;
        self.first_uncovered_at.get_or_insert(now_secs);
        Ok(received)
    }

    /// Ticks received and not yet covered by a voucher.
    pub fn uncovered(&self) -> u32 {
        self.received - self.covered
    }

    /// The value of the uncovered ticks: what the next voucher must add.
    pub fn uncovered_value(&self) -> Result<Amount, crate::AmountError> {
        self.commitment
            .tick_price
            .checked_mul(u64::from(self.uncovered()))
    }

    /// A voucher covering every received tick was accepted.
    pub fn on_covered(&mut self) {
        self.covered = self.received;
        self.first_uncovered_at = None;
    }

    /// Whether the payer owes a voucher now (K ticks on credit, or T seconds since the first).
    pub fn voucher_due(&self, now_secs: u64) -> bool {
        self.uncovered() >= self.credit_limit
            || self
                .first_uncovered_at
                .is_some_and(|since| now_secs.saturating_sub(since) >= self.voucher_interval_secs)
    }

    /// Whether service may continue: not when a due voucher is overdue by the grace period.
    pub fn service_allowed(&self, now_secs: u64, grace_secs: u64) -> bool {
        match self.first_uncovered_at {
            None => true,
            Some(since) => {
                self.uncovered() < self.credit_limit
                    && now_secs.saturating_sub(since)
                        < self.voucher_interval_secs.saturating_add(grace_secs)
            }
        }
    }
}
