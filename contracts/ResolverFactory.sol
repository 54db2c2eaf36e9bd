// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";

import {IResolver, IResolverFactory} from "./interfaces/IResolver.sol";
import {Resolver} from "./Resolver.sol";

/// @title ResolverFactory
/// @notice Creates a provider's resolver for the price of a minimal clone.
contract ResolverFactory is IResolverFactory {
    /// @inheritdoc IResolverFactory
    address public immutable implementation;

    constructor() {
        implementation = address(new Resolver());
    }

    /// @inheritdoc IResolverFactory
    function deploy(address payee, string calldata server, bytes calldata publicKeyDer)
        external
        returns (address resolver)
    {
        resolver = Clones.clone(implementation);
        emit ResolverDeployed(resolver, msg.sender);
        IResolver(resolver).initialize(msg.sender, payee, server, publicKeyDer);
    }
}
