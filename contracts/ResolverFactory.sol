// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";

import {IResolver, IResolverFactory} from "./interfaces/IResolver.sol";
import {Resolver} from "./Resolver.sol";

/// @title ResolverFactory
/// @notice Creates a provider's resolver for the price of a minimal clone, at an address known in advance.
contract ResolverFactory is IResolverFactory {
    /// @inheritdoc IResolverFactory
    address public immutable implementation;

    constructor() {
        implementation = address(new Resolver());
    }

    /// @inheritdoc IResolverFactory
    function predict(address deployer, bytes32 salt) public view returns (address) {
        return Clones.predictDeterministicAddress(implementation, _salt(deployer, salt));
    }

    /// @inheritdoc IResolverFactory
    function deploy(bytes32 salt, address payee, string calldata server, bytes calldata publicKeyDer)
        external
        returns (address resolver)
    {
        address predicted = predict(msg.sender, salt);
        if (predicted.code.length != 0) revert ResolverExists(predicted);
        resolver = Clones.cloneDeterministic(implementation, _salt(msg.sender, salt));
        emit ResolverDeployed(resolver, msg.sender, salt);
        IResolver(resolver).initialize(msg.sender, payee, server, publicKeyDer);
    }

    /// @dev The CREATE2 salt: the deployer's own salt, bound to the deployer so that nobody else can take
    /// (and initialize) the address a commitment names.
    function _salt(address deployer, bytes32 salt) internal pure returns (bytes32) {
        return keccak256(abi.encode(deployer, salt));
    }
}
