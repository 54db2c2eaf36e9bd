// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test, Vm} from "forge-std/Test.sol";

import {Escrow} from "../../contracts/Escrow.sol";
import {IEscrow, Charge} from "../../contracts/interfaces/IEscrow.sol";
import {TestUSDC} from "../../contracts/TestUSDC.sol";

/// @dev Drives the escrow with random actions of 3 payers and 2 providers, recording ghost variables that
/// the invariants compare with the contract's state.
contract EscrowHandler is Test {
    Escrow internal escrow;
    TestUSDC internal usdc;
    uint256 internal delay;

    address[] public payers;
    address[] public providers;

    // ghosts
    mapping(address payer => mapping(address provider => uint256)) public spent; // from balance
    mapping(address payer => mapping(address provider => uint256)) public maxSpend; // spent-at-approve + budget
    mapping(address payer => uint256) public requestedAt;
    uint256 public totalEarned;
    uint256 public totalEarningsWithdrawn;
    uint256 public creditsGranted;
    uint256 public creditsSpent;
    uint256 public violations; // charges above price, withdrawals before delay
    mapping(bytes32 => uint256) public calls;

    constructor(Escrow escrow_, TestUSDC usdc_) {
        (escrow, usdc, delay) = (escrow_, usdc_, escrow_.withdrawalDelay());
        for (uint256 i; i < 3; ++i) payers.push(makeAddr(string.concat("payer", vm.toString(i))));
        for (uint256 i; i < 2; ++i) providers.push(makeAddr(string.concat("provider", vm.toString(i))));
        // A funded, approved start, so that most random charges can succeed.
        for (uint256 i; i < 3; ++i) {
            usdc.mint(payers[i], 100e6);
            vm.startPrank(payers[i]);
            usdc.approve(address(escrow), 100e6);
            escrow.deposit(payers[i], 100e6);
            for (uint256 j; j < 2; ++j) {
                escrow.approve(providers[j], 1e6, 50e6);
                maxSpend[payers[i]][providers[j]] = 50e6;
            }
            vm.stopPrank();
        }
    }

    function payerCount() external view returns (uint256) {
        return payers.length;
    }

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    /* ------------------------------------------------------------------------------------ */

    function deposit(uint256 from, uint256 to, uint256 amount) external {
        address a = payers[from % 3];
        address b = payers[to % 3];
        amount = bound(amount, 1, 1_000e6);
        usdc.mint(a, amount);
        vm.startPrank(a);
        usdc.approve(address(escrow), amount);
        escrow.deposit(b, amount);
        vm.stopPrank();
        calls["deposit"]++;
    }

    function approve(uint256 p, uint256 q, uint256 price, uint256 budget) external {
        (address payer, address provider) = (payers[p % 3], providers[q % 2]);
        price = bound(price, 0, 2e6);
        budget = bound(budget, 0, 500e6);
        (uint256 oldPrice, uint256 oldLeft,) = escrow.allowance(payer, provider);
        vm.prank(payer);
        escrow.approve(provider, price, budget);
        if (price >= oldPrice && budget >= oldLeft) {
            uint256 cap = spent[payer][provider] + budget;
            if (cap > maxSpend[payer][provider]) maxSpend[payer][provider] = cap;
        }
        calls["approve"]++;
    }

    function consume(uint256 p, uint256 q, uint256 price) external {
        Charge[] memory charges = new Charge[](1);
        charges[0] = Charge(payers[p % 3], uint64(bound(price, 1, 1.2e6)), 1);
        _settle(providers[q % 2], charges, false);
    }

    function consumeBatch(uint256 q, uint256 seed, uint256 n) external {
        n = bound(n, 1, 4);
        Charge[] memory charges = new Charge[](n);
        for (uint256 i; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            charges[i] = Charge(payers[r % 3], uint64(bound(r >> 8, 1, 1e6)), uint32(bound(r >> 80, 1, 20)));
        }
        _settle(providers[q % 2], charges, true);
    }

    function grantCredits(uint256 q, uint256 p, uint256 amount) external {
        amount = bound(amount, 1, 5e6);
        vm.prank(providers[q % 2]);
        escrow.grantCredits(payers[p % 3], amount);
        creditsGranted += amount;
        calls["grantCredits"]++;
    }

    function withdrawEarnings(uint256 q, uint256 amount) external {
        address provider = providers[q % 2];
        uint256 available = escrow.earnings(provider);
        if (available == 0) return;
        amount = bound(amount, 1, available);
        vm.prank(provider);
        escrow.withdrawEarnings(provider, amount);
        totalEarningsWithdrawn += amount;
        calls["withdrawEarnings"]++;
    }

    function requestWithdrawal(uint256 p, uint256 amount) external {
        address payer = payers[p % 3];
        uint256 balance = escrow.balanceOf(payer);
        if (balance == 0) return;
        amount = bound(amount, 1, balance);
        vm.prank(payer);
        escrow.requestWithdrawal(amount);
        requestedAt[payer] = block.timestamp;
        calls["requestWithdrawal"]++;
    }

    function cancelWithdrawal(uint256 p) external {
        address payer = payers[p % 3];
        (, uint256 readyAt) = escrow.pendingWithdrawal(payer);
        if (readyAt == 0) return;
        vm.prank(payer);
        escrow.cancelWithdrawal();
        calls["cancelWithdrawal"]++;
    }

    function withdraw(uint256 p) external {
        address payer = payers[p % 3];
        vm.prank(payer);
        try escrow.withdraw(payer) {
            if (block.timestamp < requestedAt[payer] + delay) violations++;
            calls["withdraw"]++;
        } catch {
            calls["withdraw.reverted"]++;
        }
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, delay));
        calls["warp"]++;
    }

    /* ------------------------------------------------------------------------------------ */

    /// @dev Runs the charges through `consume` or `consumeBatch`, then checks each `Consumed` event against
    /// the terms in force before the call and books what the balances paid.
    function _settle(address provider, Charge[] memory charges, bool batch) internal {
        uint256[3] memory priceBefore;
        uint256[3] memory creditsBefore;
        for (uint256 i; i < 3; ++i) {
            (priceBefore[i],, creditsBefore[i]) = escrow.allowance(payers[i], provider);
        }
        vm.recordLogs();
        vm.prank(provider);
        bool ok;
        if (batch) {
            try escrow.consumeBatch(charges) {
                ok = true;
            } catch {}
        } else {
            try escrow.consume(charges[0].payer, charges[0].price) {
                ok = true;
            } catch {}
        }
        Vm.Log[] memory logs = vm.getRecordedLogs();
        if (!ok) {
            calls[batch ? bytes32("consumeBatch.reverted") : bytes32("consume.reverted")]++;
            return;
        }
        calls[batch ? bytes32("consumeBatch") : bytes32("consume")]++;
        uint256[3] memory creditsUsed;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] != IEscrow.Consumed.selector) continue;
            (uint256 k, uint256 fromCredits) = _book(logs[i], provider, priceBefore);
            creditsUsed[k] += fromCredits;
        }
        for (uint256 k; k < 3; ++k) {
            if (creditsUsed[k] > creditsBefore[k]) violations++;
        }
    }

    function _book(Vm.Log memory log, address provider, uint256[3] memory priceBefore)
        internal
        returns (uint256 k, uint256 fromCredits)
    {
        address payer = address(uint160(uint256(log.topics[1])));
        uint256 price;
        uint256 count;
        (price, count, fromCredits) = abi.decode(log.data, (uint256, uint256, uint256));
        uint256 fromBalance = price * count - fromCredits;
        k = _payerIndex(payer);
        if (fromBalance != 0 && price > priceBefore[k]) violations++;
        spent[payer][provider] += fromBalance;
        totalEarned += fromBalance;
        creditsSpent += fromCredits;
    }

    function _payerIndex(address payer) internal view returns (uint256) {
        for (uint256 i; i < 3; ++i) {
            if (payers[i] == payer) return i;
        }
        revert("unknown payer");
    }

    function _balances() internal view returns (uint256 sum) {
        for (uint256 i; i < 3; ++i) sum += escrow.balanceOf(payers[i]);
    }
}
