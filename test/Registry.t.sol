// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";

import {Registry} from "../contracts/Registry.sol";
import {Resolver} from "../contracts/Resolver.sol";
import {ResolverFactory} from "../contracts/ResolverFactory.sol";
import {IRegistry} from "../contracts/interfaces/IRegistry.sol";
import {IResolver} from "../contracts/interfaces/IResolver.sol";

/// @dev `owner()` reverts.
contract RevertingOwner {
    function owner() external pure returns (address) {
        revert("no");
    }
}

/// @dev `owner()` answers 4 bytes: a `try` would fail to decode them and revert the whole call.
contract ShortOwner {
    fallback() external {
        assembly {
            mstore(0, 0x12345678)
            return(28, 4)
        }
    }
}

/// @dev `owner()` answers `who` with dirty upper bits: not an address.
contract DirtyOwner {
    address internal immutable who;

    constructor(address who_) {
        who = who_;
    }

    fallback() external {
        uint256 word = uint256(uint160(who)) | (uint256(1) << 200);
        assembly {
            mstore(0, word)
            return(0, 32)
        }
    }
}

/// @dev `owner()` answers `who` in the first word of 100 kB (within the registry's gas cap): not one word.
contract BombOwner {
    address internal immutable who;

    constructor(address who_) {
        who = who_;
    }

    fallback() external {
        uint256 word = uint256(uint160(who));
        assembly {
            mstore(0, word)
            return(0, 100000)
        }
    }
}

/// @dev `owner()` burns every unit of gas it gets.
contract GasBurner {
    fallback() external {
        while (true) {}
    }
}

/// @dev Claims `who` owns it while anyone can change its records: what `acceptTransfer` cannot tell apart.
contract LyingOwner {
    address internal immutable who;

    constructor(address who_) {
        who = who_;
    }

    function owner() external view returns (address) {
        return who;
    }
}

