// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @notice One line of a batch settlement: `count` requests of `payer`, each at `price`.
struct Charge {
    address payer;
    uint64 price;
    uint32 count;
}

/// @notice What a payer has with one provider, as a charge made now would see it.
/// @dev A pending change whose time has come is shown in force (charges apply it first). Its released money
/// stays in `releasable` until a transaction touches the pair (any charge, the payer's own changes, or
/// anyone's `applyPending`) and moves it to the free balance.
struct Terms {
    /// @dev The most the provider may charge per request.
    uint256 price;
    /// @dev Money set aside for the provider: the most it can still be paid from the payer's tokens.
    uint256 reserve;
    /// @dev Trial credits the provider granted the payer: spent first, backed by nothing, never withdrawable.
    uint256 credits;
    /// @dev A lowered price waiting for its delay (meaningful when `priceAt != 0`).
    uint256 pendingPrice;
    /// @dev When `pendingPrice` takes effect (0: no price cut pending).
    uint256 priceAt;
    /// @dev An amount to move from the reserve back to the free balance (meaningful when `releaseAt != 0`).
    uint256 pendingRelease;
    /// @dev When `pendingRelease` takes effect (0: no release pending).
    uint256 releaseAt;
    /// @dev Released from the reserve and not yet moved to the free balance.
    uint256 releasable;
}

