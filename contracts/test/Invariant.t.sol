// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {BatchSettlement} from "../src/BatchSettlement.sol";
import {IBatchSettlement} from "../src/interfaces/IBatchSettlement.sol";
import {TestToken} from "./utils/TestToken.sol";
import {ChannelTestBase} from "./utils/ChannelTestBase.sol";
import {TestBase} from "./utils/Vm.sol";

/// @notice Drives random sequences of deposits, claims, settles, refunds and withdrawals over a
/// few channels, keeping ghost totals of every token movement.
contract ChannelHandler is TestBase {
    uint256 internal constant PAYER_AUTHORIZER_KEY = 0xA11CE2;
    uint256 internal constant CHANNELS = 3;

    BatchSettlement internal immutable settlement;
    TestToken internal immutable token;
    address internal immutable payer;
    address internal immutable receiver;
    IBatchSettlement.ChannelConfig[] internal configs;

    uint256 public deposited;
    uint256 public refunded;
    uint256 public withdrawn;
    uint256 public settled;
    mapping(bytes32 => uint128) public highestSigned;
    mapping(bytes32 => uint128) public lastSeenClaimed;
    bool public claimWentDown;

    constructor(BatchSettlement settlement_, TestToken token_, IBatchSettlement.ChannelConfig[] memory configs_) {
        settlement = settlement_;
        token = token_;
        payer = configs_[0].payer;
        receiver = configs_[0].receiver;
        for (uint256 i = 0; i < configs_.length; ++i) {
            configs.push(configs_[i]);
        }
    }

    function channelCount() external pure returns (uint256) {
        return CHANNELS;
    }

    function channelId(uint256 index) public view returns (bytes32) {
        return settlement.getChannelId(configs[index % CHANNELS]);
    }

    function deposit(uint256 index, uint128 amount) external {
        amount = uint128(bound(amount, 1, 1_000e6));
        token.mint(payer, amount);
        vm.prank(payer);
        settlement.deposit(configs[index % CHANNELS], amount, address(0), "");
        deposited += amount;
        _observe();
    }

    function signAndClaim(uint256 index, uint128 increment, uint128 undercharge) external {
        IBatchSettlement.ChannelConfig memory cfg = configs[index % CHANNELS];
        bytes32 id = settlement.getChannelId(cfg);
        (uint128 balance, uint128 claimed) = settlement.channels(id);
        if (balance == claimed) return;
        uint128 ceiling = claimed + uint128(bound(increment, 1, balance - claimed));
        uint128 total = ceiling - uint128(bound(undercharge, 0, ceiling - claimed));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(PAYER_AUTHORIZER_KEY, settlement.getVoucherDigest(id, ceiling));
        if (ceiling > highestSigned[id]) highestSigned[id] = ceiling;
        IBatchSettlement.VoucherClaim[] memory rows = new IBatchSettlement.VoucherClaim[](1);
        rows[0] = IBatchSettlement.VoucherClaim({
            voucher: IBatchSettlement.Voucher({channel: cfg, maxClaimableAmount: ceiling}),
            signature: abi.encodePacked(r, s, v),
            totalClaimed: total
        });
        vm.prank(receiver);
        settlement.claim(rows);
        _observe();
    }

    function settle() external {
        uint256 before = token.balanceOf(receiver);
        settlement.settle(receiver, address(token));
        settled += token.balanceOf(receiver) - before;
        _observe();
    }

    function refund(uint256 index, uint128 amount) external {
        amount = uint128(bound(amount, 1, 2_000e6));
        uint256 before = token.balanceOf(payer);
        vm.prank(receiver);
        settlement.refund(configs[index % CHANNELS], amount);
        refunded += token.balanceOf(payer) - before;
        _observe();
    }

    function initiateWithdraw(uint256 index, uint128 amount) external {
        IBatchSettlement.ChannelConfig memory cfg = configs[index % CHANNELS];
        (uint128 balance, uint128 claimed) = settlement.channels(settlement.getChannelId(cfg));
        (, uint40 initiatedAt) = settlement.pendingWithdrawals(settlement.getChannelId(cfg));
        if (balance == claimed || initiatedAt != 0) return;
        vm.prank(payer);
        settlement.initiateWithdraw(cfg, uint128(bound(amount, 1, balance - claimed)));
        _observe();
    }

    function finalizeWithdraw(uint256 index, uint256 wait) external {
        IBatchSettlement.ChannelConfig memory cfg = configs[index % CHANNELS];
        (, uint40 initiatedAt) = settlement.pendingWithdrawals(settlement.getChannelId(cfg));
        if (initiatedAt == 0) return;
        vm.warp(block.timestamp + bound(wait, 0, 2 * cfg.withdrawDelay));
        if (block.timestamp < uint256(initiatedAt) + cfg.withdrawDelay) return;
        uint256 before = token.balanceOf(payer);
        vm.prank(payer);
        settlement.finalizeWithdraw(cfg);
        withdrawn += token.balanceOf(payer) - before;
        _observe();
    }

    function _observe() private {
        for (uint256 i = 0; i < CHANNELS; ++i) {
            bytes32 id = settlement.getChannelId(configs[i]);
            (, uint128 claimed) = settlement.channels(id);
            if (claimed < lastSeenClaimed[id]) claimWentDown = true;
            lastSeenClaimed[id] = claimed;
        }
    }
}

/// @notice Escrow conservation and claim monotonicity over random operation sequences.
contract InvariantTest is ChannelTestBase {
    ChannelHandler internal handler;

    function setUp() public override {
        super.setUp();
        IBatchSettlement.ChannelConfig[] memory configs = new IBatchSettlement.ChannelConfig[](3);
        for (uint256 i = 0; i < 3; ++i) {
            configs[i] = config(bytes32(i));
        }
        handler = new ChannelHandler(settlement, token, configs);
        vm.prank(payer);
        token.approve(address(settlement), type(uint256).max);
    }

    /// @dev forge's invariant runner reads this (forge-std's StdInvariant declares the same).
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_escrow_conserves_every_token() public view {
        assertEq(
            token.balanceOf(address(settlement)),
            handler.deposited() - handler.refunded() - handler.withdrawn() - handler.settled(),
            "escrow = deposits - refunds - withdrawals - settled"
        );
    }

    function invariant_channel_balances_and_claims_add_up() public view {
        uint256 balances;
        uint256 claims;
        for (uint256 i = 0; i < handler.channelCount(); ++i) {
            bytes32 id = handler.channelId(i);
            (uint128 balance, uint128 claimed) = settlement.channels(id);
            assertLe(claimed, balance, "claimed <= balance");
            assertLe(claimed, handler.highestSigned(id), "claimed <= newest signed voucher");
            balances += balance;
            claims += claimed;
        }
        assertEq(balances, handler.deposited() - handler.refunded() - handler.withdrawn(), "sum of balances");
        (uint128 receiverClaimed, uint128 receiverSettled) = settlement.receivers(receiver, address(token));
        assertEq(receiverClaimed, claims, "receiver total = sum of channel claims");
        assertEq(receiverSettled, handler.settled(), "settled = paid to receiver");
        assertEq(token.balanceOf(receiver), handler.settled(), "receiver holds exactly the settled amount");
    }

    function invariant_total_claimed_never_decreases() public view {
        assertTrue(!handler.claimWentDown(), "totalClaimed went down");
    }
}
