//! The Bitcoin leg: bitcoind RPC, the on-chain wallet's sync and storage, and Taproot script
//! channels bound to the store (persist before a voucher leaves or a reading is served).
//!
//! - [`rpc`]: bitcoind JSON-RPC (blocks, UTXO lookups, broadcast).
//! - [`wallet`]: the device's BDK wallet fed from bitcoind, its state kept in the store.
//! - [`channels`]: opening, paying, accepting, closing and refunding Taproot channels.
//! - [`close`]: the cooperative close (MuSig2 key path) between payer and payee.
//! - [`seller`] / [`buyer`]: readings priced in satoshi over HTTP 402, scheme `btc-channel`.

pub mod buyer;
pub mod channels;
pub mod close;
pub mod rpc;
pub mod seller;
pub mod wallet;

pub use buyer::{BtcBuyer, BtcBuyerError, BtcBuyerOptions};
pub use channels::{BtcChannelsError, PayeeChannels, PayeePolicy, PayerChannels, WatchReport};
pub use rpc::{BitcoinRpc, RpcAuth, RpcError, TxOutInfo};
pub use seller::{BtcRoute, BtcSeller, serve_btc};
pub use wallet::{BtcWallet, WalletError};
