// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IBatchSettlement} from "../src/interfaces/IBatchSettlement.sol";
import {ChannelTestBase} from "./utils/ChannelTestBase.sol";

/// @notice Property tests over random amounts and orders.
contract FuzzTest is ChannelTestBase {
    function test_fuzz_claim_respects_voucher_and_balance(uint128 depositAmount, uint128 ceiling, uint128 total)
        public
    {
        depositAmount = uint128(bound(depositAmount, 1, 1_000_000e6));
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, depositAmount);
        IBatchSettlement.VoucherClaim[] memory rows = one(voucherClaim(cfg, ceiling, total));
        bool allowed = total <= ceiling && total <= depositAmount;
        if (!allowed) vm.expectRevert();
        vm.prank(receiver);
        settlement.claim(rows);
        (uint128 balance, uint128 claimed) = settlement.channels(id);
        assertEq(claimed, allowed ? total : 0, "claimed total");
        assertLe(claimed, balance, "claimed never exceeds balance");
    }

    function test_fuzz_refund_returns_at_most_unclaimed_escrow(uint128 depositAmount, uint128 claimed, uint128 ask)
        public
    {
        depositAmount = uint128(bound(depositAmount, 1, 1_000_000e6));
        claimed = uint128(bound(claimed, 0, depositAmount));
        ask = uint128(bound(ask, 1, type(uint128).max));
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, depositAmount);
        if (claimed > 0) claimAsReceiver(cfg, claimed);
        uint256 before = token.balanceOf(payer);
        vm.prank(receiver);
        settlement.refund(cfg, ask);
        uint256 unclaimed = depositAmount - claimed;
        uint256 expected = ask < unclaimed ? ask : unclaimed;
        assertEq(token.balanceOf(payer) - before, expected, "refunded amount");
        (uint128 balance, uint128 total) = settlement.channels(id);
        assertEq(total, claimed, "claims untouched by refunds");
        assertEq(balance, depositAmount - expected, "balance after refund");
    }

    function test_fuzz_withdraw_races_claims_without_losing_a_wei(
        uint128 depositAmount,
        uint128 withdrawAmount,
        uint128 claimedDuringDelay
    ) public {
        depositAmount = uint128(bound(depositAmount, 1, 1_000_000e6));
        withdrawAmount = uint128(bound(withdrawAmount, 1, depositAmount));
        claimedDuringDelay = uint128(bound(claimedDuringDelay, 0, depositAmount));
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        depositDirect(cfg, depositAmount);
        uint256 payerStart = token.balanceOf(payer);
        vm.prank(payer);
        settlement.initiateWithdraw(cfg, withdrawAmount);
        if (claimedDuringDelay > 0) claimAsReceiver(cfg, claimedDuringDelay);
        vm.warp(block.timestamp + DELAY);
        vm.prank(payer);
        settlement.finalizeWithdraw(cfg);
        settlement.settle(receiver, address(token));

        uint256 withdrawn = token.balanceOf(payer) - payerStart;
        uint256 unclaimed = depositAmount - claimedDuringDelay;
        assertEq(withdrawn, withdrawAmount < unclaimed ? withdrawAmount : unclaimed, "withdrawal capped");
        assertEq(token.balanceOf(receiver), claimedDuringDelay, "receiver keeps every claimed wei");
        assertEq(token.balanceOf(address(settlement)) + withdrawn + claimedDuringDelay, depositAmount, "conservation");
    }

    function test_fuzz_channel_ids_differ_by_any_field(bytes32 saltA, bytes32 saltB, uint40 delay) public view {
        vm.assume(saltA != saltB);
        IBatchSettlement.ChannelConfig memory a = config(saltA);
        IBatchSettlement.ChannelConfig memory b = config(saltB);
        assertTrue(settlement.getChannelId(a) != settlement.getChannelId(b), "salt separates channels");
        b = config(saltA);
        b.withdrawDelay = uint40(bound(delay, 15 minutes, 30 days));
        vm.assume(b.withdrawDelay != a.withdrawDelay);
        assertTrue(settlement.getChannelId(a) != settlement.getChannelId(b), "delay separates channels");
    }
}
