// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {IEscrow, Terms} from "../contracts/interfaces/IEscrow.sol";

/// @dev A token that calls whoever it pays (on `transfer`) and whoever it takes from (on `transferFrom`): the
/// shape of an ERC-777 hook or a malicious token. The hook runs before or after the balances move.
contract ReentrantToken is ERC20 {
    bool public hookBefore;

    constructor() ERC20("Evil", "EVIL") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setHookBefore(bool before) external {
        hookBefore = before;
    }

    function transfer(address to, uint256 amount) public override returns (bool) {
        if (hookBefore && to.code.length != 0) Attacker(to).onTokens();
        bool ok = super.transfer(to, amount);
        if (!hookBefore && to.code.length != 0) Attacker(to).onTokens();
        return ok;
    }

    function transferFrom(address from, address to, uint256 amount) public override returns (bool) {
        if (hookBefore && from.code.length != 0) Attacker(from).onTokens();
        bool ok = super.transferFrom(from, to, amount);
        if (!hookBefore && from.code.length != 0) Attacker(from).onTokens();
        return ok;
    }
}

/// @dev A payer that is also a provider, and from the token's hook tries its next move on the escrow.
contract Attacker {
    enum Move {
        None,
        Observe,
        Withdraw,
        WithdrawEarnings,
        Deposit,
        ChargeSelf,
        ChargeSelfAndCashOut
    }

    Escrow internal escrow;
    ReentrantToken internal token;
    Move public move;
    uint256 public hooks;
    uint256 public seenFree;
    uint256 public seenEarnings;

    constructor(Escrow escrow_, ReentrantToken token_) {
        (escrow, token) = (escrow_, token_);
        token.approve(address(escrow_), type(uint256).max);
    }

    function arm(Move m) external {
        move = m;
    }

    function deposit(uint256 amount) external {
        escrow.deposit(address(this), amount);
    }

    function withdraw(uint256 amount) external {
        escrow.withdraw(address(this), amount);
    }

    function withdrawEarnings(uint256 amount) external {
        escrow.withdrawEarnings(address(this), amount);
    }

    function consume(address payer, uint256 price) external {
        escrow.consume(payer, price);
    }

    /// @dev The hook: one shot of the armed move.
    function onTokens() external {
        Move m = move;
        move = Move.None;
        hooks++;
        seenFree = escrow.freeBalance(address(this));
        seenEarnings = escrow.earnings(address(this));
        if (m == Move.Withdraw) {
            escrow.withdraw(address(this), 1);
        } else if (m == Move.WithdrawEarnings) {
            escrow.withdrawEarnings(address(this), 1);
        } else if (m == Move.Deposit) {
            escrow.deposit(address(this), 1);
        } else if (m == Move.ChargeSelf || m == Move.ChargeSelfAndCashOut) {
            // The functions without the lock: reserve for itself and charge itself.
            uint256 free = escrow.freeBalance(address(this));
            escrow.reserve(address(this), type(uint256).max, free);
            escrow.consume(address(this), free);
            if (m == Move.ChargeSelfAndCashOut) escrow.withdrawEarnings(address(this), free);
        }
    }
}

