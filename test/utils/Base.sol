// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";

import {Escrow} from "../../contracts/Escrow.sol";
import {Charge} from "../../contracts/interfaces/IEscrow.sol";
import {TestUSDC} from "../../contracts/TestUSDC.sol";

/// @dev Shared set-up: a TestUSDC, an Escrow with a one-day delay, a funded payer and a provider.
abstract contract Base is Test {
    uint256 internal constant DELAY = 1 days;
    uint256 internal constant USDC = 1e6;

    TestUSDC internal usdc;
    Escrow internal escrow;

    uint256 internal payerKey = 0xA11CE;
    address internal payer = vm.addr(payerKey);
    address internal provider = makeAddr("provider");
    address internal stranger = makeAddr("stranger");

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        usdc = new TestUSDC();
        escrow = new Escrow(usdc, DELAY);
        vm.label(address(usdc), "USDC");
        vm.label(address(escrow), "Escrow");
    }

    /// @dev A batch of one line: `count` requests of `from` at `price`.
    function _one(address from, uint256 price, uint32 count) internal pure returns (Charge[] memory charges) {
        charges = new Charge[](1);
        charges[0] = Charge(from, uint64(price), count);
    }

    function _fund(address who, uint256 amount) internal {
        usdc.mint(who, amount);
        vm.startPrank(who);
        usdc.approve(address(escrow), amount);
        escrow.deposit(who, amount);
        vm.stopPrank();
    }

    /// @dev `from` sets `price` for `to` and moves `amount` of its free balance into its reserve with `to`.
    function _reserve(address from, address to, uint256 price, uint256 amount) internal {
        vm.prank(from);
        escrow.reserve(to, price, amount);
    }

    function _permit(uint256 key, address spender, uint256 amount, uint256 deadline)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        address owner = vm.addr(key);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                owner,
                spender,
                amount,
                usdc.nonces(owner),
                deadline
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", usdc.DOMAIN_SEPARATOR(), structHash));
        return vm.sign(key, digest);
    }
}
