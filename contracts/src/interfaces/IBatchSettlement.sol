// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The x402 `batch-settlement` escrow channel: types, events and errors.
/// @notice Unidirectional channels: a payer deposits once, signs cumulative EIP-712 vouchers
/// off chain, and the receiver side claims the newest voucher of many channels in one call and
/// sweeps claimed funds with `settle`. Type strings and function signatures follow the x402 v2
/// batch-settlement EVM scheme so that off-the-shelf x402 clients interoperate.
interface IBatchSettlement {
    /// @notice Immutable channel parameters; their EIP-712 hash is the channel id.
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// @notice A cumulative ceiling the payer signed for a channel.
    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// @notice One row of a claim: the voucher, its signature and the new cumulative total claimed.
    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    /// @notice On-chain accounting of a channel (one storage slot).
    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
    }

    /// @notice A timed withdrawal the payer started.
    struct PendingWithdrawal {
        uint128 amount;
        uint40 initiatedAt;
    }

    /// @notice Claimed and settled totals of a receiver for one token.
    struct ReceiverState {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
    event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
    event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
    event Claimed(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newTotalClaimed);
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount, uint256 nonce);
    event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
    event WithdrawReduced(bytes32 indexed channelId, uint128 remainingAmount);
    event WithdrawFinalized(bytes32 indexed channelId, uint128 amount);

    /// @dev withdrawDelay outside [MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY].
    error WithdrawDelayOutOfRange(uint40 withdrawDelay);
    /// @dev The config names no receiver authorizer, no receiver, no payer or no token.
    error InvalidChannelConfig();
    /// @dev An amount of zero where a positive one is required.
    error ZeroAmount();
    /// @dev The channel balance would not fit in 128 bits.
    error BalanceOverflow();
    /// @dev The contract received a different amount than the deposit announced.
    error DepositAmountMismatch(uint256 expected, uint256 received);
    /// @dev Only the channel's receiver or receiver authorizer may do this.
    error NotReceiverOrAuthorizer();
    /// @dev Only the channel's payer or payer authorizer may do this.
    error NotPayerOrAuthorizer();
    /// @dev The voucher signature does not come from the payer side.
    error InvalidVoucherSignature(bytes32 channelId);
    /// @dev The claimed total exceeds what the voucher allows.
    error ClaimExceedsVoucher(bytes32 channelId, uint128 totalClaimed, uint128 maxClaimableAmount);
    /// @dev The claimed total exceeds the channel balance.
    error ClaimExceedsBalance(bytes32 channelId, uint128 totalClaimed, uint128 balance);
    /// @dev The claimed total is below what was already claimed.
    error ClaimBelowTotalClaimed(bytes32 channelId, uint128 totalClaimed, uint128 alreadyClaimed);
    /// @dev A claim batch was empty.
    error EmptyClaims();
    /// @dev Rows of one signed claim batch name different receiver authorizers.
    error MixedReceiverAuthorizers();
    /// @dev The receiver authorizer did not sign this claim batch or refund.
    error InvalidAuthorizerSignature();
    /// @dev A signed refund carried a stale or future nonce.
    error InvalidRefundNonce(uint256 expected, uint256 provided);
    /// @dev A withdrawal asked for more than the unclaimed escrow.
    error WithdrawAmountTooLarge(uint128 requested, uint128 available);
    /// @dev A withdrawal is already pending on this channel.
    error WithdrawAlreadyPending(bytes32 channelId);
    /// @dev No withdrawal is pending on this channel.
    error NoPendingWithdrawal(bytes32 channelId);
    /// @dev The withdrawal delay has not elapsed yet.
    error WithdrawNotReady(bytes32 channelId, uint256 readyAt);

    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external;
    function claim(VoucherClaim[] calldata voucherClaims) external;
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature) external;
    function settle(address receiver, address token) external;
    function refund(ChannelConfig calldata config, uint128 amount) external;
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external;
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external;
    function finalizeWithdraw(ChannelConfig calldata config) external;

    function getChannelId(ChannelConfig calldata config) external view returns (bytes32);
    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) external view returns (bytes32);
    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) external view returns (bytes32);
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) external view returns (bytes32);
}
