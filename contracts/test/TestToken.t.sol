// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TestToken} from "./utils/TestToken.sol";
import {TestBase} from "./utils/Vm.sol";

/// @notice The test token's EIP-3009 behaves like USDC's: one use per nonce, time windows, and
/// `receiveWithAuthorization` only by the payee (so a front-runner cannot redirect a deposit).
contract TestTokenTest is TestBase {
    uint256 internal constant OWNER_KEY = 0x0C0FFEE;
    TestToken internal token;
    address internal owner;

    function setUp() public {
        vm.warp(1_800_000_000);
        token = new TestToken();
        owner = vm.addr(OWNER_KEY);
        token.mint(owner, 100e6);
    }

    function authorization(bytes32 typeHash, address to, uint256 value, uint256 validBefore, bytes32 nonce)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        bytes32 structHash = keccak256(abi.encode(typeHash, owner, to, value, uint256(0), validBefore, nonce));
        return vm.sign(OWNER_KEY, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
    }

    function test_transfer_with_authorization_once_per_nonce() public {
        bytes32 typeHash = token.TRANSFER_WITH_AUTHORIZATION_TYPEHASH();
        (uint8 v, bytes32 r, bytes32 s) =
            authorization(typeHash, address(0xB0B), 5e6, block.timestamp + 60, bytes32("n1"));
        token.transferWithAuthorization(owner, address(0xB0B), 5e6, 0, block.timestamp + 60, bytes32("n1"), v, r, s);
        assertEq(token.balanceOf(address(0xB0B)), 5e6, "paid");
        vm.expectRevert(TestToken.AuthorizationAlreadyUsed.selector);
        token.transferWithAuthorization(owner, address(0xB0B), 5e6, 0, block.timestamp + 60, bytes32("n1"), v, r, s);
    }

    function test_authorization_windows_and_signer() public {
        bytes32 typeHash = token.TRANSFER_WITH_AUTHORIZATION_TYPEHASH();
        uint256 validBefore = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = authorization(typeHash, address(0xB0B), 5e6, validBefore, bytes32("n2"));
        vm.expectRevert(TestToken.InvalidAuthorizationSignature.selector);
        token.transferWithAuthorization(owner, address(0xB0B), 6e6, 0, validBefore, bytes32("n2"), v, r, s);
        vm.warp(validBefore);
        vm.expectRevert(TestToken.AuthorizationExpired.selector);
        token.transferWithAuthorization(owner, address(0xB0B), 5e6, 0, validBefore, bytes32("n2"), v, r, s);
    }

    function test_receive_with_authorization_only_by_the_payee() public {
        bytes32 typeHash = token.RECEIVE_WITH_AUTHORIZATION_TYPEHASH();
        uint256 validBefore = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = authorization(typeHash, address(0xC011), 5e6, validBefore, bytes32("n3"));
        vm.expectRevert(TestToken.CallerMustBePayee.selector);
        token.receiveWithAuthorization(owner, address(0xC011), 5e6, 0, validBefore, bytes32("n3"), v, r, s);
        vm.prank(address(0xC011));
        token.receiveWithAuthorization(owner, address(0xC011), 5e6, 0, validBefore, bytes32("n3"), v, r, s);
        assertEq(token.balanceOf(address(0xC011)), 5e6, "received");
    }
}
