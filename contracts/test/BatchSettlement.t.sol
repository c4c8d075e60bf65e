// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IBatchSettlement} from "../src/interfaces/IBatchSettlement.sol";
import {IDepositCollector} from "../src/interfaces/IDepositCollector.sol";
import {TestToken} from "./utils/TestToken.sol";
import {ChannelTestBase} from "./utils/ChannelTestBase.sol";

/// @notice A collector that announces `amount` but forwards less: the settlement must notice.
contract ShortChangingCollector is IDepositCollector {
    function collect(address, address token, uint256 amount, bytes32, bytes calldata) external {
        TestToken(token).mint(msg.sender, amount - 1);
    }
}

/// @notice Unit tests: every function, every revert (asserted by selector).
contract BatchSettlementTest is ChannelTestBase {
    // ------------------------------------------------------------ deposit

    function test_deposit_direct_creates_channel_and_tops_up() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 100e6);
        (uint128 balance, uint128 claimed) = settlement.channels(id);
        assertEq(balance, 100e6, "balance after deposit");
        assertEq(claimed, 0, "nothing claimed");
        depositDirect(cfg, 50e6);
        (balance,) = settlement.channels(id);
        assertEq(balance, 150e6, "balance after top-up");
        assertEq(token.balanceOf(address(settlement)), 150e6, "escrow holds the tokens");
    }

    function test_deposit_by_a_third_party_credits_the_payer_channel() public {
        address owner = address(0x0E1);
        token.mint(owner, 10e6);
        vm.startPrank(owner);
        token.approve(address(settlement), 10e6);
        settlement.deposit(defaultConfig(), 10e6, address(0), "");
        vm.stopPrank();
        (uint128 balance,) = settlement.channels(settlement.getChannelId(defaultConfig()));
        assertEq(balance, 10e6, "owner topped up the device channel");
    }

    function test_deposit_via_erc3009_collector() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = settlement.getChannelId(cfg);
        bytes memory data = collectorData(id, 25e6, 7, block.timestamp + 1 hours);
        vm.prank(address(0xFAC)); // a facilitator relays; the payer pays no gas
        settlement.deposit(cfg, 25e6, address(collector), data);
        (uint128 balance,) = settlement.channels(id);
        assertEq(balance, 25e6, "balance after gasless deposit");
        assertEq(token.balanceOf(address(collector)), 0, "collector keeps nothing");

        vm.expectRevert(TestToken.AuthorizationAlreadyUsed.selector);
        settlement.deposit(cfg, 25e6, address(collector), data);
    }

    function test_revert_collector_authorization_bound_to_its_channel() public {
        bytes32 id = settlement.getChannelId(defaultConfig());
        bytes memory data = collectorData(id, 25e6, 7, block.timestamp + 1 hours);
        vm.expectRevert(TestToken.InvalidAuthorizationSignature.selector);
        settlement.deposit(config(bytes32(uint256(1))), 25e6, address(collector), data);
    }

    function test_revert_collector_only_callable_by_settlement() public {
        bytes32 id = settlement.getChannelId(defaultConfig());
        bytes memory data = collectorData(id, 25e6, 7, block.timestamp + 1 hours);
        vm.expectRevert(IDepositCollector.OnlySettlement.selector);
        collector.collect(payer, address(token), 25e6, id, data);
    }

    function test_revert_deposit_amount_mismatch() public {
        ShortChangingCollector short = new ShortChangingCollector();
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.DepositAmountMismatch.selector, 10, 9));
        settlement.deposit(defaultConfig(), 10, address(short), "");
    }

    function test_revert_deposit_bad_inputs() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        vm.prank(payer);
        vm.expectRevert(IBatchSettlement.ZeroAmount.selector);
        settlement.deposit(cfg, 0, address(0), "");

        cfg.withdrawDelay = 15 minutes - 1;
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.WithdrawDelayOutOfRange.selector, cfg.withdrawDelay));
        settlement.deposit(cfg, 1, address(0), "");
        cfg.withdrawDelay = 30 days + 1;
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.WithdrawDelayOutOfRange.selector, cfg.withdrawDelay));
        settlement.deposit(cfg, 1, address(0), "");

        cfg = defaultConfig();
        cfg.receiverAuthorizer = address(0);
        vm.expectRevert(IBatchSettlement.InvalidChannelConfig.selector);
        settlement.deposit(cfg, 1, address(0), "");
    }

    function test_revert_deposit_balance_overflow() public {
        token.mint(payer, type(uint128).max);
        depositDirect(defaultConfig(), type(uint128).max);
        vm.prank(payer);
        vm.expectRevert(IBatchSettlement.BalanceOverflow.selector);
        settlement.deposit(defaultConfig(), 1, address(0), "");
    }

    // ------------------------------------------------------------ claim

    function test_claim_by_receiver_and_by_authorizer() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 100e6);
        claimAsReceiver(cfg, 10e6);
        IBatchSettlement.VoucherClaim[] memory rows = one(voucherClaim(cfg, 30e6, 25e6)); // charge below the ceiling
        vm.prank(receiverAuthorizer);
        settlement.claim(rows);
        (, uint128 claimed) = settlement.channels(id);
        assertEq(claimed, 25e6, "total claimed");
        (uint128 receiverClaimed, uint128 settled) = settlement.receivers(receiver, address(token));
        assertEq(receiverClaimed, 25e6, "receiver total claimed");
        assertEq(settled, 0, "claiming moves no tokens");
    }

    function test_claim_with_zero_payer_authorizer_checks_the_payer() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        cfg.payerAuthorizer = address(0);
        bytes32 id = depositDirect(cfg, 10e6);
        IBatchSettlement.VoucherClaim memory row = voucherClaim(cfg, 5e6, 5e6);
        row.signature = signVoucher(PAYER_KEY, id, 5e6);
        vm.prank(receiver);
        settlement.claim(one(row));
        (, uint128 claimed) = settlement.channels(id);
        assertEq(claimed, 5e6, "payer-signed voucher claimed");
    }

    function test_claim_of_the_same_total_is_a_no_op() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        depositDirect(cfg, 10e6);
        claimAsReceiver(cfg, 4e6);
        claimAsReceiver(cfg, 4e6);
        (uint128 receiverClaimed,) = settlement.receivers(receiver, address(token));
        assertEq(receiverClaimed, 4e6, "not counted twice");
    }

    function test_revert_claim_rules() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 10e6);

        IBatchSettlement.VoucherClaim[] memory rows = one(voucherClaim(cfg, 1e6, 1e6));
        vm.prank(payer);
        vm.expectRevert(IBatchSettlement.NotReceiverOrAuthorizer.selector);
        settlement.claim(rows);

        // Rows are built before each expectRevert: it applies to the very next call.
        IBatchSettlement.VoucherClaim[] memory overVoucher = one(voucherClaim(cfg, 1e6, 2e6));
        IBatchSettlement.VoucherClaim[] memory overBalance = one(voucherClaim(cfg, 11e6, 11e6));
        IBatchSettlement.VoucherClaim[] memory forged = one(voucherClaim(cfg, 5e6, 5e6));
        forged[0].signature = signVoucher(RECEIVER_KEY, id, 5e6);
        IBatchSettlement.VoucherClaim[] memory valid = one(voucherClaim(cfg, 5e6, 5e6));
        IBatchSettlement.VoucherClaim[] memory lower = one(voucherClaim(cfg, 4e6, 4e6));

        vm.startPrank(receiver);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.ClaimExceedsVoucher.selector, id, 2e6, 1e6));
        settlement.claim(overVoucher);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.ClaimExceedsBalance.selector, id, 11e6, 10e6));
        settlement.claim(overBalance);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, id));
        settlement.claim(forged);
        settlement.claim(valid);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.ClaimBelowTotalClaimed.selector, id, 4e6, 5e6));
        settlement.claim(lower);

        vm.expectRevert(IBatchSettlement.EmptyClaims.selector);
        settlement.claim(new IBatchSettlement.VoucherClaim[](0));
        vm.stopPrank();
    }

    function test_claim_with_signature_batches_channels_and_anyone_relays() public {
        IBatchSettlement.VoucherClaim[] memory rows = new IBatchSettlement.VoucherClaim[](3);
        for (uint256 i = 0; i < 3; ++i) {
            IBatchSettlement.ChannelConfig memory cfg = config(bytes32(i));
            depositDirect(cfg, 10e6);
            rows[i] = voucherClaim(cfg, uint128(i + 1) * 1e6, uint128(i + 1) * 1e6);
        }
        bytes memory authorization = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getClaimBatchDigest(rows));
        vm.prank(address(0x5EED));
        settlement.claimWithSignature(rows, authorization);
        (uint128 receiverClaimed,) = settlement.receivers(receiver, address(token));
        assertEq(receiverClaimed, 6e6, "three channels claimed in one call");
    }

    function test_revert_claim_with_signature_rules() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        depositDirect(cfg, 10e6);
        IBatchSettlement.VoucherClaim[] memory rows = one(voucherClaim(cfg, 1e6, 1e6));

        bytes memory byReceiverKey = signDigest(RECEIVER_KEY, settlement.getClaimBatchDigest(rows));
        vm.expectRevert(IBatchSettlement.InvalidAuthorizerSignature.selector);
        settlement.claimWithSignature(rows, byReceiverKey);

        // The authorization covers the totals: changing a row invalidates it.
        bytes memory authorization = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getClaimBatchDigest(rows));
        rows[0] = voucherClaim(cfg, 2e6, 2e6);
        vm.expectRevert(IBatchSettlement.InvalidAuthorizerSignature.selector);
        settlement.claimWithSignature(rows, authorization);

        IBatchSettlement.VoucherClaim[] memory mixed = new IBatchSettlement.VoucherClaim[](2);
        mixed[0] = voucherClaim(cfg, 1e6, 1e6);
        IBatchSettlement.ChannelConfig memory other = config(bytes32(uint256(9)));
        other.receiverAuthorizer = receiver;
        mixed[1] = voucherClaim(other, 1e6, 1e6);
        vm.expectRevert(IBatchSettlement.MixedReceiverAuthorizers.selector);
        settlement.claimWithSignature(mixed, authorization);

        vm.expectRevert(IBatchSettlement.EmptyClaims.selector);
        settlement.claimWithSignature(new IBatchSettlement.VoucherClaim[](0), authorization);
    }

    // ------------------------------------------------------------ settle

    function test_settle_sweeps_all_claims_once_and_is_permissionless() public {
        depositDirect(config(bytes32(uint256(1))), 10e6);
        depositDirect(config(bytes32(uint256(2))), 10e6);
        claimAsReceiver(config(bytes32(uint256(1))), 3e6);
        claimAsReceiver(config(bytes32(uint256(2))), 4e6);
        vm.prank(address(0xCAFE));
        settlement.settle(receiver, address(token));
        assertEq(token.balanceOf(receiver), 7e6, "one transfer of both claims");
        settlement.settle(receiver, address(token));
        assertEq(token.balanceOf(receiver), 7e6, "second settle is a no-op");
        (uint128 claimed, uint128 settled) = settlement.receivers(receiver, address(token));
        assertEq(claimed, settled, "all claimed funds settled");
    }

    function test_multicall_claims_then_settles() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        depositDirect(cfg, 10e6);
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(settlement.claim, (one(voucherClaim(cfg, 2e6, 2e6))));
        calls[1] = abi.encodeCall(settlement.settle, (receiver, address(token)));
        vm.prank(receiver);
        settlement.multicall(calls);
        assertEq(token.balanceOf(receiver), 2e6, "claimed and settled in one transaction");
    }

    // ------------------------------------------------------------ refund

    function test_refund_partial_full_and_capped() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 10e6);
        claimAsReceiver(cfg, 4e6);
        uint256 before = token.balanceOf(payer);

        vm.startPrank(receiver);
        settlement.refund(cfg, 1e6);
        assertEq(token.balanceOf(payer) - before, 1e6, "partial refund");
        settlement.refund(cfg, 100e6);
        assertEq(token.balanceOf(payer) - before, 6e6, "capped at unclaimed escrow");
        settlement.refund(cfg, 1e6);
        vm.stopPrank();
        assertEq(token.balanceOf(payer) - before, 6e6, "nothing left to refund");
        assertEq(settlement.refundNonce(id), 3, "every refund call advances the nonce");
        (uint128 balance, uint128 claimed) = settlement.channels(id);
        assertEq(balance, claimed, "only claimed funds remain");
    }

    function test_refund_with_signature_and_nonce_rules() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 10e6);
        bytes memory sig0 = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getRefundDigest(id, 0, 2e6));
        settlement.refundWithSignature(cfg, 2e6, 0, sig0);
        assertEq(settlement.refundNonce(id), 1, "nonce advanced");

        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.InvalidRefundNonce.selector, 1, 0));
        settlement.refundWithSignature(cfg, 2e6, 0, sig0);

        bytes memory wrongAmount = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getRefundDigest(id, 1, 1e6));
        vm.expectRevert(IBatchSettlement.InvalidAuthorizerSignature.selector);
        settlement.refundWithSignature(cfg, 2e6, 1, wrongAmount);

        // A direct refund voids a pre-signed one for the old nonce.
        bytes memory sig1 = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getRefundDigest(id, 1, 1e6));
        vm.prank(receiverAuthorizer);
        settlement.refund(cfg, 1e6);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.InvalidRefundNonce.selector, 2, 1));
        settlement.refundWithSignature(cfg, 1e6, 1, sig1);
    }

    function test_revert_refund_rules() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        depositDirect(cfg, 10e6);
        vm.prank(payer);
        vm.expectRevert(IBatchSettlement.NotReceiverOrAuthorizer.selector);
        settlement.refund(cfg, 1e6);
        vm.prank(receiver);
        vm.expectRevert(IBatchSettlement.ZeroAmount.selector);
        settlement.refund(cfg, 0);
    }

    function test_refund_reduces_then_cancels_a_pending_withdrawal() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 10e6);
        vm.prank(payer);
        settlement.initiateWithdraw(cfg, 6e6);
        vm.startPrank(receiver);
        settlement.refund(cfg, 2e6);
        (uint128 pendingAmount,) = settlement.pendingWithdrawals(id);
        assertEq(pendingAmount, 4e6, "reduced by the refund");
        settlement.refund(cfg, 5e6);
        vm.stopPrank();
        (, uint40 initiatedAt) = settlement.pendingWithdrawals(id);
        assertEq(initiatedAt, 0, "cancelled once covered");
    }

    // ------------------------------------------------------------ timed withdrawal

    function test_withdraw_after_delay_pays_only_what_is_unclaimed() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 10e6);
        vm.prank(payerAuthorizer);
        settlement.initiateWithdraw(cfg, 10e6);

        claimAsReceiver(cfg, 3e6); // the receiver claims inside the delay
        vm.warp(block.timestamp + DELAY - 1);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.WithdrawNotReady.selector, id, block.timestamp + 1));
        settlement.finalizeWithdraw(cfg);

        vm.warp(block.timestamp + 1);
        uint256 before = token.balanceOf(payer);
        vm.prank(payer);
        settlement.finalizeWithdraw(cfg);
        assertEq(token.balanceOf(payer) - before, 7e6, "withdrawal capped at unclaimed escrow");
        (uint128 balance, uint128 claimed) = settlement.channels(id);
        assertEq(balance, 3e6, "claimed funds stay for the receiver");
        assertEq(claimed, 3e6, "claim intact");
        settlement.settle(receiver, address(token));
        assertEq(token.balanceOf(receiver), 3e6, "receiver paid");
    }

    function test_revert_withdraw_rules() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 id = depositDirect(cfg, 10e6);
        claimAsReceiver(cfg, 4e6);

        vm.prank(receiver);
        vm.expectRevert(IBatchSettlement.NotPayerOrAuthorizer.selector);
        settlement.initiateWithdraw(cfg, 1e6);

        vm.startPrank(payer);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.NoPendingWithdrawal.selector, id));
        settlement.finalizeWithdraw(cfg);
        vm.expectRevert(IBatchSettlement.ZeroAmount.selector);
        settlement.initiateWithdraw(cfg, 0);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.WithdrawAmountTooLarge.selector, 7e6, 6e6));
        settlement.initiateWithdraw(cfg, 7e6);
        settlement.initiateWithdraw(cfg, 6e6);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.WithdrawAlreadyPending.selector, id));
        settlement.initiateWithdraw(cfg, 1e6);
        vm.stopPrank();
    }

    function test_zero_payer_authorizer_does_not_open_withdrawals_to_address_zero_checks() public {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        cfg.payerAuthorizer = address(0);
        depositDirect(cfg, 1e6);
        vm.prank(address(0xBAD));
        vm.expectRevert(IBatchSettlement.NotPayerOrAuthorizer.selector);
        settlement.initiateWithdraw(cfg, 1e6);
    }

    // ------------------------------------------------------------ ids and digests

    function test_channel_id_is_the_eip712_hash_of_the_config() public view {
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 structHash = keccak256(abi.encode(settlement.CHANNEL_CONFIG_TYPEHASH(), cfg));
        bytes32 expected = keccak256(abi.encodePacked("\x19\x01", settlement.DOMAIN_SEPARATOR(), structHash));
        assertEq(settlement.getChannelId(cfg), expected, "channel id");
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("x402 Batch Settlement"),
                keccak256("1"),
                block.chainid,
                address(settlement)
            )
        );
        assertEq(settlement.DOMAIN_SEPARATOR(), domain, "domain: x402 Batch Settlement v1, chain, contract");
    }

    function test_code_placed_at_another_address_rebuilds_its_domain() public {
        address canonical = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;
        vm.etch(canonical, address(settlement).code);
        IBatchSettlement.ChannelConfig memory cfg = defaultConfig();
        bytes32 here = settlement.getChannelId(cfg);
        bytes32 there = IBatchSettlement(canonical).getChannelId(cfg);
        assertTrue(here != there, "channel ids are bound to the contract address");
    }
}