/// @notice Reentrancy through a hostile token: every token-moving function holds the lock, state is written
/// before tokens move, and the functions without the lock (reserve, consume) give a hook nothing to take.
contract EscrowHostileTest is Test {
    ReentrantToken internal token;
    Escrow internal escrow;
    Attacker internal attacker;
    address internal honest = makeAddr("honest");
    address internal provider = makeAddr("provider");

    function setUp() public {
        token = new ReentrantToken();
        escrow = new Escrow(token, 1 days);
        attacker = new Attacker(escrow, token);
        token.mint(address(attacker), 100e6);
        // An honest payer's money sits in the escrow too, part of it reserved: the prize.
        token.mint(honest, 1_000e6);
        vm.startPrank(honest);
        token.approve(address(escrow), 1_000e6);
        escrow.deposit(honest, 1_000e6);
        escrow.reserve(provider, 1e6, 500e6);
        escrow.reserve(address(attacker), 1e6, 10e6);
        vm.stopPrank();
    }

    /// @dev The escrow holds exactly what the honest payer, the attacker and the provider have in it.
    function _assertConserved() internal view {
        address[3] memory who = [honest, address(attacker), provider];
        uint256 sum;
        for (uint256 i; i < 3; ++i) {
            sum += escrow.freeBalance(who[i]) + escrow.earnings(who[i]);
            for (uint256 j; j < 3; ++j) {
                Terms memory t = escrow.terms(who[i], who[j]);
                sum += t.reserve + t.releasable;
            }
        }
        assertEq(token.balanceOf(address(escrow)), sum);
    }

    function _assertHonestIntact() internal view {
        assertEq(escrow.freeBalance(honest), 490e6);
        assertEq(escrow.terms(honest, provider).reserve, 500e6);
    }

    function test_reentrantWithdraw_reverts() public {
        attacker.deposit(100e6);
        attacker.arm(Attacker.Move.Withdraw);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.withdraw(100e6);
        assertEq(token.balanceOf(address(escrow)), 1_100e6, "nothing left the escrow");
        assertEq(escrow.freeBalance(address(attacker)), 100e6);
        _assertHonestIntact();
    }

    function test_reentrantWithdraw_hookBeforeTransfer_reverts() public {
        token.setHookBefore(true);
        attacker.deposit(100e6);
        attacker.arm(Attacker.Move.Withdraw);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.withdraw(100e6);
        assertEq(token.balanceOf(address(escrow)), 1_100e6);
    }

    function test_reentrantEarningsWithdraw_reverts() public {
        // The attacker is also a provider with earnings from the honest payer.
        attacker.consume(honest, 1e6);
        attacker.consume(honest, 1e6);
        attacker.arm(Attacker.Move.WithdrawEarnings);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.withdrawEarnings(1e6);
        assertEq(escrow.earnings(address(attacker)), 2e6);
        assertEq(token.balanceOf(address(escrow)), 1_000e6);
        _assertConserved();
    }

    /// @dev Across functions: from a withdrawal's hook into withdrawEarnings, and the reverse.
    function test_crossFunctionReentry_reverts() public {
        attacker.consume(honest, 1e6);
        attacker.deposit(100e6);
        attacker.arm(Attacker.Move.WithdrawEarnings);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.withdraw(50e6);
        attacker.arm(Attacker.Move.Withdraw);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.withdrawEarnings(1e6);
        attacker.arm(Attacker.Move.Deposit);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.withdraw(50e6);
        _assertConserved();
    }

    /// @dev A deposit credits the free balance before it pulls the tokens; a hook that runs before the pull
    /// sees that credit and tries to cash it out. The lock stops it, and the whole deposit reverts.
    function test_depositHook_cannotWithdrawUnpaidDeposit() public {
        token.setHookBefore(true);
        attacker.arm(Attacker.Move.Withdraw);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.deposit(100e6);
        assertEq(token.balanceOf(address(attacker)), 100e6);
        assertEq(escrow.freeBalance(address(attacker)), 0);
    }

    /// @dev The same through the unlocked functions: reserve the unpaid deposit for itself, charge itself,
    /// cash out the earnings. The cash-out needs the lock: the whole deposit reverts.
    function test_depositHook_cannotCashOutUnpaidDepositThroughCharges() public {
        token.setHookBefore(true);
        attacker.arm(Attacker.Move.ChargeSelfAndCashOut);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.deposit(100e6);
        assertEq(escrow.earnings(address(attacker)), 0);
        assertEq(token.balanceOf(address(escrow)), 1_000e6);
        _assertHonestIntact();
    }

    /// @dev Without a cash-out, charging itself from the hook is just moving its own money, and it must pay
    /// for the deposit: the escrow still holds exactly what everyone has.
    function test_depositHook_chargesWithoutCashOutAreHarmless() public {
        token.setHookBefore(true);
        attacker.arm(Attacker.Move.ChargeSelf);
        attacker.deposit(100e6);
        assertEq(attacker.seenFree(), 100e6, "the credit was written before the pull");
        assertEq(escrow.earnings(address(attacker)), 100e6);
        assertEq(token.balanceOf(address(attacker)), 0, "and the deposit was paid");
        _assertConserved();
        _assertHonestIntact();
    }

    /// @dev From a withdrawal's hook, the unlocked functions find only what the attacker has left.
    function test_withdrawHook_unlockedCallsTakeNothingMore() public {
        attacker.deposit(100e6);
        uint256 hooks = attacker.hooks();
        attacker.arm(Attacker.Move.ChargeSelf);
        attacker.withdraw(40e6);
        assertEq(attacker.hooks(), hooks + 1, "the hook ran");
        assertEq(escrow.earnings(address(attacker)), 60e6, "its own remaining 60, no more");
        assertEq(token.balanceOf(address(attacker)), 40e6);
        _assertConserved();
        _assertHonestIntact();
    }

    /// @dev Checks-effects-interactions: a hook running before the tokens move already sees the balance and
    /// the earnings reduced, so even without the lock a re-entered withdrawal would find nothing more.
    function test_effectsBeforeInteraction() public {
        token.setHookBefore(true);
        attacker.deposit(100e6);
        attacker.arm(Attacker.Move.Observe);
        attacker.withdraw(40e6);
        assertEq(attacker.seenFree(), 60e6);

        attacker.consume(honest, 1e6);
        attacker.arm(Attacker.Move.Observe);
        attacker.withdrawEarnings(1e6);
        assertEq(attacker.seenEarnings(), 0);
        assertEq(token.balanceOf(address(attacker)), 41e6);
        _assertConserved();
    }

    /// @dev The lock lives in transient storage: it is released after each call, so the next transaction (or
    /// the next call in the same one) is not blocked.
    function test_lockReleasedAfterEachCall() public {
        attacker.deposit(50e6);
        attacker.deposit(50e6);
        attacker.withdraw(30e6);
        attacker.withdraw(30e6);
        assertEq(escrow.freeBalance(address(attacker)), 40e6);
    }
}
