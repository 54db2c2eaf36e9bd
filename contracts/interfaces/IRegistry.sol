// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IRegistry
/// @notice Maps provider labels (`alice` in `alice.khachapuri.xyz`) to their resolvers.
/// @dev A label's key is `node = keccak256(bytes(label))`. A label is a lower-case DNS label: `[a-z0-9-]`,
/// 1..63 bytes, no leading or trailing `-`, and not `-` at both its 3rd and 4th bytes (IDNA's reserved
/// "R-LDH" labels, RFC 5891 §4.2.3.1: `xn--` punycode look-alikes and whatever a later ACE prefix would be).
/// A few labels are reserved for the service's own hosts (see `ReservedLabel`).
///
/// A label is taken by its first registrant through commit-reveal: a registration must follow a commitment
/// that is at least `minCommitmentAge` and at most `maxCommitmentAge` seconds old. The commitment binds the
/// label, the owner, the resolver and a secret, so a registration seen in the mempool cannot be front-run:
/// the attacker would need a commitment of its own, aged, for that label. A live commitment cannot be made
/// again (which would reset its age); once expired, it can.
///
/// A label changes hands in two steps: its owner names a pending owner (`transfer`), who takes it
/// (`acceptTransfer`). Taking a label clears its resolver unless the new owner already owns that resolver:
/// the seller's resolver would otherwise keep deciding where the buyer's traffic goes, who is paid and which
/// RSA key deployment secrets are sealed to. A sale that includes the resolver therefore moves the
/// resolver's ownership first (`transferOwnership` + `acceptOwnership` on the resolver), then the label.
interface IRegistry {
    /* ---------------------------------------------------------------------------------------- */
    /*                                          EVENTS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice A commitment was recorded at `timestamp`.
    event Committed(bytes32 indexed commitment, uint256 timestamp);

    /// @notice `label` was registered to `owner`, resolving through `resolver`.
    event Registered(bytes32 indexed node, string label, address indexed owner, address resolver);

    /// @notice The resolver of `node` changed (to zero when a transfer cleared the seller's resolver).
    event ResolverChanged(bytes32 indexed node, address resolver);

    /// @notice The owner of `node` offered it to `pendingOwner`; zero cancels a pending offer.
    event TransferStarted(bytes32 indexed node, address indexed owner, address indexed pendingOwner);

    /// @notice The owner of `node` changed: the pending owner accepted it.
    event Transferred(bytes32 indexed node, address indexed owner);

    /* ---------------------------------------------------------------------------------------- */
    /*                                          ERRORS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev The label is empty, longer than 63 bytes, has a byte outside `[a-z0-9-]`, starts or ends with
    /// `-`, or has `-` at both its 3rd and 4th bytes (`xn--...`).
    error InvalidLabel(string label);
    /// @dev The label names one of the service's own hosts (`www`, `api`, `gateway`, `tunnel`, `admin`,
    /// `app`, `docs`, `mail`, `ipfs`, `status`) and cannot be registered.
    error ReservedLabel(string label);
    /// @dev The label is already registered.
    error LabelTaken(bytes32 node);
    /// @dev No commitment matches the registration's (label, owner, resolver, secret).
    error CommitmentNotFound(bytes32 commitment);
    /// @dev The commitment is younger than `minCommitmentAge`; retry at `readyAt`.
    error CommitmentTooNew(bytes32 commitment, uint256 readyAt);
    /// @dev The commitment is older than `maxCommitmentAge`; commit again.
    error CommitmentExpired(bytes32 commitment);
    /// @dev The commitment is already recorded and live until `expiresAt`; it can be committed again after.
    error CommitmentExists(bytes32 commitment, uint256 expiresAt);
    /// @dev The caller does not own the label.
    error NotLabelOwner(bytes32 node, address caller);
    /// @dev The caller is not the label's pending owner.
    error NotPendingOwner(bytes32 node, address caller);
    /// @dev A zero address was given where an owner is required.
    error ZeroOwner();
    /// @dev The commitment ages are inconsistent: need `0 < min < max <= 365 days`.
    error InvalidCommitmentAges(uint256 minAge, uint256 maxAge);

    /* ---------------------------------------------------------------------------------------- */
    /*                                      COMMIT-REVEAL                                        */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice The youngest a commitment may be when it is revealed, in seconds.
    function minCommitmentAge() external view returns (uint256);

    /// @notice The oldest a commitment may be when it is revealed, in seconds.
    function maxCommitmentAge() external view returns (uint256);

    /// @notice When `commitment` was made: 0 if never or already revealed. An expired commitment keeps its
    /// timestamp until it is committed again.
    function commitments(bytes32 commitment) external view returns (uint256 timestamp);

    /// @notice The commitment for a later `register` with the same arguments. `resolver` may be an address
    /// with no code yet, e.g. `IResolverFactory.predict`'s.
    function makeCommitment(string calldata label, address owner, address resolver, bytes32 secret)
        external
        pure
        returns (bytes32);

    /// @notice Records `commitment` (see `makeCommitment`) with the current block's timestamp.
    /// @dev Reverts with `CommitmentExists` while the same commitment is live (made at most
    /// `maxCommitmentAge` seconds ago), so nobody can reset another's commitment and keep it from ever aging.
    /// An expired commitment may be made again, which starts its age afresh.
    function commit(bytes32 commitment) external;

    /// @notice Registers `label` to `owner` with `resolver`, revealing an aged, unexpired commitment. Anyone
    /// may send it: the commitment fixes every argument.
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

    /// @notice Who may take `node` with `acceptTransfer` (zero if nobody).
    function pendingOwner(bytes32 node) external view returns (address);

    /// @notice Points `node` to another resolver. Only the label's owner.
    function setResolver(bytes32 node, address resolver) external;

    /// @notice Offers `node` to `newOwner`, who takes it with `acceptTransfer`; the caller stays the owner
    /// until then. `address(0)` cancels a pending offer; a new offer replaces it. Only the label's owner.
    function transfer(bytes32 node, address newOwner) external;

    /// @notice Takes `node`, offered to the caller by `transfer`. Unless the caller owns the label's resolver
    /// (its `owner()`, read with a bounded static call: a resolver that reverts, has no code or answers
    /// anything but the caller counts as not owned), the resolver is cleared to zero, with `ResolverChanged`:
    /// the seller keeps no say over where the label's traffic, payments and secrets go. The check trusts
    /// the resolver's `owner()`; a buyer who did not vet the resolver sets their own right after.
    function acceptTransfer(bytes32 node) external;
}
