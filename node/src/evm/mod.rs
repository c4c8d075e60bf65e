//! The EVM side of the agent: sending transactions with the device key, and the settlement and
//! token contracts as the seller and the buyer use them.
//!
//! - [`WalletTxSigner`]: the device wallet as an alloy transaction signer (the key never leaves
//!   the wallet; alloy hands us the signing hash).
//! - [`SettlementClient`]: deposits, claims, settles, channel reads and EIP-3009 transfers.
//! - [`withdraw`]: the payer's timed withdrawal (`m2m withdraw`).
//! - [`parse_eip155`]: CAIP-2 `eip155:<id>` network names.

mod client;
pub mod withdraw;

use std::sync::Arc;

use alloy::consensus::SignableTransaction;
use alloy::primitives::{Address, Signature};
use m2m_wallet::Signer;

pub use client::{ChainError, OnChainChannel, SettlementClient, TokenInfo};

/// A device wallet shared between tasks.
pub type SharedSigner = Arc<dyn Signer + Send + Sync>;

/// The device wallet as an alloy [`alloy::network::TxSigner`].
#[derive(Clone)]
pub struct WalletTxSigner(pub SharedSigner);

impl std::fmt::Debug for WalletTxSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WalletTxSigner")
            .field(&self.0.evm_address())
            .finish()
    }
}

#[async_trait::async_trait]
impl alloy::network::TxSigner<Signature> for WalletTxSigner {
    fn address(&self) -> Address {
        self.0.evm_address()
    }

    async fn sign_transaction(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> alloy::signers::Result<Signature> {
        // Typed transactions carry their chain id inside the signed payload, so no EIP-155
        // adjustment of `v` is needed; the filler always builds EIP-1559 transactions.
        self.0
            .sign_evm_digest(&tx.signature_hash())
            .map_err(alloy::signers::Error::other)
    }
}

/// The chain id of a CAIP-2 `eip155:<id>` network, or `None` for anything else.
pub fn parse_eip155(network: &str) -> Option<u64> {
    let id = network.strip_prefix("eip155:")?;
    if id.is_empty() || id.starts_with('0') || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_eip155;

    #[test]
    fn caip2_eip155_names() {
        assert_eq!(parse_eip155("eip155:31337"), Some(31337));
        assert_eq!(parse_eip155("eip155:8453"), Some(8453));
        for bad in [
            "eip155:",
            "eip155:0x1",
            "eip155:01",
            "bip122:000",
            "eip155:-1",
            "31337",
        ] {
            assert_eq!(parse_eip155(bad), None, "{bad}");
        }
    }
}
