// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {IEscrow, Charge, Terms} from "../contracts/interfaces/IEscrow.sol";
import {Base} from "./utils/Base.sol";

/// @notice Unit tests of Escrow v2: free balances, a reserve per (payer, provider), delayed cuts and
/// releases, credits, earnings. The attacks of the review are in EscrowAttacks.t.sol, the hostile token in
/// EscrowHostile.t.sol, the invariants in invariant/EscrowInvariant.t.sol.
contract EscrowTest is Base {
    uint256 internal constant PRICE = 100_000; // 0.10 USDC

    address internal other = makeAddr("other");

    /* ---------------------------------------------------------------------------------------- */
    /*                                         HELPERS                                          */
    /* ---------------------------------------------------------------------------------------- */

    function _terms(address from, address to) internal view returns (Terms memory) {
        return escrow.terms(from, to);
    }

    function _consume(address by, address from, uint256 price) internal {
        vm.prank(by);
        escrow.consume(from, price);
    }

    function _release(address from, address to, uint256 amount) internal {
        vm.prank(from);
        escrow.release(to, amount);
    }

    /// @dev The escrow holds exactly the free balances, the reserves, the released money not yet moved, and
    /// the earnings of `who` (every address a test touched).
    function _assertConserved() internal view {
        address[4] memory who = [payer, provider, stranger, other];
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

    /* ---------------------------------------------------------------------------------------- */
    /*                                       CONSTRUCTION                                       */
    /* ---------------------------------------------------------------------------------------- */

    function test_constructor_setsTokenAndDelay() public view {
        assertEq(escrow.token(), address(usdc));
        assertEq(escrow.withdrawalDelay(), DELAY);
        assertEq(escrow.MAX_DELAY(), 365 days);
    }

    function test_constructor_revertsOnZeroToken() public {
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        new Escrow(IERC20(address(0)), DELAY);
    }

    function test_constructor_revertsOnZeroDelay() public {
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InvalidDelay.selector, 0));
        new Escrow(usdc, 0);
    }

    function test_constructor_revertsOnDelayAboveMax() public {
        uint256 tooLong = escrow.MAX_DELAY() + 1;
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InvalidDelay.selector, tooLong));
        new Escrow(usdc, tooLong);
    }

    function test_constructor_acceptsBounds() public {
        assertEq(new Escrow(usdc, 1).withdrawalDelay(), 1);
        assertEq(new Escrow(usdc, 365 days).withdrawalDelay(), 365 days);
    }

    function testFuzz_constructor_delay(uint256 delay) public {
        if (delay == 0 || delay > 365 days) {
            vm.expectRevert(abi.encodeWithSelector(IEscrow.InvalidDelay.selector, delay));
            new Escrow(usdc, delay);
        } else {
            assertEq(new Escrow(usdc, delay).withdrawalDelay(), delay);
        }
    }

    function test_eip712Domain_boundToChainAndEscrow() public view {
        (bytes1 fields, string memory name, string memory version, uint256 chainId, address verifying,,) =
            escrow.eip712Domain();
        assertEq(uint8(fields), 0x0f, "name, version, chain id, verifying contract");
        assertEq(name, "Khachapuri");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifying, address(escrow));
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         DEPOSIT                                          */
    /* ---------------------------------------------------------------------------------------- */

    function test_deposit_forSelf() public {
        usdc.mint(payer, 10 * USDC);
        vm.startPrank(payer);
        usdc.approve(address(escrow), 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.Deposited(payer, payer, 10 * USDC);
        escrow.deposit(payer, 10 * USDC);
        vm.stopPrank();
        assertEq(escrow.freeBalance(payer), 10 * USDC);
        assertEq(usdc.balanceOf(address(escrow)), 10 * USDC);
        assertEq(usdc.balanceOf(payer), 0);
    }

    function test_deposit_onBehalfOfAnother() public {
        usdc.mint(stranger, 5 * USDC);
        vm.startPrank(stranger);
        usdc.approve(address(escrow), 5 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.Deposited(stranger, payer, 5 * USDC);
        escrow.deposit(payer, 5 * USDC);
        vm.stopPrank();
        assertEq(escrow.freeBalance(payer), 5 * USDC);
        assertEq(escrow.freeBalance(stranger), 0);
    }

    function test_deposit_revertsOnZeroAmount() public {
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.deposit(payer, 0);
    }

    function test_deposit_revertsOnZeroOnBehalf() public {
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.deposit(address(0), 1);
    }

    function test_deposit_revertsOnEscrowAsBeneficiary() public {
        usdc.mint(payer, USDC);
        vm.startPrank(payer);
        usdc.approve(address(escrow), USDC);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.deposit(address(escrow), USDC);
        vm.stopPrank();
    }

    function test_deposit_revertsWithoutTokenAllowance() public {
        usdc.mint(payer, USDC);
        vm.prank(payer);
        vm.expectRevert();
        escrow.deposit(payer, USDC);
        assertEq(escrow.freeBalance(payer), 0);
    }

    function testFuzz_deposit(address from, address onBehalf, uint128 amount) public {
        vm.assume(from != address(0) && from != address(escrow) && amount > 0);
        vm.assume(onBehalf != address(0) && onBehalf != address(escrow));
        usdc.mint(from, amount);
        vm.startPrank(from);
        usdc.approve(address(escrow), amount);
        escrow.deposit(onBehalf, amount);
        vm.stopPrank();
        assertEq(escrow.freeBalance(onBehalf), amount);
        assertEq(usdc.balanceOf(address(escrow)), amount);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                    DEPOSIT WITH PERMIT                                   */
    /* ---------------------------------------------------------------------------------------- */

    function test_depositWithPermit() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.expectEmit(address(escrow));
        emit IEscrow.Deposited(payer, payer, 3 * USDC);
        vm.prank(payer);
        escrow.depositWithPermit(payer, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.freeBalance(payer), 3 * USDC);
        assertEq(usdc.nonces(payer), 1);
        assertEq(usdc.allowance(payer, address(escrow)), 0, "the permit is used up");
    }

    function test_depositWithPermit_onBehalf() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(payer);
        escrow.depositWithPermit(stranger, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.freeBalance(stranger), 3 * USDC);
        assertEq(escrow.freeBalance(payer), 0);
    }

    /// @dev Hostile: a permit replayed after use moves nothing more.
    function test_depositWithPermit_replayedPermitFails() public {
        usdc.mint(payer, 6 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(payer);
        escrow.depositWithPermit(payer, 3 * USDC, deadline, v, r, s);
        vm.prank(payer);
        vm.expectRevert(IEscrow.PermitFailed.selector);
        escrow.depositWithPermit(payer, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.freeBalance(payer), 3 * USDC);
        assertEq(usdc.balanceOf(payer), 3 * USDC);
    }

    /// @dev A permit seen in the mempool and submitted first by someone else still lets the owner deposit.
    function test_depositWithPermit_frontRunPermitStillDeposits() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(stranger);
        usdc.permit(payer, address(escrow), 3 * USDC, deadline, v, r, s);
        vm.prank(payer);
        escrow.depositWithPermit(payer, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.freeBalance(payer), 3 * USDC);
        assertEq(usdc.balanceOf(address(escrow)), 3 * USDC);
    }

    /// @dev A permit signed by the payer cannot be used by a stranger to move the payer's tokens: the escrow
    /// asks the token for a permit of the caller, which the payer's signature does not match.
    function test_depositWithPermit_strangerCannotUsePayersPermit() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(stranger);
        vm.expectRevert(IEscrow.PermitFailed.selector);
        escrow.depositWithPermit(stranger, 3 * USDC, deadline, v, r, s);
        assertEq(usdc.balanceOf(payer), 3 * USDC);
        assertEq(escrow.freeBalance(stranger), 0);
    }

    function test_depositWithPermit_expiredFails() public {
        usdc.mint(payer, USDC);
        uint256 deadline = block.timestamp - 1;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), USDC, deadline);
        vm.prank(payer);
        vm.expectRevert(IEscrow.PermitFailed.selector);
        escrow.depositWithPermit(payer, USDC, deadline, v, r, s);
    }

    /// @dev A bad permit is no obstacle when the ordinary allowance already covers the deposit.
    function test_depositWithPermit_badPermitButAllowanceCovers() public {
        usdc.mint(payer, USDC);
        vm.prank(payer);
        usdc.approve(address(escrow), USDC);
        vm.prank(payer);
        escrow.depositWithPermit(payer, USDC, block.timestamp, 27, bytes32(0), bytes32(0));
        assertEq(escrow.freeBalance(payer), USDC);
    }

    function test_depositWithPermit_revertsOnEscrowAsBeneficiary() public {
        usdc.mint(payer, USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), USDC, deadline);
        vm.prank(payer);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.depositWithPermit(address(escrow), USDC, deadline, v, r, s);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         WITHDRAW                                         */
    /* ---------------------------------------------------------------------------------------- */

    function test_withdraw_atOnce() public {
        _fund(payer, 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.Withdrawn(payer, stranger, 4 * USDC);
        vm.prank(payer);
        escrow.withdraw(stranger, 4 * USDC);
        assertEq(usdc.balanceOf(stranger), 4 * USDC);
        assertEq(escrow.freeBalance(payer), 6 * USDC);
        assertEq(usdc.balanceOf(address(escrow)), 6 * USDC);
    }

    function test_withdraw_reverts() public {
        _fund(payer, 10 * USDC);
        vm.startPrank(payer);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.withdraw(address(0), 1);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.withdraw(address(escrow), 1);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.withdraw(payer, 0);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 10 * USDC, 10 * USDC + 1)
        );
        escrow.withdraw(payer, 10 * USDC + 1);
        vm.stopPrank();
    }

    function test_withdraw_cannotTouchReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 6 * USDC);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 4 * USDC, 5 * USDC));
        escrow.withdraw(payer, 5 * USDC);
    }

    /// @dev Only the caller's own free balance: a stranger withdrawing finds nothing of its own.
    function test_withdraw_onlyOwnBalance() public {
        _fund(payer, 10 * USDC);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        escrow.withdraw(stranger, 1);
    }

    function testFuzz_withdraw(uint96 funded, uint96 amount) public {
        vm.assume(funded > 0 && amount > 0);
        _fund(payer, funded);
        vm.prank(payer);
        if (amount > funded) {
            vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, funded, amount));
            escrow.withdraw(stranger, amount);
        } else {
            escrow.withdraw(stranger, amount);
            assertEq(usdc.balanceOf(stranger), amount);
            assertEq(escrow.freeBalance(payer), uint256(funded) - amount);
        }
        assertEq(usdc.balanceOf(address(escrow)), escrow.freeBalance(payer));
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         RESERVE                                          */
    /* ---------------------------------------------------------------------------------------- */

    function test_reserve_setsTermsAndMovesFreeToReserve() public {
        _fund(payer, 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, PRICE, 6 * USDC);
        _reserve(payer, provider, PRICE, 6 * USDC);
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, PRICE);
        assertEq(t.reserve, 6 * USDC);
        assertEq(t.priceAt, 0);
        assertEq(t.releaseAt, 0);
        assertEq(escrow.freeBalance(payer), 4 * USDC);
        assertEq(usdc.balanceOf(address(escrow)), 10 * USDC, "no token moved");
    }

    function test_reserve_addsToReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 3 * USDC);
        _reserve(payer, provider, PRICE, 4 * USDC);
        assertEq(_terms(payer, provider).reserve, 7 * USDC);
        assertEq(escrow.freeBalance(payer), 3 * USDC);
    }

    function test_reserve_zeroAmountKeepsReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 6 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, 2 * PRICE, 6 * USDC);
        _reserve(payer, provider, 2 * PRICE, 0);
        assertEq(_terms(payer, provider).reserve, 6 * USDC);
        assertEq(escrow.freeBalance(payer), 4 * USDC);
    }

    function test_reserve_revertsOnZeroProvider() public {
        vm.prank(payer);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.reserve(address(0), PRICE, 0);
    }

    function test_reserve_revertsOnInsufficientBalance() public {
        _fund(payer, 10 * USDC);
        vm.prank(payer);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 10 * USDC, 10 * USDC + 1)
        );
        escrow.reserve(provider, PRICE, 10 * USDC + 1);
    }

    function test_reserve_revertsOnAmountOverflow() public {
        uint256 max = type(uint96).max;
        _fund(payer, max + 1);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, max + 1));
        escrow.reserve(provider, PRICE, max + 1);
        _reserve(payer, provider, PRICE, max);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, 1));
        escrow.reserve(provider, PRICE, 1);
        assertEq(_terms(payer, provider).reserve, max);
    }

    function test_reserve_clampsPriceToAnyPrice() public {
        _reserve(payer, provider, type(uint256).max, 0);
        assertEq(_terms(payer, provider).price, type(uint64).max);
    }

    /// @dev A payer may be its own provider: it charges its own reserve.
    function test_reserve_forItself() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, payer, PRICE, 1 * USDC);
        _consume(payer, payer, PRICE);
        assertEq(escrow.earnings(payer), PRICE);
        assertEq(_terms(payer, payer).reserve, 1 * USDC - PRICE);
    }

    function test_reserve_raiseAppliesNowAndDropsPendingCut() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _reserve(payer, provider, PRICE / 2, 0);
        assertEq(_terms(payer, provider).priceAt, block.timestamp + DELAY, "cut pending");

        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, 2 * PRICE, 1 * USDC);
        _reserve(payer, provider, 2 * PRICE, 0);
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, 2 * PRICE);
        assertEq(t.priceAt, 0, "the raise dropped the cut");
        assertEq(t.pendingPrice, 0);

        vm.warp(block.timestamp + 2 * DELAY);
        assertEq(_terms(payer, provider).price, 2 * PRICE, "the dropped cut never comes back");
        _consume(provider, payer, 2 * PRICE);
    }

    function test_reserve_raiseKeepsPendingRelease() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        _reserve(payer, provider, PRICE / 2, 0);
        _reserve(payer, provider, 2 * PRICE, 0);
        Terms memory t = _terms(payer, provider);
        assertEq(t.priceAt, 0);
        assertEq(t.pendingRelease, 4 * USDC);
        assertEq(t.releaseAt, block.timestamp + DELAY);
        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(payer, provider), 4 * USDC);
        assertEq(_terms(payer, provider).price, 2 * PRICE);
    }

    /// @dev An equal price changes nothing: no event, and a pending cut keeps its time.
    function test_reserve_equalPriceChangesNothing() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _reserve(payer, provider, PRICE / 2, 0);
        uint256 cutAt = block.timestamp + DELAY;
        vm.warp(block.timestamp + DELAY / 2);

        vm.recordLogs();
        _reserve(payer, provider, PRICE, 0);
        assertEq(vm.getRecordedLogs().length, 0, "no event");
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, PRICE);
        assertEq(t.pendingPrice, PRICE / 2);
        assertEq(t.priceAt, cutAt, "the pending cut keeps its time");

        // With an amount, only the reserve moves.
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, PRICE, 2 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        assertEq(_terms(payer, provider).priceAt, cutAt);

        vm.warp(cutAt);
        assertEq(_terms(payer, provider).price, PRICE / 2);
    }

    function test_reserve_cutIsDelayed() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        uint256 cutAt = block.timestamp + DELAY;
        vm.expectEmit(address(escrow));
        emit IEscrow.PriceCutScheduled(payer, provider, PRICE / 2, cutAt);
        _reserve(payer, provider, PRICE / 2, 0);

        Terms memory t = _terms(payer, provider);
        assertEq(t.price, PRICE, "old price still in force");
        assertEq(t.pendingPrice, PRICE / 2);
        assertEq(t.priceAt, cutAt);

        // The provider charges under the old price until the delay runs out...
        vm.warp(cutAt - 1);
        _consume(provider, payer, PRICE);
        // ... and not a second longer.
        vm.warp(cutAt);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, PRICE / 2, PRICE)
        );
        escrow.consume(payer, PRICE);
        _consume(provider, payer, PRICE / 2);
        t = _terms(payer, provider);
        assertEq(t.price, PRICE / 2);
        assertEq(t.priceAt, 0);
    }

    function test_reserve_cutReplacesPendingCutAndRestartsDelay() public {
        _reserve(payer, provider, PRICE, 0);
        uint256 start = block.timestamp;
        _reserve(payer, provider, PRICE / 2, 0);
        vm.warp(start + DELAY / 2);
        _reserve(payer, provider, PRICE / 4, 0);
        Terms memory t = _terms(payer, provider);
        assertEq(t.pendingPrice, PRICE / 4);
        assertEq(t.priceAt, start + DELAY / 2 + DELAY);
        vm.warp(start + DELAY);
        assertEq(_terms(payer, provider).price, PRICE, "the first cut's time no longer counts");
        vm.warp(start + DELAY / 2 + DELAY);
        assertEq(_terms(payer, provider).price, PRICE / 4);
    }

    /// @dev A price between the pending cut and the price in force is still below the price in force: a
    /// delayed cut, never an immediate change.
    function test_reserve_priceBetweenPendingAndInForceIsDelayed() public {
        _reserve(payer, provider, PRICE, 0);
        _reserve(payer, provider, PRICE / 4, 0);
        _reserve(payer, provider, PRICE / 2, 0);
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, PRICE);
        assertEq(t.pendingPrice, PRICE / 2);
        assertEq(t.priceAt, block.timestamp + DELAY);
    }

    /// @dev A matured cut is put in force before the new price is compared: above it is a raise, at once.
    function test_reserve_maturedCutAppliesBeforeComparing() public {
        _reserve(payer, provider, PRICE, 0);
        _reserve(payer, provider, PRICE / 2, 0);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, PRICE / 2, 0); // the matured cut
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, (3 * PRICE) / 4, 0); // the raise above it
        _reserve(payer, provider, (3 * PRICE) / 4, 0);
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, (3 * PRICE) / 4);
        assertEq(t.priceAt, 0);
    }

    /// @dev Money of a matured release on the same pair is back in the free balance before the amount is
    /// checked. Another pair's matured release needs a touch of that pair (`applyPending`) first.
    function test_reserve_appliesMaturedReleaseFirst() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.warp(block.timestamp + DELAY);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1 * USDC));
        escrow.reserve(stranger, PRICE, 1 * USDC);

        _reserve(payer, provider, PRICE, 3 * USDC);
        assertEq(_terms(payer, provider).reserve, 9 * USDC);
        assertEq(escrow.freeBalance(payer), 1 * USDC);
        _reserve(payer, stranger, PRICE, 1 * USDC);
        assertEq(escrow.freeBalance(payer), 0);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         RELEASE                                          */
    /* ---------------------------------------------------------------------------------------- */

    function test_release_schedules() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.ReleaseScheduled(payer, provider, 4 * USDC, block.timestamp + DELAY);
        _release(payer, provider, 4 * USDC);
        Terms memory t = _terms(payer, provider);
        assertEq(t.reserve, 10 * USDC, "the whole reserve until the delay");
        assertEq(t.pendingRelease, 4 * USDC);
        assertEq(t.releaseAt, block.timestamp + DELAY);
        assertEq(t.releasable, 0);
        assertEq(escrow.freeBalance(payer), 0);
    }

    function test_release_providerChargesWholeReserveUntilDelay() public {
        _fund(payer, 1 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _release(payer, provider, type(uint256).max);
        vm.warp(block.timestamp + DELAY - 1);
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(payer, PRICE, 10)), 1 * USDC);
        vm.warp(block.timestamp + 1);
        assertEq(escrow.applyPending(payer, provider), 0, "nothing left to release");
        assertEq(escrow.freeBalance(payer), 0);
    }

    function test_release_afterDelayReturnsToFree() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.warp(block.timestamp + DELAY - 1);
        assertEq(escrow.applyPending(payer, provider), 0, "not before its time");
        vm.warp(block.timestamp + 1);
        vm.expectEmit(address(escrow));
        emit IEscrow.Released(payer, provider, 4 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, PRICE, 6 * USDC);
        vm.prank(stranger);
        assertEq(escrow.applyPending(payer, provider), 4 * USDC);
        assertEq(escrow.freeBalance(payer), 4 * USDC);
        Terms memory t = _terms(payer, provider);
        assertEq(t.reserve, 6 * USDC);
        assertEq(t.releasable, 0);
        assertEq(t.releaseAt, 0);
        vm.prank(payer);
        escrow.withdraw(payer, 4 * USDC);
        assertEq(usdc.balanceOf(payer), 4 * USDC);
    }

    /// @dev The release names an amount to take out: charges in between do not change it, only what is left.
    function test_release_isRelativeToChargesInBetween() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, 1 * USDC, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.prank(provider);
        escrow.consumeBatch(_one(payer, 1 * USDC, 3));
        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(payer, provider), 4 * USDC);
        assertEq(_terms(payer, provider).reserve, 3 * USDC);
        assertEq(escrow.earnings(provider), 3 * USDC);
    }

    function test_release_releasesAtMostWhatIsLeft() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.warp(block.timestamp + DELAY);
        assertEq(_terms(payer, provider).releasable, 1 * USDC);
        assertEq(escrow.applyPending(payer, provider), 1 * USDC);
        assertEq(_terms(payer, provider).reserve, 0);
        assertEq(escrow.freeBalance(payer), 10 * USDC);
    }

    function test_release_replacesPendingAndRestartsDelay() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        uint256 start = block.timestamp;
        _release(payer, provider, 4 * USDC);
        vm.warp(start + DELAY / 2);
        _release(payer, provider, 2 * USDC);
        Terms memory t = _terms(payer, provider);
        assertEq(t.pendingRelease, 2 * USDC);
        assertEq(t.releaseAt, start + DELAY / 2 + DELAY);
        vm.warp(start + DELAY);
        assertEq(escrow.applyPending(payer, provider), 0, "the first release's time no longer counts");
        vm.warp(start + DELAY / 2 + DELAY);
        assertEq(escrow.applyPending(payer, provider), 2 * USDC, "only the replacing amount");
        assertEq(_terms(payer, provider).reserve, 8 * USDC);
    }

    function test_release_clampsToEverything() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.ReleaseScheduled(payer, provider, type(uint96).max, block.timestamp + DELAY);
        _release(payer, provider, type(uint256).max);
        assertEq(_terms(payer, provider).pendingRelease, type(uint96).max);
        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(payer, provider), 10 * USDC);
    }

    function test_release_reverts() public {
        vm.startPrank(payer);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.release(address(0), 1);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.release(provider, 0);
        vm.stopPrank();
    }

    /// @dev A new release first puts a matured one into force, then schedules itself.
    function test_release_appliesMaturedReleaseFirst() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(address(escrow));
        emit IEscrow.Released(payer, provider, 4 * USDC);
        _release(payer, provider, 2 * USDC);
        assertEq(escrow.freeBalance(payer), 4 * USDC);
        Terms memory t = _terms(payer, provider);
        assertEq(t.reserve, 6 * USDC);
        assertEq(t.pendingRelease, 2 * USDC);
        assertEq(t.releaseAt, block.timestamp + DELAY);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                      CANCEL PENDING                                      */
    /* ---------------------------------------------------------------------------------------- */

    function test_cancelPending_dropsCutAndRelease() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _reserve(payer, provider, PRICE / 2, 0);
        _release(payer, provider, 4 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.PendingCancelled(payer, provider);
        vm.prank(payer);
        escrow.cancelPending(provider);
        Terms memory t = _terms(payer, provider);
        assertEq(t.priceAt, 0);
        assertEq(t.releaseAt, 0);
        vm.warp(block.timestamp + DELAY);
        t = _terms(payer, provider);
        assertEq(t.price, PRICE, "the terms in force stay");
        assertEq(t.reserve, 10 * USDC);
        assertEq(escrow.applyPending(payer, provider), 0);
    }

    function test_cancelPending_revertsWhenNothingPending() public {
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NothingPending.selector, provider));
        escrow.cancelPending(provider);
    }

    /// @dev Only the payer's own changes: a stranger's call acts on the stranger's line (nothing there).
    function test_cancelPending_strangerCannotCancelPayersChanges() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NothingPending.selector, provider));
        escrow.cancelPending(provider);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NothingPending.selector, provider));
        escrow.cancelPending(provider);
        assertEq(_terms(payer, provider).pendingRelease, 4 * USDC);
    }

    /// @dev A change whose time has come is in force: there is nothing left to cancel.
    function test_cancelPending_cannotUndoMaturedChange() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _release(payer, provider, 4 * USDC);
        vm.warp(block.timestamp + DELAY);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NothingPending.selector, provider));
        escrow.cancelPending(provider);
        assertEq(_terms(payer, provider).releasable, 4 * USDC);
    }

    function test_cancelPending_appliesMaturedAndCancelsTheRest() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        uint256 start = block.timestamp;
        _release(payer, provider, 4 * USDC);
        vm.warp(start + DELAY / 2);
        _reserve(payer, provider, PRICE / 2, 0);
        vm.warp(start + DELAY);
        vm.expectEmit(address(escrow));
        emit IEscrow.Released(payer, provider, 4 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.PendingCancelled(payer, provider);
        vm.prank(payer);
        escrow.cancelPending(provider);
        assertEq(escrow.freeBalance(payer), 4 * USDC);
        vm.warp(start + 2 * DELAY);
        assertEq(_terms(payer, provider).price, PRICE, "the cut was cancelled");
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                      APPLY PENDING                                       */
    /* ---------------------------------------------------------------------------------------- */

    function test_applyPending_beforeMaturityDoesNothing() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _reserve(payer, provider, PRICE / 2, 0);
        _release(payer, provider, 4 * USDC);
        vm.warp(block.timestamp + DELAY - 1);
        vm.recordLogs();
        vm.prank(stranger);
        assertEq(escrow.applyPending(payer, provider), 0);
        assertEq(vm.getRecordedLogs().length, 0);
        assertEq(_terms(payer, provider).pendingRelease, 4 * USDC);
    }

    function test_applyPending_nothingPendingReturnsZero() public {
        vm.recordLogs();
        assertEq(escrow.applyPending(payer, provider), 0);
        assertEq(vm.getRecordedLogs().length, 0);
    }

    function test_applyPending_appliesPriceCut() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        _reserve(payer, provider, PRICE / 2, 0);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(address(escrow));
        emit IEscrow.TermsSet(payer, provider, PRICE / 2, 10 * USDC);
        vm.prank(stranger);
        assertEq(escrow.applyPending(payer, provider), 0, "a price cut releases nothing");
        assertEq(_terms(payer, provider).price, PRICE / 2);
        assertEq(_terms(payer, provider).priceAt, 0);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                          TERMS                                           */
    /* ---------------------------------------------------------------------------------------- */

    function test_terms_emptyIsZero() public view {
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, 0);
        assertEq(t.reserve, 0);
        assertEq(t.credits, 0);
        assertEq(t.pendingPrice, 0);
        assertEq(t.priceAt, 0);
        assertEq(t.pendingRelease, 0);
        assertEq(t.releaseAt, 0);
        assertEq(t.releasable, 0);
    }

    /// @dev Before maturity the view shows the pending changes; after, it shows them in force with the
    /// released money in `releasable` until a transaction moves it to the free balance.
    function test_terms_beforeAndAfterMaturity() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        _reserve(payer, provider, PRICE / 2, 0);
        _release(payer, provider, 4 * USDC);
        uint256 at = block.timestamp + DELAY;

        vm.warp(at - 1);
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, PRICE);
        assertEq(t.reserve, 10 * USDC);
        assertEq(t.credits, 3 * PRICE);
        assertEq(t.pendingPrice, PRICE / 2);
        assertEq(t.priceAt, at);
        assertEq(t.pendingRelease, 4 * USDC);
        assertEq(t.releaseAt, at);
        assertEq(t.releasable, 0);

        vm.warp(at);
        t = _terms(payer, provider);
        assertEq(t.price, PRICE / 2);
        assertEq(t.reserve, 6 * USDC);
        assertEq(t.credits, 3 * PRICE);
        assertEq(t.pendingPrice, 0);
        assertEq(t.priceAt, 0);
        assertEq(t.pendingRelease, 0);
        assertEq(t.releaseAt, 0);
        assertEq(t.releasable, 4 * USDC);
        assertEq(escrow.freeBalance(payer), 0, "not moved yet");

        escrow.applyPending(payer, provider);
        t = _terms(payer, provider);
        assertEq(t.price, PRICE / 2);
        assertEq(t.reserve, 6 * USDC);
        assertEq(t.releasable, 0);
        assertEq(escrow.freeBalance(payer), 4 * USDC);
    }

    /// @dev One change matured, the other not: the view shows each as it is.
    function test_terms_oneMaturedOneNot() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * USDC);
        uint256 start = block.timestamp;
        _release(payer, provider, 4 * USDC);
        vm.warp(start + DELAY / 2);
        _reserve(payer, provider, PRICE / 2, 0);
        vm.warp(start + DELAY);
        Terms memory t = _terms(payer, provider);
        assertEq(t.price, PRICE);
        assertEq(t.pendingPrice, PRICE / 2);
        assertEq(t.priceAt, start + DELAY / 2 + DELAY);
        assertEq(t.releasable, 4 * USDC);
        assertEq(t.releaseAt, 0);
        assertEq(escrow.applyPending(payer, provider), 4 * USDC);
        t = _terms(payer, provider);
        assertEq(t.priceAt, start + DELAY / 2 + DELAY, "the cut still waits");
        assertEq(t.reserve, 6 * USDC);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         CONSUME                                          */
    /* ---------------------------------------------------------------------------------------- */

    function test_consume_movesReserveToEarnings() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 1, 0);
        _consume(provider, payer, PRICE);
        assertEq(escrow.earnings(provider), PRICE);
        assertEq(_terms(payer, provider).reserve, 1 * USDC - PRICE);
        assertEq(escrow.freeBalance(payer), 9 * USDC, "the free balance is not touched");
        _assertConserved();
    }

    function test_consume_belowPrice() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _consume(provider, payer, PRICE / 4);
        assertEq(escrow.earnings(provider), PRICE / 4);
    }

    /// @dev Hostile: a provider charging a payer who never set terms for it.
    function test_consume_revertsNotApproved() public {
        _fund(payer, 10 * USDC);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, provider));
        escrow.consume(payer, PRICE);
    }

    /// @dev Hostile: someone other than the provider charges: it finds its own (empty) line.
    function test_consume_revertsForNonProvider() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, stranger));
        escrow.consume(payer, PRICE);
        assertEq(_terms(payer, provider).reserve, 1 * USDC);
    }

    /// @dev Hostile: a provider charging above the price it was given.
    function test_consume_revertsPriceAboveTerms() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, PRICE, PRICE + 1)
        );
        escrow.consume(payer, PRICE + 1);
    }

    /// @dev A reserve with price 0 is not "any price": every charge from it is above the terms.
    function test_consume_zeroPriceWithReserveIsAboveTerms() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, 0, 1 * USDC);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, 0, 1));
        escrow.consume(payer, 1);
    }

    /// @dev A price without a reserve is not approval to charge the free balance.
    function test_consume_priceWithoutReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 0);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, payer, provider, 0, PRICE)
        );
        escrow.consume(payer, PRICE);
    }

    function test_consume_revertsInsufficientReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 3 * PRICE - 1);
        vm.startPrank(provider);
        escrow.consume(payer, PRICE);
        escrow.consume(payer, PRICE);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, payer, provider, PRICE - 1, PRICE)
        );
        escrow.consume(payer, PRICE);
        vm.stopPrank();
        assertEq(escrow.freeBalance(payer), 10 * USDC - 3 * PRICE + 1, "the free balance never pays");
    }

    function test_consume_revertsZeroAmount() public {
        vm.prank(provider);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.consume(payer, 0);
    }

    function test_consume_revertsAmountOverflow() public {
        uint256 huge = uint256(type(uint64).max) + 1;
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, huge));
        escrow.consume(payer, huge);
    }

    function test_consume_neverTouchesAnotherProvidersReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, stranger, PRICE, 5 * USDC);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, provider));
        escrow.consume(payer, PRICE);
        assertEq(_terms(payer, stranger).reserve, 5 * USDC);
    }

    /// @dev A charge puts a matured release into force first: released money is out of reach.
    function test_consume_cannotChargeMaturedRelease() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _release(payer, provider, 1 * USDC - PRICE);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(address(escrow));
        emit IEscrow.Released(payer, provider, 1 * USDC - PRICE);
        _consume(provider, payer, PRICE);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, payer, provider, 0, PRICE)
        );
        escrow.consume(payer, PRICE);
        assertEq(escrow.freeBalance(payer), 10 * USDC - PRICE);
    }

    function testFuzz_consume_neverAbovePriceOrReserve(uint64 termsPrice, uint96 reserved, uint64 price)
        public
    {
        vm.assume(price > 0);
        _fund(payer, uint256(reserved) + 1);
        _reserve(payer, provider, termsPrice, reserved);
        vm.prank(provider);
        try escrow.consume(payer, price) {
            assertLe(price, termsPrice, "charged above the price");
            assertLe(price, reserved, "charged above the reserve");
            assertEq(escrow.earnings(provider), price);
            assertEq(_terms(payer, provider).reserve, uint256(reserved) - price);
        } catch (bytes memory reason) {
            bytes memory expected;
            if (termsPrice == 0 && reserved == 0) {
                expected = abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, provider);
            } else if (price > termsPrice) {
                expected = abi.encodeWithSelector(
                    IEscrow.PriceAboveTerms.selector, payer, provider, termsPrice, price
                );
            } else {
                expected = abi.encodeWithSelector(
                    IEscrow.InsufficientReserve.selector, payer, provider, reserved, price
                );
            }
            assertEq(reason, expected);
            assertEq(_terms(payer, provider).reserve, reserved);
        }
        assertEq(escrow.freeBalance(payer), 1, "the free balance is never charged");
        _assertConserved();
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                       CONSUME BATCH                                      */
    /* ---------------------------------------------------------------------------------------- */

    function test_consumeBatch_manyPayersWithCounts() public {
        _fund(payer, 10 * USDC);
        _fund(other, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * USDC);
        _reserve(other, provider, PRICE, 5 * USDC);
        Charge[] memory charges = new Charge[](2);
        charges[0] = Charge(payer, uint64(PRICE), 7);
        charges[1] = Charge(other, uint64(PRICE / 2), 3);
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 7, 0);
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(other, provider, PRICE / 2, 3, 0);
        vm.prank(provider);
        uint256 earned = escrow.consumeBatch(charges);
        assertEq(earned, 7 * PRICE + 3 * (PRICE / 2));
        assertEq(escrow.earnings(provider), earned);
        assertEq(_terms(payer, provider).reserve, 5 * USDC - 7 * PRICE);
        assertEq(_terms(other, provider).reserve, 5 * USDC - 3 * (PRICE / 2));
        _assertConserved();
    }

    function test_consumeBatch_refusedLineChargesNothing() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * USDC);
        Charge[] memory charges = new Charge[](3);
        charges[0] = Charge(payer, uint64(PRICE), 1);
        charges[1] = Charge(other, uint64(PRICE), 1);
        charges[2] = Charge(payer, uint64(PRICE), 2);
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 1, 0);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(
            other, provider, 1, abi.encodeWithSelector(IEscrow.NotApproved.selector, other, provider)
        );
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 2, 0);
        vm.prank(provider);
        assertEq(escrow.consumeBatch(charges), 3 * PRICE);
        assertEq(escrow.earnings(provider), 3 * PRICE);
    }

    function test_consumeBatch_countMultipliesAgainstReserve() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * PRICE);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(
            payer,
            provider,
            0,
            abi.encodeWithSelector(
                IEscrow.InsufficientReserve.selector, payer, provider, 5 * PRICE, 6 * PRICE
            )
        );
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(payer, PRICE, 6)), 0);
        assertEq(_terms(payer, provider).reserve, 5 * PRICE);
    }

    /// @dev Lines of one payer are charged in order: the second sees what the first took.
    function test_consumeBatch_samePayerTwice() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * PRICE);
        Charge[] memory charges = new Charge[](2);
        charges[0] = Charge(payer, uint64(PRICE), 3);
        charges[1] = Charge(payer, uint64(PRICE), 3);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(
            payer,
            provider,
            1,
            abi.encodeWithSelector(
                IEscrow.InsufficientReserve.selector, payer, provider, 2 * PRICE, 3 * PRICE
            )
        );
        vm.prank(provider);
        assertEq(escrow.consumeBatch(charges), 3 * PRICE);
    }

    function test_consumeBatch_zeroCountAndZeroPriceRefused() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * USDC);
        Charge[] memory charges = new Charge[](2);
        charges[0] = Charge(payer, uint64(PRICE), 0);
        charges[1] = Charge(payer, 0, 5);
        bytes memory zero = abi.encodeWithSelector(IEscrow.ZeroAmount.selector);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(payer, provider, 0, zero);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(payer, provider, 1, zero);
        vm.prank(provider);
        assertEq(escrow.consumeBatch(charges), 0);
    }

    function test_consumeBatch_emptyIsNoop() public {
        vm.recordLogs();
        vm.prank(provider);
        assertEq(escrow.consumeBatch(new Charge[](0)), 0);
        assertEq(vm.getRecordedLogs().length, 0);
    }

    /// @dev `earned` counts what the reserves paid; credits are never earnings.
    function test_consumeBatch_returnsReservePartOnly() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 5 * USDC);
        vm.prank(provider);
        escrow.grantCredits(payer, 2 * PRICE);
        vm.prank(provider);
        assertEq(escrow.consumeBatch(_one(payer, PRICE, 5)), 3 * PRICE);
        assertEq(escrow.earnings(provider), 3 * PRICE);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         CREDITS                                          */
    /* ---------------------------------------------------------------------------------------- */

    function test_grantCredits_spentFirstAndPayNothing() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.CreditsGranted(provider, payer, PRICE + PRICE / 2);
        vm.prank(provider);
        escrow.grantCredits(payer, PRICE + PRICE / 2);

        vm.startPrank(provider);
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 1, PRICE);
        escrow.consume(payer, PRICE); // all credits
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 1, PRICE / 2);
        escrow.consume(payer, PRICE); // half credits, half reserve
        vm.stopPrank();

        Terms memory t = _terms(payer, provider);
        assertEq(t.credits, 0);
        assertEq(t.reserve, 1 * USDC - PRICE / 2, "only the part beyond the credits comes from the reserve");
        assertEq(escrow.earnings(provider), PRICE / 2, "credits are never earnings");
        assertEq(escrow.freeBalance(payer), 9 * USDC);
        _assertConserved();
    }

    function test_credits_needNoTermsNorDeposit() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        _consume(provider, payer, PRICE);
        assertEq(_terms(payer, provider).credits, 2 * PRICE);
        assertEq(escrow.earnings(provider), 0);
        assertEq(usdc.balanceOf(address(escrow)), 0);
    }

    /// @dev Credits are the provider's own gift: a charge wholly paid by them is not bound by the terms.
    function test_credits_payAnyPriceWhenTheyCover() public {
        _reserve(payer, provider, PRICE, 0);
        vm.prank(provider);
        escrow.grantCredits(payer, 10 * PRICE);
        _consume(provider, payer, 5 * PRICE);
        assertEq(_terms(payer, provider).credits, 5 * PRICE);
    }

    /// @dev When credits cover only part, the rest comes from the reserve under the terms: above them the
    /// whole charge is refused and the credits stay.
    function test_credits_partialCoverStillNeedsTerms() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 10 * PRICE);
        vm.prank(provider);
        escrow.grantCredits(payer, PRICE / 2);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, payer, provider, PRICE, 2 * PRICE)
        );
        escrow.consume(payer, 2 * PRICE);
        assertEq(_terms(payer, provider).credits, PRICE / 2);
    }

    function test_credits_spendableOnlyWithGrantingProvider() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, stranger));
        escrow.consume(payer, PRICE);
        assertEq(_terms(payer, stranger).credits, 0);
    }

    function test_credits_neverWithdrawable() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        escrow.withdraw(payer, 1);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        escrow.reserve(payer, PRICE, 1);
        // Spent, they do not become earnings either.
        _consume(provider, payer, 3 * PRICE);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientEarnings.selector, 0, 1));
        escrow.withdrawEarnings(provider, 1);
    }

    /// @dev A release or a cancel does not touch credits: they are not the payer's money.
    function test_credits_notReleased() public {
        _fund(payer, 1 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        _release(payer, provider, type(uint256).max);
        vm.warp(block.timestamp + DELAY);
        assertEq(escrow.applyPending(payer, provider), 1 * USDC);
        assertEq(_terms(payer, provider).credits, 3 * PRICE);
        assertEq(escrow.freeBalance(payer), 1 * USDC);
    }

    function test_grantCredits_reverts() public {
        vm.startPrank(provider);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.grantCredits(address(0), 1);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.grantCredits(payer, 0);
        escrow.grantCredits(payer, type(uint80).max);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, 1));
        escrow.grantCredits(payer, 1);
        vm.stopPrank();
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         EARNINGS                                         */
    /* ---------------------------------------------------------------------------------------- */

    function test_withdrawEarnings_toAnyAddress() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _consume(provider, payer, PRICE);
        vm.expectEmit(address(escrow));
        emit IEscrow.EarningsWithdrawn(provider, stranger, PRICE);
        vm.prank(provider);
        escrow.withdrawEarnings(stranger, PRICE);
        assertEq(usdc.balanceOf(stranger), PRICE);
        assertEq(escrow.earnings(provider), 0);
        _assertConserved();
    }

    function test_withdrawEarnings_reverts() public {
        _fund(payer, 10 * USDC);
        _reserve(payer, provider, PRICE, 1 * USDC);
        _consume(provider, payer, PRICE);
        vm.startPrank(provider);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.withdrawEarnings(address(0), 1);
        vm.expectRevert(IEscrow.EscrowAsRecipient.selector);
        escrow.withdrawEarnings(address(escrow), 1);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.withdrawEarnings(provider, 0);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientEarnings.selector, PRICE, PRICE + 1));
        escrow.withdrawEarnings(provider, PRICE + 1);
        vm.stopPrank();
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                       CONSERVATION                                       */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Any amounts through deposit, reserve, release, charges and withdrawals: the escrow always holds
    /// exactly free + reserves + releasable + earnings, and the payer gets back all it did not pay.
    function testFuzz_conservation(
        uint96 deposited,
        uint96 reserved,
        uint96 released,
        uint64 price,
        uint32 count,
        bool batch,
        uint256 wait
    ) public {
        deposited = uint96(bound(deposited, 1, type(uint96).max));
        reserved = uint96(bound(reserved, 0, deposited));
        released = uint96(bound(released, 1, type(uint96).max));
        price = uint64(bound(price, 1, type(uint64).max));
        count = uint32(bound(count, 1, batch ? 1_000 : 1));
        wait = bound(wait, 0, 2 * DELAY);

        _fund(payer, deposited);
        _reserve(payer, provider, price, reserved);
        _release(payer, provider, released);
        _assertConserved();

        vm.warp(block.timestamp + wait);
        uint256 reserveBefore = _terms(payer, provider).reserve;
        uint256 paid;
        vm.prank(provider);
        if (batch) {
            paid = escrow.consumeBatch(_one(payer, price, count));
        } else {
            try escrow.consume(payer, price) {
                paid = price;
            } catch {}
        }
        assertLe(paid, reserveBefore, "a charge fits the reserve");
        _assertConserved();

        vm.warp(block.timestamp + DELAY);
        escrow.applyPending(payer, provider);
        _assertConserved();
        uint256 earned = escrow.earnings(provider);
        assertEq(earned, paid);
        if (earned != 0) {
            vm.prank(provider);
            escrow.withdrawEarnings(provider, earned);
        }
        uint256 free = escrow.freeBalance(payer);
        if (free != 0) {
            vm.prank(payer);
            escrow.withdraw(payer, free);
        }
        uint256 left = _terms(payer, provider).reserve;
        assertEq(
            left, reserved > uint256(released) + paid ? reserved - released - paid : 0, "release is relative"
        );
        assertEq(usdc.balanceOf(payer) + left + paid, deposited, "the payer gets back all it did not pay");
        assertEq(usdc.balanceOf(address(escrow)), left);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                       REVOCATION                                         */
    /* ---------------------------------------------------------------------------------------- */

    function test_revokeSpec_recordsTheTimeUnderTheCallerAndEmits() public {
        bytes32 spec = keccak256("the terms hash of a spec");
        vm.warp(1_000_000);
        vm.expectEmit(address(escrow));
        emit IEscrow.SpecRevoked(payer, spec);
        vm.prank(payer);
        escrow.revokeSpec(spec);
        assertEq(escrow.revokedAt(payer, spec), 1_000_000);
        assertEq(escrow.revokedAt(stranger, spec), 0, "keyed by the owner who revoked");
        assertEq(escrow.revokedAt(payer, keccak256("another spec")), 0);
    }

    function test_revokeSpec_isForGood() public {
        bytes32 spec = keccak256("the terms hash of a spec");
        vm.startPrank(payer);
        escrow.revokeSpec(spec);
        uint256 at = escrow.revokedAt(payer, spec);
        vm.warp(block.timestamp + 1 days);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AlreadyRevoked.selector, spec));
        escrow.revokeSpec(spec);
        vm.stopPrank();
        assertEq(escrow.revokedAt(payer, spec), at, "the first time stands");
    }

    /// @dev A stranger's record binds only the stranger's own specs: the owner's stays unrevoked.
    function test_revokeSpec_byAStrangerTouchesNoOwner() public {
        bytes32 spec = keccak256("the terms hash of a spec");
        vm.prank(stranger);
        escrow.revokeSpec(spec);
        assertEq(escrow.revokedAt(payer, spec), 0);
        vm.prank(payer);
        escrow.revokeSpec(spec);
        assertGt(escrow.revokedAt(payer, spec), 0);
    }

    /// @dev Revocation is advisory for providers: what they claimed before still settles, and it moves no money.
    function test_revokeSpec_leavesChargesAndBalancesAlone() public {
        _fund(payer, 10 * PRICE);
        vm.prank(payer);
        escrow.reserve(provider, PRICE, 10 * PRICE);
        vm.prank(payer);
        escrow.revokeSpec(keccak256("the terms hash of a spec"));
        _consume(provider, payer, PRICE);
        assertEq(escrow.earnings(provider), PRICE);
        _assertConserved();
    }
}

