// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Vm} from "forge-std/Test.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {IEscrow, Charge, Terms} from "../contracts/interfaces/IEscrow.sol";
import {Base} from "./utils/Base.sol";

/// @notice The review findings on the old escrow, each replayed as an attacker would against Escrow v2,
/// which must do no harm. The honest provider is Base's `provider`; `mallory` is a payer who also acts as a
/// provider (of herself, or through `puppet`, an address she controls).
contract EscrowAttacksTest is Base {
    uint256 internal constant PRICE = 1e6; // 1 USDC per request

    address internal mallory = makeAddr("mallory");
    address internal puppet = makeAddr("puppet");
    address internal carol = makeAddr("carol");

    /* ---------------------------------------------------------------------------------------- */
    /*                                         HELPERS                                          */
    /* ---------------------------------------------------------------------------------------- */

    function _terms(address from, address to) internal view returns (Terms memory) {
        return escrow.terms(from, to);
    }

    /// @dev What the provider's agent may claim from `from` right now at `price`: the reserve, less a pending
    /// release (the price must be at most the price in force and a pending cut).
    function _claimable(address from, address to, uint256 price) internal view returns (uint256 count) {
        Terms memory t = escrow.terms(from, to);
        uint256 maxPrice = t.priceAt != 0 && t.pendingPrice < t.price ? t.pendingPrice : t.price;
        if (price > maxPrice) return 0;
        uint256 avail = t.reserve;
        if (t.releaseAt != 0) avail = avail > t.pendingRelease ? avail - t.pendingRelease : 0;
        return avail / price;
    }

    function _assertConserved(address[] memory who) internal view {
        uint256 sum;
        for (uint256 i; i < who.length; ++i) {
            sum += escrow.freeBalance(who[i]) + escrow.earnings(who[i]);
            for (uint256 j; j < who.length; ++j) {
                Terms memory t = escrow.terms(who[i], who[j]);
                sum += t.reserve + t.releasable;
            }
        }
        assertEq(usdc.balanceOf(address(escrow)), sum, "free + reserves + releasable + earnings");
    }

    function _everyone() internal view returns (address[] memory who) {
        who = new address[](6);
        (who[0], who[1], who[2]) = (payer, provider, stranger);
        (who[3], who[4], who[5]) = (mallory, puppet, carol);
    }

    /// @dev The `ChargeRefused` events of `logs`, as (payer, index, reason).
    function _refusals(Vm.Log[] memory logs)
        internal
        view
        returns (address[] memory payers, uint256[] memory indexes, bytes[] memory reasons)
    {
        uint256 n;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(escrow) && logs[i].topics[0] == IEscrow.ChargeRefused.selector) {
                n++;
            }
        }
        (payers, indexes, reasons) = (new address[](n), new uint256[](n), new bytes[](n));
        n = 0;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(escrow) || logs[i].topics[0] != IEscrow.ChargeRefused.selector) {
                continue;
            }
            assertEq(
                address(uint160(uint256(logs[i].topics[2]))), provider, "refused for the batch's provider"
            );
            payers[n] = address(uint160(uint256(logs[i].topics[1])));
            (indexes[n], reasons[n]) = abi.decode(logs[i].data, (uint256, bytes));
            n++;
        }
    }

    /// @dev Splits an ABI-encoded custom error into its selector and its arguments.
    function _split(bytes memory reason) internal pure returns (bytes4 selector, bytes memory args) {
        assertGe(reason.length, 4, "a reason carries a selector");
        selector = bytes4(reason);
        args = new bytes(reason.length - 4);
        for (uint256 i; i < args.length; ++i) {
            args[i] = reason[i + 4];
        }
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                       FINDING 1: A PAYER LEAVES AT ONCE, SKIPPING THE DELAY                   */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Mallory, payer and provider at once, empties everything she can in the block where the honest
    /// provider claimed her whole reserve: she releases it, reserves the rest for herself, charges herself,
    /// withdraws those earnings. She leaves with exactly her free money; the claim settles, one `consume`
    /// at a time, at the last second of the delay.
    function test_attack_payerLeavesAtOnce_claimSettlesByConsume() public {
        _fund(mallory, 100 * USDC);
        _reserve(mallory, provider, PRICE, 10 * USDC);
        uint256 claimed = _claimable(mallory, provider, PRICE);
        assertEq(claimed, 10, "the agent claims the whole reserve it saw");
        uint256 claimAt = block.timestamp;

        vm.startPrank(mallory);
        escrow.release(provider, type(uint256).max);
        escrow.reserve(mallory, type(uint256).max, 90 * USDC);
        escrow.consume(mallory, 90 * USDC);
        escrow.withdrawEarnings(mallory, 90 * USDC);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        escrow.withdraw(mallory, 1);
        // As a provider she reaches only lines where she is the provider: the honest reserve is not one.
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, mallory, mallory, 0, PRICE)
        );
        escrow.consume(mallory, PRICE);
        vm.stopPrank();
        assertEq(usdc.balanceOf(mallory), 90 * USDC, "she left with her free money only");
        assertEq(_terms(mallory, provider).reserve, 10 * USDC);

        vm.warp(claimAt + DELAY - 1);
        for (uint256 i; i < claimed; ++i) {
            vm.prank(provider);
            escrow.consume(mallory, PRICE);
        }
        assertEq(escrow.earnings(provider), 10 * USDC, "the whole claim settled");

        vm.warp(claimAt + DELAY);
        assertEq(escrow.applyPending(mallory, provider), 0, "her release finds nothing left");
        assertEq(usdc.balanceOf(address(escrow)), 10 * USDC);
        _assertConserved(_everyone());
    }

    /// @dev The same escape through a sock puppet as provider, settled by `consumeBatch`.
    function test_attack_payerLeavesAtOnce_claimSettlesByBatch() public {
        _fund(mallory, 100 * USDC);
        _reserve(mallory, provider, PRICE, 10 * USDC);
        uint256 claimed = _claimable(mallory, provider, PRICE);
        uint256 claimAt = block.timestamp;

        vm.prank(mallory);
        escrow.release(provider, 10 * USDC);
        _reserve(mallory, puppet, PRICE, 90 * USDC);
        vm.prank(puppet);
        assertEq(escrow.consumeBatch(_one(mallory, PRICE, 90)), 90 * USDC);
        vm.prank(puppet);
        escrow.withdrawEarnings(mallory, 90 * USDC);
        // The puppet's line is empty and the honest reserve is not the puppet's.
        vm.prank(puppet);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, mallory, puppet, 0, PRICE)
        );
        escrow.consume(mallory, PRICE);

        vm.warp(claimAt + DELAY - 1);
        vm.recordLogs();
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(mallory, PRICE, uint32(claimed))), 10 * USDC);
        (address[] memory refused,,) = _refusals(vm.getRecordedLogs());
        assertEq(refused.length, 0, "nothing refused");

        vm.warp(claimAt + DELAY);
        assertEq(escrow.applyPending(mallory, provider), 0);
        assertEq(usdc.balanceOf(mallory), 90 * USDC);
        _assertConserved(_everyone());
    }

    function test_attack_withdrawAllCannotTouchReserve() public {
        _fund(mallory, 100 * USDC);
        _reserve(mallory, provider, PRICE, 10 * USDC);
        vm.startPrank(mallory);
        escrow.withdraw(mallory, 90 * USDC);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        escrow.withdraw(mallory, 1);
        vm.stopPrank();
        assertEq(_terms(mallory, provider).reserve, 10 * USDC);
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(mallory, PRICE, 10)), 10 * USDC);
    }

    /// @dev Mallory reserves 10, the agent claims all 10, and she asks for everything back at once. Until the
    /// release's time the provider still charges the whole reserve; at its time nothing is left to release.
    function test_attack_pendingReleaseDoesNotReduceChargeBeforeItsTime() public {
        _fund(mallory, 10 * USDC);
        _reserve(mallory, provider, PRICE, 10 * USDC);
        uint256 claimed = _claimable(mallory, provider, PRICE);
        vm.prank(mallory);
        escrow.release(provider, type(uint256).max);
        assertEq(_claimable(mallory, provider, PRICE), 0, "the agent claims nothing more");

        vm.warp(block.timestamp + DELAY - 1);
        Terms memory t = _terms(mallory, provider);
        assertEq(t.reserve, 10 * USDC, "the whole reserve until the release's time");
        assertEq(t.releasable, 0);
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(mallory, PRICE, uint32(claimed))), 10 * USDC);
        vm.warp(block.timestamp + 1);
        assertEq(escrow.applyPending(mallory, provider), 0);
    }

    /// @dev Until its time, a pending release leaves the provider the whole reserve, whenever it charges.
    function testFuzz_attack_pendingReleaseDoesNotReduceChargeBeforeItsTime(
        uint96 reserved,
        uint96 releasing,
        uint256 wait
    ) public {
        reserved = uint96(bound(reserved, 1, type(uint64).max));
        releasing = uint96(bound(releasing, 1, type(uint96).max));
        wait = bound(wait, 0, DELAY - 1);
        _fund(mallory, reserved);
        _reserve(mallory, provider, type(uint64).max, reserved);
        vm.prank(mallory);
        escrow.release(provider, releasing);
        vm.warp(block.timestamp + wait);
        assertEq(_terms(mallory, provider).reserve, reserved);
        vm.prank(provider);
        escrow.consume(mallory, reserved);
        assertEq(escrow.earnings(provider), reserved);
        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(mallory, provider), 0);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                     FINDING 3: ONE PAYER CANNOT MAKE A WHOLE BATCH REVERT                 */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Mallory releases 1 wei of her reserve and withdraws 1 wei of her free balance just before the
    /// provider's batch lands. Neither reaches the reserve in time: every line settles, hers too.
    function test_attack_lastMinuteReleaseAndWithdrawDoNotBreakBatch() public {
        address[] memory payers = new address[](4);
        (payers[0], payers[1], payers[2], payers[3]) = (payer, mallory, stranger, carol);
        Charge[] memory charges = new Charge[](4);
        for (uint256 i; i < 4; ++i) {
            _fund(payers[i], 11 * USDC);
            _reserve(payers[i], provider, PRICE, 10 * USDC);
            charges[i] = Charge(payers[i], uint64(PRICE), 10);
        }
        vm.warp(block.timestamp + 1 hours);
        vm.startPrank(mallory);
        escrow.release(provider, 1);
        escrow.withdraw(mallory, 1);
        vm.stopPrank();

        vm.recordLogs();
        vm.prank(provider);
        assertEq(escrow.consumeBatch(charges), 40 * USDC);
        (address[] memory refused,,) = _refusals(vm.getRecordedLogs());
        assertEq(refused.length, 0);
    }

    /// @dev Every kind of line that does not fit, between lines that do: a reserve 1 wei short (a 1-wei
    /// release matured just before), no terms, a price above the terms, a zero price, a zero count. Each is
    /// reported with the error `consume` would revert with; every other line settles.
    function test_attack_badLinesDoNotBreakBatch() public {
        _fund(payer, 10 * USDC);
        _fund(mallory, 10 * USDC);
        _fund(carol, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _reserve(mallory, provider, PRICE, 3 * PRICE);
        _reserve(carol, provider, PRICE, 10 * USDC);
        vm.prank(mallory);
        escrow.release(provider, 1);
        vm.warp(block.timestamp + DELAY);

        Charge[] memory charges = new Charge[](8);
        charges[0] = Charge(payer, uint64(PRICE), 3);
        charges[1] = Charge(mallory, uint64(PRICE), 3); // 1 wei short
        charges[2] = Charge(stranger, uint64(PRICE), 1); // no terms
        charges[3] = Charge(carol, uint64(PRICE + 1), 1); // above the price
        charges[4] = Charge(payer, 0, 1); // zero price
        charges[5] = Charge(carol, uint64(PRICE), 0); // zero count
        charges[6] = Charge(carol, uint64(PRICE), 2);
        charges[7] = Charge(payer, uint64(PRICE), 1);

        bytes[5] memory expected = [
            abi.encodeWithSelector(
                IEscrow.InsufficientReserve.selector, mallory, provider, 3 * PRICE - 1, 3 * PRICE
            ),
            abi.encodeWithSelector(IEscrow.NotApproved.selector, stranger, provider),
            abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, carol, provider, PRICE, PRICE + 1),
            abi.encodeWithSelector(IEscrow.ZeroAmount.selector),
            abi.encodeWithSelector(IEscrow.ZeroAmount.selector)
        ];
        for (uint256 i; i < 5; ++i) {
            vm.expectEmit(address(escrow));
            emit IEscrow.ChargeRefused(charges[i + 1].payer, provider, i + 1, expected[i]);
        }
        vm.recordLogs();
        vm.prank(provider);
        assertEq(escrow.consumeBatch(charges), 6 * PRICE, "the good lines settle");

        (address[] memory payers, uint256[] memory indexes, bytes[] memory reasons) =
            _refusals(vm.getRecordedLogs());
        assertEq(payers.length, 5);
        for (uint256 i; i < 5; ++i) {
            assertEq(payers[i], charges[i + 1].payer);
            assertEq(indexes[i], i + 1);
            assertEq(reasons[i], expected[i]);
        }
        _checkDecodedReasons(reasons);

        // Refused lines charged nothing (mallory's matured release still went to her free balance).
        assertEq(_terms(mallory, provider).reserve, 3 * PRICE - 1);
        assertEq(escrow.freeBalance(mallory), 10 * USDC - 3 * PRICE + 1);
        assertEq(_terms(payer, provider).reserve, 6 * USDC);
        assertEq(_terms(carol, provider).reserve, 8 * USDC);
        _assertConserved(_everyone());
    }

    /// @dev The reasons of `test_attack_badLinesDoNotBreakBatch` decode as the errors they name.
    function _checkDecodedReasons(bytes[] memory reasons) internal view {
        (bytes4 selector, bytes memory args) = _split(reasons[0]);
        assertEq(selector, IEscrow.InsufficientReserve.selector);
        (address p, address q, uint256 left, uint256 needed) =
            abi.decode(args, (address, address, uint256, uint256));
        assertEq(p, mallory);
        assertEq(q, provider);
        assertEq(needed - left, 1, "one wei short");

        (selector, args) = _split(reasons[1]);
        assertEq(selector, IEscrow.NotApproved.selector);
        (p, q) = abi.decode(args, (address, address));
        assertEq(p, stranger);
        assertEq(q, provider);

        (selector, args) = _split(reasons[2]);
        assertEq(selector, IEscrow.PriceAboveTerms.selector);
        (p,, left, needed) = abi.decode(args, (address, address, uint256, uint256));
        assertEq(p, carol);
        assertEq(left, PRICE, "the most it may charge");
        assertEq(needed, PRICE + 1, "the price asked");

        for (uint256 i = 3; i < 5; ++i) {
            (selector, args) = _split(reasons[i]);
            assertEq(selector, IEscrow.ZeroAmount.selector);
            assertEq(args.length, 0);
        }
    }

    /// @dev 100 lines, 10 of which no longer fit (5 whose payers released everything, 5 whose payers cut
    /// the price, both matured): the 90 settle, the 10 are reported at their index.
    function test_attack_batchOf100With10RefusedSettles90() public {
        Charge[] memory charges = new Charge[](100);
        for (uint256 i; i < 100; ++i) {
            address p = address(uint160(0x1000 + i));
            _fund(p, 2 * PRICE);
            _reserve(p, provider, PRICE, 2 * PRICE);
            charges[i] = Charge(p, uint64(PRICE), 1);
            if (i % 10 != 3) continue;
            vm.prank(p);
            if ((i / 10) % 2 == 0) escrow.release(provider, type(uint256).max);
            else escrow.reserve(provider, PRICE / 2, 0);
        }
        vm.warp(block.timestamp + DELAY);

        vm.recordLogs();
        vm.prank(provider);
        assertEq(escrow.consumeBatch(charges), 90 * PRICE);
        (address[] memory payers, uint256[] memory indexes, bytes[] memory reasons) =
            _refusals(vm.getRecordedLogs());
        assertEq(payers.length, 10);
        for (uint256 k; k < 10; ++k) {
            uint256 i = k * 10 + 3;
            assertEq(indexes[k], i);
            assertEq(payers[k], charges[i].payer);
            bytes memory expected = k % 2 == 0
                ? abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, payers[k], provider, 0, PRICE)
                : abi.encodeWithSelector(
                    IEscrow.PriceAboveTerms.selector, payers[k], provider, PRICE / 2, PRICE
                );
            assertEq(reasons[k], expected);
        }
        assertEq(escrow.earnings(provider), 90 * PRICE);
        assertEq(usdc.balanceOf(address(escrow)), 200 * PRICE);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                     FINDING 4: A FRONT-RUN CANNOT TURN A CUT INTO A RAISE                 */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Reserve 10; the payer sends release(5); the provider front-runs by spending 6, then tries for
    /// more. Under a "new total" rule it would get 5 more (11). Here its take stays 6 (<= 10) and the
    /// payer gets the 4 left back after the delay.
    function test_attack_frontRunReleaseCannotTurnCutIntoRaise() public {
        _fund(payer, 100 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);

        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(payer, PRICE, 6)), 6 * USDC, "the front-run");
        vm.prank(payer);
        escrow.release(provider, 5 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(
            payer,
            provider,
            0,
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, payer, provider, 4 * USDC, 5 * USDC)
        );
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(payer, PRICE, 5)), 0, "5 more does not fit");

        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(payer, provider), 4 * USDC, "the rest comes back");
        assertEq(escrow.earnings(provider), 6 * USDC);
        assertEq(escrow.freeBalance(payer), 94 * USDC);
        assertEq(_terms(payer, provider).reserve, 0);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, payer, provider, 0, PRICE)
        );
        escrow.consume(payer, PRICE);
    }

    /// @dev Any reserve, release, front-run and later charges: the provider never takes more than the
    /// reserve, and the payer gets back `min(release, what is left)` after the delay, the rest staying
    /// reserved.
    function testFuzz_attack_frontRunRelease(uint96 reserved, uint96 releasing, uint96 frontRun, uint96 later)
        public
    {
        reserved = uint96(bound(reserved, 1, type(uint64).max));
        releasing = uint96(bound(releasing, 1, type(uint96).max));
        frontRun = uint96(bound(frontRun, 0, reserved));
        later = uint96(bound(later, 0, type(uint64).max));
        _fund(payer, reserved);
        _reserve(payer, provider, type(uint64).max, reserved);

        if (frontRun != 0) {
            vm.prank(provider);
            escrow.consume(payer, frontRun);
        }
        vm.prank(payer);
        escrow.release(provider, releasing);
        if (later != 0) {
            vm.prank(provider);
            try escrow.consume(payer, later) {
                assertLe(uint256(frontRun) + later, reserved);
            } catch {
                assertGt(uint256(frontRun) + later, reserved);
            }
        }
        vm.warp(block.timestamp + DELAY);
        escrow.applyPending(payer, provider);

        uint256 take = escrow.earnings(provider);
        uint256 left = reserved - take;
        uint256 back = releasing < left ? releasing : left;
        assertLe(take, reserved, "never more than the reserve");
        assertEq(escrow.freeBalance(payer), back);
        assertEq(_terms(payer, provider).reserve, left - back);
        assertEq(usdc.balanceOf(address(escrow)), reserved);
    }

    /// @dev The payer cuts the price from HIGH to LOW. Whatever the provider (or anyone) does around the cut,
    /// no charge is ever above HIGH, and from the cut's time none above LOW.
    function test_attack_frontRunPriceCutCannotRaisePrice() public {
        uint256 high = 2 * PRICE;
        uint256 low = PRICE;
        _fund(payer, 100 * USDC);
        _reserve(payer, provider, high, 100 * USDC);

        // Front-runs: a charge at the old price, and a stranger's applyPending.
        vm.prank(provider);
        escrow.consume(payer, high);
        vm.prank(stranger);
        escrow.applyPending(payer, provider);
        _reserve(payer, provider, low, 0);
        uint256 cutAt = block.timestamp + DELAY;

        Terms memory t = _terms(payer, provider);
        assertEq(t.price, high, "the cut did not raise anything");
        assertEq(t.pendingPrice, low);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, high, high + 1)
        );
        escrow.consume(payer, high + 1);

        vm.warp(cutAt - 1);
        vm.prank(provider);
        escrow.consume(payer, high);
        vm.warp(cutAt);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, low, high));
        escrow.consume(payer, high);
        vm.prank(provider);
        escrow.consume(payer, low);
        assertEq(escrow.earnings(provider), 2 * high + low);
    }

    /// @dev A payer whose cut to LOW matured sets MID (above LOW, below the old HIGH): a raise from LOW, at
    /// once. Front-running it with `applyPending` changes nothing: the same price either way, never HIGH.
    function test_attack_applyPendingFrontRunDoesNotChangeOutcome() public {
        (uint256 high, uint256 mid, uint256 low) = (3 * PRICE, 2 * PRICE, PRICE);
        _fund(payer, 100 * USDC);
        _reserve(payer, provider, high, 100 * USDC);
        _reserve(payer, provider, low, 0);
        vm.warp(block.timestamp + DELAY);

        uint256 snapshot = vm.snapshotState();
        _reserve(payer, provider, mid, 0);
        Terms memory plain = _terms(payer, provider);

        vm.revertToState(snapshot);
        vm.prank(provider);
        escrow.applyPending(payer, provider);
        _reserve(payer, provider, mid, 0);
        Terms memory frontRun = _terms(payer, provider);

        assertEq(plain.price, mid);
        assertEq(frontRun.price, plain.price);
        assertEq(frontRun.priceAt, 0);
        assertEq(plain.priceAt, 0);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, mid, high));
        escrow.consume(payer, high);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                               FINDING 5: A DELAY OF ZERO                                  */
    /* ---------------------------------------------------------------------------------------- */

    function test_attack_zeroDelayRefused() public {
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InvalidDelay.selector, 0));
        new Escrow(usdc, 0);
        uint256 tooLong = escrow.MAX_DELAY() + 1;
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InvalidDelay.selector, tooLong));
        new Escrow(usdc, tooLong);
    }

    /// @dev Even the shortest delay (1 second) keeps a release and a cut out of the block they are sent in.
    function test_attack_minimumDelayStillDelays() public {
        Escrow quick = new Escrow(usdc, 1);
        usdc.mint(mallory, 10 * USDC);
        vm.startPrank(mallory);
        usdc.approve(address(quick), 10 * USDC);
        quick.deposit(mallory, 10 * USDC);
        quick.reserve(provider, PRICE, 10 * USDC);
        quick.release(provider, type(uint256).max);
        quick.reserve(provider, 0, 0);
        assertEq(quick.applyPending(mallory, provider), 0);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        quick.withdraw(mallory, 1);
        vm.stopPrank();
        vm.prank(provider);
        assertEq(
            quick.consumeBatch(_one(mallory, PRICE, 10)), 10 * USDC, "the same block still charges it all"
        );
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                    FINDING 8: TIMESTAMPS, AND THE ESCROW AS A RECIPIENT                    */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev A schedule made after 2106 (past `uint32` seconds) takes effect exactly `DELAY` later.
    function test_attack_timestampsAfter2106() public {
        vm.warp(2 ** 33);
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, 2 * PRICE, 10 * USDC);
        _reserve(payer, provider, PRICE, 0);
        vm.prank(payer);
        escrow.release(provider, 4 * USDC);
        uint256 at = 2 ** 33 + DELAY;
        Terms memory t = _terms(payer, provider);
        assertEq(t.priceAt, at);
        assertEq(t.releaseAt, at);

        vm.warp(at - 1);
        assertEq(escrow.applyPending(payer, provider), 0);
        vm.prank(provider);
        escrow.consume(payer, 2 * PRICE);
        vm.warp(at);
        t = _terms(payer, provider);
        assertEq(t.price, PRICE);
        assertEq(t.releasable, 4 * USDC);
        assertEq(escrow.applyPending(payer, provider), 4 * USDC);
    }

    /// @dev A schedule straddling 2**32: a `uint32` time would wrap to the past and apply at once.
    function test_attack_scheduleAcrossUint32Boundary() public {
        vm.warp(2 ** 32 - 1);
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, 2 * PRICE, 10 * USDC);
        _reserve(payer, provider, PRICE, 0);
        vm.prank(payer);
        escrow.release(provider, type(uint256).max);
        uint256 at = 2 ** 32 - 1 + DELAY;

        vm.warp(2 ** 32);
        assertEq(escrow.applyPending(payer, provider), 0);
        vm.warp(at - 1);
        assertEq(escrow.applyPending(payer, provider), 0);
        assertEq(_terms(payer, provider).price, 2 * PRICE);
        vm.warp(at);
        assertEq(escrow.applyPending(payer, provider), 10 * USDC);
        assertEq(_terms(payer, provider).price, PRICE);
    }

    /// @dev The escrow refuses itself as a withdrawal or earnings recipient and as a deposit beneficiary;
    /// the token balance still equals free + reserves + earnings.
    function test_attack_escrowRefusesItselfAsRecipient() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * USDC);
        vm.prank(provider);
        escrow.consume(payer, PRICE);

        vm.prank(payer);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.withdraw(address(escrow), 1);
        vm.prank(provider);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.withdrawEarnings(address(escrow), 1);
        usdc.mint(stranger, USDC);
        vm.startPrank(stranger);
        usdc.approve(address(escrow), USDC);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.deposit(address(escrow), USDC);
        vm.stopPrank();
        usdc.mint(payer, USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), USDC, deadline);
        vm.prank(payer);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.depositWithPermit(address(escrow), USDC, deadline, v, r, s);

        assertEq(escrow.freeBalance(address(escrow)), 0);
        assertEq(usdc.balanceOf(address(escrow)), 10 * USDC);
        assertEq(
            usdc.balanceOf(address(escrow)),
            escrow.freeBalance(payer) + _terms(payer, provider).reserve + escrow.earnings(provider)
        );
        _assertConserved(_everyone());
    }

    /// @dev Money reserved for the escrow as "provider" is not lost: nobody can charge it (the escrow never
    /// calls itself) and the payer releases it like any other reserve.
    function test_attack_reserveForEscrowIsNotLost() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, address(escrow), type(uint256).max, 10 * USDC);
        vm.prank(payer);
        escrow.release(address(escrow), type(uint256).max);
        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(payer, address(escrow)), 10 * USDC);
        vm.prank(payer);
        escrow.withdraw(payer, 10 * USDC);
        assertEq(usdc.balanceOf(payer), 10 * USDC);
    }
}