/// @title IEscrow
/// @notice Payers deposit USDC and set money aside per provider; providers charge per request and withdraw
/// earnings.
///
/// The promise the escrow exists for: **a charge a provider claimed within a payer's terms can be settled
/// later, whatever the payer or anyone else does in between, as long as it is settled within
/// `withdrawalDelay`.** A provider's agent claims before it runs a request and settles many claims at once
/// later; this promise is what makes that safe.
///
/// How it is kept:
/// - A payer's money sits in two places. Its **free balance** is withdrawable at once and no provider can
///   touch it. Its **reserve** with a provider is set aside for that provider alone: a provider is paid only
///   from the trial credits it granted the payer, then from its own reserve with that payer, never from the
///   free balance or another provider's reserve.
/// - Raising the price or the reserve takes effect at once (a raise moves free balance into the reserve).
///   Lowering the price, or releasing reserve back to the free balance, takes effect `withdrawalDelay`
///   seconds later; until then the provider charges under the old terms. A release names an amount to take
///   out, not a new total, so a provider's charge landing first can never turn a cut into a larger charge.
/// - `consumeBatch` settles every charge that fits and reports each one that does not in `ChargeRefused`:
///   one payer cannot make a provider's whole batch fail.
///
/// Token assumptions, stated outright: the token is fixed at deployment and is USDC-like: 6 decimals,
/// `transfer`/`transferFrom` move exactly the amount asked (no fee on transfer, no rebasing), no callbacks to
/// the receiver, EIP-2612 `permit`. Other tokens break the conservation invariant (the escrow holds exactly
/// the free balances plus the reserves plus the earnings) and are not supported.
///
/// Frozen accounts and a paused token (USDC's blacklist and pause):
/// - The escrow asks the token `isBlacklisted(account)` where the token has that view (probed once, at
///   deployment; a token without it freezes nobody). An account the token reports as blacklisted is
///   **frozen**: the escrow moves none of its money, in or out, until the issuer lifts the freeze. It cannot
///   withdraw (to any address), withdraw earnings, be deposited to, set money aside, charge, or be charged
///   (`Frozen`; a batch reports a frozen payer's line in `ChargeRefused` and settles the rest). Otherwise the
///   escrow would be the way around a freeze (USDC checks only the escrow and the recipient of a transfer),
///   and the issuer's answer would be to freeze the escrow, and every user's money with it.
/// - A frozen account may still release, cancel and apply its pending changes: that money stays inside, in
///   its own name, and is all there when the freeze is lifted.
/// - The freeze is the one exception to the promise above: charges a provider claimed from a payer the issuer
///   froze afterwards do not settle while the freeze lasts.
/// - A paused token stops money entering and leaving the escrow (the token refuses the transfer with its own
///   reason). Charges, which move nothing on the token, go on; earnings and balances leave after the pause.
interface IEscrow {
    /* ---------------------------------------------------------------------------------------- */
    /*                                          EVENTS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice `from` deposited `amount` to the free balance of `onBehalf`.
    event Deposited(address indexed from, address indexed onBehalf, uint256 amount);

    /// @notice `payer` withdrew `amount` of its free balance to `to`.
    event Withdrawn(address indexed payer, address indexed to, uint256 amount);

    /// @notice `payer`'s terms in force with `provider` are now `price` per request and `reserve` set aside.
    /// @dev Emitted on every change other than a charge: a raise, a reserve added, a pending change applied.
    event TermsSet(address indexed payer, address indexed provider, uint256 price, uint256 reserve);

    /// @notice `payer` lowered its price for `provider` to `price`, in force from `effectiveAt`.
    event PriceCutScheduled(
        address indexed payer, address indexed provider, uint256 price, uint256 effectiveAt
    );

    /// @notice `payer` asked to release `amount` of its reserve with `provider`, possible from `effectiveAt`.
    event ReleaseScheduled(
        address indexed payer, address indexed provider, uint256 amount, uint256 effectiveAt
    );

    /// @notice `payer` dropped its pending price cut and release for `provider`.
    event PendingCancelled(address indexed payer, address indexed provider);

    /// @notice `amount` of `payer`'s reserve with `provider` went back to its free balance.
    event Released(address indexed payer, address indexed provider, uint256 amount);

    /// @notice `provider` charged `payer` for `count` requests at `price`, `fromCredits` of it in trial credits.
    event Consumed(
        address indexed payer, address indexed provider, uint256 price, uint256 count, uint256 fromCredits
    );

    /// @notice Line `index` of a `consumeBatch` by `provider` did not fit and charged nothing.
    /// @param reason The custom error `consume` would have reverted with (`NotApproved`, `PriceAboveTerms`,
    /// `InsufficientReserve`, `ZeroAmount`, `Frozen`), ABI-encoded.
    event ChargeRefused(address indexed payer, address indexed provider, uint256 index, bytes reason);

    /// @notice `provider` granted `user` `amount` of trial credits, spendable only with `provider`.
    event CreditsGranted(address indexed provider, address indexed user, uint256 amount);

    /// @notice `provider` withdrew `amount` of its earnings to `to`.
    event EarningsWithdrawn(address indexed provider, address indexed to, uint256 amount);

    /// @notice `owner` revoked its deployment `spec` (the spec's terms hash: the EIP-712 digest it signed).
    event SpecRevoked(address indexed owner, bytes32 indexed spec);

    /* ---------------------------------------------------------------------------------------- */
    /*                                          ERRORS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev An amount, price or count is zero where it must not be.
    error ZeroAmount();
    /// @dev A zero address was given as a recipient, payer or provider.
    error ZeroAddress();
    /// @dev Tokens were to be sent to (or credited to) the escrow itself, where nobody could ever take them.
    error EscrowAsRecipient();
    /// @dev An amount does not fit the escrow's storage (far above any USDC supply).
    error AmountOverflow(uint256 amount);
    /// @dev `payer` has no terms with `provider` (price 0, nothing reserved) and no credits with it.
    error NotApproved(address payer, address provider);
    /// @dev The charge's `price` is above the `maxPrice` per request that `payer` set for `provider`.
    error PriceAboveTerms(address payer, address provider, uint256 maxPrice, uint256 price);
    /// @dev The charge needs `needed` from the reserve; `payer` has only `reserve` set aside for `provider`.
    error InsufficientReserve(address payer, address provider, uint256 reserve, uint256 needed);
    /// @dev The caller's free balance is `available`; `requested` was asked.
    error InsufficientBalance(uint256 available, uint256 requested);
    /// @dev The caller's earnings are `available`; `requested` was asked.
    error InsufficientEarnings(uint256 available, uint256 requested);
    /// @dev The caller has nothing pending with `provider` to cancel.
    error NothingPending(address provider);
    /// @dev The deployment's withdrawal delay is zero (no protection) or above `MAX_DELAY`.
    error InvalidDelay(uint256 delay);
    /// @dev A token-moving function was entered again before it returned.
    error Reentrancy();
    /// @dev The permit was not accepted and the allowance does not cover the deposit.
    error PermitFailed();
    /// @dev The caller already revoked this deployment; a revocation is for good.
    error AlreadyRevoked(bytes32 spec);
    /// @dev The token's issuer froze (blacklisted) `account`: the escrow moves none of its money, in or out,
    /// until the issuer lifts the freeze. Nothing is lost meanwhile.
    error Frozen(address account);

    /* ---------------------------------------------------------------------------------------- */
    /*                                      CONFIGURATION                                       */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice The token held, fixed at deployment (USDC, 6 decimals).
    function token() external view returns (address);

    /// @notice Seconds between lowering terms (a price cut, a release) and it taking effect; never zero.
    function withdrawalDelay() external view returns (uint256);

