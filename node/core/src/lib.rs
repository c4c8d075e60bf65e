//! `m2m-core`: the sans-IO heart of the agent.
//!
//! This crate will hold what a device firmware embeds: amounts, vouchers, hash-chain ticks and the
//! payer/payee channel state machines. It does no IO, spawns nothing, reads no clock and no
//! randomness — time and entropy come in as arguments, effects go out as values. It is `no_std`
//! (with `alloc`) and CI builds it for `thumbv7em-none-eabihf` to keep that promise.
#![no_std]
