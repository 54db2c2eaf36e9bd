// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IRegistry} from "./interfaces/IRegistry.sol";
import {LabelLib} from "./libraries/LabelLib.sol";

/// @title Registry
/// @notice `label -> resolver`, taken first-come through commit-reveal.
contract Registry is IRegistry {
    /// @dev One label's record.
    struct Record {
        address owner;
        address resolver;
    }

    uint256 internal immutable _minAge;
    uint256 internal immutable _maxAge;

    mapping(bytes32 node => Record) internal _records;

    /// @inheritdoc IRegistry
    mapping(bytes32 commitment => uint256 timestamp) public commitments;

    /// @param minAge Seconds a commitment must age before its registration (at least 1: not the same block).
    /// @param maxAge Seconds after which a commitment expires.
    constructor(uint256 minAge, uint256 maxAge) {
        if (minAge == 0 || minAge >= maxAge) revert InvalidCommitmentAges(minAge, maxAge);
        (_minAge, _maxAge) = (minAge, maxAge);
    }

    modifier onlyLabelOwner(bytes32 node) {
        if (_records[node].owner != msg.sender) revert NotLabelOwner(node, msg.sender);
        _;
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                      COMMIT-REVEAL                                        */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IRegistry
    function minCommitmentAge() external view returns (uint256) {
        return _minAge;
    }

    /// @inheritdoc IRegistry
    function maxCommitmentAge() external view returns (uint256) {
        return _maxAge;
    }

    /// @inheritdoc IRegistry
    function makeCommitment(string calldata label, address owner_, address resolver_, bytes32 secret)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(label, owner_, resolver_, secret));
    }

    /// @inheritdoc IRegistry
    function commit(bytes32 commitment) external {
        commitments[commitment] = block.timestamp;
        emit Committed(commitment, block.timestamp);
    }

    /// @inheritdoc IRegistry
    function register(string calldata label, address owner_, address resolver_, bytes32 secret)
        external
        returns (bytes32 node)
    {
        if (owner_ == address(0)) revert ZeroOwner();
        if (!LabelLib.isValid(label)) revert InvalidLabel(label);

        bytes32 commitment = makeCommitment(label, owner_, resolver_, secret);
        uint256 committedAt = commitments[commitment];
        if (committedAt == 0) revert CommitmentNotFound(commitment);
        if (block.timestamp < committedAt + _minAge) revert CommitmentTooNew(commitment, committedAt + _minAge);
        if (block.timestamp > committedAt + _maxAge) revert CommitmentExpired(commitment);
        delete commitments[commitment];

        node = LabelLib.node(label);
        if (_records[node].owner != address(0)) revert LabelTaken(node);
        _records[node] = Record(owner_, resolver_);
        emit Registered(node, label, owner_, resolver_);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        RECORDS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IRegistry
    function resolver(bytes32 node) external view returns (address) {
        return _records[node].resolver;
    }

    /// @inheritdoc IRegistry
    function owner(bytes32 node) external view returns (address) {
        return _records[node].owner;
    }

    /// @inheritdoc IRegistry
    function setResolver(bytes32 node, address resolver_) external onlyLabelOwner(node) {
        _records[node].resolver = resolver_;
        emit ResolverChanged(node, resolver_);
    }

    /// @inheritdoc IRegistry
    function transfer(bytes32 node, address newOwner) external onlyLabelOwner(node) {
        if (newOwner == address(0)) revert ZeroOwner();
        _records[node].owner = newOwner;
        emit Transferred(node, newOwner);
    }
}
