//! `m2m`: the M2M micropayment node, one crate that re-exports its layers.
//!
//! - [`wallet`]: seed, derivation, encrypted keystore, [`wallet::Signer`], top-up URIs.
//! - [`core`]: the sans-IO channel core (`no_std`).
//! - [`node`]: the agent shell — data directory, local tools, the `m2m` command line.
//! - [`contracts`]: settlement contracts and bindings.
//! - [`sim`]: the fleet simulator.

pub use m2m_contracts as contracts;
pub use m2m_core as core;
pub use m2m_node as node;
#[cfg(feature = "sim")]
pub use m2m_sim as sim;
pub use m2m_wallet as wallet;
