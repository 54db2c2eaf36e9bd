// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {StdInvariant} from "forge-std/StdInvariant.sol";

import {Terms} from "../../contracts/interfaces/IEscrow.sol";
import {Base} from "../utils/Base.sol";
import {EscrowHandler} from "./EscrowHandler.sol";

/// @notice The escrow's invariants under random sequences of every action of five actors who are payers and
/// providers at once (see EscrowHandler). The handler keeps a reference model and counts every disagreement;
/// the invariants compare the escrow with the model and assert that nothing disagreed.
contract EscrowInvariantTest is Base {
    EscrowHandler internal handler;

    function setUp() public override {
        super.setUp();
        handler = new EscrowHandler(escrow, usdc);
        bytes4[] memory selectors = new bytes4[](14);
        selectors[0] = EscrowHandler.deposit.selector;
        selectors[1] = EscrowHandler.withdraw.selector;
        selectors[2] = EscrowHandler.reserve.selector;
        selectors[3] = EscrowHandler.release.selector;
        selectors[4] = EscrowHandler.cancelPending.selector;
        selectors[5] = EscrowHandler.applyPending.selector;
        selectors[6] = EscrowHandler.rugPull.selector;
        selectors[7] = EscrowHandler.consume.selector;
        selectors[8] = EscrowHandler.consumeBatch.selector;
        selectors[9] = EscrowHandler.grantCredits.selector;
        selectors[10] = EscrowHandler.withdrawEarnings.selector;
        selectors[11] = EscrowHandler.claim.selector;
        selectors[12] = EscrowHandler.settle.selector;
        selectors[13] = EscrowHandler.warp.selector;
        targetSelector(StdInvariant.FuzzSelector(address(handler), selectors));
        targetContract(address(handler));
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        INVARIANTS                                        */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev (a) Token conservation: the escrow holds exactly every free balance, reserve, released money not
    /// yet moved, and earnings; and that is what came in less what went out.
    function invariant_a_tokenConservation() public view {
        uint256 n = handler.actorCount();
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            address a = handler.actors(i);
            sum += escrow.freeBalance(a) + escrow.earnings(a);
            for (uint256 j; j < n; ++j) {
                Terms memory t = escrow.terms(a, handler.actors(j));
                sum += t.reserve + t.releasable;
            }
        }
        uint256 held = usdc.balanceOf(address(escrow));
        assertEq(held, sum, "escrow balance == free + reserves + releasable + earnings");
        assertEq(held, handler.deposited() - handler.withdrawn() - handler.earningsWithdrawn(), "in - out");
    }

    /// @dev (b) THE PROMISE: every claim an honest provider made within the terms it saw settled, settled
    /// within the delay, whatever the payer (also a provider, also charging itself) did in between.
    function invariant_b_claimsSettleWithinDelay() public view {
        assertEq(handler.claimsFailed(), 0, handler.lastViolation());
        assertEq(handler.claimsExpired(), 0, "a claim ran past its delay unsettled");
        assertEq(handler.overdueClaims(), 0, "an open claim is past its delay");
    }

    /// @dev (c) No payer loses more than it reserved: what a provider charged is at most what was reserved
    /// for it less what was released, and exactly that much less is still there.
    function invariant_c_noPayerLosesMoreThanReserved() public view {
        uint256 n = handler.actorCount();
        for (uint256 i; i < n; ++i) {
            for (uint256 j; j < n; ++j) {
                (address p, address q) = (handler.actors(i), handler.actors(j));
                uint256 reserved = handler.reservedTotal(p, q);
                uint256 released = handler.releasedTotal(p, q);
                uint256 charged = handler.chargedTotal(p, q);
                assertLe(charged + released, reserved, "charged more than reserved less released");
                Terms memory t = escrow.terms(p, q);
                assertEq(t.reserve + t.releasable, reserved - released - charged, "reserve == in - out");
            }
        }
    }

    /// @dev (d) No charge from a reserve was above the price in force at the time.
    function invariant_d_noChargeAbovePrice() public view {
        assertEq(handler.priceViolations(), 0, handler.lastViolation());
    }

    /// @dev (e) Credits are conserved (granted = spent + held) and never become tokens: all earnings came
    /// from reserves.
    function invariant_e_creditsConservedNeverWithdrawn() public view {
        assertEq(handler.creditViolations(), 0, handler.lastViolation());
        uint256 n = handler.actorCount();
        uint256 held;
        uint256 earnings;
        uint256 charged;
        for (uint256 i; i < n; ++i) {
            earnings += escrow.earnings(handler.actors(i));
            for (uint256 j; j < n; ++j) {
                held += escrow.terms(handler.actors(i), handler.actors(j)).credits;
                charged += handler.chargedTotal(handler.actors(i), handler.actors(j));
            }
        }
        assertEq(handler.creditsGranted(), handler.creditsSpent() + held, "granted == spent + held");
        assertEq(earnings + handler.earningsWithdrawn(), handler.earned(), "earnings only from reserves");
        assertEq(handler.earned(), charged);
    }

    /// @dev (f) Nothing leaves a reserve before its delay except by its provider's charges: every release
    /// came at or after its time, for min(amount, what was left), and the escrow's terms are the model's.
    function invariant_f_nothingLeavesReserveBeforeDelay() public view {
        assertEq(handler.reserveViolations(), 0, handler.lastViolation());
        uint256 n = handler.actorCount();
        for (uint256 i; i < n; ++i) {
            for (uint256 j; j < n; ++j) {
                (address p, address q) = (handler.actors(i), handler.actors(j));
                Terms memory got = escrow.terms(p, q);
                Terms memory want = handler.modelTerms(p, q);
                assertEq(got.price, want.price, "price");
                assertEq(got.reserve, want.reserve, "reserve");
                assertEq(got.credits, want.credits, "credits");
                assertEq(got.pendingPrice, want.pendingPrice, "pendingPrice");
                assertEq(got.priceAt, want.priceAt, "priceAt");
                assertEq(got.pendingRelease, want.pendingRelease, "pendingRelease");
                assertEq(got.releaseAt, want.releaseAt, "releaseAt");
                assertEq(got.releasable, want.releasable, "releasable");
            }
        }
    }

    /// @dev Every outcome (success, refusal reason, revert reason, return value) was the model's, and the
    /// free balances and earnings are the model's.
    function invariant_g_escrowFollowsModel() public view {
        assertEq(handler.modelViolations(), 0, handler.lastViolation());
        uint256 n = handler.actorCount();
        for (uint256 i; i < n; ++i) {
            address a = handler.actors(i);
            assertEq(escrow.freeBalance(a), handler.ghostFree(a), "free balance");
            assertEq(escrow.earnings(a), handler.ghostEarnings(a), "earnings");
        }
    }

    /// @dev At the end of a run the open claims (all within their delay) settle too.
    function afterInvariant() public {
        handler.settleAll(block.timestamp);
        assertEq(handler.openClaimCount(), 0);
        _checkAll();
    }

    function _checkAll() internal view {
        invariant_a_tokenConservation();
        invariant_b_claimsSettleWithinDelay();
        invariant_c_noPayerLosesMoreThanReserved();
        invariant_d_noChargeAbovePrice();
        invariant_e_creditsConservedNeverWithdrawn();
        invariant_f_nothingLeavesReserveBeforeDelay();
        invariant_g_escrowFollowsModel();
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         COVERAGE                                         */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev The handler reaches the states that matter: a long deterministic random walk through it (calls
    /// straight to the handler, so that any revert in it fails this test), the invariants checked on the
    /// way, and every kind of call and outcome seen at least once.
    function test_handler_reachesEveryState() public {
        uint256 seed = 0x4B48414348415055524921;
        for (uint256 i; i < 2_000; ++i) {
            seed = uint256(keccak256(abi.encode(seed, i)));
            _step(seed);
            if (i % 100 == 99) _checkAll();
        }
        handler.settleAll(seed);
        assertEq(handler.openClaimCount(), 0);
        _checkAll();

        bytes32[38] memory keys = [
            bytes32("deposit"),
            "deposit.permit",
            "deposit.toEscrow.refused",
            "withdraw",
            "withdraw.toEscrow.refused",
            "reserve.raise",
            "reserve.cut",
            "reserve.equal",
            "reserve.self",
            "reserve.refused",
            "release",
            "released",
            "released.nothingLeft",
            "cut.matured",
            "cancel",
            "cancel.nothing",
            "apply",
            "apply.released",
            "rugPull",
            "rugPull.self",
            "consume.wild",
            "consume.wild.refused",
            "consume.honest",
            "charged.self",
            "charged.credits",
            "batch.wild",
            "batch.honest.withBadLines",
            "refused.ZeroAmount",
            "refused.NotApproved",
            "refused.PriceAboveTerms",
            "refused.InsufficientReserve",
            "grant",
            "earnings.withdraw",
            "earnings.toEscrow.refused",
            "claim",
            "claim.settled.consume",
            "claim.settled.batch",
            "warp"
        ];
        for (uint256 k; k < keys.length; ++k) {
            assertGt(handler.calls(keys[k]), 0, string(abi.encodePacked(keys[k])));
        }
        bytes32[7] memory kept = [
            bytes32("claim.settled.lastSecond"),
            "claim.settled.afterPayerMoved",
            "claim.settled.afterRugPull",
            "claim.settled.selfPair",
            "claim.settled.releasePending",
            "claim.settled.cutPending",
            "claim.settled"
        ];
        for (uint256 k; k < kept.length; ++k) {
            assertGt(handler.calls(kept[k]), 0, string(abi.encodePacked(kept[k])));
            emit log_named_uint(string(abi.encodePacked(kept[k])), handler.calls(kept[k]));
        }
        assertEq(handler.claimsSettled(), handler.claimsMade(), "every claim made settled");
        emit log_named_uint("claims made", handler.claimsMade());
    }

    /// @dev One random handler call; claims and settlements weigh more, as an agent makes many.
    function _step(uint256 s) internal {
        uint256 a = uint256(keccak256(abi.encode(s, "a")));
        uint256 b = uint256(keccak256(abi.encode(s, "b")));
        uint256 c = uint256(keccak256(abi.encode(s, "c")));
        uint256 d = uint256(keccak256(abi.encode(s, "d")));
        uint256 action = s % 40;
        if (action < 3) handler.deposit(a, b, c, d);
        else if (action < 5) handler.withdraw(a, b, c);
        else if (action < 10) handler.reserve(a, b, c, d, s >> 128);
        else if (action < 12) handler.release(a, b, c);
        else if (action < 14) handler.cancelPending(a, b);
        else if (action < 16) handler.applyPending(a, b, c);
        else if (action < 17) handler.rugPull(a, b);
        else if (action < 19) handler.consume(a, b, c);
        else if (action < 21) handler.consumeBatch(a, b, c);
        else if (action < 22) handler.grantCredits(a, b, c);
        else if (action < 24) handler.withdrawEarnings(a, b, c);
        else if (action < 32) handler.claim(a, b, c, d);
        else if (action < 36) handler.settle(a, b, c);
        else handler.warp(a, b, c);
    }
}
