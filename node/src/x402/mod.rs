//! x402 v2: the message types and their HTTP header form.
//!
//! - [`types`]: `PaymentRequired`, `PaymentRequirements`, `PaymentPayload`, `SettlementResponse`,
//!   `VerifyResponse`, as the x402 v2 specification names their JSON fields.
//! - [`batch`]: the `batch-settlement` scheme's payloads (deposit, voucher, refund) and their
//!   conversion to the channel core's [`m2m_core::Voucher`].
//! - [`headers`]: `PAYMENT-REQUIRED`, `PAYMENT-SIGNATURE` and `PAYMENT-RESPONSE` (base64 of JSON),
//!   with a size limit and typed errors for hostile input.
//! - [`exact`]: the `exact` scheme's EIP-3009 payload.
//! - [`btc`]: `btc-channel`, our scheme for Taproot channels on `bip122:` networks.
//! - [`codes`]: the specification's error codes.
//!
//! The HTTP seller ([`crate::seller`]) and buyer ([`crate::buyer`]) are built on these.

pub mod batch;
pub mod btc;
pub mod codes;
pub mod exact;
pub mod headers;
pub mod types;
