// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {StdInvariant} from "forge-std/StdInvariant.sol";

import {Base} from "../utils/Base.sol";
import {EscrowHandler} from "./EscrowHandler.sol";

/// @notice The escrow invariants of DESIGN.md, under random sequences of every action.
contract EscrowInvariantTest is Base {
    EscrowHandler internal handler;

    function setUp() public override {
        super.setUp();
        handler = new EscrowHandler(escrow, usdc);
        targetContract(address(handler));
    }

    /// @dev Token conservation: the escrow holds exactly every balance plus every provider's earnings.
    function invariant_tokenBalanceEqualsBalancesPlusEarnings() public view {
        uint256 sum;
        for (uint256 i; i < handler.payerCount(); ++i) sum += escrow.balanceOf(handler.payers(i));
        for (uint256 i; i < handler.providerCount(); ++i) sum += escrow.earnings(handler.providers(i));
        assertEq(usdc.balanceOf(address(escrow)), sum);
    }

    /// @dev Earnings come only from balances: credits never turn into withdrawable tokens.
    function invariant_earningsOnlyFromBalances() public view {
        uint256 earnings;
        for (uint256 i; i < handler.providerCount(); ++i) earnings += escrow.earnings(handler.providers(i));
        assertEq(earnings + handler.totalEarningsWithdrawn(), handler.totalEarned());
    }

    /// @dev Credits are conserved: granted = spent + still held.
    function invariant_creditsConserved() public view {
        uint256 held;
        for (uint256 i; i < handler.payerCount(); ++i) {
            for (uint256 j; j < handler.providerCount(); ++j) {
                (,, uint256 credits) = escrow.allowance(handler.payers(i), handler.providers(j));
                held += credits;
            }
        }
        assertEq(handler.creditsGranted(), handler.creditsSpent() + held);
    }

    /// @dev No payer loses more to a provider than it approved, and no budget left exceeds that bound.
    function invariant_noPayerLosesMoreThanApproved() public view {
        for (uint256 i; i < handler.payerCount(); ++i) {
            for (uint256 j; j < handler.providerCount(); ++j) {
                (address p, address q) = (handler.payers(i), handler.providers(j));
                assertLe(handler.spent(p, q), handler.maxSpend(p, q));
                (, uint256 left,) = escrow.allowance(p, q);
                assertLe(handler.spent(p, q) + left, handler.maxSpend(p, q));
            }
        }
    }

    /// @dev No charge above its approved price; no withdrawal before its delay.
    function invariant_noViolations() public view {
        assertEq(handler.violations(), 0);
    }
}
