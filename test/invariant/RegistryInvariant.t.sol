// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";

import {Registry} from "../../contracts/Registry.sol";

/// @dev Random actors commit, register, transfer and re-point a few labels; the ghost owner only follows the
/// calls that the real owner made.
contract RegistryHandler is Test {
    Registry internal registry;
    address[] public actors;
    string[3] internal labels = ["alice", "bob", "carol"];
    mapping(bytes32 node => address) public ghostOwner;
    mapping(bytes32 node => address) public ghostResolver;

    constructor(Registry registry_) {
        registry = registry_;
        for (uint256 i; i < 4; ++i) actors.push(makeAddr(string.concat("actor", vm.toString(i))));
    }

    function node(uint256 i) public view returns (bytes32) {
        return keccak256(bytes(labels[i % 3]));
    }

    function commitAndRegister(uint256 a, uint256 l, address resolver, bool wait) external {
        address actor = actors[a % 4];
        string memory label = labels[l % 3];
        bytes32 c = registry.makeCommitment(label, actor, resolver, bytes32(a));
        vm.prank(actor);
        registry.commit(c);
        if (wait) vm.warp(block.timestamp + registry.minCommitmentAge());
        vm.prank(actor);
        try registry.register(label, actor, resolver, bytes32(a)) returns (bytes32 n) {
            assertEq(ghostOwner[n], address(0), "registered a taken label");
            assertTrue(wait, "registered without an aged commitment");
            (ghostOwner[n], ghostResolver[n]) = (actor, resolver);
        } catch {}
    }

    function transfer(uint256 a, uint256 l, uint256 to) external {
        bytes32 n = node(l);
        address actor = actors[a % 4];
        vm.prank(actor);
        try registry.transfer(n, actors[to % 4]) {
            assertEq(ghostOwner[n], actor, "a non-owner transferred");
            ghostOwner[n] = actors[to % 4];
        } catch {}
    }

    function setResolver(uint256 a, uint256 l, address resolver) external {
        bytes32 n = node(l);
        address actor = actors[a % 4];
        vm.prank(actor);
        try registry.setResolver(n, resolver) {
            assertEq(ghostOwner[n], actor, "a non-owner re-pointed");
            ghostResolver[n] = resolver;
        } catch {}
    }
}

contract RegistryInvariantTest is Test {
    Registry internal registry;
    RegistryHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        registry = new Registry(60, 1 days);
        handler = new RegistryHandler(registry);
        targetContract(address(handler));
    }

    /// @dev Ownership and resolvers change only through their owner.
    function invariant_ownershipFollowsOwners() public view {
        for (uint256 i; i < 3; ++i) {
            bytes32 n = handler.node(i);
            assertEq(registry.owner(n), handler.ghostOwner(n));
            assertEq(registry.resolver(n), handler.ghostResolver(n));
        }
    }
}
