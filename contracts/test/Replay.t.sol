// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {BatchSettlement} from "../src/BatchSettlement.sol";
import {IBatchSettlement} from "../src/interfaces/IBatchSettlement.sol";
import {ChannelTestBase} from "./utils/ChannelTestBase.sol";

/// @notice Old or forged proofs on chain: every replay across channels, chains, contracts and
/// signature types is rejected, as are lower totals and malleated signatures.
contract ReplayTest is ChannelTestBase {
    IBatchSettlement.ChannelConfig internal cfgA;
    IBatchSettlement.ChannelConfig internal cfgB;
    bytes32 internal idA;
    bytes32 internal idB;

    function setUp() public override {
        super.setUp();
        cfgA = config(bytes32(uint256(0xA)));
        cfgB = config(bytes32(uint256(0xB)));
        idA = depositDirect(cfgA, 10e6);
        idB = depositDirect(cfgB, 10e6);
    }

    function claimExpectingRevert(IBatchSettlement.VoucherClaim memory row, bytes memory revertData) internal {
        IBatchSettlement.VoucherClaim[] memory rows = one(row);
        vm.prank(receiver);
        vm.expectRevert(revertData);
        settlement.claim(rows);
    }

    function withSignature(IBatchSettlement.ChannelConfig memory cfg, uint128 amount, bytes memory signature)
        internal
        pure
        returns (IBatchSettlement.VoucherClaim memory)
    {
        return IBatchSettlement.VoucherClaim({
            voucher: IBatchSettlement.Voucher({channel: cfg, maxClaimableAmount: amount}),
            signature: signature,
            totalClaimed: amount
        });
    }

    function test_voucher_of_one_channel_is_rejected_on_another() public {
        bytes memory forA = signVoucher(PAYER_AUTHORIZER_KEY, idA, 5e6);
        claimExpectingRevert(
            withSignature(cfgB, 5e6, forA),
            abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, idB)
        );
    }

    function test_voucher_signed_for_another_chain_is_rejected() public {
        bytes memory onThisChain = signVoucher(PAYER_AUTHORIZER_KEY, idA, 5e6);
        vm.chainId(block.chainid + 1);
        bytes32 idOnOtherChain = depositDirect(cfgA, 10e6); // same config, other chain: other id
        assertTrue(idOnOtherChain != idA, "channel id bound to the chain id");
        claimExpectingRevert(
            withSignature(cfgA, 5e6, onThisChain),
            abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, idOnOtherChain)
        );
    }

    function test_voucher_for_another_contract_is_rejected() public {
        BatchSettlement second = new BatchSettlement();
        vm.prank(payer);
        token.approve(address(second), type(uint256).max);
        vm.prank(payer);
        second.deposit(cfgA, 10e6, address(0), "");
        bytes32 idInSecond = second.getChannelId(cfgA);
        assertTrue(idInSecond != idA, "channel id bound to the contract");
        bytes memory forFirst = signVoucher(PAYER_AUTHORIZER_KEY, idA, 5e6);
        IBatchSettlement.VoucherClaim[] memory rows = one(withSignature(cfgA, 5e6, forFirst));
        vm.prank(receiver);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, idInSecond));
        second.claim(rows);
    }

    function test_older_lower_voucher_cannot_lower_the_claim() public {
        IBatchSettlement.VoucherClaim memory older = voucherClaim(cfgA, 3e6, 3e6);
        claimAsReceiver(cfgA, 6e6);
        claimExpectingRevert(
            older, abi.encodeWithSelector(IBatchSettlement.ClaimBelowTotalClaimed.selector, idA, 3e6, 6e6)
        );
        (, uint128 claimed) = settlement.channels(idA);
        assertEq(claimed, 6e6, "claim unchanged");
    }

    function test_high_s_twin_is_rejected() public {
        bytes memory lowS = signVoucher(PAYER_AUTHORIZER_KEY, idA, 5e6);
        claimExpectingRevert(
            withSignature(cfgA, 5e6, highSTwin(lowS)),
            abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, idA)
        );
    }

    function test_malleated_and_short_signatures_are_rejected() public {
        bytes memory good = signVoucher(PAYER_AUTHORIZER_KEY, idA, 5e6);
        bytes memory flippedV = abi.encodePacked(good);
        flippedV[64] = flippedV[64] == bytes1(uint8(27)) ? bytes1(uint8(28)) : bytes1(uint8(27));
        bytes memory invalidError = abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, idA);
        claimExpectingRevert(withSignature(cfgA, 5e6, flippedV), invalidError);

        bytes memory truncated = new bytes(64); // an EIP-2098 compact form is not accepted
        for (uint256 i = 0; i < 64; ++i) {
            truncated[i] = good[i];
        }
        claimExpectingRevert(withSignature(cfgA, 5e6, truncated), invalidError);
        claimExpectingRevert(withSignature(cfgA, 5e6, ""), invalidError);
    }

    function test_a_voucher_signature_is_not_a_claim_or_refund_authorization() public {
        // Same key on both sides, so only the EIP-712 type separates the messages.
        IBatchSettlement.ChannelConfig memory cfg = config(bytes32(uint256(0xC)));
        cfg.payerAuthorizer = receiverAuthorizer;
        bytes32 id = depositDirect(cfg, 10e6);
        bytes memory voucherSig = signVoucher(RECEIVER_AUTHORIZER_KEY, id, 5e6);
        IBatchSettlement.VoucherClaim[] memory rows = one(withSignature(cfg, 5e6, voucherSig));

        vm.expectRevert(IBatchSettlement.InvalidAuthorizerSignature.selector);
        settlement.claimWithSignature(rows, voucherSig);
        vm.expectRevert(IBatchSettlement.InvalidAuthorizerSignature.selector);
        settlement.refundWithSignature(cfg, 5e6, 0, voucherSig);

        bytes memory refundSig = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getRefundDigest(id, 0, 5e6));
        vm.prank(receiver);
        vm.expectRevert(abi.encodeWithSelector(IBatchSettlement.InvalidVoucherSignature.selector, id));
        settlement.claim(one(withSignature(cfg, 5e6, refundSig)));
    }

    function test_refund_authorization_is_bound_to_its_channel() public {
        bytes memory forA = signDigest(RECEIVER_AUTHORIZER_KEY, settlement.getRefundDigest(idA, 0, 1e6));
        vm.expectRevert(IBatchSettlement.InvalidAuthorizerSignature.selector);
        settlement.refundWithSignature(cfgB, 1e6, 0, forA);
        settlement.refundWithSignature(cfgA, 1e6, 0, forA);
    }

    function test_every_old_new_voucher_pair_pays_at_most_the_newest() public {
        // Raiden's matrix, in small: the payer signed 1..5 (millions); whatever order the
        // receiver submits them in, the final claim equals the newest voucher, never more.
        uint128[5] memory amounts = [uint128(1e6), 2e6, 3e6, 4e6, 5e6];
        for (uint256 first = 0; first < 5; ++first) {
            for (uint256 second = 0; second < 5; ++second) {
                IBatchSettlement.ChannelConfig memory cfg = config(keccak256(abi.encode(first, second)));
                bytes32 id = depositDirect(cfg, 10e6);
                IBatchSettlement.VoucherClaim[] memory a = one(voucherClaim(cfg, amounts[first], amounts[first]));
                IBatchSettlement.VoucherClaim[] memory b = one(voucherClaim(cfg, amounts[second], amounts[second]));
                vm.prank(receiver);
                settlement.claim(a);
                if (amounts[second] < amounts[first]) {
                    vm.expectRevert();
                }
                vm.prank(receiver);
                settlement.claim(b);
                (, uint128 claimed) = settlement.channels(id);
                uint128 newest = amounts[first] > amounts[second] ? amounts[first] : amounts[second];
                assertEq(claimed, newest, "claim equals the newest voucher");
            }
        }
    }
}
