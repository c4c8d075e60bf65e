// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The few forge cheatcodes our tests use. forge-std cannot be installed offline (it is
/// fetched from git), so the interface is declared here; the signatures are forge's own.
interface Vm {
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function warp(uint256 timestamp) external;
    function chainId(uint256 newChainId) external;
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function expectRevert(bytes4 selector) external;
    function expectRevert(bytes calldata revertData) external;
    function expectRevert() external;
    function assume(bool condition) external pure;
    function etch(address target, bytes calldata code) external;
    function label(address account, string calldata name) external;
}

/// @notice Base for our forge tests: the cheatcode handle and small assertion helpers.
abstract contract TestBase {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    error AssertionFailed(string what, uint256 left, uint256 right);

    function assertEq(uint256 left, uint256 right, string memory what) internal pure {
        if (left != right) revert AssertionFailed(what, left, right);
    }

    function assertEq(bytes32 left, bytes32 right, string memory what) internal pure {
        if (left != right) revert AssertionFailed(what, uint256(left), uint256(right));
    }

    function assertEq(address left, address right, string memory what) internal pure {
        if (left != right) revert AssertionFailed(what, uint160(left), uint160(right));
    }

    function assertTrue(bool condition, string memory what) internal pure {
        if (!condition) revert AssertionFailed(what, 0, 1);
    }

    function assertLe(uint256 left, uint256 right, string memory what) internal pure {
        if (left > right) revert AssertionFailed(what, left, right);
    }

    /// @dev Maps any fuzzed value into [min, max] without discarding runs.
    function bound(uint256 value, uint256 min, uint256 max) internal pure returns (uint256) {
        if (min >= max) return min;
        return min + (value % (max - min + 1));
    }
}
