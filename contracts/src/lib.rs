//! `m2m-contracts`: the settlement contracts and their Rust bindings.
//!
//! The Foundry project beside this crate (`src/`, `test/`, `script/`) holds the Solidity escrow
//! channel; this crate will expose alloy `sol!` bindings to its committed artifacts and the
//! Bitcoin script templates of the Taproot channel.
