// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test, Vm} from "forge-std/Test.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";

import {Resolver} from "../contracts/Resolver.sol";
import {ResolverFactory} from "../contracts/ResolverFactory.sol";
import {
    IResolver,
    IResolverFactory,
    IPayeeResolver,
    IServerResolver,
    IRsaKeyResolver,
    TUNNEL_MARKER
} from "../contracts/interfaces/IResolver.sol";

contract ResolverTest is Test {
    ResolverFactory internal factory;
    Resolver internal resolver;
    address internal alice = makeAddr("alice");
    address internal payee = makeAddr("payee");
    address internal mallory = makeAddr("mallory");
    address internal bob = makeAddr("bob");
    bytes internal constant KEY = hex"30820122300d06092a864886f70d01010105000382010f00";
    bytes32 internal constant SALT = keccak256("alice");

    function setUp() public {
        factory = new ResolverFactory();
        vm.prank(alice);
        resolver = Resolver(factory.deploy(SALT, payee, "https://alice.example:8443", KEY));
    }

    function test_deploy_isMinimalClone() public view {
        // EIP-1167: 45 bytes of runtime code delegating to the implementation.
        assertEq(address(resolver).code.length, 45);
        assertTrue(factory.implementation() != address(0));
    }

    function test_deploy_emitsAndInitializes() public {
        vm.recordLogs();
        vm.prank(mallory);
        address r = factory.deploy(SALT, payee, TUNNEL_MARKER, KEY);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs[0].topics[0], IResolverFactory.ResolverDeployed.selector);
        assertEq(logs[0].topics[1], bytes32(uint256(uint160(r))));
        assertEq(logs[0].topics[2], bytes32(uint256(uint160(mallory))));
        assertEq(abi.decode(logs[0].data, (bytes32)), SALT);
        (address p, string memory s, bytes memory k, uint64 v) = IResolver(r).records();
        assertEq(IResolver(r).owner(), mallory);
        assertEq(p, payee);
        assertEq(s, "tunnel:");
        assertEq(k, KEY);
        assertEq(v, 1);
    }

    function test_deploy_gas() public {
        uint256 before = gasleft();
        factory.deploy(bytes32(uint256(1)), payee, "https://x.example", KEY);
        assertLt(before - gasleft(), 250_000, "a clone should be cheap");
    }

    function test_initialize_onlyOnce() public {
        vm.expectRevert(IResolver.AlreadyInitialized.selector);
        resolver.initialize(mallory, mallory, "", KEY);
        Resolver impl = Resolver(factory.implementation());
        vm.expectRevert(IResolver.AlreadyInitialized.selector);
        impl.initialize(mallory, mallory, "", KEY);
    }

    function test_initialize_validates() public {
        vm.expectRevert(IResolver.ZeroAddress.selector);
        factory.deploy(bytes32(uint256(1)), address(0), "", KEY);
        vm.expectRevert(IResolver.EmptyKey.selector);
        factory.deploy(bytes32(uint256(1)), payee, "", "");
        // Nothing was left at the address: the salt is still free.
        assertEq(factory.predict(address(this), bytes32(uint256(1))).code.length, 0);
        factory.deploy(bytes32(uint256(1)), payee, "", KEY);
    }

    function test_records() public view {
        assertEq(resolver.payee(), payee);
        assertEq(resolver.server(), "https://alice.example:8443");
        (bytes memory k, uint64 v) = resolver.rsaKey();
        assertEq(k, KEY);
        assertEq(v, 1);
    }

    function test_setPayee() public {
        vm.expectEmit(address(resolver));
        emit IPayeeResolver.PayeeChanged(mallory);
        vm.prank(alice);
        resolver.setPayee(mallory);
        assertEq(resolver.payee(), mallory);
        vm.prank(alice);
        vm.expectRevert(IResolver.ZeroAddress.selector);
        resolver.setPayee(address(0));
    }

    function test_setServer() public {
        vm.expectEmit(address(resolver));
        emit IServerResolver.ServerChanged(TUNNEL_MARKER);
        vm.prank(alice);
        resolver.setServer(TUNNEL_MARKER);
        assertEq(resolver.server(), TUNNEL_MARKER);
    }

    function test_setRsaKey_bumpsVersion() public {
        bytes memory key2 = hex"01020304";
        vm.expectEmit(address(resolver));
        emit IRsaKeyResolver.RsaKeyChanged(2, key2);
        vm.prank(alice);
        resolver.setRsaKey(key2);
        (bytes memory k, uint64 v) = resolver.rsaKey();
        assertEq(k, key2);
        assertEq(v, 2);
        vm.prank(alice);
        vm.expectRevert(IResolver.EmptyKey.selector);
        resolver.setRsaKey("");
    }

    function test_onlyOwnerWrites() public {
        vm.startPrank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, mallory));
        resolver.setPayee(mallory);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, mallory));
        resolver.setServer("https://evil.example");
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, mallory));
        resolver.setRsaKey(hex"00");
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, mallory));
        resolver.transferOwnership(mallory);
        vm.stopPrank();
    }

    /// @dev Two steps: the offer changes nothing but the pending owner; the acceptance moves ownership.
    function test_transferOwnership_twoSteps() public {
        vm.expectEmit(address(resolver));
        emit IResolver.OwnershipTransferStarted(alice, bob);
        vm.prank(alice);
        resolver.transferOwnership(bob);
        assertEq(resolver.owner(), alice, "still alice's until accepted");
        assertEq(resolver.pendingOwner(), bob);
        vm.prank(alice);
        resolver.setServer("https://alice.example:9443");
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, bob));
        resolver.setServer("x");

        vm.expectEmit(address(resolver));
        emit IResolver.OwnershipTransferred(alice, bob);
        vm.prank(bob);
        resolver.acceptOwnership();
        assertEq(resolver.owner(), bob);
        assertEq(resolver.pendingOwner(), address(0));

        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, alice));
        resolver.setServer("x");
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, alice));
        resolver.setRsaKey(hex"01");
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, alice));
        resolver.transferOwnership(alice);
        vm.stopPrank();
    }

    /// @dev A mistyped address never receives the resolver: only the named account can accept, once.
    function test_acceptOwnership_onlyPendingOwner() public {
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotPendingOwner.selector, mallory));
        resolver.acceptOwnership();
        vm.prank(address(0));
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotPendingOwner.selector, address(0)));
        resolver.acceptOwnership();

        vm.prank(alice);
        resolver.transferOwnership(bob);
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotPendingOwner.selector, mallory));
        resolver.acceptOwnership();
        vm.prank(bob);
        resolver.acceptOwnership();
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotPendingOwner.selector, bob));
        resolver.acceptOwnership();
    }

    function test_transferOwnership_toZeroCancels() public {
        vm.prank(alice);
        resolver.transferOwnership(bob);
        vm.expectEmit(address(resolver));
        emit IResolver.OwnershipTransferStarted(alice, address(0));
        vm.prank(alice);
        resolver.transferOwnership(address(0));
        assertEq(resolver.pendingOwner(), address(0));
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotPendingOwner.selector, bob));
        resolver.acceptOwnership();
        assertEq(resolver.owner(), alice);
    }

    function test_transferOwnership_newOfferReplacesThePendingOne() public {
        vm.prank(alice);
        resolver.transferOwnership(bob);
        vm.prank(alice);
        resolver.transferOwnership(mallory);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotPendingOwner.selector, bob));
        resolver.acceptOwnership();
        vm.prank(mallory);
        resolver.acceptOwnership();
        assertEq(resolver.owner(), mallory);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                  DETERMINISTIC ADDRESSES                                 */
    /* ---------------------------------------------------------------------------------------- */

    function test_predict_isTheDeployedAddress() public {
        assertEq(factory.predict(alice, SALT), address(resolver));
        bytes32 salt = keccak256("bob");
        address predicted = factory.predict(bob, salt);
        assertEq(predicted.code.length, 0);
        vm.prank(bob);
        address deployed = factory.deploy(salt, bob, TUNNEL_MARKER, KEY);
        assertEq(deployed, predicted);
        assertEq(IResolver(deployed).owner(), bob);
    }

    function test_deploy_sameSaltTwiceReverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IResolverFactory.ResolverExists.selector, address(resolver)));
        factory.deploy(SALT, mallory, "https://elsewhere.example", KEY);
        assertEq(resolver.payee(), payee, "the existing resolver is untouched");
    }

    /// @dev Hostile: mallory deploys with alice's salt, to take the address alice committed to and own it.
    /// The salt is bound to its deployer: mallory gets an address of her own, and alice's is still hers to
    /// deploy.
    function test_deploy_cannotTakeAnotherDeployersAddress() public {
        bytes32 salt = keccak256("bob's next resolver");
        address bobs = factory.predict(bob, salt);
        vm.prank(mallory);
        address mallorys = factory.deploy(salt, mallory, "https://evil.example", KEY);
        assertTrue(mallorys != bobs);
        assertEq(mallorys, factory.predict(mallory, salt));
        assertEq(bobs.code.length, 0);
        vm.prank(bob);
        assertEq(factory.deploy(salt, bob, TUNNEL_MARKER, KEY), bobs);
        assertEq(IResolver(bobs).owner(), bob);
    }

    function testFuzz_predict(address deployer, bytes32 salt) public {
        vm.assume(deployer != address(0));
        address predicted = factory.predict(deployer, salt);
        vm.assume(predicted.code.length == 0);
        vm.prank(deployer);
        assertEq(factory.deploy(salt, payee, "", KEY), predicted);
        assertEq(IResolver(predicted).owner(), deployer);
    }

    function test_supportsInterface() public view {
        assertTrue(resolver.supportsInterface(type(IERC165).interfaceId));
        assertTrue(resolver.supportsInterface(type(IResolver).interfaceId));
        assertTrue(resolver.supportsInterface(type(IPayeeResolver).interfaceId));
        assertTrue(resolver.supportsInterface(type(IServerResolver).interfaceId));
        assertTrue(resolver.supportsInterface(type(IRsaKeyResolver).interfaceId));
        assertFalse(resolver.supportsInterface(0xffffffff));
        assertFalse(resolver.supportsInterface(0x12345678));
    }
}