contract RegistryTest is Test {
    uint256 internal constant MIN_AGE = 60;
    uint256 internal constant MAX_AGE = 1 days;

    Registry internal registry;
    address internal alice = makeAddr("alice");
    address internal bob = makeAddr("bob");
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

    /// @dev `from` offers `node` to `to`, who accepts.
    function _transfer(bytes32 node, address from, address to) internal {
        vm.prank(from);
        registry.transfer(node, to);
        vm.prank(to);
        registry.acceptTransfer(node);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                       CONSTRUCTOR                                        */
    /* ---------------------------------------------------------------------------------------- */

    function test_constructor_ages() public view {
        assertEq(registry.minCommitmentAge(), MIN_AGE);
        assertEq(registry.maxCommitmentAge(), MAX_AGE);
    }

    function test_constructor_revertsOnBadAges() public {
        vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidCommitmentAges.selector, 0, 10));
        new Registry(0, 10);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidCommitmentAges.selector, 10, 10));
        new Registry(10, 10);
        new Registry(1, 365 days);
    }

    /// @dev Regression: a huge `maxAge` made `committedAt + maxAge` overflow, so that every `register` (and
    /// now every `commit` of a known commitment) panicked: a registry nobody could register in.
    function test_constructor_revertsOnAnOverflowingMaxAge() public {
        vm.expectRevert(
            abi.encodeWithSelector(IRegistry.InvalidCommitmentAges.selector, 60, type(uint256).max)
        );
        new Registry(60, type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidCommitmentAges.selector, 60, 365 days + 1));
        new Registry(60, 365 days + 1);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                      COMMIT-REVEAL                                        */
    /* ---------------------------------------------------------------------------------------- */

    function test_commit_recordsTimestamp() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        vm.expectEmit(address(registry));
        emit IRegistry.Committed(c, block.timestamp);
        registry.commit(c);
        assertEq(registry.commitments(c), block.timestamp);
    }

    /// @dev Hostile: mallory copies alice's commitment from the chain and commits it again just before it has
    /// aged, which used to reset its timestamp, forever, so alice could never register.
    function test_commit_cannotResetAnothersCommitment() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        uint256 t0 = block.timestamp;
        vm.prank(alice);
        registry.commit(c);

        vm.warp(t0 + MIN_AGE - 1);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentExists.selector, c, t0 + MAX_AGE));
        registry.commit(c);
        assertEq(registry.commitments(c), t0, "the timestamp stands");

        vm.warp(t0 + MIN_AGE);
        vm.prank(alice);
        registry.register("alice", alice, resolverA, SECRET);
        assertEq(registry.owner(keccak256("alice")), alice);
    }

    /// @dev A commitment is live through `committedAt + maxAge` (the last second `register` accepts it), and
    /// may be made again one second later.
    function test_commit_againOnlyOnceExpired() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        uint256 t0 = block.timestamp;
        registry.commit(c);

        vm.warp(t0 + MAX_AGE);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentExists.selector, c, t0 + MAX_AGE));
        registry.commit(c);

        vm.warp(t0 + MAX_AGE + 1);
        vm.expectEmit(address(registry));
        emit IRegistry.Committed(c, block.timestamp);
        registry.commit(c);
        assertEq(registry.commitments(c), t0 + MAX_AGE + 1);
    }

    /// @dev An expired commitment stays in storage: `register` refuses it, and committing it again restarts
    /// its age, so the reveal waits `minCommitmentAge` again (the old timestamp must not count).
    function test_register_expiredCommitmentMustBeMadeAgainAndAgeAgain() public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        registry.commit(c);
        vm.warp(block.timestamp + MAX_AGE + 1);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.CommitmentExpired.selector, c));
        registry.register("alice", alice, resolverA, SECRET);
        assertGt(registry.commitments(c), 0, "an expired commitment is still recorded");

        registry.commit(c);
        vm.expectRevert(
            abi.encodeWithSelector(IRegistry.CommitmentTooNew.selector, c, block.timestamp + MIN_AGE)
        );
        registry.register("alice", alice, resolverA, SECRET);
        vm.warp(block.timestamp + MIN_AGE);
        registry.register("alice", alice, resolverA, SECRET);
        assertEq(registry.commitments(c), 0, "consumed");
    }

    /// @dev A revealed commitment is deleted, so it may be made again (its reveal then finds the label
    /// taken).
    function test_commit_againAfterReveal() public {
        _register("alice", alice, resolverA);
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        registry.commit(c);
        vm.warp(block.timestamp + MIN_AGE);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.LabelTaken.selector, keccak256("alice")));
        registry.register("alice", alice, resolverA, SECRET);
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
        assertEq(registry.pendingOwner(node), address(0));
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
        string[8] memory bad = [
            "",
            "Alice",
            "-alice",
            "alice-",
            "al ice",
            "al.ice",
            "al_ice",
            "a234567890123456789012345678901234567890123456789012345678901234"
        ];
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

    /// @dev Hostile: punycode (`xn--`) shows in a browser as another script's look-alike of a real provider's
    /// name; every label with `--` at bytes 3-4 is IDNA-reserved. Refused even with an aged commitment.
    function test_register_refusesReservedLdhLabels() public {
        string[4] memory bad = ["xn--80ak6aa92e", "xn--a", "ab--c", "12--3"];
        for (uint256 i; i < bad.length; ++i) {
            bytes32 c = registry.makeCommitment(bad[i], mallory, resolverB, SECRET);
            registry.commit(c);
        }
        vm.warp(block.timestamp + MIN_AGE);
        for (uint256 i; i < bad.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidLabel.selector, bad[i]));
            registry.register(bad[i], mallory, resolverB, SECRET);
        }
    }

    /// @dev Hostile: `www.khachapuri.xyz` or `api.khachapuri.xyz` registered by a stranger would pass for the
    /// service's own host.
    function test_register_refusesReservedLabels() public {
        string[10] memory reserved =
            ["www", "api", "gateway", "tunnel", "admin", "app", "docs", "mail", "ipfs", "status"];
        for (uint256 i; i < reserved.length; ++i) {
            registry.commit(registry.makeCommitment(reserved[i], mallory, resolverB, SECRET));
        }
        vm.warp(block.timestamp + MIN_AGE);
        for (uint256 i; i < reserved.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IRegistry.ReservedLabel.selector, reserved[i]));
            registry.register(reserved[i], mallory, resolverB, SECRET);
        }
        // The local network's provider label is not reserved.
        _register("dev", alice, resolverA);
    }

    /// @dev The vectors `khachapuri_chain::validate_label` is tested with: the two validators agree.
    function test_labelVectors_sharedWithRust() public {
        string memory json = vm.readFile("test/vectors/labels.json");
        string[] memory valid = vm.parseJsonStringArray(json, ".valid");
        string[] memory invalid = vm.parseJsonStringArray(json, ".invalid");
        string[] memory reserved = vm.parseJsonStringArray(json, ".reserved");
        assertGt(valid.length, 20);
        assertGt(invalid.length, 20);
        assertEq(reserved.length, 10);
        for (uint256 i; i < valid.length; ++i) {
            registry.commit(registry.makeCommitment(valid[i], alice, resolverA, SECRET));
        }
        vm.warp(block.timestamp + MIN_AGE);
        for (uint256 i; i < valid.length; ++i) {
            bytes32 node = registry.register(valid[i], alice, resolverA, SECRET);
            assertEq(registry.owner(node), alice, valid[i]);
        }
        for (uint256 i; i < invalid.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidLabel.selector, invalid[i]));
            registry.register(invalid[i], alice, resolverA, SECRET);
        }
        for (uint256 i; i < reserved.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IRegistry.ReservedLabel.selector, reserved[i]));
            registry.register(reserved[i], alice, resolverA, SECRET);
        }
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
        vm.expectRevert(
            abi.encodeWithSelector(IRegistry.CommitmentTooNew.selector, forged, block.timestamp + MIN_AGE)
        );
        registry.register("alice", mallory, resolverB, SECRET);

        // Submitting alice's own reveal verbatim only registers it to alice.
        vm.prank(mallory);
        registry.register("alice", alice, resolverA, SECRET);
        assertEq(registry.owner(keccak256("alice")), alice);
        assertEq(registry.resolver(keccak256("alice")), resolverA);
    }

    /// @dev A commitment may name a resolver that does not exist yet (`ResolverFactory.predict`): commit,
    /// deploy the resolver while the commitment ages, register.
    function test_commitNamingAPredictedResolver() public {
        ResolverFactory factory = new ResolverFactory();
        bytes32 salt = keccak256("alice's resolver");
        address predicted = factory.predict(alice, salt);
        assertEq(predicted.code.length, 0);

        vm.prank(alice);
        registry.commit(registry.makeCommitment("alice", alice, predicted, SECRET));
        vm.prank(alice);
        address deployed = factory.deploy(salt, alice, "https://alice.example", hex"3082");
        assertEq(deployed, predicted);
        vm.warp(block.timestamp + MIN_AGE);
        vm.prank(alice);
        bytes32 node = registry.register("alice", alice, predicted, SECRET);
        assertEq(registry.resolver(node), deployed);
        assertEq(IResolver(registry.resolver(node)).server(), "https://alice.example");
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        RECORDS                                           */
    /* ---------------------------------------------------------------------------------------- */

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

    /// @dev Two steps: the offer changes nothing but the pending owner; the acceptance moves the label.
    function test_transfer_twoSteps() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.expectEmit(address(registry));
        emit IRegistry.TransferStarted(node, alice, bob);
        vm.prank(alice);
        registry.transfer(node, bob);
        assertEq(registry.owner(node), alice, "still alice's until accepted");
        assertEq(registry.pendingOwner(node), bob);
        vm.prank(alice);
        registry.setResolver(node, resolverB);

        vm.expectEmit(address(registry));
        emit IRegistry.Transferred(node, bob);
        vm.prank(bob);
        registry.acceptTransfer(node);
        assertEq(registry.owner(node), bob);
        assertEq(registry.pendingOwner(node), address(0));

        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, alice));
        registry.setResolver(node, resolverA);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, alice));
        registry.transfer(node, alice);
        vm.stopPrank();
    }

    /// @dev A mistyped address never receives the label: only the named account can accept.
    function test_acceptTransfer_onlyPendingOwner() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.prank(alice);
        registry.transfer(node, bob);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, mallory));
        registry.acceptTransfer(node);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, alice));
        registry.acceptTransfer(node);

        // Accepted once; not again.
        vm.prank(bob);
        registry.acceptTransfer(node);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, bob));
        registry.acceptTransfer(node);
    }

    function test_transfer_toZeroCancels() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.prank(alice);
        registry.transfer(node, bob);
        vm.expectEmit(address(registry));
        emit IRegistry.TransferStarted(node, alice, address(0));
        vm.prank(alice);
        registry.transfer(node, address(0));
        assertEq(registry.pendingOwner(node), address(0));
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, bob));
        registry.acceptTransfer(node);
        assertEq(registry.owner(node), alice);
    }

    function test_transfer_newOfferReplacesThePendingOne() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.prank(alice);
        registry.transfer(node, bob);
        vm.prank(alice);
        registry.transfer(node, mallory);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, bob));
        registry.acceptTransfer(node);
        vm.prank(mallory);
        registry.acceptTransfer(node);
        assertEq(registry.owner(node), mallory);
    }

    function test_transfer_onlyOwner() public {
        bytes32 node = _register("alice", alice, resolverA);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, mallory));
        registry.transfer(node, mallory);
    }

    function test_acceptTransfer_unregisteredNode() public {
        bytes32 node = keccak256("nobody");
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, mallory));
        registry.acceptTransfer(node);
        // Not even the zero address, which every unregistered node's empty pending owner would match.
        vm.prank(address(0));
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotPendingOwner.selector, node, address(0)));
        registry.acceptTransfer(node);
    }

    /// @dev Hostile: alice sells `alice` to bob but keeps her resolver. She still owned it, so she could have
    /// moved bob's traffic, payments and the RSA key his users seal secrets to whenever she liked. Taking the
    /// label clears that resolver: nothing alice does to it afterwards reaches the label.
    function test_acceptTransfer_sellerKeepsNoControl() public {
        ResolverFactory factory = new ResolverFactory();
        vm.prank(alice);
        address aliceResolver = factory.deploy(bytes32(0), alice, "https://alice.example", hex"3082aa");
        bytes32 node = _register("alice", alice, aliceResolver);

        vm.prank(alice);
        registry.transfer(node, bob);
        vm.expectEmit(address(registry));
        emit IRegistry.Transferred(node, bob);
        vm.expectEmit(address(registry));
        emit IRegistry.ResolverChanged(node, address(0));
        vm.prank(bob);
        registry.acceptTransfer(node);
        assertEq(registry.owner(node), bob);
        assertEq(registry.resolver(node), address(0), "the seller's resolver is gone");

        // Alice rewrites her resolver: it no longer is the label's.
        vm.startPrank(alice);
        IResolver(aliceResolver).setServer("https://evil.example");
        IResolver(aliceResolver).setPayee(mallory);
        IResolver(aliceResolver).setRsaKey(hex"3082bb");
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, alice));
        registry.setResolver(node, aliceResolver);
        vm.stopPrank();
        assertEq(registry.resolver(node), address(0));

        // Bob points the label at his own resolver.
        vm.prank(bob);
        address bobResolver = factory.deploy(bytes32(0), bob, "https://bob.example", hex"3082cc");
        vm.prank(bob);
        registry.setResolver(node, bobResolver);
        assertEq(IResolver(registry.resolver(node)).server(), "https://bob.example");
    }

    /// @dev A sale that includes the resolver moves the resolver first: bob owns it when he takes the label,
    /// so it stays, and alice cannot write to it.
    function test_acceptTransfer_keepsAResolverTheBuyerOwns() public {
        ResolverFactory factory = new ResolverFactory();
        vm.prank(alice);
        address r = factory.deploy(bytes32(0), alice, "https://alice.example", hex"3082aa");
        bytes32 node = _register("alice", alice, r);

        vm.prank(alice);
        IResolver(r).transferOwnership(bob);
        vm.prank(bob);
        IResolver(r).acceptOwnership();

        vm.recordLogs();
        _transfer(node, alice, bob);
        assertEq(vm.getRecordedLogs().length, 2, "TransferStarted and Transferred, no ResolverChanged");
        assertEq(registry.resolver(node), r);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, alice));
        IResolver(r).setServer("https://evil.example");
    }

    /// @dev A resolver offered to the buyer but not yet accepted is still the seller's: cleared.
    function test_acceptTransfer_clearsAResolverOnlyPendingForTheBuyer() public {
        ResolverFactory factory = new ResolverFactory();
        vm.prank(alice);
        address r = factory.deploy(bytes32(0), alice, "https://alice.example", hex"3082aa");
        bytes32 node = _register("alice", alice, r);
        vm.prank(alice);
        IResolver(r).transferOwnership(bob);
        _transfer(node, alice, bob);
        assertEq(registry.resolver(node), address(0));
    }

    /// @dev Resolvers that are not Resolvers: no code, a revert, an undecodable or dirty answer, a gas sink,
    /// 100 kB of return data. Each counts as "not owned" (cleared) and none makes `acceptTransfer` revert.
    function test_acceptTransfer_oddResolversAreCleared() public {
        address[6] memory odd = [
            resolverA,
            address(new RevertingOwner()),
            address(new ShortOwner()),
            address(new DirtyOwner(bob)),
            address(new GasBurner()),
            address(new BombOwner(bob))
        ];
        for (uint256 i; i < odd.length; ++i) {
            string memory label = string.concat("label", vm.toString(i));
            bytes32 node = _register(label, alice, odd[i]);
            vm.prank(alice);
            registry.transfer(node, bob);
            uint256 gasBefore = gasleft();
            vm.prank(bob);
            registry.acceptTransfer(node);
            assertLt(gasBefore - gasleft(), 200_000, "bounded gas");
            assertEq(registry.resolver(node), address(0), label);
            assertEq(registry.owner(node), bob, label);
        }
    }

    /// @dev The check trusts `owner()`: a contract that claims the buyer owns it is kept. Documented in
    /// IRegistry; a buyer who did not vet the resolver sets its own.
    function test_acceptTransfer_trustsTheResolversOwnerAnswer() public {
        address liar = address(new LyingOwner(bob));
        bytes32 node = _register("alice", alice, liar);
        _transfer(node, alice, bob);
        assertEq(registry.resolver(node), liar);
        vm.prank(bob);
        registry.setResolver(node, address(0));
        assertEq(registry.resolver(node), address(0));
    }

    function test_acceptTransfer_zeroResolverStaysZeroWithoutEvent() public {
        bytes32 node = _register("alice", alice, address(0));
        vm.prank(alice);
        registry.transfer(node, bob);
        vm.recordLogs();
        vm.prank(bob);
        registry.acceptTransfer(node);
        assertEq(vm.getRecordedLogs().length, 1, "Transferred only");
    }

    function test_unregisteredNodeIsUnowned() public {
        bytes32 node = keccak256("nobody");
        assertEq(registry.owner(node), address(0));
        assertEq(registry.resolver(node), address(0));
        assertEq(registry.pendingOwner(node), address(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IRegistry.NotLabelOwner.selector, node, alice));
        registry.setResolver(node, resolverA);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                          FUZZ                                            */
    /* ---------------------------------------------------------------------------------------- */

    function testFuzz_labelValidity(bytes memory raw) public {
        vm.assume(raw.length < 80);
        string memory label = string(raw);
        bool valid = raw.length >= 1 && raw.length <= 63 && raw[0] != "-" && raw[raw.length - 1] != "-"
            && !(raw.length >= 4 && raw[2] == "-" && raw[3] == "-");
        for (uint256 i; i < raw.length && valid; ++i) {
            bytes1 c = raw[i];
            valid = (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-";
        }
        bytes32 h = keccak256(raw);
        bool reserved = h == keccak256("www") || h == keccak256("api") || h == keccak256("gateway")
            || h == keccak256("tunnel") || h == keccak256("admin") || h == keccak256("app")
            || h == keccak256("docs") || h == keccak256("mail") || h == keccak256("ipfs")
            || h == keccak256("status");
        bytes32 c0 = registry.makeCommitment(label, alice, resolverA, SECRET);
        registry.commit(c0);
        vm.warp(block.timestamp + MIN_AGE);
        if (!valid) vm.expectRevert(abi.encodeWithSelector(IRegistry.InvalidLabel.selector, label));
        else if (reserved) vm.expectRevert(abi.encodeWithSelector(IRegistry.ReservedLabel.selector, label));
        registry.register(label, alice, resolverA, SECRET);
    }

    /// @dev Labels built from the characters that matter (`-` at every place, the reserved words' letters)
    /// hit the rules far more often than random bytes.
    function testFuzz_labelValidity_dense(uint8 len, uint256 seed) public {
        bytes memory alphabet = "-wxnapitgu-";
        bytes memory raw = new bytes(bound(len, 1, 8));
        for (uint256 i; i < raw.length; ++i) {
            raw[i] = alphabet[uint256(keccak256(abi.encode(seed, i))) % alphabet.length];
        }
        testFuzz_labelValidity(raw);
    }

    /// @dev Whoever commits, a live commitment's timestamp never moves.
    function testFuzz_commit_liveTimestampNeverMoves(address who, uint256 dt) public {
        bytes32 c = registry.makeCommitment("alice", alice, resolverA, SECRET);
        uint256 t0 = block.timestamp;
        registry.commit(c);
        dt = bound(dt, 0, 2 * MAX_AGE);
        vm.warp(t0 + dt);
        vm.prank(who);
        try registry.commit(c) {
            assertGt(dt, MAX_AGE, "re-committed while live");
            assertEq(registry.commitments(c), t0 + dt);
        } catch {
            assertLe(dt, MAX_AGE, "refused once expired");
            assertEq(registry.commitments(c), t0);
        }
    }
}
