// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {IEscrow, Charge} from "../contracts/interfaces/IEscrow.sol";
import {Base} from "./utils/Base.sol";

/// @dev An ERC-20 with no blacklist at all: the escrow must work with it exactly as before.
contract PlainToken is ERC20 {
    constructor() ERC20("Plain", "PLN") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @notice USDC's blacklist and pause against the escrow. The issuer freezes an account so that its money
/// moves nowhere; the escrow must not become the way around that (if it did, the issuer's only answer would be
/// to freeze the escrow itself, and with it every user's money). TestUSDC has USDC's blacklist and pause
/// with Circle's revert strings; the deployer (this test) is its blacklister and pauser.
///
/// The attacks come first: each one moved a frozen account's money out of the escrow before the fix.
contract EscrowFreezeTest is Base {
    uint256 internal constant PRICE = 10_000; // 0.01 USDC

    /// @dev A clean address that the frozen account controls.
    address internal mule = makeAddr("mule");

    bytes4 internal immutable FROZEN = IEscrow.Frozen.selector;

    function setUp() public override {
        super.setUp();
        _fund(payer, 100 * USDC);
    }

    function _frozen(address account) internal view returns (bytes memory) {
        return abi.encodeWithSelector(FROZEN, account);
    }

    function _held() internal view returns (uint256) {
        return usdc.balanceOf(address(escrow));
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         ATTACKS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev The report's attack: USDC checks only the escrow and the recipient, so a frozen payer's withdrawal
    /// to a clean address went through.
    function test_attack_frozenPayerWithdrawsToACleanAddress() public {
        usdc.blacklist(payer);
        vm.prank(payer);
        vm.expectRevert(_frozen(payer));
        escrow.withdraw(mule, 100 * USDC);
        assertEq(usdc.balanceOf(mule), 0, "nothing reached the mule");
        assertEq(escrow.freeBalance(payer), 100 * USDC, "the frozen money stays in the escrow, in its name");
    }

    /// @dev One actor on both sides: the payer reserved for a provider it runs (the mule) before the freeze,
    /// and charges itself through it to turn its frozen balance into the mule's earnings.
    function test_attack_frozenPayerPaysItsOwnProvider() public {
        _reserve(payer, mule, PRICE, 50 * USDC);
        usdc.blacklist(payer);

        vm.prank(mule);
        vm.expectRevert(_frozen(payer));
        escrow.consume(payer, PRICE);

        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(payer, mule, 0, _frozen(payer));
        vm.prank(mule);
        escrow.consumeBatch(_one(payer, PRICE, 5000));

        assertEq(escrow.earnings(mule), 0, "the mule earned nothing");
        assertEq(escrow.terms(payer, mule).reserve, 50 * USDC, "the reserve is intact");
    }

    /// @dev After the freeze, setting money aside for the mule is refused outright.
    function test_attack_frozenPayerReservesForItsOwnProvider() public {
        usdc.blacklist(payer);
        vm.prank(payer);
        vm.expectRevert(_frozen(payer));
        escrow.reserve(mule, PRICE, 50 * USDC);
    }

    /// @dev A frozen provider's earnings stay where they are, whatever the recipient.
    function test_attack_frozenProviderCashesOut() public {
        _reserve(payer, provider, PRICE, 50 * USDC);
        vm.prank(provider);
        escrow.consumeBatch(_one(payer, PRICE, 100));
        usdc.blacklist(provider);

        vm.prank(provider);
        vm.expectRevert(_frozen(provider));
        escrow.withdrawEarnings(mule, 1 * USDC);
        assertEq(escrow.earnings(provider), 1 * USDC, "the earnings stay in its name");
    }

    /// @dev A frozen provider cannot keep receiving money through charges either.
    function test_attack_frozenProviderKeepsCharging() public {
        _reserve(payer, provider, PRICE, 50 * USDC);
        usdc.blacklist(provider);

        vm.prank(provider);
        vm.expectRevert(_frozen(provider));
        escrow.consume(payer, PRICE);

        vm.prank(provider);
        vm.expectRevert(_frozen(provider));
        escrow.consumeBatch(_one(payer, PRICE, 1));
        assertEq(escrow.terms(payer, provider).reserve, 50 * USDC);
    }

    /// @dev A clean account cannot hand value to a frozen one through a deposit on its behalf.
    function test_attack_depositOnBehalfOfAFrozenAccount() public {
        usdc.blacklist(payer);
        usdc.mint(stranger, 10 * USDC);
        vm.startPrank(stranger);
        usdc.approve(address(escrow), 10 * USDC);
        vm.expectRevert(_frozen(payer));
        escrow.deposit(payer, 10 * USDC);
        vm.stopPrank();
    }

    /// @dev One actor, frozen, tries every way out with any amount; the escrow's holdings and the actor's
    /// money in it do not move.
    function testFuzz_attack_frozenActorMovesNothing(uint256 amount, uint8 path) public {
        amount = bound(amount, 1, 100 * USDC);
        // The payer is its own provider too, with a reserve, credits and earnings on both sides.
        _reserve(payer, payer, PRICE, 60 * USDC);
        vm.prank(payer);
        escrow.consumeBatch(_one(payer, PRICE, 100)); // 1 USDC of earnings
        usdc.blacklist(payer);
        uint256 held = _held();
        uint256 mine = escrow.freeBalance(payer) + escrow.terms(payer, payer).reserve + escrow.earnings(payer);

        vm.startPrank(payer);
        path = path % 6;
        if (path == 0) {
            vm.expectRevert(_frozen(payer));
            escrow.withdraw(mule, amount);
        } else if (path == 1) {
            vm.expectRevert(_frozen(payer));
            escrow.withdrawEarnings(mule, _min(amount, 1 * USDC));
        } else if (path == 2) {
            vm.expectRevert(_frozen(payer));
            escrow.consume(payer, PRICE);
        } else if (path == 3) {
            vm.expectRevert(_frozen(payer));
            escrow.consumeBatch(_one(payer, PRICE, uint32(_min(amount / PRICE + 1, 6000))));
        } else if (path == 4) {
            vm.expectRevert(_frozen(payer));
            escrow.reserve(mule, PRICE, _min(amount, 40 * USDC));
        } else {
            // Releasing and applying keep the money inside, in the frozen account's own name: allowed.
            escrow.release(payer, amount);
            skip(DELAY);
            escrow.applyPending(payer, payer);
            uint256 free = escrow.freeBalance(payer);
            vm.expectRevert(_frozen(payer));
            escrow.withdraw(mule, free);
        }
        vm.stopPrank();

        assertEq(_held(), held, "the escrow holds the same");
        assertEq(
            escrow.freeBalance(payer) + escrow.terms(payer, payer).reserve + escrow.earnings(payer),
            mine,
            "the frozen account's money stays in its name"
        );
        assertEq(usdc.balanceOf(mule), 0);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                      WHAT STILL WORKS                                    */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Withdrawing to a frozen recipient is refused by name (the token would refuse it too).
    function test_withdrawToAFrozenRecipient() public {
        usdc.blacklist(mule);
        vm.prank(payer);
        vm.expectRevert(_frozen(mule));
        escrow.withdraw(mule, 1 * USDC);
    }

    /// @dev A frozen payer may still release and cancel: the money stays inside, in its own name.
    function test_frozenPayerMayReleaseAndCancel() public {
        _reserve(payer, provider, PRICE, 50 * USDC);
        usdc.blacklist(payer);
        vm.startPrank(payer);
        escrow.release(provider, 20 * USDC);
        escrow.cancelPending(provider);
        escrow.release(provider, 20 * USDC);
        vm.stopPrank();
        skip(DELAY);
        escrow.applyPending(payer, provider);
        assertEq(escrow.freeBalance(payer), 70 * USDC);
    }

    /// @dev The freeze lifted, everything is where it was and moves again: nothing was lost.
    function test_unfreezeRestoresEverything() public {
        _reserve(payer, provider, PRICE, 50 * USDC);
        usdc.blacklist(payer);
        vm.prank(provider);
        escrow.consumeBatch(_one(payer, PRICE, 10));
        usdc.unBlacklist(payer);

        vm.prank(provider);
        escrow.consume(payer, PRICE);
        vm.prank(payer);
        escrow.withdraw(payer, 50 * USDC);
        assertEq(usdc.balanceOf(payer), 50 * USDC);
        assertEq(escrow.terms(payer, provider).reserve, 50 * USDC - PRICE);
    }

    /// @dev Credits are not money, but the rule is simple: a frozen account is neither charged nor paid.
    function test_frozenPayerIsNotChargedEvenInCredits() public {
        vm.prank(provider);
        escrow.grantCredits(payer, 1 * USDC);
        usdc.blacklist(payer);
        vm.prank(provider);
        vm.expectRevert(_frozen(payer));
        escrow.consume(payer, PRICE);
    }

    /// @dev In a batch, a frozen payer's line is refused and every other line settles.
    function test_batchWithAFrozenPayerSettlesTheRest() public {
        _reserve(payer, provider, PRICE, 50 * USDC);
        _fund(stranger, 10 * USDC);
        _reserve(stranger, provider, PRICE, 10 * USDC);
        usdc.blacklist(payer);

        Charge[] memory lines = new Charge[](2);
        lines[0] = Charge(payer, uint64(PRICE), 10);
        lines[1] = Charge(stranger, uint64(PRICE), 10);
        vm.expectEmit(address(escrow));
        emit IEscrow.ChargeRefused(payer, provider, 0, _frozen(payer));
        vm.prank(provider);
        uint256 earned = escrow.consumeBatch(lines);
        assertEq(earned, 10 * PRICE, "the clean line settled");
    }

    function test_isFrozen() public {
        assertFalse(escrow.isFrozen(payer));
        usdc.blacklist(payer);
        assertTrue(escrow.isFrozen(payer));
        usdc.unBlacklist(payer);
        assertFalse(escrow.isFrozen(payer));
    }

    /// @dev A paused token stops money entering and leaving (the token refuses, with its own reason); charges
    /// inside the escrow go on, since nothing moves on the token, and after the pause everything leaves.
    function test_pausedToken() public {
        _reserve(payer, provider, PRICE, 50 * USDC);
        usdc.pause();

        vm.prank(payer);
        vm.expectRevert(bytes("Pausable: paused"));
        escrow.withdraw(payer, 1 * USDC);

        vm.prank(provider);
        escrow.consume(payer, PRICE);
        vm.prank(provider);
        vm.expectRevert(bytes("Pausable: paused"));
        escrow.withdrawEarnings(provider, PRICE);

        usdc.unpause();
        vm.prank(provider);
        escrow.withdrawEarnings(provider, PRICE);
        vm.prank(payer);
        escrow.withdraw(payer, 50 * USDC);
        assertEq(usdc.balanceOf(provider), PRICE);
    }

    /// @dev A token without a blacklist: nobody is ever frozen, and the escrow works as before.
    function test_tokenWithoutABlacklist() public {
        PlainToken plain = new PlainToken();
        Escrow e = new Escrow(IERC20(address(plain)), DELAY);
        assertFalse(e.isFrozen(payer));
        plain.mint(payer, 10 * USDC);
        vm.startPrank(payer);
        plain.approve(address(e), 10 * USDC);
        e.deposit(payer, 10 * USDC);
        e.reserve(provider, PRICE, 5 * USDC);
        e.withdraw(mule, 5 * USDC);
        vm.stopPrank();
        vm.prank(provider);
        e.consume(payer, PRICE);
        assertEq(e.earnings(provider), PRICE);
        assertEq(plain.balanceOf(mule), 5 * USDC);
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
