//! `m2m-contracts`: the settlement contracts and their Rust bindings.
//!
//! The Foundry project beside this crate (`src/`, `test/`) holds the Solidity escrow channel,
//! which speaks the x402 v2 `batch-settlement` EVM scheme. This crate compiles against the
//! committed artifacts in `artifacts/` (ABI + bytecode; `scripts/contracts` checks they match a
//! fresh compile), so building Rust never needs forge or solc.
//!
//! - [`bindings`]: alloy `sol!` bindings (`BatchSettlement`, `ERC3009DepositCollector`, `TestToken`).
//! - [`eip712`]: channel ids and the digests of vouchers, refunds, claim batches and EIP-3009
//!   authorizations, computed off chain exactly as the contracts do.
//! - [`btc`]: the Bitcoin Taproot script channel (miniscript leaves, commitments, close, refund).
//! - [`deploy`]: deploying to any chain, or placing the code at the scheme's canonical addresses
//!   on anvil so that off-the-shelf x402 clients find it.

pub mod bindings;
pub mod deploy;
pub mod eip712;

use alloy::primitives::{Address, address};

/// Where the x402 reference client expects the settlement contract, on every chain.
pub const CANONICAL_SETTLEMENT: Address = address!("4020074e9dF2ce1deE5A9C1b5c3f541D02a10003");
/// Where the x402 reference client expects the EIP-3009 deposit collector.
pub const CANONICAL_ERC3009_COLLECTOR: Address =
    address!("4020806089470a89826cB9fB1f4059150b550004");
/// Shortest withdraw delay the contract accepts (15 minutes).
pub const MIN_WITHDRAW_DELAY_SECS: u64 = 15 * 60;
/// Longest withdraw delay the contract accepts (30 days).
pub const MAX_WITHDRAW_DELAY_SECS: u64 = 30 * 24 * 3600;

pub mod btc;
