// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title A deposit collector: moves a payer's tokens into the settlement contract.
/// @notice Called only by the settlement contract during `deposit`. It must transfer exactly
/// `amount` of `token` to the settlement contract (which checks its balance delta) using an
/// authorization carried in `data` that is bound to `channelId`.
interface IDepositCollector {
    /// @dev The caller is not the settlement contract.
    error OnlySettlement();

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata data) external;
}

/// @title EIP-3009 (`receiveWithAuthorization`) as USDC and our test token implement it.
interface IERC3009 {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}
