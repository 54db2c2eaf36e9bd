// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";

import {Registry} from "../../contracts/Registry.sol";
import {ResolverFactory} from "../../contracts/ResolverFactory.sol";
import {IResolver} from "../../contracts/interfaces/IResolver.sol";

/// @dev Random actors commit, register, offer, accept, re-point a few labels and move resolvers between each
/// other; the ghosts only follow the calls that the real owner (or pending owner) made.
contract RegistryHandler is Test {
    Registry internal registry;
    address[] public actors;
    /// @dev No resolver, an account with no code, and one Resolver clone per actor (ownership moves around).
    address[] public resolvers;
    string[3] internal labels = ["alice", "bob", "carol"];
    mapping(bytes32 node => address) public ghostOwner;
    mapping(bytes32 node => address) public ghostPending;
    mapping(bytes32 node => address) public ghostResolver;
    mapping(address resolver => address) public ghostResolverOwner;
    /// @dev The timestamp of each commitment the handler made: a live one never moves.
    mapping(bytes32 commitment => uint256) public ghostCommittedAt;
    bytes32[] public commitments;
    /// @dev Checks that failed inside a handler call. A failed assertion there would only count as a revert
    /// (`fail_on_revert = false`), so they are counted and an invariant asserts none.
    uint256 public violations;

    constructor(Registry registry_, ResolverFactory factory) {
        registry = registry_;
        resolvers.push(address(0));
        resolvers.push(makeAddr("codeless"));
        for (uint256 i; i < 4; ++i) {
            address actor = makeAddr(string.concat("actor", vm.toString(i)));
            actors.push(actor);
            vm.prank(actor);
            address r = factory.deploy(bytes32(0), actor, "", hex"30");
            resolvers.push(r);
            ghostResolverOwner[r] = actor;
        }
    }

    function _check(bool ok, string memory why) internal {
        if (!ok) {
            ++violations;
            emit log(why);
        }
    }

    function _caller(uint256 a, address rightful, bool honest) internal view returns (address) {
        return honest && rightful != address(0) ? rightful : actors[a % 4];
    }

    function node(uint256 i) public view returns (bytes32) {
        return keccak256(bytes(labels[i % 3]));
    }

    function commitmentCount() external view returns (uint256) {
        return commitments.length;
    }

    function commitAndRegister(uint256 a, uint256 l, uint256 r, bool wait) external {
        address actor = actors[a % 4];
        string memory label = labels[l % 3];
        address resolver = resolvers[r % resolvers.length];
        bytes32 c = registry.makeCommitment(label, actor, resolver, bytes32(a));
        vm.prank(actor);
        try registry.commit(c) {
            if (ghostCommittedAt[c] == 0) commitments.push(c);
            ghostCommittedAt[c] = block.timestamp;
        } catch {
            _check(ghostCommittedAt[c] + registry.maxCommitmentAge() >= block.timestamp, "refused");
        }
        if (wait) vm.warp(block.timestamp + registry.minCommitmentAge());
        vm.prank(actor);
        try registry.register(label, actor, resolver, bytes32(a)) returns (bytes32 n) {
            _check(ghostOwner[n] == address(0), "registered a taken label");
            _check(block.timestamp >= ghostCommittedAt[c] + registry.minCommitmentAge(), "unaged commitment");
            _check(block.timestamp <= ghostCommittedAt[c] + registry.maxCommitmentAge(), "expired");
            (ghostOwner[n], ghostResolver[n]) = (actor, resolver);
            ghostCommittedAt[c] = 0;
        } catch {}
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + bound(dt, 0, 2 days));
    }

    /// @dev `honest`: the label's owner calls (when it has one); otherwise a random actor.
    function transfer(uint256 a, uint256 l, uint256 to, bool cancel, bool honest) external {
        bytes32 n = node(l);
        address actor = _caller(a, ghostOwner[n], honest);
        address newOwner = cancel ? address(0) : actors[to % 4];
        vm.prank(actor);
        try registry.transfer(n, newOwner) {
            _check(ghostOwner[n] == actor, "a non-owner offered");
            ghostPending[n] = newOwner;
        } catch {}
    }

    /// @dev `honest`: the pending owner calls (when there is one); otherwise a random actor.
    function acceptTransfer(uint256 a, uint256 l, bool honest) external {
        bytes32 n = node(l);
        address actor = _caller(a, ghostPending[n], honest);
        vm.prank(actor);
        try registry.acceptTransfer(n) {
            _check(ghostPending[n] == actor, "a non-pending owner accepted");
            (ghostOwner[n], ghostPending[n]) = (actor, address(0));
            if (ghostResolverOwner[ghostResolver[n]] != actor) ghostResolver[n] = address(0);
        } catch {}
    }

    function setResolver(uint256 a, uint256 l, uint256 r, bool honest) external {
        bytes32 n = node(l);
        address actor = _caller(a, ghostOwner[n], honest);
        address resolver = resolvers[r % resolvers.length];
        vm.prank(actor);
        try registry.setResolver(n, resolver) {
            _check(ghostOwner[n] == actor, "a non-owner re-pointed");
            ghostResolver[n] = resolver;
        } catch {}
    }

    /// @dev Moves a resolver clone to another actor, both steps at once. `sale`: the resolver of label `l`
    /// (when it is a clone) goes to the label's pending owner, as in a sale that includes the resolver.
    function moveResolver(uint256 r, uint256 to, uint256 l, bool sale) external {
        address resolver = resolvers[2 + r % 4];
        address newOwner = actors[to % 4];
        bytes32 n = node(l);
        if (sale && ghostPending[n] != address(0) && ghostResolverOwner[ghostResolver[n]] != address(0)) {
            (resolver, newOwner) = (ghostResolver[n], ghostPending[n]);
        }
        vm.prank(ghostResolverOwner[resolver]);
        IResolver(resolver).transferOwnership(newOwner);
        vm.prank(newOwner);
        IResolver(resolver).acceptOwnership();
        ghostResolverOwner[resolver] = newOwner;
    }
}

contract RegistryInvariantTest is Test {
    Registry internal registry;
    RegistryHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        registry = new Registry(60, 1 days);
        handler = new RegistryHandler(registry, new ResolverFactory());
        targetContract(address(handler));
    }

    /// @dev Ownership, pending owners and resolvers change only through their owner (and a transfer only
    /// keeps a resolver its new owner owns).
    function invariant_ownershipFollowsOwners() public view {
        for (uint256 i; i < 3; ++i) {
            bytes32 n = handler.node(i);
            assertEq(registry.owner(n), handler.ghostOwner(n));
            assertEq(registry.pendingOwner(n), handler.ghostPending(n));
            assertEq(registry.resolver(n), handler.ghostResolver(n));
        }
    }

    /// @dev Every check the handler made on a call's outcome held.
    function invariant_handlerChecksHeld() public view {
        assertEq(handler.violations(), 0);
    }

    /// @dev A commitment's timestamp is the one its last successful `commit` set (or zero once revealed).
    function invariant_commitmentsFollowCommits() public view {
        for (uint256 i; i < handler.commitmentCount(); ++i) {
            bytes32 c = handler.commitments(i);
            assertEq(registry.commitments(c), handler.ghostCommittedAt(c));
        }
    }
}
