// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @notice One line of a batch settlement: `count` requests of `payer`, each at `price`.
struct Charge {
    address payer;
    uint64 price;
    uint32 count;
}

/// @title IEscrow
/// @notice Payers deposit USDC and approve providers; providers consume per request and withdraw earnings.
/// @dev Token assumptions, stated outright: the token is fixed at deployment and is USDC-like: 6 decimals,
/// `transfer`/`transferFrom` move exactly the amount asked (no fee on transfer, no rebasing), no callbacks to
/// the receiver, EIP-2612 `permit`. Other tokens break the conservation invariant and are not supported.
///
/// Who pays what, per charge of `price` by `provider` to `payer`:
/// - Trial credits that `provider` granted `payer` are spent first. They are not backed by tokens: spending
///   them pays the provider nothing and nobody can ever withdraw them. They need no approval.
/// - The rest comes out of `payer`'s balance and requires `price <= pricePerRequest` and the rest
///   `<= budget` left of `payer`'s approval of `provider`. It becomes `provider`'s earnings.
///
/// Leaving is delayed: `requestWithdrawal` and any `approve` that lowers the price or the budget take effect
/// `withdrawalDelay` seconds later. Until then providers still consume under the old terms, so an agent
/// that claims before it runs and settles in batches cannot be robbed by a payer who leaves first.
interface IEscrow {
    /* ---------------------------------------------------------------------------------------- */
    /*                                          EVENTS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice `from` deposited `amount` to the balance of `onBehalf`.
    event Deposited(address indexed from, address indexed onBehalf, uint256 amount);

    /// @notice `payer`'s terms for `provider` are now `pricePerRequest` and `budget` left.
    event Approved(address indexed payer, address indexed provider, uint256 pricePerRequest, uint256 budget);

    /// @notice `payer` lowered its terms for `provider`; they apply from `effectiveAt`.
    event ApprovalCutScheduled(
        address indexed payer, address indexed provider, uint256 pricePerRequest, uint256 budget, uint256 effectiveAt
    );

    /// @notice `provider` charged `payer` for `count` requests at `price`, `fromCredits` of it in trial credits.
    event Consumed(
        address indexed payer, address indexed provider, uint256 price, uint256 count, uint256 fromCredits
    );

    /// @notice `provider` granted `user` `amount` of trial credits, spendable only with `provider`.
    event CreditsGranted(address indexed provider, address indexed user, uint256 amount);

    /// @notice `provider` withdrew `amount` of its earnings to `to`.
    event EarningsWithdrawn(address indexed provider, address indexed to, uint256 amount);

    /// @notice `payer` asked to withdraw `amount`, possible from `readyAt`.
    event WithdrawalRequested(address indexed payer, uint256 amount, uint256 readyAt);

    /// @notice `payer` cancelled its pending withdrawal.
    event WithdrawalCancelled(address indexed payer);

    /// @notice `payer` withdrew `amount` to `to`.
    event Withdrawn(address indexed payer, address indexed to, uint256 amount);

    /* ---------------------------------------------------------------------------------------- */
    /*                                          ERRORS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev An amount, price or count is zero where it must not be.
    error ZeroAmount();
    /// @dev A zero address was given as a recipient, payer or provider.
    error ZeroAddress();
    /// @dev An amount does not fit the escrow's storage (far above any USDC supply).
    error AmountOverflow(uint256 amount);
    /// @dev `payer` has no approval for `provider` and no credits with it.
    error NotApproved(address payer, address provider);
    /// @dev The charge's `price` is above the `approved` price per request.
    error PriceAboveApproved(address payer, address provider, uint256 approved, uint256 price);
    /// @dev The charge needs `needed` of the budget, only `left` remains.
    error BudgetExceeded(address payer, address provider, uint256 left, uint256 needed);
    /// @dev `payer` has `available` in balance, `needed` is charged beyond its credits.
    error InsufficientFunds(address payer, uint256 available, uint256 needed);
    /// @dev The caller's balance is `available`; `requested` was asked.
    error InsufficientBalance(uint256 available, uint256 requested);
    /// @dev The caller's earnings are `available`; `requested` was asked.
    error InsufficientEarnings(uint256 available, uint256 requested);
    /// @dev The caller has no pending withdrawal.
    error NoWithdrawal();
    /// @dev The withdrawal's delay runs until `readyAt`.
    error WithdrawalNotReady(uint256 readyAt);
    /// @dev The deployment's withdrawal delay is above `MAX_DELAY`.
    error DelayTooLong(uint256 delay);
    /// @dev A token-moving function was entered again before it returned.
    error Reentrancy();
    /// @dev The permit was not accepted and the allowance does not cover the deposit.
    error PermitFailed();

    /* ---------------------------------------------------------------------------------------- */
    /*                                      CONFIGURATION                                       */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice The token held, fixed at deployment (USDC, 6 decimals).
    function token() external view returns (address);

