// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC3009} from "@openzeppelin/contracts/token/ERC20/extensions/draft-ERC3009.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title TestUSDC
/// @notice USDC stand-in for local networks and tests: 6 decimals, EIP-2612 permit, EIP-3009 transfers with
/// authorization (random nonces, as x402 clients sign them; the v,r,s form and USDC v2.2's bytes-signature
/// form, which also takes ERC-1271 contract wallets), a mint anyone may call, and USDC's blacklist and pause with Circle's function names and revert strings (FiatToken), so that what the
/// escrow does with a frozen account or a paused token can be tried locally: transfers refuse a blacklisted
/// caller, sender or recipient, and a paused token refuses everything. Approvals and permits by or to a
/// blacklisted account are refused too (FiatToken versions differ there; the escrow relies on neither). The
/// deployer holds the blacklister and pauser roles. Never deploy it where the token is meant to have value.
contract TestUSDC is ERC20, ERC20Permit, ERC3009 {
    /// @notice The account that may blacklist and pause (USDC's `blacklister` and `pauser`, in one).
    address public immutable admin;

    /// @notice Whether transfers, approvals and permits are stopped (USDC's `paused`).
    bool public paused;

    mapping(address account => bool) internal _blacklisted;

    /// @notice `account` may no longer send, receive or approve (USDC's event).
    event Blacklisted(address indexed account);
    /// @notice `account` is no longer blacklisted (USDC's event).
    event UnBlacklisted(address indexed account);
    /// @notice Transfers stopped (USDC's event).
    event Pause();
    /// @notice Transfers resumed (USDC's event).
    event Unpause();

    constructor() ERC20("Test USD Coin", "USDC") ERC20Permit("USD Coin") {
        admin = msg.sender;
    }

    modifier onlyAdmin() {
        require(msg.sender == admin, "TestUSDC: caller is not the admin");
        _;
    }

    /// @notice 6, as USDC.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` to `to`. For tests and local networks only.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice EIP-3009 `transferWithAuthorization` with the signature as bytes (USDC v2.2's form): an EOA's
    /// 65-byte signature, or an ERC-1271 contract wallet's.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external {
        bytes32 hash = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce
                )
            )
        );
        require(SignatureChecker.isValidSignatureNow(from, hash, signature), ERC3009InvalidSignature());
        _transferWithAuthorization(from, to, value, validAfter, validBefore, nonce);
    }

    /// @notice EIP-3009 `receiveWithAuthorization` with the signature as bytes (USDC v2.2's form).
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external {
        bytes32 hash = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce
                )
            )
        );
        require(SignatureChecker.isValidSignatureNow(from, hash, signature), ERC3009InvalidSignature());
        require(to == _msgSender(), ERC20InvalidReceiver(to));
        _transferWithAuthorization(from, to, value, validAfter, validBefore, nonce);
    }

    /// @notice Whether `account` is blacklisted (USDC's view, the one the escrow reads).
    function isBlacklisted(address account) external view returns (bool) {
        return _blacklisted[account];
    }

    /// @notice Blacklists `account`: it can no longer send, receive, approve or be approved.
    function blacklist(address account) external onlyAdmin {
        _blacklisted[account] = true;
        emit Blacklisted(account);
    }

    /// @notice Lifts `account`'s blacklisting.
    function unBlacklist(address account) external onlyAdmin {
        _blacklisted[account] = false;
        emit UnBlacklisted(account);
    }

    /// @notice Stops every transfer, approval and permit.
    function pause() external onlyAdmin {
        paused = true;
        emit Pause();
    }

    /// @notice Resumes transfers.
    function unpause() external onlyAdmin {
        paused = false;
        emit Unpause();
    }

    /// @dev USDC's checks on a move: not paused, and neither the caller, the sender nor the recipient
    /// blacklisted (a mint comes from address(0), never blacklisted).
    function _update(address from, address to, uint256 value) internal override {
        _usable(msg.sender);
        _usable(from);
        _usable(to);
        super._update(from, to, value);
    }

    /// @dev USDC's checks on `approve`, `permit` and an allowance spent by `transferFrom`.
    function _approve(address owner, address spender, uint256 value, bool emitEvent) internal override {
        _usable(owner);
        _usable(spender);
        super._approve(owner, spender, value, emitEvent);
    }

    function _usable(address account) internal view {
        require(!paused, "Pausable: paused");
        require(!_blacklisted[account], "Blacklistable: account is blacklisted");
    }
}
