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
        string memory path = string.concat(vm.projectRoot(), "/deployments/", vm.toString(block.chainid), ".json");
        vm.writeJson(json, path);

        console.log("USDC            ", usdc, testToken ? "(TestUSDC)" : "");
        console.log("Registry        ", address(registry));
        console.log("ResolverFactory ", address(factory));
        console.log("Escrow          ", address(escrow));
        console.log("written to      ", path);
    }
}
