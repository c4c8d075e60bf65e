// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

import {IBatchSettlement} from "./interfaces/IBatchSettlement.sol";
import {IDepositCollector} from "./interfaces/IDepositCollector.sol";

/// @title BatchSettlement: the m2m escrow channel, speaking the x402 v2 batch-settlement scheme.
/// @notice Money rules, enforced here rather than on the device:
/// - a channel's `totalClaimed` only grows, never past the newest signed voucher nor its balance;
/// - refunds and withdrawals only ever return unclaimed escrow (`balance - totalClaimed`);
/// - the payer's escape hatch is a timed withdrawal the receiver can pre-empt by claiming.
/// @dev Holds no constructor-set storage: the EIP-712 name/version live in immutables and the
/// domain separator is rebuilt when the code runs at another address or chain, so the runtime
/// code can be placed at the scheme's canonical address (`anvil_setCode`) and still be correct.
contract BatchSettlement is IBatchSettlement, EIP712, ReentrancyGuardTransient, Multicall {
    using SafeERC20 for IERC20;

    /// @notice Shortest allowed withdraw delay (15 minutes).
    uint40 public constant MIN_WITHDRAW_DELAY = 15 minutes;
    /// @notice Longest allowed withdraw delay (30 days).
    uint40 public constant MAX_WITHDRAW_DELAY = 30 days;

    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
    );
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    /// @notice Balance and total claimed per channel.
    // Slither's uninitialized-state misses writes made through `ChannelState storage` pointers.
    // slither-disable-next-line uninitialized-state
    mapping(bytes32 channelId => ChannelState) public channels;
    /// @notice Timed withdrawal per channel, if any.
    mapping(bytes32 channelId => PendingWithdrawal) public pendingWithdrawals;
    /// @notice Claimed and settled totals per receiver and token.
    mapping(address receiver => mapping(address token => ReceiverState)) public receivers;
    /// @notice Next nonce a signed refund must carry, per channel.
    mapping(bytes32 channelId => uint256) public refundNonce;

    constructor() EIP712("x402 Batch Settlement", "1") {}

    // ---------------------------------------------------------------- deposits

    /// @inheritdoc IBatchSettlement
    /// @dev `collector == address(0)`: the caller pays with `transferFrom` (anyone may top up a
    /// channel; the escrow still belongs to the config's payer). Otherwise the collector pulls the
    /// payer's tokens with an authorization bound to the channel id. Either way the credited
    /// amount is what this contract actually received.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        _validateConfig(config);
        if (amount == 0) revert ZeroAmount();
        bytes32 channelId = _channelId(config);
        IERC20 token = IERC20(config.token);

        uint256 balanceBefore = token.balanceOf(address(this));
        if (collector == address(0)) {
            token.safeTransferFrom(msg.sender, address(this), amount);
        } else {
            IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        }
        uint256 received = token.balanceOf(address(this)) - balanceBefore;
        if (received != amount) revert DepositAmountMismatch(amount, received);

        ChannelState storage channel = channels[channelId];
        uint128 oldBalance = channel.balance;
        uint256 newBalance = uint256(oldBalance) + amount;
        if (newBalance > type(uint128).max) revert BalanceOverflow();
        // forge-lint: disable-next-line(unsafe-typecast) — checked against uint128 max just above
        uint128 balance128 = uint128(newBalance);
        channel.balance = balance128;
        if (oldBalance == 0 && channel.totalClaimed == 0) emit ChannelCreated(channelId, config);
        emit Deposited(channelId, msg.sender, amount, balance128);
    }

    // ---------------------------------------------------------------- claims and settlement

    /// @inheritdoc IBatchSettlement
    function claim(VoucherClaim[] calldata voucherClaims) external nonReentrant {
        uint256 count = voucherClaims.length;
        if (count == 0) revert EmptyClaims();
        for (uint256 i = 0; i < count; ++i) {
            ChannelConfig calldata config = voucherClaims[i].voucher.channel;
            if (msg.sender != config.receiver && msg.sender != config.receiverAuthorizer) {
                revert NotReceiverOrAuthorizer();
            }
            _claim(voucherClaims[i], _channelId(config));
        }
    }

    /// @inheritdoc IBatchSettlement
    /// @dev Relay-friendly: anyone may submit rows that the (single) receiver authorizer signed.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature)
        external
        nonReentrant
    {
        (bytes32 digest, bytes32[] memory channelIds) = _claimBatchDigest(voucherClaims);
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        if (!SignatureChecker.isValidSignatureNowCalldata(authorizer, digest, authorizerSignature)) {
            revert InvalidAuthorizerSignature();
        }
        for (uint256 i = 0; i < channelIds.length; ++i) {
            _claim(voucherClaims[i], channelIds[i]);
        }
    }

    /// @inheritdoc IBatchSettlement
    /// @dev Permissionless: funds can only go to `receiver`. A no-op when nothing is unsettled.
    function settle(address receiver, address token) external nonReentrant {
        ReceiverState storage state = receivers[receiver][token];
        uint128 amount = state.totalClaimed - state.totalSettled;
        if (amount == 0) return;
        state.totalSettled = state.totalClaimed;
        IERC20(token).safeTransfer(receiver, amount);
        emit Settled(receiver, token, msg.sender, amount);
    }

    // ---------------------------------------------------------------- refunds and withdrawals

    /// @inheritdoc IBatchSettlement
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.receiver && msg.sender != config.receiverAuthorizer) {
            revert NotReceiverOrAuthorizer();
        }
        _refund(config, _channelId(config), amount);
    }

    /// @inheritdoc IBatchSettlement
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external nonReentrant {
        bytes32 channelId = _channelId(config);
        uint256 expected = refundNonce[channelId];
        if (nonce != expected) revert InvalidRefundNonce(expected, nonce);
        bytes32 digest = getRefundDigest(channelId, nonce, amount);
        if (!SignatureChecker.isValidSignatureNowCalldata(
                config.receiverAuthorizer, digest, receiverAuthorizerSignature
            )) {
            revert InvalidAuthorizerSignature();
        }
        _refund(config, channelId, amount);
    }

    /// @inheritdoc IBatchSettlement
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        _onlyPayerSide(config);
        if (amount == 0) revert ZeroAmount();
        bytes32 channelId = _channelId(config);
        PendingWithdrawal storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) revert WithdrawAlreadyPending(channelId);
        ChannelState storage channel = channels[channelId];
        uint128 available = channel.balance - channel.totalClaimed;
        if (amount > available) revert WithdrawAmountTooLarge(amount, available);
        uint40 now40 = uint40(block.timestamp);
        pending.amount = amount;
        pending.initiatedAt = now40;
        emit WithdrawInitiated(channelId, amount, now40 + config.withdrawDelay);
    }

    /// @inheritdoc IBatchSettlement
    /// @dev Pays at most what is still unclaimed: vouchers claimed during the delay win.
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant {
        _onlyPayerSide(config);
        bytes32 channelId = _channelId(config);
        PendingWithdrawal memory pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt == 0) revert NoPendingWithdrawal(channelId);
        uint256 readyAt = uint256(pending.initiatedAt) + config.withdrawDelay;
        // Minutes-to-days delays: a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < readyAt) revert WithdrawNotReady(channelId, readyAt);
        delete pendingWithdrawals[channelId];

        ChannelState storage channel = channels[channelId];
        uint128 available = channel.balance - channel.totalClaimed;
        uint128 amount = pending.amount < available ? pending.amount : available;
        if (amount > 0) {
            channel.balance -= amount;
            IERC20(config.token).safeTransfer(config.payer, amount);
        }
        emit WithdrawFinalized(channelId, amount);
        _emitClosedIfEmpty(channelId, config, channel);
    }

    // ---------------------------------------------------------------- digests

    /// @inheritdoc IBatchSettlement
    function getChannelId(ChannelConfig calldata config) external view returns (bytes32) {
        return _channelId(config);
    }

    /// @inheritdoc IBatchSettlement
    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    /// @inheritdoc IBatchSettlement
    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @inheritdoc IBatchSettlement
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) external view returns (bytes32 digest) {
        (digest,) = _claimBatchDigest(voucherClaims);
    }

    /// @notice The EIP-712 domain separator in force at this address and chain.
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internals

    function _claim(VoucherClaim calldata voucherClaim, bytes32 channelId) private {
        Voucher calldata voucher = voucherClaim.voucher;
        uint128 newTotal = voucherClaim.totalClaimed;
        if (newTotal > voucher.maxClaimableAmount) {
            revert ClaimExceedsVoucher(channelId, newTotal, voucher.maxClaimableAmount);
        }
        ChannelState storage channel = channels[channelId];
        uint128 alreadyClaimed = channel.totalClaimed;
        if (newTotal < alreadyClaimed) revert ClaimBelowTotalClaimed(channelId, newTotal, alreadyClaimed);
        if (newTotal == alreadyClaimed) return; // an already-claimed voucher changes nothing
        if (newTotal > channel.balance) revert ClaimExceedsBalance(channelId, newTotal, channel.balance);
        _verifyVoucher(voucher, channelId, voucherClaim.signature);

        channel.totalClaimed = newTotal;
        uint128 amount = newTotal - alreadyClaimed;
        receivers[voucher.channel.receiver][voucher.channel.token].totalClaimed += amount;
        emit Claimed(channelId, msg.sender, amount, newTotal);
    }

    /// @dev EOA payer authorizer: plain ECDSA (low-s enforced by OpenZeppelin). Zero authorizer:
    /// the payer itself, which may be an EIP-1271 smart wallet.
    function _verifyVoucher(Voucher calldata voucher, bytes32 channelId, bytes calldata signature) private view {
        bytes32 digest = getVoucherDigest(channelId, voucher.maxClaimableAmount);
        address authorizer = voucher.channel.payerAuthorizer;
        bool valid;
        if (authorizer != address(0)) {
            // The third value only details an error we reject anyway.
            // slither-disable-next-line unused-return
            (address signer, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(digest, signature);
            valid = error == ECDSA.RecoverError.NoError && signer == authorizer;
        } else {
            valid = SignatureChecker.isValidSignatureNowCalldata(voucher.channel.payer, digest, signature);
        }
        if (!valid) revert InvalidVoucherSignature(channelId);
    }

    function _refund(ChannelConfig calldata config, bytes32 channelId, uint128 amount) private {
        if (amount == 0) revert ZeroAmount();
        // The nonce advances first, even if nothing moves: any pre-signed refund is now void.
        uint256 nonce = refundNonce[channelId]++;
        ChannelState storage channel = channels[channelId];
        uint128 available = channel.balance - channel.totalClaimed;
        uint128 refunded = amount < available ? amount : available;
        if (refunded == 0) return;
        channel.balance -= refunded;

        PendingWithdrawal storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) {
            if (refunded >= pending.amount) {
                delete pendingWithdrawals[channelId];
                emit WithdrawReduced(channelId, 0);
            } else {
                pending.amount -= refunded;
                emit WithdrawReduced(channelId, pending.amount);
            }
        }
        IERC20(config.token).safeTransfer(config.payer, refunded);
        emit Refunded(channelId, msg.sender, refunded, nonce);
        _emitClosedIfEmpty(channelId, config, channel);
    }

    function _claimBatchDigest(VoucherClaim[] calldata voucherClaims)
        private
        view
        returns (bytes32 digest, bytes32[] memory channelIds)
    {
        uint256 count = voucherClaims.length;
        if (count == 0) revert EmptyClaims();
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        channelIds = new bytes32[](count);
        bytes32[] memory entryHashes = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            VoucherClaim calldata row = voucherClaims[i];
            if (row.voucher.channel.receiverAuthorizer != authorizer) revert MixedReceiverAuthorizers();
            channelIds[i] = _channelId(row.voucher.channel);
            entryHashes[i] = keccak256(
                abi.encode(CLAIM_ENTRY_TYPEHASH, channelIds[i], row.voucher.maxClaimableAmount, row.totalClaimed)
            );
        }
        digest = _hashTypedDataV4(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entryHashes)))));
    }

    function _channelId(ChannelConfig calldata config) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CHANNEL_CONFIG_TYPEHASH, config)));
    }

    function _validateConfig(ChannelConfig calldata config) private pure {
        if (
            config.payer == address(0) || config.receiver == address(0) || config.receiverAuthorizer == address(0)
                || config.token == address(0)
        ) revert InvalidChannelConfig();
        if (config.withdrawDelay < MIN_WITHDRAW_DELAY || config.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert WithdrawDelayOutOfRange(config.withdrawDelay);
        }
    }

    function _onlyPayerSide(ChannelConfig calldata config) private view {
        if (
            msg.sender != config.payer && (config.payerAuthorizer == address(0) || msg.sender != config.payerAuthorizer)
        ) {
            revert NotPayerOrAuthorizer();
        }
    }

    function _emitClosedIfEmpty(bytes32 channelId, ChannelConfig calldata config, ChannelState storage channel)
        private
    {
        if (channel.balance == 0 && channel.totalClaimed == 0) emit ChannelClosed(channelId, config);
    }
}
