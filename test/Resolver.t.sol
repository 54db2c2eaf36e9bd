// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";

import {Resolver} from "../contracts/Resolver.sol";
import {ResolverFactory} from "../contracts/ResolverFactory.sol";
import {
    IResolver, IResolverFactory, IPayeeResolver, IServerResolver, IRsaKeyResolver, TUNNEL_MARKER
} from "../contracts/interfaces/IResolver.sol";

contract ResolverTest is Test {
    ResolverFactory internal factory;
    Resolver internal resolver;
    address internal alice = makeAddr("alice");
    address internal payee = makeAddr("payee");
    address internal mallory = makeAddr("mallory");
    bytes internal constant KEY = hex"30820122300d06092a864886f70d01010105000382010f00";

    function setUp() public {
        factory = new ResolverFactory();
        vm.prank(alice);
        resolver = Resolver(factory.deploy(payee, "https://alice.example:8443", KEY));
    }

    function test_deploy_isMinimalClone() public view {
        // EIP-1167: 45 bytes of runtime code delegating to the implementation.
        assertEq(address(resolver).code.length, 45);
        assertTrue(factory.implementation() != address(0));
    }

    function test_deploy_emitsAndInitializes() public {
        vm.recordLogs();
        vm.prank(mallory);
        address r = factory.deploy(payee, TUNNEL_MARKER, KEY);
        assertEq(vm.getRecordedLogs()[0].topics[0], IResolverFactory.ResolverDeployed.selector);
        (address p, string memory s, bytes memory k, uint64 v) = IResolver(r).records();
        assertEq(IResolver(r).owner(), mallory);
        assertEq(p, payee);
        assertEq(s, "tunnel:");
        assertEq(k, KEY);
        assertEq(v, 1);
    }

    function test_deploy_gas() public {
        uint256 before = gasleft();
        factory.deploy(payee, "https://x.example", KEY);
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
        factory.deploy(address(0), "", KEY);
        vm.expectRevert(IResolver.EmptyKey.selector);
        factory.deploy(payee, "", "");
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

    function test_transferOwnership() public {
        vm.expectEmit(address(resolver));
        emit IResolver.OwnershipTransferred(alice, mallory);
        vm.prank(alice);
        resolver.transferOwnership(mallory);
        assertEq(resolver.owner(), mallory);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IResolver.NotResolverOwner.selector, alice));
        resolver.setServer("x");
        vm.prank(mallory);
        vm.expectRevert(IResolver.ZeroAddress.selector);
        resolver.transferOwnership(address(0));
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
