//! alloy bindings generated from the committed forge artifacts (ABI and bytecode).

#![allow(missing_docs)] // generated code; the Solidity NatSpec documents it
#![allow(clippy::too_many_arguments)] // mirrors the Solidity signatures (EIP-3009 has nine)

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
