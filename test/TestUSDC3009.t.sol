// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {TestUSDC} from "../contracts/TestUSDC.sol";
import {ERC3009} from "@openzeppelin/contracts/token/ERC20/extensions/draft-ERC3009.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @dev A contract wallet that accepts what its owner signs (ERC-1271), as smart-account payers are.
contract OwnedWallet is IERC1271 {
    address internal immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4) {
        return ECDSA.recover(hash, signature) == owner ? this.isValidSignature.selector : bytes4(0);
    }
}

/// @notice EIP-3009 on the test USDC, as x402 clients use it: random nonces, the v,r,s and bytes forms, the
/// validity window, replays, and USDC's blacklist still applying.
contract TestUSDC3009Test is Test {
    TestUSDC internal usdc;
    uint256 internal constant PAYER_KEY = 0xA11CE;
    address internal payer;
    address internal constant PAYEE = address(0xBEEF);

    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 internal constant RECEIVE_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );

    function setUp() public {
        usdc = new TestUSDC();
        payer = vm.addr(PAYER_KEY);
        usdc.mint(payer, 10e6);
        vm.warp(1_000_000);
    }

    function _digest(bytes32 typehash, address from, address to, uint256 value, uint256 before, bytes32 nonce)
        internal
        view
        returns (bytes32)
    {
        (, string memory name, string memory version, uint256 chainId, address verifying,,) =
            usdc.eip712Domain();
        bytes32 separator = keccak256(
            abi.encode(
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak256(bytes(name)),
                keccak256(bytes(version)),
                chainId,
                verifying
            )
        );
        bytes32 structHash = keccak256(abi.encode(typehash, from, to, value, 0, before, nonce));
        return keccak256(abi.encodePacked("\x19\x01", separator, structHash));
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev The domain x402's `extra` advertises: name and version from ERC-5267.
    function test_domainIsUSDCs() public view {
        (, string memory name, string memory version,,,,) = usdc.eip712Domain();
        assertEq(name, "USD Coin");
        assertEq(version, "1");
    }

    function test_vrsFormMovesTheValueOnceAndRecordsTheNonce() public {
        bytes32 nonce = keccak256("random nonce 1");
        uint256 before = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(PAYER_KEY, _digest(TRANSFER_TYPEHASH, payer, PAYEE, 10_000, before, nonce));
        assertFalse(usdc.authorizationState(payer, nonce));
        usdc.transferWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, v, r, s);
        assertEq(usdc.balanceOf(PAYEE), 10_000);
        assertTrue(usdc.authorizationState(payer, nonce));
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009UsedAuthorization.selector, payer, nonce));
        usdc.transferWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, v, r, s);
    }

    function test_bytesFormTakesAnEOAAndAContractWallet() public {
        bytes32 nonce = keccak256("random nonce 2");
        uint256 before = block.timestamp + 60;
        bytes memory sig = _sign(PAYER_KEY, _digest(TRANSFER_TYPEHASH, payer, PAYEE, 20_000, before, nonce));
        usdc.transferWithAuthorization(payer, PAYEE, 20_000, 0, before, nonce, sig);
        assertEq(usdc.balanceOf(PAYEE), 20_000);

        OwnedWallet wallet = new OwnedWallet(payer);
        usdc.mint(address(wallet), 1e6);
        sig = _sign(PAYER_KEY, _digest(TRANSFER_TYPEHASH, address(wallet), PAYEE, 30_000, before, nonce));
        usdc.transferWithAuthorization(address(wallet), PAYEE, 30_000, 0, before, nonce, sig);
        assertEq(usdc.balanceOf(PAYEE), 50_000);
    }

    function test_anotherSignerAnAlteredValueOrAnotherPayeeAreRefused() public {
        bytes32 nonce = keccak256("random nonce 3");
        uint256 before = block.timestamp + 60;
        bytes memory sig = _sign(0xB0B, _digest(TRANSFER_TYPEHASH, payer, PAYEE, 10_000, before, nonce));
        vm.expectRevert(ERC3009.ERC3009InvalidSignature.selector);
        usdc.transferWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, sig);
        sig = _sign(PAYER_KEY, _digest(TRANSFER_TYPEHASH, payer, PAYEE, 10_000, before, nonce));
        vm.expectRevert(ERC3009.ERC3009InvalidSignature.selector);
        usdc.transferWithAuthorization(payer, PAYEE, 10_001, 0, before, nonce, sig);
        vm.expectRevert(ERC3009.ERC3009InvalidSignature.selector);
        usdc.transferWithAuthorization(payer, address(0xCAFE), 10_000, 0, before, nonce, sig);
        assertFalse(usdc.authorizationState(payer, nonce), "a refused authorization uses no nonce");
    }

    function test_anExpiredAuthorizationIsRefused() public {
        bytes32 nonce = keccak256("random nonce 4");
        uint256 before = block.timestamp + 60;
        bytes memory sig = _sign(PAYER_KEY, _digest(TRANSFER_TYPEHASH, payer, PAYEE, 10_000, before, nonce));
        vm.warp(before);
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009InvalidAuthorizationTime.selector, 0, before));
        usdc.transferWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, sig);
    }

    function test_receiveWithAuthorizationOnlyForThePayee() public {
        bytes32 nonce = keccak256("random nonce 5");
        uint256 before = block.timestamp + 60;
        bytes memory sig = _sign(PAYER_KEY, _digest(RECEIVE_TYPEHASH, payer, PAYEE, 10_000, before, nonce));
        vm.expectRevert();
        usdc.receiveWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, sig);
        vm.prank(PAYEE);
        usdc.receiveWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, sig);
        assertEq(usdc.balanceOf(PAYEE), 10_000);
    }

    function test_aBlacklistedPayerCannotPayByAuthorization() public {
        bytes32 nonce = keccak256("random nonce 6");
        uint256 before = block.timestamp + 60;
        bytes memory sig = _sign(PAYER_KEY, _digest(TRANSFER_TYPEHASH, payer, PAYEE, 10_000, before, nonce));
        usdc.blacklist(payer);
        vm.expectRevert("Blacklistable: account is blacklisted");
        usdc.transferWithAuthorization(payer, PAYEE, 10_000, 0, before, nonce, sig);
    }
}
