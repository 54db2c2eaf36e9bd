// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {IEscrow} from "../contracts/interfaces/IEscrow.sol";

/// @dev A token that calls back into whoever it pays: the shape of an ERC-777 hook or a malicious token.
contract ReentrantToken is ERC20 {
    constructor() ERC20("Evil", "EVIL") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function transfer(address to, uint256 amount) public override returns (bool) {
        bool ok = super.transfer(to, amount);
        if (to.code.length != 0) Attacker(to).onTokens();
        return ok;
    }
}

/// @dev Withdraws, and from the token's callback tries to withdraw again before the first one finished.
contract Attacker {
    Escrow internal escrow;
    ReentrantToken internal token;
    uint256 public reentries;
    bool internal armed;

    constructor(Escrow escrow_, ReentrantToken token_) {
        (escrow, token) = (escrow_, token_);
    }

    function depositAndRequest(uint256 amount) external {
        token.approve(address(escrow), amount);
        escrow.deposit(address(this), amount);
        escrow.requestWithdrawal(amount);
    }

    function attackWithdraw() external {
        armed = true;
        escrow.withdraw(address(this));
    }

    function attackEarnings(uint256 amount) external {
        armed = true;
        escrow.withdrawEarnings(address(this), amount);
    }

    function onTokens() external {
        if (!armed) return;
        armed = false;
        reentries++;
        escrow.withdraw(address(this)); // must revert: the guard is held
    }
}

contract EscrowHostileTest is Test {
    ReentrantToken internal token;
    Escrow internal escrow;
    Attacker internal attacker;

    function setUp() public {
        token = new ReentrantToken();
        escrow = new Escrow(token, 1 days);
        attacker = new Attacker(escrow, token);
        token.mint(address(attacker), 100e6);
        // An honest payer's funds sit in the escrow too: the prize.
        address honest = makeAddr("honest");
        token.mint(honest, 1_000e6);
        vm.startPrank(honest);
        token.approve(address(escrow), 1_000e6);
        escrow.deposit(honest, 1_000e6);
        vm.stopPrank();
    }

    function test_reentrantWithdraw_reverts() public {
        attacker.depositAndRequest(100e6);
        vm.warp(block.timestamp + 1 days);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.attackWithdraw();
        assertEq(token.balanceOf(address(escrow)), 1_100e6, "nothing left the escrow");
        assertEq(escrow.balanceOf(address(attacker)), 100e6);
    }

    function test_reentrantEarningsWithdraw_reverts() public {
        // The attacker is also a provider with earnings.
        address honest = makeAddr("honest");
        vm.prank(honest);
        escrow.approve(address(attacker), 1e6, 10e6);
        vm.prank(address(attacker));
        escrow.consume(honest, 1e6);
        attacker.depositAndRequest(100e6);
        vm.warp(block.timestamp + 1 days);
        vm.expectRevert(IEscrow.Reentrancy.selector);
        attacker.attackEarnings(1e6);
        assertEq(escrow.earnings(address(attacker)), 1e6);
        assertEq(token.balanceOf(address(escrow)), 1_100e6);
    }

    /// @dev State is written before the transfer (checks-effects-interactions): even without the guard a
    /// re-entered withdraw would find no pending withdrawal. Observed from inside the callback.
    function test_effectsBeforeInteraction() public {
        attacker.depositAndRequest(100e6);
        vm.warp(block.timestamp + 1 days);
        // Unarmed: the callback does nothing; the withdrawal completes once.
        vm.prank(address(attacker));
        escrow.withdraw(address(attacker));
        (uint256 amount, uint256 readyAt) = escrow.pendingWithdrawal(address(attacker));
        assertEq(amount, 0);
        assertEq(readyAt, 0);
        assertEq(token.balanceOf(address(attacker)), 100e6);
    }
}
