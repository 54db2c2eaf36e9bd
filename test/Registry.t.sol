// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";

import {Registry} from "../contracts/Registry.sol";
import {IRegistry} from "../contracts/interfaces/IRegistry.sol";

contract RegistryTest is Test {
    uint256 internal constant MIN_AGE = 60;
    uint256 internal constant MAX_AGE = 1 days;

    Registry internal registry;
    address internal alice = makeAddr("alice");
    address internal mallory = makeAddr("mallory");
    address internal resolverA = makeAddr("resolverA");
    address internal resolverB = makeAddr("resolverB");
    bytes32 internal constant SECRET = keccak256("secret");

    function setUp() public {
        vm.warp(1_700_000_000);
        registry = new Registry(MIN_AGE, MAX_AGE);
    }

    function _register(string memory label, address owner, address resolver) internal returns (bytes32 node) {
        bytes32 c = registry.makeCommitment(label, owner, resolver, SECRET);
        vm.prank(owner);
        registry.commit(c);
        vm.warp(block.timestamp + MIN_AGE);
        vm.prank(owner);
        node = registry.register(label, owner, resolver, SECRET);
    }

    function test_constructor_ages() public view {
        assertEq(registry.minCommitmentAge(), MIN_AGE);
        assertEq(registry.maxCommitmentAge(), MAX_AGE);
    }

    function test_constructor_revertsOnBadAges() public {
        vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidCommitmentAges.selector, 0, 10));
        new Registry(0, 10);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidCommitmentAges.selector, 10, 10));
        new Registry(10, 10);
    }

    function test_commit_recordsTimestamp() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        vm.expectEmit(address(registry));
        emit IRegistry.Committed(c, block.timestamp);
        registry.commit(c);
        assertEq(registry.commitments(c), block.timestamp);
    }

    function test_register() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        registry.commit(c);
        vm.warp(block.timestamp + MIN_AGE);
        vm.expectEmit(address(registry));
        emit IRegistry.Registered(keccak256("alice"), "alice", alice, resolverA);
        bytes32 node = registry.register("alice", alice, resolverA, SECRET);
        assertEq(node, keccak256("alice"));
        assertEq(registry.owner(node), alice);
        assertEq(registry.resolver(node), resolverA);
        assertEq(registry.commitments(c), 0, "commitment consumed");
    }

    function test_register_revertsWithoutCommitment() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentNotFound.selector, c));
        registry.register("alice", alice, resolverA, SECRET);
    }

    function test_register_revertsWhenTooNew() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        registry.commit(c);
        vm.warp(block.timestamp + MIN_AGE - 1);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentTooNew.selector, c, block.timestamp + 1));
        registry.register("alice", alice, resolverA, SECRET);
    }

    function test_register_revertsWhenExpired() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        registry.commit(c);
        vm.warp(block.timestamp + MAX_AGE + 1);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentExpired.selector, c));
        registry.register("alice", alice, resolverA, SECRET);
    }

    function test_register_revertsWhenTaken() public {
        _register("alice", alice, resolverA);
        bytes32 c = registry.makeCommitment("alice", mallory, resolverB, SECRET);
        registry.commit(c);
        vm.warp(block.timestamp + MIN_AGE);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.LabelTaken.selector, keccak256("alice")));
        registry.register("alice", mallory, resolverB, SECRET);
    }

    function test_register_revertsOnZeroOwner() public {
        vm.expectRevert(IRegistry.ZeroOwner.selector);
        registry.register("alice", address(0), resolverA, SECRET);
    }

    function test_register_revertsOnInvalidLabels() public {
        string[8] memory bad = ["", "Alice", "-alice", "alice-", "al ice", "al.ice", "al_ice",
            "a234567890123456789012345678901234567890123456789012345678901234"];
        for (uint256 i; i < bad.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidLabel.selector, bad[i]));
            registry.register(bad[i], alice, resolverA, SECRET);
        }
    }

    function test_register_acceptsEdgeLabels() public {
        _register("a", alice, resolverA);
        _register("0-9", alice, resolverA);
        _register("a23456789012345678901234567890123456789012345678901234567890123", alice, resolverA);
    }

    /// @dev Hostile: mallory sees alice's `register` in the mempool and tries to take the label first.
    function test_frontRun_fromMempoolFails() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        vm.prank(alice);
        registry.commit(c);
        vm.warp(block.timestamp + MIN_AGE);

        // Replaying alice's reveal with mallory as owner matches no commitment.
        vm.prank(mallory);
        bytes32 forged = registry.makeCommitment("alice", mallory, resolverB, SECRET);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentNotFound.selector, forged));
        registry.register("alice", mallory, resolverB, SECRET);

        // Committing now and revealing in the same block is too new.
        vm.prank(mallory);
        registry.commit(forged);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentTooNew.selector, forged, block.timestamp + MIN_AGE));
        registry.register("alice", mallory, resolverB, SECRET);

        // Submitting alice's own reveal verbatim only registers it to alice.
        vm.prank(mallory);
        registry.register("alice", alice, resolverA, SECRET);
        assertEq(registry.owner(keccak256("alice")), alice);
        assertEq(registry.resolver(keccak256("alice")), resolverA);
    }

    function test_setResolver() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.expectEmit(address(registry));
        emit IRegistry.ResolverChanged(node, resolverB);
        vm.prank(alice);
        registry.setResolver(node, resolverB);
        assertEq(registry.resolver(node), resolverB);
    }

    function test_setResolver_onlyOwner() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, mallory));
        registry.setResolver(node, resolverB);
    }

    function test_transfer() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.expectEmit(address(registry));
        emit IRegistry.Transferred(node, mallory);
        vm.prank(alice);
        registry.transfer(node, mallory);
        assertEq(registry.owner(node), mallory);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, alice));
        registry.setResolver(node, resolverB);
    }

    function test_transfer_reverts() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, mallory));
        registry.transfer(node, mallory);
        vm.prank(alice);
        vm.expectRevert(IRegistry.ZeroOwner.selector);
        registry.transfer(node, address(0));
    }

    function test_unregisteredNodeIsUnowned() public {
        bytes32 node = keccak256("nobody");
        assertEq(registry.owner(node), address(0));
        assertEq(registry.resolver(node), address(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, alice));
        registry.setResolver(node, resolverA);
    }

    function testFuzz_labelValidity(bytes memory raw) public {
        vm.assume(raw.length < 80);
        string memory label = string(raw);
        bool valid = raw.length >= 1 && raw.length <= 63 && raw[0] != "-" && raw[raw.length - 1] != "-";
        for (uint256 i; i < raw.length && valid; ++i) {
            bytes1 c = raw[i];
            valid = (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-";
        }
        bytes32 c0 = registry.makeCommitment(label, alice, resolverA, SECRET);
        registry.commit(c0);
        vm.warp(block.timestamp + MIN_AGE);
        if (!valid) vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidLabel.selector, label));
        registry.register(label, alice, resolverA, SECRET);
    }
}
