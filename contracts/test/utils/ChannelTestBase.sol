// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {BatchSettlement} from "../../src/BatchSettlement.sol";
import {ERC3009DepositCollector} from "../../src/ERC3009DepositCollector.sol";
import {IBatchSettlement} from "../../src/interfaces/IBatchSettlement.sol";
import {TestToken} from "./TestToken.sol";
import {TestBase} from "./Vm.sol";

/// @notice Deploys the settlement, the collector and a token, and signs what the parties sign.
abstract contract ChannelTestBase is TestBase {
    uint256 internal constant PAYER_KEY = 0xA11CE;
    uint256 internal constant PAYER_AUTHORIZER_KEY = 0xA11CE2;
    uint256 internal constant RECEIVER_KEY = 0xB0B;
    uint256 internal constant RECEIVER_AUTHORIZER_KEY = 0xB0B2;
    uint40 internal constant DELAY = 1 hours;
    /// secp256k1 group order, to build high-s twins of signatures.
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    BatchSettlement internal settlement;
    ERC3009DepositCollector internal collector;
    TestToken internal token;
    address internal payer;
    address internal payerAuthorizer;
    address internal receiver;
    address internal receiverAuthorizer;

    function setUp() public virtual {
        vm.warp(1_800_000_000);
        settlement = new BatchSettlement();
        collector = new ERC3009DepositCollector(address(settlement));
        token = new TestToken();
        payer = vm.addr(PAYER_KEY);
        payerAuthorizer = vm.addr(PAYER_AUTHORIZER_KEY);
        receiver = vm.addr(RECEIVER_KEY);
        receiverAuthorizer = vm.addr(RECEIVER_AUTHORIZER_KEY);
        token.mint(payer, 1_000_000e6);
        vm.prank(payer);
        token.approve(address(settlement), type(uint256).max);
    }

    function config(bytes32 salt) internal view returns (IBatchSettlement.ChannelConfig memory) {
        return IBatchSettlement.ChannelConfig({
            payer: payer,
            payerAuthorizer: payerAuthorizer,
            receiver: receiver,
            receiverAuthorizer: receiverAuthorizer,
            token: address(token),
            withdrawDelay: DELAY,
            salt: salt
        });
    }

    function defaultConfig() internal view returns (IBatchSettlement.ChannelConfig memory) {
        return config(bytes32(0));
    }

    function depositDirect(IBatchSettlement.ChannelConfig memory cfg, uint128 amount) internal returns (bytes32) {
        vm.prank(payer);
        settlement.deposit(cfg, amount, address(0), "");
        return settlement.getChannelId(cfg);
    }

    function signDigest(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function signVoucher(uint256 key, bytes32 channelId, uint128 maxClaimable) internal view returns (bytes memory) {
        return signDigest(key, settlement.getVoucherDigest(channelId, maxClaimable));
    }

    function voucherClaim(IBatchSettlement.ChannelConfig memory cfg, uint128 maxClaimable, uint128 totalClaimed)
        internal
        view
        returns (IBatchSettlement.VoucherClaim memory)
    {
        bytes32 id = settlement.getChannelId(cfg);
        return IBatchSettlement.VoucherClaim({
            voucher: IBatchSettlement.Voucher({channel: cfg, maxClaimableAmount: maxClaimable}),
            signature: signVoucher(PAYER_AUTHORIZER_KEY, id, maxClaimable),
            totalClaimed: totalClaimed
        });
    }

    function one(IBatchSettlement.VoucherClaim memory row)
        internal
        pure
        returns (IBatchSettlement.VoucherClaim[] memory)
    {
        IBatchSettlement.VoucherClaim[] memory rows = new IBatchSettlement.VoucherClaim[](1);
        rows[0] = row;
        return rows;
    }

    function claimAsReceiver(IBatchSettlement.ChannelConfig memory cfg, uint128 total) internal {
        IBatchSettlement.VoucherClaim[] memory rows = one(voucherClaim(cfg, total, total));
        vm.prank(receiver); // after building the rows: a prank applies to the next call only
        settlement.claim(rows);
    }

    /// @dev An EIP-3009 `receiveWithAuthorization` for the collector, as the x402 client signs it.
    function collectorData(bytes32 channelId, uint128 amount, uint256 salt, uint256 validBefore)
        internal
        view
        returns (bytes memory)
    {
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        bytes32 structHash = keccak256(
            abi.encode(
                token.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(),
                payer,
                address(collector),
                uint256(amount),
                uint256(0),
                validBefore,
                nonce
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        return abi.encode(uint256(0), validBefore, salt, signDigest(PAYER_KEY, digest));
    }

    /// @dev The same signature with s' = n - s and the other v: valid for raw ecrecover, which is
    /// exactly why the contract must reject it.
    function highSTwin(bytes memory signature) internal pure returns (bytes memory) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
        return abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }
}
