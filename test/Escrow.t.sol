// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {IEscrow, Charge} from "../contracts/interfaces/IEscrow.sol";
import {Base} from "./utils/Base.sol";

contract EscrowTest is Base {
    uint256 internal constant PRICE = 100_000; // 0.10 USDC

    /* ------------------------------------------------------------------------------------ */
    /*                                   construction                                       */
    /* ------------------------------------------------------------------------------------ */

    function test_constructor_setsTokenAndDelay() public view {
        assertEq(escrow.token(), address(usdc));
        assertEq(escrow.withdrawalDelay(), DELAY);
    }

    function test_constructor_revertsOnZeroToken() public {
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        new Escrow(IERC20(address(0)), DELAY);
    }

    function test_constructor_revertsOnDelayTooLong() public {
        uint256 tooLong = escrow.MAX_DELAY() + 1;
        vm.expectRevert(abi.encodeWithSelector(IEscrow.DelayTooLong.selector, tooLong));
        new Escrow(usdc, tooLong);
    }

    function test_eip712Domain_boundToChainAndEscrow() public view {
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = escrow.eip712Domain();
        assertEq(name, "Khachapuri");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifying, address(escrow));
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                      deposit                                         */
    /* ------------------------------------------------------------------------------------ */

    function test_deposit_forSelf() public {
        usdc.mint(payer, 10 * USDC);
        vm.startPrank(payer);
        usdc.approve(address(escrow), 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.Deposited(payer, payer, 10 * USDC);
        escrow.deposit(payer, 10 * USDC);
        vm.stopPrank();
        assertEq(escrow.balanceOf(payer), 10 * USDC);
        assertEq(usdc.balanceOf(address(escrow)), 10 * USDC);
        assertEq(usdc.balanceOf(payer), 0);
    }

    function test_deposit_onBehalfOfAnother() public {
        usdc.mint(stranger, 5 * USDC);
        vm.startPrank(stranger);
        usdc.approve(address(escrow), 5 * USDC);
        escrow.deposit(payer, 5 * USDC);
        vm.stopPrank();
        assertEq(escrow.balanceOf(payer), 5 * USDC);
        assertEq(escrow.balanceOf(stranger), 0);
    }

    function test_deposit_revertsOnZeroAmount() public {
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.deposit(payer, 0);
    }

    function test_deposit_revertsOnZeroOnBehalf() public {
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.deposit(address(0), 1);
    }

    function test_deposit_revertsWithoutTokenAllowance() public {
        usdc.mint(payer, USDC);
        vm.prank(payer);
        vm.expectRevert();
        escrow.deposit(payer, USDC);
    }

    function test_deposit_revertsOnOverflow() public {
        _fund(payer, type(uint128).max);
        usdc.mint(stranger, 1);
        vm.startPrank(stranger);
        usdc.approve(address(escrow), 1);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, 1));
        escrow.deposit(payer, 1);
        vm.stopPrank();
    }

    function testFuzz_deposit(address from, address onBehalf, uint128 amount) public {
        vm.assume(from != address(0) && onBehalf != address(0) && from != address(escrow) && amount > 0);
        usdc.mint(from, amount);
        vm.startPrank(from);
        usdc.approve(address(escrow), amount);
        escrow.deposit(onBehalf, amount);
        vm.stopPrank();
        assertEq(escrow.balanceOf(onBehalf), amount);
        assertEq(usdc.balanceOf(address(escrow)), amount);
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                 depositWithPermit                                    */
    /* ------------------------------------------------------------------------------------ */

    function test_depositWithPermit() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(payer);
        escrow.depositWithPermit(payer, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.balanceOf(payer), 3 * USDC);
        assertEq(usdc.nonces(payer), 1);
    }

    function test_depositWithPermit_onBehalf() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(payer);
        escrow.depositWithPermit(stranger, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.balanceOf(stranger), 3 * USDC);
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
        assertEq(escrow.balanceOf(payer), 3 * USDC);
    }

    /// @dev A permit front-run by someone else (it lands first) still lets the owner deposit.
    function test_depositWithPermit_frontRunPermitStillDeposits() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(stranger);
        usdc.permit(payer, address(escrow), 3 * USDC, deadline, v, r, s);
        vm.prank(payer);
        escrow.depositWithPermit(payer, 3 * USDC, deadline, v, r, s);
        assertEq(escrow.balanceOf(payer), 3 * USDC);
    }

    /// @dev A permit signed by the payer cannot be used by a stranger to move the payer's tokens.
    function test_depositWithPermit_strangerCannotUsePayersPermit() public {
        usdc.mint(payer, 3 * USDC);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), 3 * USDC, deadline);
        vm.prank(stranger);
        vm.expectRevert(IEscrow.PermitFailed.selector);
        escrow.depositWithPermit(stranger, 3 * USDC, deadline, v, r, s);
        assertEq(usdc.balanceOf(payer), 3 * USDC);
    }

    function test_depositWithPermit_expiredFails() public {
        usdc.mint(payer, USDC);
        uint256 deadline = block.timestamp - 1;
        (uint8 v, bytes32 r, bytes32 s) = _permit(payerKey, address(escrow), USDC, deadline);
        vm.prank(payer);
        vm.expectRevert(IEscrow.PermitFailed.selector);
        escrow.depositWithPermit(payer, USDC, deadline, v, r, s);
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                      approve                                         */
    /* ------------------------------------------------------------------------------------ */

    function test_approve_setsTermsAtOnce() public {
        vm.expectEmit(address(escrow));
        emit IEscrow.Approved(payer, provider, PRICE, 10 * USDC);
        _approve(payer, provider, PRICE, 10 * USDC);
        (uint256 price, uint256 left, uint256 credits) = escrow.allowance(payer, provider);
        assertEq(price, PRICE);
        assertEq(left, 10 * USDC);
        assertEq(credits, 0);
    }

    function test_approve_revertsOnZeroProvider() public {
        vm.prank(payer);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.approve(address(0), PRICE, USDC);
    }

    function test_approve_clampsUnlimited() public {
        _approve(payer, provider, type(uint256).max, type(uint256).max);
        (uint256 price, uint256 left,) = escrow.allowance(payer, provider);
        assertEq(price, type(uint64).max);
        assertEq(left, type(uint80).max);
    }

    function test_approve_cutIsDelayed() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.ApprovalCutScheduled(payer, provider, 0, 0, block.timestamp + DELAY);
        _approve(payer, provider, 0, 0);

        (uint256 price, uint256 left,) = escrow.allowance(payer, provider);
        assertEq(price, PRICE, "old price still in force");
        assertEq(left, 10 * USDC, "old budget still in force");
        (uint256 cutPrice, uint256 cutBudget, uint256 at) = escrow.pendingCut(payer, provider);
        assertEq(cutPrice, 0);
        assertEq(cutBudget, 0);
        assertEq(at, block.timestamp + DELAY);

        // The provider consumes under the old terms until the delay runs out.
        vm.warp(block.timestamp + DELAY - 1);
        vm.prank(provider);
        escrow.consume(payer, PRICE);

        vm.warp(block.timestamp + 1);
        (price, left,) = escrow.allowance(payer, provider);
        assertEq(price, 0);
        assertEq(left, 0);
        (,, at) = escrow.pendingCut(payer, provider);
        assertEq(at, 0, "no pending cut once in force");
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, provider));
        escrow.consume(payer, PRICE);
    }

    function test_approve_cutBudgetTakesSmallerOfCutAndLeft() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC - PRICE); // a cut by 0.10
        for (uint256 i; i < 5; ++i) {
            vm.prank(provider);
            escrow.consume(payer, PRICE);
        }
        vm.warp(block.timestamp + DELAY);
        (, uint256 left,) = escrow.allowance(payer, provider);
        assertEq(left, 1 * USDC - 5 * PRICE, "spent budget stays spent");
    }

    function test_approve_raiseCancelsScheduledCut() public {
        _approve(payer, provider, PRICE, 10 * USDC);
        _approve(payer, provider, PRICE / 2, 10 * USDC);
        _approve(payer, provider, PRICE * 2, 20 * USDC);
        (,, uint256 at) = escrow.pendingCut(payer, provider);
        assertEq(at, 0);
        vm.warp(block.timestamp + DELAY);
        (uint256 price, uint256 left,) = escrow.allowance(payer, provider);
        assertEq(price, PRICE * 2);
        assertEq(left, 20 * USDC);
    }

    function test_approve_maturedCutAppliedBeforeNewTerms() public {
        _approve(payer, provider, PRICE, 10 * USDC);
        _approve(payer, provider, PRICE / 2, 5 * USDC);
        vm.warp(block.timestamp + DELAY);
        // Equal to the matured cut: applies at once.
        _approve(payer, provider, PRICE / 2, 5 * USDC);
        (,, uint256 at) = escrow.pendingCut(payer, provider);
        assertEq(at, 0);
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                      consume                                         */
    /* ------------------------------------------------------------------------------------ */

    function test_consume_movesBalanceToEarnings() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 1, 0);
        vm.prank(provider);
        escrow.consume(payer, PRICE);
        assertEq(escrow.balanceOf(payer), 10 * USDC - PRICE);
        assertEq(escrow.earnings(provider), PRICE);
        (, uint256 left,) = escrow.allowance(payer, provider);
        assertEq(left, 1 * USDC - PRICE);
    }

    function test_consume_belowApprovedPrice() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.prank(provider);
        escrow.consume(payer, PRICE / 4);
        assertEq(escrow.earnings(provider), PRICE / 4);
    }

    /// @dev Hostile: a provider charging above the approved price.
    function test_consume_revertsAboveApprovedPrice() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.PriceAboveApproved.selector, payer, provider, PRICE, PRICE + 1));
        escrow.consume(payer, PRICE + 1);
    }

    /// @dev Hostile: a provider charging a payer who never approved it.
    function test_consume_revertsForPayerWhoNeverApproved() public {
        _fund(payer, 10 * USDC);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, provider));
        escrow.consume(payer, PRICE);
    }

    /// @dev Hostile: someone who is not the approved provider calls consume.
    function test_consume_revertsForNonProvider() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, stranger));
        escrow.consume(payer, PRICE);
        assertEq(escrow.balanceOf(payer), 10 * USDC);
    }

    function test_consume_revertsWhenBudgetExhausted() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, PRICE * 3 - 1);
        vm.startPrank(provider);
        escrow.consume(payer, PRICE);
        escrow.consume(payer, PRICE);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.BudgetExceeded.selector, payer, provider, PRICE - 1, PRICE));
        escrow.consume(payer, PRICE);
        vm.stopPrank();
    }

    function test_consume_revertsWhenBalanceShort() public {
        _fund(payer, PRICE - 1);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientFunds.selector, payer, PRICE - 1, PRICE));
        escrow.consume(payer, PRICE);
    }

    function test_consume_revertsOnZeroPrice() public {
        vm.prank(provider);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.consume(payer, 0);
    }

    function test_consume_revertsOnPriceOverflow() public {
        uint256 huge = uint256(type(uint64).max) + 1;
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, huge));
        escrow.consume(payer, huge);
    }

    function testFuzz_consume_neverAbovePriceOrBudget(uint64 approved, uint80 budget, uint64 price, uint96 funds)
        public
    {
        vm.assume(price > 0 && funds > 0);
        _fund(payer, funds);
        _approve(payer, provider, approved, budget);
        vm.prank(provider);
        try escrow.consume(payer, price) {
            assertLe(price, approved, "charged above approved price");
            assertLe(price, budget, "charged above budget");
            assertLe(price, funds, "charged above balance");
            assertEq(escrow.earnings(provider), price);
            assertEq(escrow.balanceOf(payer), uint256(funds) - price);
        } catch {
            assertTrue(price > approved || price > budget || price > funds || (approved == 0 && budget == 0));
            assertEq(escrow.balanceOf(payer), funds);
        }
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                   consumeBatch                                       */
    /* ------------------------------------------------------------------------------------ */

    function test_consumeBatch_manyPayersWithCounts() public {
        address other = makeAddr("other");
        _fund(payer, 10 * USDC);
        _fund(other, 10 * USDC);
        _approve(payer, provider, PRICE, 5 * USDC);
        _approve(other, provider, PRICE, 5 * USDC);
        Charge[] memory charges = new Charge[](2);
        charges[0] = Charge(payer, uint64(PRICE), 7);
        charges[1] = Charge(other, uint64(PRICE / 2), 3);
        vm.prank(provider);
        uint256 earned = escrow.consumeBatch(charges);
        assertEq(earned, 7 * PRICE + 3 * (PRICE / 2));
        assertEq(escrow.earnings(provider), earned);
        assertEq(escrow.balanceOf(payer), 10 * USDC - 7 * PRICE);
        assertEq(escrow.balanceOf(other), 10 * USDC - 3 * (PRICE / 2));
    }

    function test_consumeBatch_revertsWholeIfOneChargeFails() public {
        address other = makeAddr("other");
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 5 * USDC);
        Charge[] memory charges = new Charge[](2);
        charges[0] = Charge(payer, uint64(PRICE), 1);
        charges[1] = Charge(other, uint64(PRICE), 1);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, other, provider));
        escrow.consumeBatch(charges);
        assertEq(escrow.balanceOf(payer), 10 * USDC);
        assertEq(escrow.earnings(provider), 0);
    }

    function test_consumeBatch_countMultipliesAgainstBudget() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 5 * PRICE);
        Charge[] memory charges = new Charge[](1);
        charges[0] = Charge(payer, uint64(PRICE), 6);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.BudgetExceeded.selector, payer, provider, 5 * PRICE, 6 * PRICE));
        escrow.consumeBatch(charges);
    }

    function test_consumeBatch_revertsOnZeroCount() public {
        Charge[] memory charges = new Charge[](1);
        charges[0] = Charge(payer, uint64(PRICE), 0);
        vm.prank(provider);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.consumeBatch(charges);
    }

    function test_consumeBatch_emptyIsNoop() public {
        vm.prank(provider);
        assertEq(escrow.consumeBatch(new Charge[](0)), 0);
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                      credits                                         */
    /* ------------------------------------------------------------------------------------ */

    function test_grantCredits_spentFirstAndPayNothing() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.CreditsGranted(provider, payer, PRICE + PRICE / 2);
        vm.prank(provider);
        escrow.grantCredits(payer, PRICE + PRICE / 2);

        vm.startPrank(provider);
        escrow.consume(payer, PRICE); // all credits
        vm.expectEmit(address(escrow));
        emit IEscrow.Consumed(payer, provider, PRICE, 1, PRICE / 2);
        escrow.consume(payer, PRICE); // half credits, half balance
        vm.stopPrank();

        (, uint256 left, uint256 credits) = escrow.allowance(payer, provider);
        assertEq(credits, 0);
        assertEq(escrow.earnings(provider), PRICE / 2, "credits are never earnings");
        assertEq(escrow.balanceOf(payer), 10 * USDC - PRICE / 2);
        assertEq(left, 1 * USDC - PRICE / 2, "only the balance part counts against the budget");
    }

    function test_credits_needNoApprovalNorDeposit() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        vm.prank(provider);
        escrow.consume(payer, PRICE);
        (,, uint256 credits) = escrow.allowance(payer, provider);
        assertEq(credits, 2 * PRICE);
        assertEq(escrow.earnings(provider), 0);
    }

    function test_credits_spendableOnlyWithGrantingProvider() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NotApproved.selector, payer, stranger));
        escrow.consume(payer, PRICE);
    }

    function test_credits_cannotBeWithdrawn() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 3 * PRICE);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 0, 1));
        escrow.requestWithdrawal(1);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientEarnings.selector, 0, 1));
        escrow.withdrawEarnings(provider, 1);
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

    /* ------------------------------------------------------------------------------------ */
    /*                                     earnings                                         */
    /* ------------------------------------------------------------------------------------ */

    function test_withdrawEarnings_toAnyAddress() public {
        _fund(payer, 10 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.prank(provider);
        escrow.consume(payer, PRICE);
        vm.expectEmit(address(escrow));
        emit IEscrow.EarningsWithdrawn(provider, stranger, PRICE);
        vm.prank(provider);
        escrow.withdrawEarnings(stranger, PRICE);
        assertEq(usdc.balanceOf(stranger), PRICE);
        assertEq(escrow.earnings(provider), 0);
    }

    function test_withdrawEarnings_reverts() public {
        vm.startPrank(provider);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.withdrawEarnings(address(0), 1);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.withdrawEarnings(provider, 0);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientEarnings.selector, 0, 1));
        escrow.withdrawEarnings(provider, 1);
        vm.stopPrank();
    }

    /* ------------------------------------------------------------------------------------ */
    /*                                    withdrawals                                       */
    /* ------------------------------------------------------------------------------------ */

    function test_withdrawal_afterDelay() public {
        _fund(payer, 10 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.WithdrawalRequested(payer, 4 * USDC, block.timestamp + DELAY);
        vm.prank(payer);
        escrow.requestWithdrawal(4 * USDC);
        (uint256 amount, uint256 readyAt) = escrow.pendingWithdrawal(payer);
        assertEq(amount, 4 * USDC);
        assertEq(readyAt, block.timestamp + DELAY);

        vm.warp(readyAt - 1);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.WithdrawalNotReady.selector, readyAt));
        escrow.withdraw(payer);

        vm.warp(readyAt);
        vm.expectEmit(address(escrow));
        emit IEscrow.Withdrawn(payer, stranger, 4 * USDC);
        vm.prank(payer);
        assertEq(escrow.withdraw(stranger), 4 * USDC);
        assertEq(usdc.balanceOf(stranger), 4 * USDC);
        assertEq(escrow.balanceOf(payer), 6 * USDC);
        (, readyAt) = escrow.pendingWithdrawal(payer);
        assertEq(readyAt, 0);
    }

    /// @dev Hostile: a payer starts a withdrawal to escape charges the provider has claimed but not settled.
    function test_withdrawal_cannotEscapePendingConsume() public {
        _fund(payer, 1 * USDC);
        _approve(payer, provider, PRICE, 1 * USDC);
        vm.prank(payer);
        escrow.requestWithdrawal(1 * USDC);
        // The payer cannot leave at once...
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.WithdrawalNotReady.selector, block.timestamp + DELAY));
        escrow.withdraw(payer);
        // ... and a cut of the approval is delayed too ...
        _approve(payer, provider, 0, 0);
        // ... so the provider settles what it claimed, within the delay, under the old terms.
        vm.warp(block.timestamp + DELAY - 1);
        Charge[] memory charges = new Charge[](1);
        charges[0] = Charge(payer, uint64(PRICE), 4);
        vm.prank(provider);
        escrow.consumeBatch(charges);
        assertEq(escrow.earnings(provider), 4 * PRICE);
        // After the delay, the payer gets what is left.
        vm.warp(block.timestamp + 1);
        vm.prank(payer);
        assertEq(escrow.withdraw(payer), 1 * USDC - 4 * PRICE);
        assertEq(usdc.balanceOf(address(escrow)), 4 * PRICE);
    }

    function test_requestWithdrawal_changeRestartsDelay() public {
        _fund(payer, 10 * USDC);
        vm.prank(payer);
        escrow.requestWithdrawal(1 * USDC);
        vm.warp(block.timestamp + DELAY / 2);
        vm.prank(payer);
        escrow.requestWithdrawal(2 * USDC);
        (uint256 amount, uint256 readyAt) = escrow.pendingWithdrawal(payer);
        assertEq(amount, 2 * USDC);
        assertEq(readyAt, block.timestamp + DELAY);
    }

    function test_requestWithdrawal_reverts() public {
        _fund(payer, 1 * USDC);
        vm.startPrank(payer);
        vm.expectRevert(IEscrow.ZeroAmount.selector);
        escrow.requestWithdrawal(0);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, 1 * USDC, 1 * USDC + 1));
        escrow.requestWithdrawal(1 * USDC + 1);
        vm.stopPrank();
    }

    function test_requestWithdrawal_revertsAboveUint96() public {
        uint256 big = uint256(type(uint96).max) + 1;
        _fund(payer, big);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.AmountOverflow.selector, big));
        escrow.requestWithdrawal(big);
    }

    function test_cancelWithdrawal() public {
        _fund(payer, 10 * USDC);
        vm.prank(payer);
        escrow.requestWithdrawal(1 * USDC);
        vm.expectEmit(address(escrow));
        emit IEscrow.WithdrawalCancelled(payer);
        vm.prank(payer);
        escrow.cancelWithdrawal();
        vm.warp(block.timestamp + DELAY);
        vm.prank(payer);
        vm.expectRevert(IEscrow.NoWithdrawal.selector);
        escrow.withdraw(payer);
    }

    function test_cancelWithdrawal_revertsWithoutOne() public {
        vm.prank(payer);
        vm.expectRevert(IEscrow.NoWithdrawal.selector);
        escrow.cancelWithdrawal();
    }

    /// @dev Only the payer can touch its withdrawal: a stranger's calls act on the stranger's own (none).
    function test_withdrawal_onlyPayerControls() public {
        _fund(payer, 10 * USDC);
        vm.prank(payer);
        escrow.requestWithdrawal(1 * USDC);
        vm.warp(block.timestamp + DELAY);
        vm.startPrank(stranger);
        vm.expectRevert(IEscrow.NoWithdrawal.selector);
        escrow.cancelWithdrawal();
        vm.expectRevert(IEscrow.NoWithdrawal.selector);
        escrow.withdraw(stranger);
        vm.stopPrank();
        (uint256 amount,) = escrow.pendingWithdrawal(payer);
        assertEq(amount, 1 * USDC);
    }

    function test_withdraw_revertsToZero() public {
        vm.prank(payer);
        vm.expectRevert(IEscrow.ZeroAddress.selector);
        escrow.withdraw(address(0));
    }

    function testFuzz_withdrawal_neverBeforeDelay(uint96 amount, uint256 wait) public {
        vm.assume(amount > 0);
        wait = bound(wait, 0, 2 * DELAY);
        _fund(payer, amount);
        vm.prank(payer);
        escrow.requestWithdrawal(amount);
        uint256 requestedAt = block.timestamp;
        vm.warp(block.timestamp + wait);
        vm.prank(payer);
        try escrow.withdraw(payer) returns (uint256 got) {
            assertGe(block.timestamp, requestedAt + DELAY);
            assertEq(got, amount);
        } catch {
            assertLt(block.timestamp, requestedAt + DELAY);
        }
    }
}
