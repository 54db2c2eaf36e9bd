// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Script, console} from "forge-std/Script.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {Registry} from "../contracts/Registry.sol";
import {ResolverFactory} from "../contracts/ResolverFactory.sol";
import {TestUSDC} from "../contracts/TestUSDC.sol";

/// @notice Deploys Registry, ResolverFactory, Escrow (and a TestUSDC when no `USDC` is given) to any RPC,
/// then writes `deployments/<chainId>.json`: the file the Rust side and wallet dApps read.
///
/// Environment (all optional):
///   USDC                 token address; unset: deploy TestUSDC (local networks only)
///
/// What the escrow assumes of the token (IEscrow states it in full; the script checks what it can and prints
/// the rest before deploying):
///   - 6 decimals (checked: any other count stops the deployment);
///   - EIP-2612 `permit` (checked and printed: without it deposits take an approval first);
///   - exact transfers: no fee on transfer, no rebasing, no callbacks (USDC's; cannot be checked here);
///   - USDC's blacklist, `isBlacklisted(address)` (printed): where the token has it, the escrow moves none of
///     a blacklisted account's money, in or out, until the issuer lifts the freeze;
///   - USDC's pause, `paused()` (printed): a paused token stops deposits and withdrawals; charges inside the
///     escrow go on.
///   WITHDRAWAL_DELAY     seconds, default 86400 (1 day)
///   MIN_COMMITMENT_AGE   seconds, default 60
///   MAX_COMMITMENT_AGE   seconds, default 604800 (7 days)
///
///   forge script script/Deploy.s.sol --rpc-url $RPC --private-key $KEY --broadcast
contract Deploy is Script {
    function run() external {
        uint256 delay = vm.envOr("WITHDRAWAL_DELAY", uint256(1 days));
        uint256 minAge = vm.envOr("MIN_COMMITMENT_AGE", uint256(60));
        uint256 maxAge = vm.envOr("MAX_COMMITMENT_AGE", uint256(7 days));
        address usdc = vm.envOr("USDC", address(0));
        // Events are scanned from here: a block at or before the first deployment transaction.
        uint256 startBlock = block.number;

        if (usdc != address(0)) _describeToken(usdc);

        vm.startBroadcast();
        bool testToken = usdc == address(0);
        if (testToken) usdc = address(new TestUSDC());
        Registry registry = new Registry(minAge, maxAge);
        ResolverFactory factory = new ResolverFactory();
        Escrow escrow = new Escrow(IERC20(usdc), delay);
        vm.stopBroadcast();

        string memory o = "deployment";
        vm.serializeUint(o, "chainId", block.chainid);
        vm.serializeUint(o, "deploymentBlock", startBlock);
        vm.serializeUint(o, "withdrawalDelay", delay);
        vm.serializeUint(o, "minCommitmentAge", minAge);
        vm.serializeUint(o, "maxCommitmentAge", maxAge);
        vm.serializeBool(o, "testToken", testToken);
        vm.serializeAddress(o, "usdc", usdc);
        vm.serializeAddress(o, "registry", address(registry));
        vm.serializeAddress(o, "resolverFactory", address(factory));
        vm.serializeAddress(o, "resolverImplementation", factory.implementation());
        string memory json = vm.serializeAddress(o, "escrow", address(escrow));
        string memory path =
            string.concat(vm.projectRoot(), "/deployments/", vm.toString(block.chainid), ".json");
        vm.writeJson(json, path);

        console.log("USDC            ", usdc, testToken ? "(TestUSDC)" : "");
        console.log("Registry        ", address(registry));
        console.log("ResolverFactory ", address(factory));
        console.log("Escrow          ", address(escrow));
        console.log("written to      ", path);
    }

    /// @dev Checks and prints what the escrow assumes of a given token (see the header).
    function _describeToken(address usdc) internal view {
        require(usdc.code.length != 0, "USDC: no contract at that address on this chain");
        (bool ok, bytes memory data) = usdc.staticcall(abi.encodeWithSignature("decimals()"));
        require(
            ok && data.length == 32, "USDC: the token has no decimals(); the escrow needs USDC (6 decimals)"
        );
        uint256 decimals = abi.decode(data, (uint256));
        require(
            decimals == 6, string.concat("USDC: the token has ", vm.toString(decimals), " decimals, not 6")
        );
        console.log("token           ", usdc, "6 decimals");
        (ok, data) = usdc.staticcall(abi.encodeWithSignature("DOMAIN_SEPARATOR()"));
        console.log(
            "  permit        ",
            ok && data.length == 32 ? "EIP-2612: one-transaction deposits" : "none: deposits approve first"
        );
        (ok, data) = usdc.staticcall(abi.encodeWithSignature("isBlacklisted(address)", address(0)));
        console.log(
            "  blacklist     ",
            ok && data.length == 32
                ? "yes: the escrow moves no money of a blacklisted account"
                : "none: nobody is frozen"
        );
        (ok, data) = usdc.staticcall(abi.encodeWithSignature("paused()"));
        console.log(
            "  pause         ",
            ok && data.length == 32 ? "yes: while paused, no deposit or withdrawal; charges go on" : "none"
        );
        console.log("  transfers      assumed exact: no fee, no rebasing, no callbacks (USDC's behaviour)");
    }
}