    /* ---------------------------------------------------------------------------------------- */
    /*                                         PAYERS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice Moves `amount` from the caller to the free balance of `onBehalf` (the caller itself or another).
    function deposit(address onBehalf, uint256 amount) external;

    /// @notice `deposit` after an EIP-2612 permit by the caller for this escrow.
    /// @dev A permit already used (or front-run) does not revert by itself: the deposit proceeds if the
    /// allowance covers it, otherwise reverts with `PermitFailed`.
    function depositWithPermit(
        address onBehalf,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Sends `amount` of the caller's free balance to `to`, at once.
    function withdraw(address to, uint256 amount) external;

    /// @notice Sets the most `provider` may charge per request to `pricePerRequest`, and moves `amount` of the
    /// caller's free balance into its reserve with `provider` (0: the reserve stays as it is).
    /// @dev Both raises apply now. A price above the one in force applies now and drops a pending price cut;
    /// the price in force changes nothing (pass it to add reserve only); a lower price is scheduled for
    /// `withdrawalDelay` later (replacing a pending cut, whose delay starts again). A price above
    /// `type(uint64).max` is clamped: that is "any price".
    function reserve(address provider, uint256 pricePerRequest, uint256 amount) external;

    /// @notice Schedules `amount` of the caller's reserve with `provider` to return to its free balance after
    /// `withdrawalDelay` (replacing a pending release, whose delay starts again). Until then `provider`
    /// still charges the whole reserve; then at most `amount`, and no more than is left, is released.
    /// @dev An amount above `type(uint96).max` is clamped: that is "everything".
    function release(address provider, uint256 amount) external;

    /// @notice Drops the caller's pending price cut and release with `provider`: the terms in force stay.
    function cancelPending(address provider) external;

    /// @notice Puts `payer`'s pending changes with `provider` whose time has come into force (anyone may call;
    /// charges and the payer's own changes do it too). A release's money returns to the free balance.
    /// @return released What went back to `payer`'s free balance.
    function applyPending(address payer, address provider) external returns (uint256 released);

    /* ---------------------------------------------------------------------------------------- */
    /*                                         OWNERS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice Revokes the caller's deployment `spec` for good: an owner-pays URL is a bearer instrument, and
    /// this is how its owner stops it. `spec` is the spec's terms hash, the EIP-712 digest of the `SpecTerms`
    /// the owner signed, which every CID and encoding of the same spec shares. Providers read `revokedAt`
    /// before they claim a call to a spec and refuse a revoked one; charges they claimed before still settle
    /// (the escrow's promise above holds).
    /// @dev Keyed by the caller: anyone may record any hash under their own address, which binds only specs
    /// they signed as owner.
    function revokeSpec(bytes32 spec) external;

    /* ---------------------------------------------------------------------------------------- */
    /*                                        PROVIDERS                                         */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice Charges `payer` one request at `price` (the caller is the provider): from the credits the
    /// caller granted `payer` first, then from `payer`'s reserve with the caller. Reverts if it does not fit.
    function consume(address payer, uint256 price) external;

    /// @notice Settles many requests of many payers at once. Every line that fits is charged as `consume`
    /// would; a line that does not charges nothing and is reported in `ChargeRefused`.
    /// @return earned What the reserves paid in total (credits excluded), added to the caller's earnings.
    function consumeBatch(Charge[] calldata charges) external returns (uint256 earned);

    /// @notice Grants `user` `amount` of trial credits, spendable only with the caller.
    function grantCredits(address user, uint256 amount) external;

    /// @notice Sends `amount` of the caller's earnings to `to`.
    function withdrawEarnings(address to, uint256 amount) external;

    /* ---------------------------------------------------------------------------------------- */
    /*                                          VIEWS                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @notice `payer`'s free balance: withdrawable at once, chargeable by nobody.
    function freeBalance(address payer) external view returns (uint256);

    /// @notice `provider`'s earnings, withdrawable at once.
    function earnings(address provider) external view returns (uint256);

    /// @notice What `payer` has with `provider`: terms in force, credits, and pending changes (see `Terms`).
    function terms(address payer, address provider) external view returns (Terms memory);

    /// @notice When `owner` revoked its deployment `spec` (unix seconds); 0 when it did not.
    function revokedAt(address owner, bytes32 spec) external view returns (uint256);

    /// @notice Whether the token reports `account` as blacklisted, so that the escrow moves none of its money
    /// (always false with a token that has no blacklist).
    function isFrozen(address account) external view returns (bool);
}
