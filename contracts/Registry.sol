// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IRegistry} from "./interfaces/IRegistry.sol";
import {IResolver} from "./interfaces/IResolver.sol";
import {LabelLib} from "./libraries/LabelLib.sol";

/// @title Registry
/// @notice `label -> resolver`, taken first-come through commit-reveal.
contract Registry is IRegistry {
    /// @dev One label's record.
    struct Record {
        address owner;
        address resolver;
        address pendingOwner;
    }

    /// @dev The longest `maxCommitmentAge` the constructor accepts: far beyond any use, and far from
    /// overflow.
    uint256 internal constant MAX_COMMITMENT_AGE_LIMIT = 365 days;
    /// @dev Gas given to a resolver's `owner()` in `acceptTransfer`: a Resolver clone needs under 10,000.
    uint256 internal constant OWNER_QUERY_GAS = 50_000;

    uint256 internal immutable _minAge;
    uint256 internal immutable _maxAge;

    mapping(bytes32 node => Record) internal _records;

    /// @inheritdoc IRegistry
    mapping(bytes32 commitment => uint256 timestamp) public commitments;

    /// @param minAge Seconds a commitment must age before its registration (at least 1: not the same block).
    /// @param maxAge Seconds after which a commitment expires (at most 365 days).
    constructor(uint256 minAge, uint256 maxAge) {
        if (minAge == 0 || minAge >= maxAge || maxAge > MAX_COMMITMENT_AGE_LIMIT) {
            revert InvalidCommitmentAges(minAge, maxAge);
        }
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
        uint256 committedAt = commitments[commitment];
        if (committedAt != 0 && block.timestamp <= committedAt + _maxAge) {
            revert CommitmentExists(commitment, committedAt + _maxAge);
        }
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
        if (LabelLib.isReserved(label)) revert ReservedLabel(label);

        bytes32 commitment = makeCommitment(label, owner_, resolver_, secret);
        uint256 committedAt = commitments[commitment];
        if (committedAt == 0) revert CommitmentNotFound(commitment);
        if (block.timestamp < committedAt + _minAge) {
            revert CommitmentTooNew(commitment, committedAt + _minAge);
        }
        if (block.timestamp > committedAt + _maxAge) revert CommitmentExpired(commitment);
        delete commitments[commitment];

        node = LabelLib.node(label);
        if (_records[node].owner != address(0)) revert LabelTaken(node);
        _records[node] = Record(owner_, resolver_, address(0));
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
    function pendingOwner(bytes32 node) external view returns (address) {
        return _records[node].pendingOwner;
    }

    /// @inheritdoc IRegistry
    function setResolver(bytes32 node, address resolver_) external onlyLabelOwner(node) {
        _records[node].resolver = resolver_;
        emit ResolverChanged(node, resolver_);
    }

    /// @inheritdoc IRegistry
    function transfer(bytes32 node, address newOwner) external onlyLabelOwner(node) {
        _records[node].pendingOwner = newOwner;
        emit TransferStarted(node, msg.sender, newOwner);
    }

    /// @inheritdoc IRegistry
    function acceptTransfer(bytes32 node) external {
        Record storage record = _records[node];
        address pending = record.pendingOwner;
        if (pending == address(0) || pending != msg.sender) revert NotPendingOwner(node, msg.sender);
        record.owner = msg.sender;
        delete record.pendingOwner;
        emit Transferred(node, msg.sender);
        address resolver_ = record.resolver;
        if (resolver_ != address(0) && !_ownsResolver(resolver_, msg.sender)) {
            delete record.resolver;
            emit ResolverChanged(node, address(0));
        }
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        INTERNAL                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Whether `resolver_.owner()` answers exactly `account`, as one 32-byte word, within
    /// `OWNER_QUERY_GAS`. A static call (no state change, no reentrancy), and not `try`/`catch`: a `try`
    /// still reverts when the answer cannot be decoded or the address has no code, and copies any amount of
    /// return data. Anything else than a clean answer, including running out of gas, counts as not owned.
    function _ownsResolver(address resolver_, address account) internal view returns (bool owned) {
        bytes4 selector = IResolver.owner.selector;
        uint256 gasLimit = OWNER_QUERY_GAS;
        assembly ("memory-safe") {
            mstore(0x00, selector)
            let ok := staticcall(gasLimit, resolver_, 0x00, 0x04, 0x00, 0x20)
            owned := and(ok, and(eq(returndatasize(), 0x20), eq(mload(0x00), account)))
        }
    }
}