    /// @notice Seconds between asking to leave (withdraw, cut an approval) and it taking effect.
    function withdrawalDelay() external view returns (uint256);

    /* ---------------------------------------------------------------------------------------- */
    /*                                         PAYERS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice Moves `amount` from the caller to the balance of `onBehalf` (the caller itself or another).
    function deposit(address onBehalf, uint256 amount) external;

    /// @notice `deposit` after an EIP-2612 permit by the caller for this escrow.
    /// @dev A permit already used (or front-run) does not revert by itself: the deposit proceeds if the
    /// allowance covers it, otherwise reverts with `PermitFailed`.
    function depositWithPermit(address onBehalf, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;

    /// @notice Lets `provider` charge at most `pricePerRequest` per request and `budget` in total from here on.
    /// @dev Raising both terms applies now (and drops any scheduled cut); lowering either is scheduled for
    /// `withdrawalDelay` later, when the budget left becomes the smaller of `budget` and what is left then.
    /// Values above the storage range (uint64 price, uint80 budget) are clamped: that is "unlimited".
    function approve(address provider, uint256 pricePerRequest, uint256 budget) external;

    /// @notice Starts a withdrawal of `amount`, or changes the pending one (its delay starts again).
    function requestWithdrawal(uint256 amount) external;

    /// @notice Cancels the caller's pending withdrawal.
    function cancelWithdrawal() external;

    /// @notice Completes the caller's withdrawal once its delay has passed, sending to `to`.
    /// @return amount What was sent: the requested amount, or the balance if providers consumed meanwhile.
    function withdraw(address to) external returns (uint256 amount);

    /* ---------------------------------------------------------------------------------------- */
    /*                                        PROVIDERS                                         */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice Charges `payer` one request at `price` (the caller is the provider).
    function consume(address payer, uint256 price) external;

    /// @notice Settles many requests of many payers at once; reverts whole if any charge is not allowed.
    /// @return earned What the balances paid in total (credits excluded).
    function consumeBatch(Charge[] calldata charges) external returns (uint256 earned);

    /// @notice Grants `user` `amount` of trial credits, spendable only with the caller.
    function grantCredits(address user, uint256 amount) external;

    /// @notice Sends `amount` of the caller's earnings to `to`.
    function withdrawEarnings(address to, uint256 amount) external;

    /* ---------------------------------------------------------------------------------------- */
    /*                                          VIEWS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice `payer`'s deposited balance, including any amount whose withdrawal is pending.
    function balanceOf(address payer) external view returns (uint256);

    /// @notice `provider`'s earnings, withdrawable at once.
    function earnings(address provider) external view returns (uint256);

    /// @notice The terms in force now for `provider` charging `payer`, and the credits `payer` has with it.
    function allowance(address payer, address provider)
        external
        view
        returns (uint256 pricePerRequest, uint256 budgetLeft, uint256 credits);

    /// @notice A lowering of terms not yet in force (`effectiveAt == 0` if none).
    function pendingCut(address payer, address provider)
        external
        view
        returns (uint256 pricePerRequest, uint256 budget, uint256 effectiveAt);

    /// @notice `payer`'s pending withdrawal (`readyAt == 0` if none).
    function pendingWithdrawal(address payer) external view returns (uint256 amount, uint256 readyAt);
}
