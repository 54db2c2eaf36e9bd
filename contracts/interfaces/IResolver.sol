// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @dev The `server` record of a provider reachable only through the gateway's WebSocket tunnel.
string constant TUNNEL_MARKER = "tunnel:";

/// @title IPayeeResolver
/// @notice Profile: the address a provider is paid at, and whose key signs its tunnel handshakes.
interface IPayeeResolver {
    /// @notice The payee changed.
    event PayeeChanged(address payee);

    /// @notice The provider's payee address.
    function payee() external view returns (address);

    /// @notice Sets the payee. Only the resolver's owner.
    function setPayee(address payee) external;
}

/// @title IServerResolver
/// @notice Profile: where a provider's agent answers.
interface IServerResolver {
    /// @notice The server record changed.
    event ServerChanged(string server);

    /// @notice The provider's base URL (`https://host:port`), or `TUNNEL_MARKER` if reachable only through
    /// the gateway tunnel.
    function server() external view returns (string memory);

    /// @notice Sets the server record. Only the resolver's owner.
    function setServer(string calldata server) external;
}

/// @title IRsaKeyResolver
/// @notice Profile: the RSA public key that deployment specs are encrypted to.
interface IRsaKeyResolver {
    /// @notice The key changed; `version` counts rotations from 1.
    event RsaKeyChanged(uint64 indexed version, bytes publicKeyDer);

    /// @notice The provider's RSA public key (DER, SubjectPublicKeyInfo) and its version.
    function rsaKey() external view returns (bytes memory publicKeyDer, uint64 version);

    /// @notice Rotates the key and bumps its version. Only the resolver's owner.
    function setRsaKey(bytes calldata publicKeyDer) external;
}

/// @title IResolver
/// @notice One per provider, created by the ResolverFactory as a minimal clone. Only its owner writes.
/// Ownership moves in two steps: the owner names a pending owner, who accepts.
interface IResolver is IPayeeResolver, IServerResolver, IRsaKeyResolver {
    /// @notice The owner offered the resolver to `pendingOwner`; zero cancels a pending offer.
    event OwnershipTransferStarted(address indexed previousOwner, address indexed pendingOwner);

    /// @notice Ownership of the resolver moved (from zero at initialization).
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @dev The caller is not the resolver's owner.
    error NotResolverOwner(address caller);
    /// @dev The caller is not the resolver's pending owner.
    error NotPendingOwner(address caller);
    /// @dev The resolver was already initialized (clones initialize once, the implementation never).
    error AlreadyInitialized();
    /// @dev A zero address was given where an owner or payee is required.
    error ZeroAddress();
    /// @dev The RSA key is empty.
    error EmptyKey();

    /// @notice Sets the first records. Called once, by the factory, in the clone's creation transaction.
    function initialize(address owner, address payee, string calldata server, bytes calldata publicKeyDer)
        external;

    /// @notice The resolver's owner.
    function owner() external view returns (address);

    /// @notice Who may take ownership with `acceptOwnership` (zero if nobody).
    function pendingOwner() external view returns (address);

    /// @notice Offers ownership to `newOwner`, who takes it with `acceptOwnership`; the caller stays the
    /// owner until then. `address(0)` cancels a pending offer; a new offer replaces it. Only the owner.
    function transferOwnership(address newOwner) external;

    /// @notice Takes ownership offered to the caller by `transferOwnership`.
    function acceptOwnership() external;

    /// @notice Every record in one call: what a gateway or agent reads to resolve a label.
    function records()
        external
        view
        returns (address payee, string memory server, bytes memory publicKeyDer, uint64 keyVersion);
}

/// @title IResolverFactory
/// @notice Deploys resolvers as EIP-1167 minimal clones of one implementation, at CREATE2 addresses that
/// depend only on the deployer and its salt: a provider can commit to its label naming a resolver that does
/// not exist yet (`predict`), and nobody else can take that address.
interface IResolverFactory {
    /// @notice A resolver was created for `owner` under `salt`.
    event ResolverDeployed(address indexed resolver, address indexed owner, bytes32 salt);

    /// @dev The caller already deployed a resolver under this salt, at `resolver`.
    error ResolverExists(address resolver);

    /// @notice The implementation every clone delegates to.
    function implementation() external view returns (address);

    /// @notice Where `deploy` called by `deployer` with `salt` creates the resolver (whether or not it
    /// exists).
    function predict(address deployer, bytes32 salt) external view returns (address);

    /// @notice Creates and initializes a resolver owned by the caller, at `predict(msg.sender, salt)`.
    function deploy(bytes32 salt, address payee, string calldata server, bytes calldata publicKeyDer)
        external
        returns (address resolver);
}
