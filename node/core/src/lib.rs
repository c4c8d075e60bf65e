//! `m2m-core`: the sans-IO heart of the agent.
//!
//! What a device firmware embeds: amounts, vouchers, hash-chain ticks, the payer and payee
//! channel state machines, the budget policy, readings sealed by fractional encryption
//! (`senml`) with their keys wrapped for one buyer (`key_wrap`) or sold through a Lightning hold
//! invoice (`hold`), and a thing registry's rules of IoT discovery (`discovery`). It does no IO,
//! spawns nothing, reads no clock and no randomness — time comes in as `now_secs` arguments,
//! signing and signature checks as capabilities ([`VoucherSigner`], [`VoucherVerifier`]), and
//! state to persist goes out as records the shell must store before it acts. It is `no_std`
//! (with `alloc`) and CI builds it for `thumbv7em-none-eabihf` to keep that promise.
//!
//! Every operation that can fail returns a typed error and leaves the state unchanged.
#![no_std]

extern crate alloc;

mod amount;
pub mod budget;
mod channel;
pub mod codec;
mod cose;
pub mod discovery;
pub mod hold;
pub mod key_wrap;
pub mod payee;
pub mod payer;
pub mod records;
pub mod senml;
pub mod ticks;
mod voucher;

pub use amount::{Amount, AmountError, Asset};
pub use channel::{ChannelError, ChannelTerms};
pub use voucher::{
    ChannelId, EvmAddress, Signature65, Voucher, VoucherSigner, VoucherVerifier, keccak256,
    voucher_digest, voucher_typehash,
};
