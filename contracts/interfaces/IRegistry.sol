// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IRegistry
/// @notice Maps provider labels (`alice` in `alice.khachapuri.xyz`) to their resolvers.
/// @dev A label's key is `node = keccak256(bytes(label))`. A label is a lower-case DNS label: `[a-z0-9-]`,
/// 1..63 bytes, no leading or trailing `-`. It is taken by its first registrant through commit-reveal: a
/// registration must follow a commitment that is at least `minCommitmentAge` and at most `maxCommitmentAge`
/// seconds old. The commitment binds the label, the owner, the resolver and a secret, so a registration seen
/// in the mempool cannot be front-run: the attacker would need a commitment of its own, aged, for that label.
interface IRegistry {
    /* ---------------------------------------------------------------------------------------- */
    /*                                          EVENTS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice A commitment was recorded at `timestamp`.
    event Committed(bytes32 indexed commitment, uint256 timestamp);

    /// @notice `label` was registered to `owner`, resolving through `resolver`.
    event Registered(bytes32 indexed node, string label, address indexed owner, address resolver);

    /// @notice The resolver of `node` changed.
    event ResolverChanged(bytes32 indexed node, address resolver);

    /// @notice The owner of `node` changed.
    event Transferred(bytes32 indexed node, address indexed owner);

    /* ---------------------------------------------------------------------------------------- */
    /*                                          ERRORS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev The label is empty, longer than 63 bytes, has a byte outside `[a-z0-9-]`, or starts or ends with `-`.
    error InvalidLabel(string label);
    /// @dev The label is already registered.
    error LabelTaken(bytes32 node);
    /// @dev No commitment matches the registration's (label, owner, resolver, secret).
    error CommitmentNotFound(bytes32 commitment);
    /// @dev The commitment is younger than `minCommitmentAge`; retry at `readyAt`.
    error CommitmentTooNew(bytes32 commitment, uint256 readyAt);
    /// @dev The commitment is older than `maxCommitmentAge`; commit again.
    error CommitmentExpired(bytes32 commitment);
    /// @dev The caller does not own the label.
    error NotLabelOwner(bytes32 node, address caller);
    /// @dev A zero address was given where an owner is required.
    error ZeroOwner();
    /// @dev The commitment ages are inconsistent: need `0 < min < max`.
    error InvalidCommitmentAges(uint256 minAge, uint256 maxAge);

    /* ---------------------------------------------------------------------------------------- */
    /*                                      COMMIT-REVEAL                                        */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice The youngest a commitment may be when it is revealed, in seconds.
    function minCommitmentAge() external view returns (uint256);

    /// @notice The oldest a commitment may be when it is revealed, in seconds.
    function maxCommitmentAge() external view returns (uint256);

    /// @notice When `commitment` was made (0 if never, or already used).
    function commitments(bytes32 commitment) external view returns (uint256 timestamp);

    /// @notice The commitment for a later `register` with the same arguments.
    function makeCommitment(string calldata label, address owner, address resolver, bytes32 secret)
        external
        pure
        returns (bytes32);

    /// @notice Records `commitment` (see `makeCommitment`) with the current block's timestamp.
    /// @dev Committing again resets the timestamp.
    function commit(bytes32 commitment) external;

    /// @notice Registers `label` to `owner` with `resolver`, revealing an aged commitment.
    /// @return node The label's key, `keccak256(bytes(label))`.
    function register(string calldata label, address owner, address resolver, bytes32 secret)
        external
        returns (bytes32 node);

    /* ---------------------------------------------------------------------------------------- */
    /*                                        RECORDS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice The resolver of `node` (zero if unregistered).
    function resolver(bytes32 node) external view returns (address);

    /// @notice The owner of `node` (zero if unregistered).
    function owner(bytes32 node) external view returns (address);

    /// @notice Points `node` to another resolver. Only the label's owner.
    function setResolver(bytes32 node, address resolver) external;

    /// @notice Transfers `node` to `newOwner`. Only the label's owner.
    function transfer(bytes32 node, address newOwner) external;
}
