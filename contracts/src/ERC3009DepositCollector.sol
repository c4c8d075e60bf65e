// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {IDepositCollector, IERC3009} from "./interfaces/IDepositCollector.sol";

/// @title ERC3009DepositCollector: gasless channel deposits with EIP-3009 `receiveWithAuthorization`.
/// @notice The payer signs `ReceiveWithAuthorization(from=payer, to=this collector, value,
/// validAfter, validBefore, nonce)` with `nonce = keccak256(abi.encode(channelId, salt))`, as the
/// x402 batch-settlement client does. The nonce binds the authorization to one channel, so a
/// relayer cannot redirect the funds; only the settlement contract may trigger collection.
/// @dev `settlement` is an immutable embedded in the runtime code, so this code can be placed
/// at the scheme's canonical collector address as long as it was built for the canonical
/// settlement address.
contract ERC3009DepositCollector is IDepositCollector {
    using SafeERC20 for IERC20;

    /// @notice The settlement contract deposits are forwarded to.
    address public immutable settlement;

    /// @dev The settlement address is zero.
    error ZeroSettlement();

    constructor(address settlement_) {
        if (settlement_ == address(0)) revert ZeroSettlement();
        settlement = settlement_;
    }

    /// @inheritdoc IDepositCollector
    /// @dev `data` = abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature).
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata data) external {
        if (msg.sender != settlement) revert OnlySettlement();
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(data, (uint256, uint256, uint256, bytes));
        (uint8 v, bytes32 r, bytes32 s) = ECDSA.parse(signature);
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        IERC3009(token).receiveWithAuthorization(payer, address(this), amount, validAfter, validBefore, nonce, v, r, s);
        IERC20(token).safeTransfer(settlement, amount);
    }
}
