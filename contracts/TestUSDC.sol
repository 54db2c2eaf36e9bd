// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title TestUSDC
/// @notice USDC stand-in for local networks and tests: 6 decimals, EIP-2612 permit, and a mint anyone may
/// call. Never deploy it where the token is meant to have value.
contract TestUSDC is ERC20, ERC20Permit {
    constructor() ERC20("Test USD Coin", "USDC") ERC20Permit("USD Coin") {}

    /// @notice 6, as USDC.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` to `to`. For tests and local networks only.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
