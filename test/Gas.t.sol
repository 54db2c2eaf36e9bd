// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Charge} from "../contracts/interfaces/IEscrow.sol";
import {Base} from "./utils/Base.sol";

/// @notice Whole-transaction gas of the hot paths, each call run as its own transaction (`isolate`), so
/// the figures include the 21,000 base, calldata and cold storage. Snapshots land in `snapshots/GasTest.json`
/// and `make test` checks them against drift.
contract GasTest is Base {
    uint256 internal constant PRICE = 10_000; // 0.01 USDC

    address[] internal payers;

    function setUp() public override {
        super.setUp();
        for (uint256 i; i < 100; ++i) {
            address p = address(uint160(0x1000 + i));
            payers.push(p);
            _fund(p, 1_000 * USDC);
            _reserve(p, provider, PRICE, 1_000 * USDC);
        }
        _fund(payer, 1_000 * USDC);
        _reserve(payer, provider, PRICE, 900 * USDC);
        // Steady state: the provider already has earnings (a first-ever charge also pays 0 -> non-zero).
        vm.prank(provider);
        escrow.consume(payer, PRICE);
    }

    function test_gas_deposit() public {
        usdc.mint(stranger, 10 * USDC);
        vm.prank(stranger);
        usdc.approve(address(escrow), 10 * USDC);
        vm.prank(stranger);
        escrow.deposit(stranger, 10 * USDC);
        vm.snapshotGasLastCall("deposit");
    }

    function test_gas_depositWithPermit() public {
        usdc.mint(payer, 10 * USDC);
        (uint8 v, bytes32 r, bytes32 s) =
            _permit(payerKey, address(escrow), 10 * USDC, block.timestamp + 1 hours);
        vm.prank(payer);
        escrow.depositWithPermit(payer, 10 * USDC, block.timestamp + 1 hours, v, r, s);
        vm.snapshotGasLastCall("depositWithPermit");
    }

    function test_gas_reserve() public {
        vm.prank(payer);
        escrow.reserve(stranger, PRICE, 100 * USDC);
        vm.snapshotGasLastCall("reserve");
    }

    function test_gas_withdraw() public {
        vm.prank(payer);
        escrow.withdraw(payer, 50 * USDC);
        vm.snapshotGasLastCall("withdraw");
    }

    function test_gas_release() public {
        vm.prank(payer);
        escrow.release(provider, 100 * USDC);
        vm.snapshotGasLastCall("release");
    }

    /// @dev A charge that first puts a matured release into force (the rare path).
    function test_gas_consume_afterRelease() public {
        vm.prank(payer);
        escrow.release(provider, 100 * USDC);
        vm.warp(block.timestamp + DELAY);
        vm.prank(provider);
        escrow.consume(payer, PRICE);
        vm.snapshotGasLastCall("consume_afterRelease");
    }

    function test_gas_consume() public {
        vm.prank(provider);
        escrow.consume(payer, PRICE);
        uint256 gas = vm.snapshotGasLastCall("consume");
        // 37,268 before the freeze check; asking the token whether the provider and the payer are frozen
        // (two cold reads of its blacklist) costs about 8,200 more.
        assertLe(gas, 50_000, "consume over its 50,000 gas target");
    }

    function test_gas_consumeBatch_1() public {
        _batch(1, 1, "consumeBatch_1");
    }

    function test_gas_consumeBatch_10() public {
        _batch(10, 1, "consumeBatch_10");
    }

    function test_gas_consumeBatch_100() public {
        _batch(100, 1, "consumeBatch_100");
    }

    /// @dev The target: 1,000 requests of 10 payers in one batch at most 200 gas per request.
    function test_gas_consumeBatch_1000_requests_10_payers() public {
        uint256 gas = _batch(10, 100, "consumeBatch_1000req_10payers");
        assertLe(gas / 1000, 200, "batch over its 200 gas per request target");
    }

    /// @dev The target: a batch of 100 entries with 10 that do not fit still settles the 90.
    function test_gas_consumeBatch_100_with_10_refused() public {
        for (uint256 i; i < 10; ++i) {
            vm.prank(payers[i * 10]);
            escrow.release(provider, type(uint256).max);
        }
        vm.warp(block.timestamp + DELAY);
        uint256 before = escrow.earnings(provider);
        _batch(100, 1, "consumeBatch_100_10refused");
        assertEq(escrow.earnings(provider) - before, 90 * PRICE, "the 90 that fit settle");
    }

    function _batch(uint256 n, uint32 count, string memory name) internal returns (uint256 gas) {
        Charge[] memory charges = new Charge[](n);
        for (uint256 i; i < n; ++i) {
            charges[i] = Charge(payers[i], uint64(PRICE), count);
        }
        vm.prank(provider);
        escrow.consumeBatch(charges);
        gas = vm.snapshotGasLastCall(name);
    }
}
