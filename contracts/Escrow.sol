// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {IEscrow, Charge} from "./interfaces/IEscrow.sol";

/// @title Escrow
/// @notice USDC escrow between payers and compute providers, with trial credits and delayed leaving.
/// @dev The EIP-712 domain ("Khachapuri", "1", chain id, this address) signs payer tokens and spec terms off
/// chain; wallets read it through ERC-5267 `eip712Domain()`.
contract Escrow is IEscrow, EIP712 {
    using SafeERC20 for IERC20;

    /* ---------------------------------------------------------------------------------------- */
    /*                                         STORAGE                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev What a payer has with one provider, in one slot: the terms in force, the trial credits, and when
    /// a scheduled cut (in `_cuts`) takes effect (0: none).
    struct Line {
        uint64 price;
        uint80 budget;
        uint80 credits;
        uint32 cutAt;
    }

    /// @dev Lowered terms waiting for their delay.
    struct Cut {
        uint64 price;
        uint80 budget;
    }

    /// @dev A payer's balance and pending withdrawal, in one slot.
    struct Payer {
        uint128 balance;
        uint96 withdrawing;
        uint32 readyAt;
    }

    /// @dev Bounds the deployment's delay so that every deadline fits the packed `uint32` timestamps.
    uint256 public constant MAX_DELAY = 365 days;

    /// @dev Transient slot of the reentrancy lock: `uint256(keccak256("khachapuri.escrow.lock")) - 1`.
    uint256 internal constant _LOCK_SLOT = 0xa0609df90419dce8e184931152fb4410401873eda8b937606559b9cb059a094b;

    IERC20 internal immutable _token;
    uint256 internal immutable _delay;

    mapping(address payer => Payer) internal _payers;
    mapping(address payer => mapping(address provider => Line)) internal _lines;
    mapping(address payer => mapping(address provider => Cut)) internal _cuts;
    mapping(address provider => uint256) internal _earnings;

    /// @param token_ The USDC token (see the token assumptions in IEscrow).
    /// @param withdrawalDelay_ Seconds before a withdrawal or an approval cut takes effect.
    constructor(IERC20 token_, uint256 withdrawalDelay_) EIP712("Khachapuri", "1") {
        if (address(token_) == address(0)) revert ZeroAddress();
        if (withdrawalDelay_ > MAX_DELAY) revert DelayTooLong(withdrawalDelay_);
        _token = token_;
        _delay = withdrawalDelay_;
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
    function depositWithPermit(address onBehalf, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
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
    function approve(address provider, uint256 pricePerRequest, uint256 budget) external {
        if (provider == address(0)) revert ZeroAddress();
        uint64 price = uint64(_min(pricePerRequest, type(uint64).max));
        uint80 cap = uint80(_min(budget, type(uint80).max));
        Line storage line = _lines[msg.sender][provider];
        _applyCut(line, msg.sender, provider);

        if (price >= line.price && cap >= line.budget) {
            (line.price, line.budget, line.cutAt) = (price, cap, 0);
            delete _cuts[msg.sender][provider];
            emit Approved(msg.sender, provider, price, cap);
        } else {
            uint256 effectiveAt = block.timestamp + _delay;
            _cuts[msg.sender][provider] = Cut(price, cap);
            line.cutAt = uint32(effectiveAt);
            emit ApprovalCutScheduled(msg.sender, provider, price, cap, effectiveAt);
        }
    }

    /// @inheritdoc IEscrow
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Payer storage payer = _payers[msg.sender];
        if (amount > payer.balance) revert InsufficientBalance(payer.balance, amount);
        if (amount > type(uint96).max) revert AmountOverflow(amount);
        uint256 readyAt = block.timestamp + _delay;
        (payer.withdrawing, payer.readyAt) = (uint96(amount), uint32(readyAt));
        emit WithdrawalRequested(msg.sender, amount, readyAt);
    }

    /// @inheritdoc IEscrow
    function cancelWithdrawal() external {
        Payer storage payer = _payers[msg.sender];
        if (payer.readyAt == 0) revert NoWithdrawal();
        (payer.withdrawing, payer.readyAt) = (0, 0);
        emit WithdrawalCancelled(msg.sender);
    }

    /// @inheritdoc IEscrow
    function withdraw(address to) external nonReentrant returns (uint256 amount) {
        if (to == address(0)) revert ZeroAddress();
        Payer storage payer = _payers[msg.sender];
        uint256 readyAt = payer.readyAt;
        if (readyAt == 0) revert NoWithdrawal();
        if (block.timestamp < readyAt) revert WithdrawalNotReady(readyAt);

        amount = _min(payer.withdrawing, payer.balance);
        payer.balance -= uint128(amount);
        (payer.withdrawing, payer.readyAt) = (0, 0);
        emit Withdrawn(msg.sender, to, amount);
        _token.safeTransfer(to, amount);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        PROVIDERS                                         */
    /* ---------------------------------------------------------------------------------------- */

    /// @inheritdoc IEscrow
    function consume(address payer, uint256 price) external {
        if (price > type(uint64).max) revert AmountOverflow(price);
        uint256 earned = _charge(payer, msg.sender, price, 1);
        if (earned != 0) _earnings[msg.sender] += earned;
    }

    /// @inheritdoc IEscrow
    function consumeBatch(Charge[] calldata charges) external returns (uint256 earned) {
        for (uint256 i; i < charges.length; ++i) {
            Charge calldata c = charges[i];
            earned += _charge(c.payer, msg.sender, c.price, c.count);
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
        if (to == address(0)) revert ZeroAddress();
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
    function balanceOf(address payer) external view returns (uint256) {
        return _payers[payer].balance;
    }

    /// @inheritdoc IEscrow
    function earnings(address provider) external view returns (uint256) {
        return _earnings[provider];
    }

    /// @inheritdoc IEscrow
    function allowance(address payer, address provider)
        external
        view
        returns (uint256 pricePerRequest, uint256 budgetLeft, uint256 credits)
    {
        Line memory line = _lines[payer][provider];
        (pricePerRequest, budgetLeft) = (line.price, line.budget);
        if (line.cutAt != 0 && block.timestamp >= line.cutAt) {
            Cut memory cut = _cuts[payer][provider];
            (pricePerRequest, budgetLeft) = (cut.price, _min(cut.budget, line.budget));
        }
        credits = line.credits;
    }

    /// @inheritdoc IEscrow
    function pendingCut(address payer, address provider)
        external
        view
        returns (uint256 pricePerRequest, uint256 budget, uint256 effectiveAt)
    {
        effectiveAt = _lines[payer][provider].cutAt;
        // Triaged: 0 is the "no cut" sentinel, not a balance an attacker can steer.
        // slither-disable-next-line incorrect-equality
        if (effectiveAt == 0 || block.timestamp >= effectiveAt) return (0, 0, 0);
        Cut memory cut = _cuts[payer][provider];
        return (cut.price, cut.budget, effectiveAt);
    }

    /// @inheritdoc IEscrow
    function pendingWithdrawal(address payer) external view returns (uint256 amount, uint256 readyAt) {
        Payer memory p = _payers[payer];
        return (p.withdrawing, p.readyAt);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                        INTERNAL                                          */
    /* ---------------------------------------------------------------------------------------- */

    function _deposit(address onBehalf, uint256 amount) internal {
        if (onBehalf == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        Payer storage payer = _payers[onBehalf];
        uint256 balance = payer.balance + amount;
        if (balance > type(uint128).max) revert AmountOverflow(amount);
        payer.balance = uint128(balance);
        emit Deposited(msg.sender, onBehalf, amount);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev Charges `count` requests at `price`: credits first, then the balance within the approval.
    /// @return fromBalance What the payer's balance paid, owed to `provider` as earnings.
    function _charge(address payer, address provider, uint256 price, uint256 count)
        internal
        returns (uint256 fromBalance)
    {
        if (price == 0 || count == 0) revert ZeroAmount();
        Line storage line = _lines[payer][provider];
        _applyCut(line, payer, provider);

        uint256 total = price * count;
        uint256 credits = line.credits;
        uint256 fromCredits = _min(credits, total);
        fromBalance = total - fromCredits;

        if (fromBalance != 0) {
            uint256 approved = line.price;
            uint256 left = line.budget;
            if (approved == 0 && left == 0) revert NotApproved(payer, provider);
            if (price > approved) revert PriceAboveApproved(payer, provider, approved, price);
            if (fromBalance > left) revert BudgetExceeded(payer, provider, left, fromBalance);
            Payer storage p = _payers[payer];
            uint256 balance = p.balance;
            if (fromBalance > balance) revert InsufficientFunds(payer, balance, fromBalance);
            p.balance = uint128(balance - fromBalance);
            line.budget = uint80(left - fromBalance);
        }
        if (fromCredits != 0) line.credits = uint80(credits - fromCredits);
        emit Consumed(payer, provider, price, count, fromCredits);
    }

    /// @dev Puts a cut whose delay has passed into force.
    function _applyCut(Line storage line, address payer, address provider) internal {
        uint256 cutAt = line.cutAt;
        if (cutAt == 0 || block.timestamp < cutAt) return;
        Cut memory cut = _cuts[payer][provider];
        uint80 budget = cut.budget < line.budget ? cut.budget : line.budget;
        (line.price, line.budget, line.cutAt) = (cut.price, budget, 0);
        delete _cuts[payer][provider];
        emit Approved(payer, provider, cut.price, budget);
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
