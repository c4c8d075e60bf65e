//! alloy bindings generated from the committed forge artifacts (ABI and bytecode).

#![allow(missing_docs)] // generated code; the Solidity NatSpec documents it

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    BatchSettlement,
    "artifacts/BatchSettlement.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    ERC3009DepositCollector,
    "artifacts/ERC3009DepositCollector.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    TestToken,
    "artifacts/TestToken.json"
);

pub use IBatchSettlement::{ChannelConfig, Voucher, VoucherClaim};
