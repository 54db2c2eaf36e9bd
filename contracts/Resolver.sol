// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";

import {IResolver, IPayeeResolver, IServerResolver, IRsaKeyResolver} from "./interfaces/IResolver.sol";

/// @title Resolver
/// @notice A provider's records: payee, server URL (or the tunnel marker) and RSA public key. Deployed once as
/// an implementation; providers get EIP-1167 clones from the ResolverFactory.
contract Resolver is IResolver, IERC165 {
    address internal _owner;
    address internal _pendingOwner;
    address internal _payee;
    uint64 internal _keyVersion;
    bool internal _initialized;
    string internal _server;
    bytes internal _rsaKey;

    /// @dev The implementation itself can never be initialized.
    constructor() {
        _initialized = true;
    }

    modifier onlyOwner() {
        if (msg.sender != _owner) revert NotResolverOwner(msg.sender);
        _;
    }

    /// @inheritdoc IResolver
    function initialize(address owner_, address payee_, string calldata server_, bytes calldata publicKeyDer)
        external
    {
        if (_initialized) revert AlreadyInitialized();
        if (owner_ == address(0)) revert ZeroAddress();
        _initialized = true;
        _owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
        _setPayee(payee_);
        _setServer(server_);
        _setRsaKey(publicKeyDer);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         OWNER                                            */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IResolver
    function owner() external view returns (address) {
        return _owner;
    }

    /// @inheritdoc IResolver
    function pendingOwner() external view returns (address) {
        return _pendingOwner;
    }

    /// @inheritdoc IResolver
    function transferOwnership(address newOwner) external onlyOwner {
        // Triaged: the zero address cancels a pending transfer (documented in IResolver).
        // slither-disable-next-line missing-zero-check
        _pendingOwner = newOwner;
        emit OwnershipTransferStarted(msg.sender, newOwner);
    }

    /// @inheritdoc IResolver
    function acceptOwnership() external {
        address pending = _pendingOwner;
        if (pending == address(0) || pending != msg.sender) revert NotPendingOwner(msg.sender);
        emit OwnershipTransferred(_owner, msg.sender);
        _owner = msg.sender;
        delete _pendingOwner;
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        PROFILES                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IPayeeResolver
    function payee() external view returns (address) {
        return _payee;
    }

    /// @inheritdoc IPayeeResolver
    function setPayee(address payee_) external onlyOwner {
        _setPayee(payee_);
    }

    /// @inheritdoc IServerResolver
    function server() external view returns (string memory) {
        return _server;
    }

    /// @inheritdoc IServerResolver
    function setServer(string calldata server_) external onlyOwner {
        _setServer(server_);
    }

    /// @inheritdoc IRsaKeyResolver
    function rsaKey() external view returns (bytes memory publicKeyDer, uint64 version) {
        return (_rsaKey, _keyVersion);
    }

    /// @inheritdoc IRsaKeyResolver
    function setRsaKey(bytes calldata publicKeyDer) external onlyOwner {
        _setRsaKey(publicKeyDer);
    }

    /// @inheritdoc IResolver
    function records()
        external
        view
        returns (address payee_, string memory server_, bytes memory publicKeyDer, uint64 keyVersion)
    {
        return (_payee, _server, _rsaKey, _keyVersion);
    }

    /// @inheritdoc IERC165
    function supportsInterface(bytes4 interfaceId) external pure returns (bool) {
        return interfaceId == type(IERC165).interfaceId || interfaceId == type(IResolver).interfaceId
            || interfaceId == type(IPayeeResolver).interfaceId
            || interfaceId == type(IServerResolver).interfaceId
            || interfaceId == type(IRsaKeyResolver).interfaceId;
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        INTERNAL                                          */
    /* ---------------------------------------------------------------------------------------- */

    function _setPayee(address payee_) internal {
        if (payee_ == address(0)) revert ZeroAddress();
        _payee = payee_;
        emit PayeeChanged(payee_);
    }

    function _setServer(string calldata server_) internal {
        _server = server_;
        emit ServerChanged(server_);
    }

    function _setRsaKey(bytes calldata publicKeyDer) internal {
        if (publicKeyDer.length == 0) revert EmptyKey();
        _rsaKey = publicKeyDer;
        uint64 version = ++_keyVersion;
        emit RsaKeyChanged(version, publicKeyDer);
    }
}
