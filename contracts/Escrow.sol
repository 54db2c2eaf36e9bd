// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {IEscrow, Charge, Terms} from "./interfaces/IEscrow.sol";

/// @title Escrow
/// @notice USDC escrow between payers and compute providers: free balances, a reserve per (payer, provider),
/// trial credits, and lowered terms that wait for the delay.
/// @dev The EIP-712 domain ("Khachapuri", "1", chain id, this address) signs payer tokens and spec terms off
/// chain; wallets read it through ERC-5267 `eip712Domain()`.
contract Escrow is IEscrow, EIP712 {
    using SafeERC20 for IERC20;

    /* ---------------------------------------------------------------------------------------- */
    /*                                         STORAGE                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev What a payer has with one provider, in one slot: the terms in force, the trial credits, and
    /// whether `_pending` holds a change (so a charge reads the second slot only when there is one).
    struct Line {
        uint64 price;
        uint96 reserve;
        uint80 credits;
        bool pending;
    }

    /// @dev Lowered terms waiting for their delay, in one slot. A zero time means "nothing of that kind".
    /// `uint40` seconds last until the year 36,812.
    struct Pending {
        uint64 price;
        uint40 priceAt;
        uint96 release;
        uint40 releaseAt;
    }

    /// @dev Bounds the deployment's delay (a payer could not get out of a longer one in any useful time).
    uint256 public constant MAX_DELAY = 365 days;

    /// @dev Transient slot of the reentrancy lock: `uint256(keccak256("khachapuri.escrow.lock")) - 1`.
    uint256 internal constant _LOCK_SLOT = 0xa0609df90419dce8e184931152fb4410401873eda8b937606559b9cb059a094b;

    /// @dev `isBlacklisted(address)`, USDC's view of a frozen account.
    bytes4 internal constant _IS_BLACKLISTED = 0xfe575a87;

    IERC20 internal immutable _token;
    uint256 internal immutable _delay;
    /// @dev Whether the token answers `isBlacklisted` (probed at deployment): else nobody is ever frozen and no
    /// charge pays for asking.
    bool internal immutable _blacklistable;

    mapping(address payer => uint256) internal _free;
    mapping(address payer => mapping(address provider => Line)) internal _lines;
    mapping(address payer => mapping(address provider => Pending)) internal _pending;
    mapping(address provider => uint256) internal _earnings;
    mapping(address owner => mapping(bytes32 spec => uint256 at)) internal _revokedAt;

    /// @param token_ The USDC token (see the token assumptions in IEscrow).
    /// @param withdrawalDelay_ Seconds before a price cut or a release takes effect: 1 to `MAX_DELAY`.
    constructor(IERC20 token_, uint256 withdrawalDelay_) EIP712("Khachapuri", "1") {
        if (address(token_) == address(0)) revert ZeroAddress();
        if (withdrawalDelay_ == 0 || withdrawalDelay_ > MAX_DELAY) revert InvalidDelay(withdrawalDelay_);
        _token = token_;
        _delay = withdrawalDelay_;
        (bool answered, bytes memory data) =
            address(token_).staticcall(abi.encodeWithSelector(_IS_BLACKLISTED, address(0)));
        _blacklistable = answered && data.length == 32;
    }

    /// @dev Every token-moving function holds this lock (EIP-1153 transient storage: no refund games, and
    /// the lock cannot outlive the transaction).
    modifier nonReentrant() {
        assembly ("memory-safe") {
            if tload(_LOCK_SLOT) {
                mstore(0x00, 0xab143c06) // `Reentrancy()`
                revert(0x1c, 0x04)
            }
            tstore(_LOCK_SLOT, 1)
        }
        _;
        assembly ("memory-safe") {
            tstore(_LOCK_SLOT, 0)
        }
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                      CONFIGURATION                                       */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IEscrow
    function token() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc IEscrow
    function withdrawalDelay() external view returns (uint256) {
        return _delay;
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         PAYERS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IEscrow
    function deposit(address onBehalf, uint256 amount) external nonReentrant {
        _deposit(onBehalf, amount);
    }

    /// @inheritdoc IEscrow
    function depositWithPermit(
        address onBehalf,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant {
        _checkNotFrozen(msg.sender); // before the token's own refusal of the permit hides the reason
        // A permit seen in the mempool can be submitted first by anyone; that must not block the deposit.
        // Triaged: the only external call before the writes is the fixed token's permit, under the lock.
        // slither-disable-next-line reentrancy-benign
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {}
        catch {
            if (_token.allowance(msg.sender, address(this)) < amount) revert PermitFailed();
        }
        _deposit(onBehalf, amount);
    }

    /// @inheritdoc IEscrow
    function withdraw(address to, uint256 amount) external nonReentrant {
        _checkRecipient(to);
        _checkNotFrozen(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 free = _free[msg.sender];
        if (amount > free) revert InsufficientBalance(free, amount);
        _free[msg.sender] = free - amount;
        emit Withdrawn(msg.sender, to, amount);
        _token.safeTransfer(to, amount);
    }

    /// @inheritdoc IEscrow
    function reserve(address provider, uint256 pricePerRequest, uint256 amount) external {
        if (provider == address(0)) revert ZeroAddress();
        _checkNotFrozen(msg.sender);
        _checkNotFrozen(provider);
        Line storage line = _lines[msg.sender][provider];
        _applyPending(msg.sender, provider, line);
        uint64 price = uint64(_min(pricePerRequest, type(uint64).max));
        uint64 inForce = line.price;

        if (amount != 0) {
            uint256 free = _free[msg.sender];
            if (amount > free) revert InsufficientBalance(free, amount);
            uint256 reserved = line.reserve + amount;
            if (reserved > type(uint96).max) revert AmountOverflow(amount);
            _free[msg.sender] = free - amount;
            line.reserve = uint96(reserved);
        }
        if (price > inForce) {
            line.price = price;
            _dropPriceCut(msg.sender, provider, line);
        } else if (price < inForce) {
            uint256 effectiveAt = block.timestamp + _delay;
            Pending storage pending = _pending[msg.sender][provider];
            (pending.price, pending.priceAt) = (price, uint40(effectiveAt));
            line.pending = true;
            emit PriceCutScheduled(msg.sender, provider, price, effectiveAt);
        }
        if (amount != 0 || price > inForce) emit TermsSet(msg.sender, provider, line.price, line.reserve);
    }

    /// @inheritdoc IEscrow
    function release(address provider, uint256 amount) external {
        if (provider == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        Line storage line = _lines[msg.sender][provider];
        _applyPending(msg.sender, provider, line);
        uint96 releasing = uint96(_min(amount, type(uint96).max));
        uint256 effectiveAt = block.timestamp + _delay;
        Pending storage pending = _pending[msg.sender][provider];
        (pending.release, pending.releaseAt) = (releasing, uint40(effectiveAt));
        line.pending = true;
        emit ReleaseScheduled(msg.sender, provider, releasing, effectiveAt);
    }

    /// @inheritdoc IEscrow
    function cancelPending(address provider) external {
        Line storage line = _lines[msg.sender][provider];
        _applyPending(msg.sender, provider, line);
        if (!line.pending) revert NothingPending(provider);
        delete _pending[msg.sender][provider];
        line.pending = false;
        emit PendingCancelled(msg.sender, provider);
    }

    /// @inheritdoc IEscrow
    function applyPending(address payer, address provider) external returns (uint256 released) {
        return _applyPending(payer, provider, _lines[payer][provider]);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         OWNERS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IEscrow
    function revokeSpec(bytes32 spec) external {
        if (_revokedAt[msg.sender][spec] != 0) revert AlreadyRevoked(spec);
        _revokedAt[msg.sender][spec] = block.timestamp;
        emit SpecRevoked(msg.sender, spec);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        PROVIDERS                                         */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IEscrow
    function consume(address payer, uint256 price) external {
        if (price > type(uint64).max) revert AmountOverflow(price);
        _checkNotFrozen(msg.sender);
        (uint256 earned, bytes memory refusal) = _charge(payer, msg.sender, price, 1);
        if (refusal.length != 0) {
            assembly ("memory-safe") {
                revert(add(refusal, 0x20), mload(refusal))
            }
        }
        if (earned != 0) _earnings[msg.sender] += earned;
    }

    /// @inheritdoc IEscrow
    function consumeBatch(Charge[] calldata charges) external returns (uint256 earned) {
        _checkNotFrozen(msg.sender);
        for (uint256 i; i < charges.length; ++i) {
            Charge calldata c = charges[i];
            (uint256 fromReserve, bytes memory refusal) = _charge(c.payer, msg.sender, c.price, c.count);
            if (refusal.length != 0) emit ChargeRefused(c.payer, msg.sender, i, refusal);
            else earned += fromReserve;
        }
        if (earned != 0) _earnings[msg.sender] += earned;
    }

    /// @inheritdoc IEscrow
    function grantCredits(address user, uint256 amount) external {
        if (user == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        Line storage line = _lines[user][msg.sender];
        uint256 credits = line.credits + amount;
        if (credits > type(uint80).max) revert AmountOverflow(amount);
        line.credits = uint80(credits);
        emit CreditsGranted(msg.sender, user, amount);
    }

    /// @inheritdoc IEscrow
    function withdrawEarnings(address to, uint256 amount) external nonReentrant {
        _checkRecipient(to);
        _checkNotFrozen(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 available = _earnings[msg.sender];
        if (amount > available) revert InsufficientEarnings(available, amount);
        _earnings[msg.sender] = available - amount;
        emit EarningsWithdrawn(msg.sender, to, amount);
        _token.safeTransfer(to, amount);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                          VIEWS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IEscrow
    function freeBalance(address payer) external view returns (uint256) {
        return _free[payer];
    }

    /// @inheritdoc IEscrow
    function earnings(address provider) external view returns (uint256) {
        return _earnings[provider];
    }

    /// @inheritdoc IEscrow
    function terms(address payer, address provider) external view returns (Terms memory t) {
        Line memory line = _lines[payer][provider];
        (t.price, t.reserve, t.credits) = (line.price, line.reserve, line.credits);
        if (!line.pending) return t;
        Pending memory pending = _pending[payer][provider];
        if (pending.priceAt != 0) {
            if (block.timestamp >= pending.priceAt) t.price = pending.price;
            else (t.pendingPrice, t.priceAt) = (pending.price, pending.priceAt);
        }
        if (pending.releaseAt != 0) {
            if (block.timestamp >= pending.releaseAt) {
                t.releasable = _min(pending.release, t.reserve);
                t.reserve -= t.releasable;
            } else {
                (t.pendingRelease, t.releaseAt) = (pending.release, pending.releaseAt);
            }
        }
    }

    /// @inheritdoc IEscrow
    function revokedAt(address owner, bytes32 spec) external view returns (uint256) {
        return _revokedAt[owner][spec];
    }

    /// @inheritdoc IEscrow
    function isFrozen(address account) external view returns (bool) {
        return _isFrozen(account);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        INTERNAL                                          */
    /* ---------------------------------------------------------------------------------------- */

    function _deposit(address onBehalf, uint256 amount) internal {
        if (onBehalf == address(0)) revert ZeroAddress();
        if (onBehalf == address(this)) revert EscrowAsRecipient();
        if (amount == 0) revert ZeroAmount();
        _checkNotFrozen(msg.sender);
        _checkNotFrozen(onBehalf);
        _free[onBehalf] += amount;
        emit Deposited(msg.sender, onBehalf, amount);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev Charges `count` requests at `price`: credits first, then the reserve, within the terms. Writes
    /// nothing when the charge does not fit.
    /// @return fromReserve What the reserve paid, owed to `provider` as earnings.
    /// @return refusal Empty when charged; else the ABI-encoded error that says why not.
    function _charge(address payer, address provider, uint256 price, uint256 count)
        internal
        returns (uint256 fromReserve, bytes memory refusal)
    {
        if (price == 0 || count == 0) return (0, abi.encodeWithSelector(ZeroAmount.selector));
        if (_isFrozen(payer)) return (0, abi.encodeWithSelector(Frozen.selector, payer));
        Line storage slot = _lines[payer][provider];
        if (slot.pending) _applyPending(payer, provider, slot);
        Line memory line = slot;

        // `price` fits 64 bits and `count` 32 (calldata types, or checked by `consume`): no overflow.
        uint256 total = price * count;
        uint256 fromCredits = _min(line.credits, total);
        fromReserve = total - fromCredits;
        if (fromReserve != 0) {
            if (line.price == 0 && line.reserve == 0) {
                return (0, abi.encodeWithSelector(NotApproved.selector, payer, provider));
            }
            if (price > line.price) {
                return
                    (0, abi.encodeWithSelector(PriceAboveTerms.selector, payer, provider, line.price, price));
            }
            if (fromReserve > line.reserve) {
                return (
                    0,
                    abi.encodeWithSelector(
                        InsufficientReserve.selector, payer, provider, line.reserve, fromReserve
                    )
                );
            }
            line.reserve -= uint96(fromReserve);
        }
        line.credits -= uint80(fromCredits);
        _lines[payer][provider] = line;
        emit Consumed(payer, provider, price, count, fromCredits);
    }

    /// @dev Puts the pending changes whose time has come into force; a release's money goes to the free
    /// balance. Does nothing (and reads one slot) when nothing is pending.
    function _applyPending(address payer, address provider, Line storage line)
        internal
        returns (uint256 released)
    {
        if (!line.pending) return 0;
        Pending memory pending = _pending[payer][provider];
        bool priceDue = pending.priceAt != 0 && block.timestamp >= pending.priceAt;
        bool releaseDue = pending.releaseAt != 0 && block.timestamp >= pending.releaseAt;
        if (!priceDue && !releaseDue) return 0;

        if (priceDue) {
            line.price = pending.price;
            (pending.price, pending.priceAt) = (0, 0);
        }
        if (releaseDue) {
            uint96 reserved = line.reserve;
            released = pending.release < reserved ? pending.release : reserved;
            line.reserve = reserved - uint96(released);
            (pending.release, pending.releaseAt) = (0, 0);
            _free[payer] += released;
            emit Released(payer, provider, released);
        }
        // Triaged: 0 is the "nothing of that kind pending" sentinel, not a balance an attacker can steer.
        // slither-disable-next-line incorrect-equality
        if (pending.priceAt == 0 && pending.releaseAt == 0) {
            delete _pending[payer][provider];
            line.pending = false;
        } else {
            _pending[payer][provider] = pending;
        }
        emit TermsSet(payer, provider, line.price, line.reserve);
    }

    /// @dev A raise supersedes a price cut not yet in force.
    function _dropPriceCut(address payer, address provider, Line storage line) internal {
        if (!line.pending) return;
        Pending storage pending = _pending[payer][provider];
        if (pending.priceAt == 0) return;
        if (pending.releaseAt == 0) {
            delete _pending[payer][provider];
            line.pending = false;
        } else {
            (pending.price, pending.priceAt) = (0, 0);
        }
    }

    /// @dev Tokens leave the escrow only to a real address that is not the escrow itself, nor a frozen one.
    function _checkRecipient(address to) internal view {
        if (to == address(0)) revert ZeroAddress();
        if (to == address(this)) revert EscrowAsRecipient();
        _checkNotFrozen(to);
    }

    function _checkNotFrozen(address account) internal view {
        if (_isFrozen(account)) revert Frozen(account);
    }

    /// @dev The token's `isBlacklisted(account)`, read without trusting its return data's size: a token that
    /// stops answering (an upgrade) freezes nobody, and its own transfer checks still apply.
    function _isFrozen(address account) internal view returns (bool frozen) {
        if (!_blacklistable) return false;
        address token_ = address(_token);
        assembly ("memory-safe") {
            mstore(0x00, 0xfe575a87) // `isBlacklisted(address)`
            mstore(0x20, account)
            // Arguments run right to left: the call first, then its return data is read.
            frozen := and(
                and(gt(returndatasize(), 0x1f), iszero(iszero(mload(0x00)))),
                staticcall(gas(), token_, 0x1c, 0x24, 0x00, 0x20)
            )
        }
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
