// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test, Vm} from "forge-std/Test.sol";

import {Escrow} from "../../contracts/Escrow.sol";
import {IEscrow, Charge, Terms} from "../../contracts/interfaces/IEscrow.sol";
import {TestUSDC} from "../../contracts/TestUSDC.sol";

/// @dev Drives the escrow with random actions of five actors who are all payers and providers at once
/// (each may reserve for itself), and keeps a reference model of everything the escrow holds.
///
/// - `alice` and `bob` are honest providers: they charge only through claims. Their agent claims what
///   `terms()` shows claimable (reserve, less a pending release, less its own open claims; at most the price
///   in force and the pending price) and settles each claim later, by `consume` or `consumeBatch` (with bad
///   lines mixed in), at the latest at the last second of the delay. Meanwhile every actor, the claimed
///   payer included, does anything a payer can: release, cut, withdraw, charge itself through a provider it
///   controls, leave at once (`rugPull`).
/// - `mallory`, `puppet` (her sock puppet) and `carol` are wild providers: they charge anyone, anything.
///
/// The model (`_m`, `ghostFree`, `ghostEarnings`) follows the escrow's events: each `Consumed` and `Released`
/// is checked against it before it is booked, each `ChargeRefused` and each revert must carry the reason the
/// model predicts. Every disagreement counts as a violation (the handler never reverts on one: with
/// `fail_on_revert = false` a revert would go unseen), and the invariants assert that there are none.
contract EscrowHandler is Test {
    /* ---------------------------------------------------------------------------------------- */
    /*                                      CONFIGURATION                                       */
    /* ---------------------------------------------------------------------------------------- */

    uint256 internal constant ACTORS = 5;
    /// @dev actors[0..HONEST) charge only through claims.
    uint256 internal constant HONEST = 2;
    uint256 internal constant MAX_PRICE = 2e6;
    uint256 internal constant MAX_DEPOSIT = 1_000e6;
    uint256 internal constant MAX_CREDITS = 1_000e6;
    uint256 internal constant MAX_CLAIM_COUNT = 20;
    uint256 internal constant MAX_OPEN_CLAIMS = 40;

    Escrow internal escrow;
    TestUSDC internal usdc;
    uint256 internal delay;

    address[] public actors;
    uint256[] internal _keys;
    /// @dev Where withdrawals go: outside the escrow, never an actor's escrow balance.
    address public sink = makeAddr("sink");
    /// @dev Never deposits, never reserves: lines charging it must be refused.
    address public nobody = makeAddr("nobody");

    /* ---------------------------------------------------------------------------------------- */
    /*                                          MODEL                                           */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev What the model expects of one (payer, provider) pair. A cut or a release is kept until the
    /// escrow applies it; `_effPrice` and `_effReserve` show it in force once its time has come.
    struct Model {
        uint256 price;
        uint256 reserve;
        uint256 credits;
        uint256 cutPrice;
        uint256 cutAt;
        uint256 rel;
        uint256 relAt;
    }

    struct Claim {
        address payer;
        address provider;
        uint64 price;
        uint32 count;
        uint256 at;
        uint256 payerMoves;
        uint256 rugs;
        bool releasePending;
        bool cutPending;
    }

    mapping(address payer => mapping(address provider => Model)) internal _m;
    mapping(address => uint256) public ghostFree;
    mapping(address => uint256) public ghostEarnings;
    mapping(address payer => mapping(address provider => uint256)) public reservedTotal;
    mapping(address payer => mapping(address provider => uint256)) public releasedTotal;
    mapping(address payer => mapping(address provider => uint256)) public chargedTotal;
    uint256 public deposited;
    uint256 public withdrawn;
    uint256 public earned;
    uint256 public earningsWithdrawn;
    uint256 public creditsGranted;
    uint256 public creditsSpent;

    Claim[] internal _claims;
    /// @dev Moves of a payer that lower what it leaves a provider (release, cut, withdraw, rug pull).
    mapping(address => uint256) public payerMoves;
    mapping(address => uint256) public rugs;
    uint256 public claimsMade;
    uint256 public claimsSettled;
    uint256 public claimsFailed;
    uint256 public claimsExpired;

    enum Kind {
        Price,
        Reserve,
        Credit,
        Model
    }

    /// @dev (d) a charge above the price in force.
    uint256 public priceViolations;
    /// @dev (f) money out of a reserve other than by its provider's charge or a matured release.
    uint256 public reserveViolations;
    /// @dev (e) credits not spent first, or overspent.
    uint256 public creditViolations;
    /// @dev An outcome the model did not predict: a refusal reason, a success or a failure.
    uint256 public modelViolations;
    string public lastViolation;

    mapping(bytes32 => uint256) public calls;

    /// @dev Per call: who may charge (the caller of consume/consumeBatch, else nobody), and what the
    /// events released and paid.
    address internal _charger;
    uint256 internal _released;
    uint256 internal _paid;

    constructor(Escrow escrow_, TestUSDC usdc_) {
        (escrow, usdc, delay) = (escrow_, usdc_, escrow_.withdrawalDelay());
        string[5] memory names = ["alice", "bob", "mallory", "puppet", "carol"];
        for (uint256 i; i < ACTORS; ++i) {
            (address a, uint256 key) = makeAddrAndKey(names[i]);
            actors.push(a);
            _keys.push(key);
        }
        // A funded start: everyone reserves with both honest providers (alice and bob with themselves too),
        // mallory with herself and her puppet, and the honest providers grant a few credits.
        for (uint256 i; i < ACTORS; ++i) {
            _deposit(actors[i], actors[i], 500e6);
            for (uint256 j; j < HONEST; ++j) {
                _reserve(actors[i], actors[j], 1e6, 50e6);
            }
        }
        _reserve(actors[2], actors[2], 1e6, 50e6);
        _reserve(actors[2], actors[3], 1e6, 50e6);
        _grant(actors[0], actors[2], 3e6);
        _grant(actors[1], actors[4], 3e6);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                     PAYER ACTIONS                                        */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev Any actor deposits for any actor, sometimes with a permit; now and then it also tries to make
    /// the escrow itself the beneficiary, which must be refused.
    function deposit(uint256 fromSeed, uint256 toSeed, uint256 amount, uint256 mode) external {
        (address from, address to) = (_actor(fromSeed), _actor(toSeed));
        amount = _bound(amount, 1, MAX_DEPOSIT);
        if (mode % 8 == 0) {
            usdc.mint(from, 1);
            vm.startPrank(from);
            usdc.approve(address(escrow), 1);
            try escrow.deposit(address(escrow), 1) {
                _violate(Kind.Model, "deposit to the escrow itself");
            } catch (bytes memory reason) {
                _expectReason(reason, abi.encodeWithSelector(IEscrow.EscrowAsRecipient.selector));
                _count("deposit.toEscrow.refused");
            }
            usdc.approve(address(escrow), 0);
            vm.stopPrank();
        }
        if (mode % 3 == 0) _depositWithPermit(fromSeed % ACTORS, to, amount);
        else _deposit(from, to, amount);
    }

    function withdraw(uint256 payerSeed, uint256 amount, uint256 mode) external {
        address p = _actor(payerSeed);
        if (mode % 8 == 0) {
            vm.prank(p);
            try escrow.withdraw(address(escrow), 1) {
                _violate(Kind.Model, "withdrawal to the escrow itself");
            } catch (bytes memory reason) {
                _expectReason(reason, abi.encodeWithSelector(IEscrow.EscrowAsRecipient.selector));
                _count("withdraw.toEscrow.refused");
            }
        }
        uint256 free = escrow.freeBalance(p);
        if (free == 0) {
            _count("withdraw.empty");
            return;
        }
        amount = mode % 3 == 0 ? free : _bound(amount, 1, free);
        _withdraw(p, amount);
    }

    /// @dev `mode` picks a raise, an equal price, a cut, or any price; `amountSeed` sometimes asks one more
    /// than the free balance (refused).
    function reserve(
        uint256 payerSeed,
        uint256 providerSeed,
        uint256 priceSeed,
        uint256 amountSeed,
        uint256 mode
    ) external {
        // Half the time with an honest provider, so that there is something to claim.
        address p = _actor(payerSeed);
        address q = mode % 8 < 4 ? _honest(providerSeed) : _actor(providerSeed);
        uint256 inForce = _effPrice(_m[p][q]);
        uint256 price;
        mode >>= 3;
        if (mode % 4 == 0) price = inForce < MAX_PRICE ? _bound(priceSeed, inForce + 1, MAX_PRICE) : inForce;
        else if (mode % 4 == 1) price = inForce;
        else if (mode % 4 == 2) price = inForce == 0 ? 0 : _bound(priceSeed, 0, inForce - 1);
        else price = _bound(priceSeed, 0, MAX_PRICE);
        // What the escrow will see as free: this pair's matured release is applied first.
        uint256 free = escrow.freeBalance(p) + escrow.terms(p, q).releasable;
        uint256 amount;
        if (amountSeed % 16 == 1) amount = free + 1;
        else if (amountSeed % 4 != 0 && free != 0) amount = _bound(amountSeed, 1, free);
        _reserve(p, q, price, amount);
    }

    function release(uint256 payerSeed, uint256 providerSeed, uint256 amount) external {
        (address p, address q) = (_actor(payerSeed), _actor(providerSeed));
        Terms memory t = escrow.terms(p, q);
        amount = amount % 5 == 0 ? type(uint256).max : _bound(amount, 1, 2 * (t.reserve + t.releasable) + 1);
        _release(p, q, amount);
    }

    function cancelPending(uint256 payerSeed, uint256 providerSeed) external {
        (address p, address q) = (_actor(payerSeed), _actor(providerSeed));
        Model storage m = _m[p][q];
        bool expected =
            (m.cutAt != 0 && block.timestamp < m.cutAt) || (m.relAt != 0 && block.timestamp < m.relAt);
        _begin(address(0));
        vm.prank(p);
        try escrow.cancelPending(q) {
            _end(new Charge[](0));
            if (!expected) _violate(Kind.Model, "cancelled with nothing pending");
            _materializeCut(m);
            (m.cutPrice, m.cutAt, m.rel, m.relAt) = (0, 0, 0, 0);
            _count("cancel");
        } catch (bytes memory reason) {
            _discard();
            if (expected) _violate(Kind.Model, "cancel refused with something pending");
            _expectReason(reason, abi.encodeWithSelector(IEscrow.NothingPending.selector, q));
            _count("cancel.nothing");
        }
    }

    /// @dev Anyone (an actor, or an outsider) puts a pair's matured changes into force.
    function applyPending(uint256 callerSeed, uint256 payerSeed, uint256 providerSeed) external {
        address caller = callerSeed % 3 == 0 ? nobody : _actor(callerSeed);
        (address p, address q) = (_actor(payerSeed), _actor(providerSeed));
        _begin(address(0));
        vm.prank(caller);
        try escrow.applyPending(p, q) returns (uint256 got) {
            _end(new Charge[](0));
            if (got != _released) _violate(Kind.Model, "applyPending returned other than it released");
            _materializeCut(_m[p][q]);
            _count("apply");
            if (got != 0) _count("apply.released");
        } catch {
            _discard();
            _violate(Kind.Model, "applyPending reverted");
        }
    }

    /// @dev A payer leaves at once: it releases every honest reserve (delayed), reserves all its free money
    /// for a provider it controls (itself when it is one), has it charged in one line, cashes the earnings
    /// out and withdraws what is free. All in one block, one actor playing payer and provider.
    function rugPull(uint256 payerSeed, uint256 puppetSeed) external {
        address p = _actor(payerSeed);
        address w = _wild(puppetSeed);
        for (uint256 j; j < HONEST; ++j) {
            _release(p, actors[j], type(uint256).max);
        }
        _applyAs(p, p, w);
        uint256 free = escrow.freeBalance(p);
        if (free != 0) _reserve(p, w, type(uint256).max, free);
        Terms memory t = escrow.terms(p, w);
        uint256 all = t.reserve + t.credits;
        if (all != 0 && t.price >= all) _consumeOnce(w, p, all);
        uint256 cash = escrow.earnings(w);
        if (cash != 0) _withdrawEarnings(w, p, cash);
        free = escrow.freeBalance(p);
        if (free != 0) _withdraw(p, free);
        rugs[p]++;
        payerMoves[p]++;
        _count("rugPull");
        if (p == w) _count("rugPull.self");
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                    PROVIDER ACTIONS                                      */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev A wild provider charges anyone at any price; the outcome must be the model's.
    function consume(uint256 providerSeed, uint256 payerSeed, uint256 priceSeed) external {
        address q = _wild(providerSeed);
        address p = payerSeed % 8 == 7 ? nobody : _actor(payerSeed);
        uint256 price = priceSeed % 8 == 0 ? 0 : _bound(priceSeed, 1, (MAX_PRICE * 6) / 5);
        _consumeOnce(q, p, price);
    }

    /// @dev A wild provider's batch of random lines, good and bad.
    function consumeBatch(uint256 providerSeed, uint256 seed, uint256 n) external {
        address q = _wild(providerSeed);
        n = _bound(n, 1, 6);
        Charge[] memory lines = new Charge[](n);
        for (uint256 i; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            address p = r % 6 == 5 ? nobody : actors[r % ACTORS];
            uint256 price = (r >> 8) % 7 == 0 ? 0 : _bound(r >> 16, 1, MAX_PRICE);
            uint256 count = (r >> 100) % 9 == 0 ? 0 : _bound(r >> 120, 1, 20);
            lines[i] = Charge(p, uint64(price), uint32(count));
        }
        (bool ok,) = _batch(q, lines);
        if (!ok) _violate(Kind.Model, "a batch reverted");
        _count("batch.wild");
    }

    /// @dev Any actor, honest or wild, grants credits to any actor.
    function grantCredits(uint256 providerSeed, uint256 userSeed, uint256 amount) external {
        (address q, address p) = (_actor(providerSeed), _actor(userSeed));
        amount = _bound(amount, 1, 5e6);
        if (_m[p][q].credits + amount > MAX_CREDITS) {
            _count("grant.capped");
            return;
        }
        _grant(q, p, amount);
    }

    function withdrawEarnings(uint256 providerSeed, uint256 amount, uint256 mode) external {
        address q = _actor(providerSeed);
        if (mode % 8 == 0) {
            vm.prank(q);
            try escrow.withdrawEarnings(address(escrow), 1) {
                _violate(Kind.Model, "earnings to the escrow itself");
            } catch (bytes memory reason) {
                _expectReason(reason, abi.encodeWithSelector(IEscrow.EscrowAsRecipient.selector));
                _count("earnings.toEscrow.refused");
            }
        }
        uint256 available = escrow.earnings(q);
        if (available == 0) {
            _count("earnings.empty");
            return;
        }
        amount = mode % 3 == 0 ? available : _bound(amount, 1, available);
        _withdrawEarnings(q, mode % 2 == 0 ? sink : q, amount);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                          CLAIMS                                          */
    /* ---------------------------------------------------------------------------------------- */

    /// @dev An honest provider's agent claims, before running requests, what `terms()` shows it may charge:
    /// the reserve less a pending release less its open claims, at most the price in force and the pending
    /// price. It takes the first payer (from `payerSeed` on) with something claimable.
    function claim(uint256 payerSeed, uint256 providerSeed, uint256 priceSeed, uint256 countSeed) external {
        if (_claims.length >= MAX_OPEN_CLAIMS) {
            _count("claim.full");
            return;
        }
        address q = _honest(providerSeed);
        for (uint256 k; k < ACTORS; ++k) {
            address p = _actor(payerSeed % ACTORS + k);
            (uint256 maxPrice, uint256 avail, Terms memory t) = _claimable(p, q);
            if (maxPrice == 0 || avail == 0) continue;
            uint256 price = _bound(priceSeed, 1, _min(maxPrice, avail));
            uint256 count = _bound(countSeed, 1, _min(avail / price, MAX_CLAIM_COUNT));
            _claims.push(
                Claim(
                    p,
                    q,
                    uint64(price),
                    uint32(count),
                    block.timestamp,
                    payerMoves[p],
                    rugs[p],
                    t.releaseAt != 0,
                    t.priceAt != 0
                )
            );
            claimsMade++;
            _count("claim");
            return;
        }
        _count("claim.nothing");
    }

    /// @dev What the agent of `q` computes from `terms(p, q)` and its own open claims.
    function _claimable(address p, address q)
        internal
        view
        returns (uint256 maxPrice, uint256 avail, Terms memory t)
    {
        t = escrow.terms(p, q);
        maxPrice = t.priceAt != 0 && t.pendingPrice < t.price ? t.pendingPrice : t.price;
        avail = t.reserve;
        if (t.releaseAt != 0) avail = avail > t.pendingRelease ? avail - t.pendingRelease : 0;
        uint256 open = openClaims(p, q);
        avail = avail > open ? avail - open : 0;
    }

    /// @dev An honest provider settles its open claims now, by `consume` or by a batch with bad lines.
    function settle(uint256 providerSeed, uint256 mode, uint256 badSeed) external {
        _settle(_honest(providerSeed), mode, badSeed, type(uint256).max);
    }

    /// @dev Time passes, up to twice the delay. The agents settle every claim before its delay runs out:
    /// one due before the new time is settled at its last second, the most a payer can have done by then.
    function warp(uint256 secs, uint256 mode, uint256 badSeed) external {
        uint256 target = block.timestamp + _bound(secs, 1, 2 * delay);
        while (true) {
            (bool found, uint256 deadline, address q) = _earliestDeadline();
            if (!found || deadline >= target) break;
            if (deadline > block.timestamp) vm.warp(deadline);
            _settle(q, mode, badSeed, deadline);
            (mode, badSeed) = (uint256(keccak256(abi.encode(mode))), uint256(keccak256(abi.encode(badSeed))));
        }
        vm.warp(target);
        _count("warp");
    }

    /// @dev Settles every open claim now (the end of a run).
    function settleAll(uint256 mode) external {
        for (uint256 j; j < HONEST; ++j) {
            _settle(actors[j], mode >> j, mode, type(uint256).max);
        }
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                          VIEWS                                           */
    /* ---------------------------------------------------------------------------------------- */

    function actorCount() external pure returns (uint256) {
        return ACTORS;
    }

    function openClaimCount() external view returns (uint256) {
        return _claims.length;
    }

    /// @dev What the honest provider `q` has claimed from `p` and not settled yet.
    function openClaims(address p, address q) public view returns (uint256 sum) {
        for (uint256 i; i < _claims.length; ++i) {
            Claim storage c = _claims[i];
            if (c.payer == p && c.provider == q) sum += uint256(c.price) * c.count;
        }
    }

    /// @dev The open claims whose delay ran out unsettled (the warp settles them first: always 0).
    function overdueClaims() external view returns (uint256 n) {
        for (uint256 i; i < _claims.length; ++i) {
            if (_claims[i].at + delay - 1 < block.timestamp) n++;
        }
    }

    /// @dev `terms(p, q)` as the model expects it now.
    function modelTerms(address p, address q) external view returns (Terms memory t) {
        Model storage m = _m[p][q];
        (t.price, t.reserve, t.credits) = (_effPrice(m), _effReserve(m), m.credits);
        if (m.cutAt != 0 && block.timestamp < m.cutAt) (t.pendingPrice, t.priceAt) = (m.cutPrice, m.cutAt);
        if (m.relAt != 0 && block.timestamp < m.relAt) (t.pendingRelease, t.releaseAt) = (m.rel, m.relAt);
        if (_relDue(m)) t.releasable = _min(m.rel, m.reserve);
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                  ACTIONS WITH THE MODEL                                  */
    /* ---------------------------------------------------------------------------------------- */

    function _deposit(address from, address to, uint256 amount) internal {
        usdc.mint(from, amount);
        vm.startPrank(from);
        usdc.approve(address(escrow), amount);
        try escrow.deposit(to, amount) {
            _booked(to, amount);
            _count("deposit");
        } catch {
            _violate(Kind.Model, "deposit reverted");
        }
        vm.stopPrank();
    }

    function _depositWithPermit(uint256 i, address to, uint256 amount) internal {
        address from = actors[i];
        usdc.mint(from, amount);
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                from,
                address(escrow),
                amount,
                usdc.nonces(from),
                deadline
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(_keys[i], keccak256(abi.encodePacked("\x19\x01", usdc.DOMAIN_SEPARATOR(), structHash)));
        vm.prank(from);
        try escrow.depositWithPermit(to, amount, deadline, v, r, s) {
            _booked(to, amount);
            _count("deposit.permit");
        } catch {
            _violate(Kind.Model, "depositWithPermit reverted");
        }
    }

    function _booked(address to, uint256 amount) internal {
        ghostFree[to] += amount;
        deposited += amount;
    }

    function _withdraw(address p, uint256 amount) internal {
        vm.prank(p);
        try escrow.withdraw(sink, amount) {
            ghostFree[p] -= amount;
            withdrawn += amount;
            payerMoves[p]++;
            _count("withdraw");
        } catch {
            _violate(Kind.Model, "withdraw of a free balance reverted");
        }
    }

    function _reserve(address p, address q, uint256 price, uint256 amount) internal {
        Model storage m = _m[p][q];
        bool expected = amount <= escrow.freeBalance(p) + escrow.terms(p, q).releasable;
        _begin(address(0));
        vm.prank(p);
        try escrow.reserve(q, price, amount) {
            _end(new Charge[](0));
            if (!expected) _violate(Kind.Model, "reserved more than the free balance");
            _materializeCut(m);
            price = _min(price, type(uint64).max);
            if (amount != 0) {
                ghostFree[p] -= amount;
                m.reserve += amount;
                reservedTotal[p][q] += amount;
            }
            if (price > m.price) {
                (m.price, m.cutPrice, m.cutAt) = (price, 0, 0);
                _count("reserve.raise");
            } else if (price < m.price) {
                (m.cutPrice, m.cutAt) = (price, block.timestamp + delay);
                payerMoves[p]++;
                _count("reserve.cut");
            } else {
                _count("reserve.equal");
            }
            if (p == q) _count("reserve.self");
        } catch (bytes memory reason) {
            _discard();
            if (expected) _violate(Kind.Model, "reserve refused");
            uint256 free = escrow.freeBalance(p) + escrow.terms(p, q).releasable;
            _expectReason(reason, abi.encodeWithSelector(IEscrow.InsufficientBalance.selector, free, amount));
            _count("reserve.refused");
        }
    }

    function _release(address p, address q, uint256 amount) internal {
        _begin(address(0));
        vm.prank(p);
        try escrow.release(q, amount) {
            _end(new Charge[](0));
            Model storage m = _m[p][q];
            (m.rel, m.relAt) = (_min(amount, type(uint96).max), block.timestamp + delay);
            payerMoves[p]++;
            _count("release");
        } catch {
            _discard();
            _violate(Kind.Model, "release reverted");
        }
    }

    function _applyAs(address caller, address p, address q) internal {
        _begin(address(0));
        vm.prank(caller);
        escrow.applyPending(p, q);
        _end(new Charge[](0));
        _materializeCut(_m[p][q]);
    }

    function _grant(address q, address p, uint256 amount) internal {
        vm.prank(q);
        try escrow.grantCredits(p, amount) {
            _m[p][q].credits += amount;
            creditsGranted += amount;
            _count("grant");
        } catch {
            _violate(Kind.Model, "grantCredits reverted");
        }
    }

    function _withdrawEarnings(address q, address to, uint256 amount) internal {
        vm.prank(q);
        try escrow.withdrawEarnings(to, amount) {
            ghostEarnings[q] -= amount;
            earningsWithdrawn += amount;
            _count("earnings.withdraw");
        } catch {
            _violate(Kind.Model, "withdrawEarnings reverted");
        }
    }

    /// @dev One `consume`; returns whether it charged. A revert must carry the reason the model predicts.
    function _consumeOnce(address q, address p, uint256 price) internal returns (bool ok) {
        bytes memory expected = _refusal(p, q, price, 1);
        _begin(q);
        vm.prank(q);
        try escrow.consume(p, price) {
            ok = true;
            _end(new Charge[](0));
            if (expected.length != 0) _violate(Kind.Model, "consume charged what the model refuses");
            _count(_isHonest(q) ? bytes32("consume.honest") : bytes32("consume.wild"));
        } catch (bytes memory reason) {
            _discard();
            _expectReason(reason, expected);
            _count(_isHonest(q) ? bytes32("consume.honest.refused") : bytes32("consume.wild.refused"));
        }
    }

    /// @dev One `consumeBatch`; returns whether it ran and which lines were refused.
    function _batch(address q, Charge[] memory lines) internal returns (bool ok, bool[] memory refused) {
        _begin(q);
        vm.prank(q);
        try escrow.consumeBatch(lines) returns (uint256 got) {
            ok = true;
            refused = _end(lines);
            if (got != _paid) _violate(Kind.Model, "consumeBatch returned other than the reserves paid");
        } catch {
            refused = new bool[](lines.length);
            _discard();
        }
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                    SETTLING CLAIMS                                       */
    /* ---------------------------------------------------------------------------------------- */

    function _settle(address q, uint256 mode, uint256 badSeed, uint256 dueBy) internal {
        Claim[] memory mine = _take(q, dueBy);
        if (mine.length == 0) return;
        if (mode % 2 == 0) _settleByConsume(q, mine);
        else _settleByBatch(q, mine, badSeed);
    }

    function _settleByConsume(address q, Claim[] memory mine) internal {
        for (uint256 i; i < mine.length; ++i) {
            bool ok = true;
            for (uint256 k; k < mine[i].count && ok; ++k) {
                ok = _consumeOnce(q, mine[i].payer, mine[i].price);
            }
            _book(mine[i], ok, "claim.settled.consume");
        }
    }

    /// @dev The claims as lines of one batch, with up to 3 lines that can never fit mixed in (zero price,
    /// zero count, a payer without terms, a price no honest terms reach, a count no reserve covers).
    function _settleByBatch(address q, Claim[] memory mine, uint256 badSeed) internal {
        uint256 bad = badSeed % 4;
        Charge[] memory lines = new Charge[](mine.length + bad);
        uint256[] memory claimAt = new uint256[](lines.length);
        (uint256 b, uint256 c) = (0, 0);
        for (uint256 i; i < lines.length; ++i) {
            uint256 r = uint256(keccak256(abi.encode(badSeed, i)));
            if (b < bad && (c == mine.length || r % 3 == 0)) {
                lines[i] = _badLine(r);
                claimAt[i] = type(uint256).max;
                b++;
            } else {
                lines[i] = Charge(mine[c].payer, mine[c].price, mine[c].count);
                claimAt[i] = c++;
            }
        }
        (bool ok, bool[] memory refused) = _batch(q, lines);
        if (!ok) _violate(Kind.Model, "an honest batch reverted");
        for (uint256 i; i < lines.length; ++i) {
            if (claimAt[i] != type(uint256).max) {
                _book(mine[claimAt[i]], ok && !refused[i], "claim.settled.batch");
            } else if (ok && !refused[i]) {
                _violate(Kind.Model, "a line that cannot fit was charged");
            }
        }
        if (bad != 0) _count("batch.honest.withBadLines");
    }

    function _badLine(uint256 r) internal view returns (Charge memory) {
        address p = actors[(r >> 8) % ACTORS];
        uint256 kind = (r >> 16) % 5;
        if (kind == 0) return Charge(p, 0, 1);
        if (kind == 1) return Charge(p, 1, 0);
        if (kind == 2) return Charge(nobody, 1, 1);
        if (kind == 3) return Charge(p, type(uint64).max, 1);
        return Charge(p, 1e6, type(uint32).max);
    }

    function _book(Claim memory c, bool ok, bytes32 how) internal {
        if (!ok) {
            claimsFailed++;
            lastViolation = "an honest claim failed to settle within the delay";
            return;
        }
        claimsSettled++;
        _count("claim.settled");
        _count(how);
        if (block.timestamp == c.at + delay - 1) _count("claim.settled.lastSecond");
        if (payerMoves[c.payer] > c.payerMoves) _count("claim.settled.afterPayerMoved");
        if (rugs[c.payer] > c.rugs) _count("claim.settled.afterRugPull");
        if (c.payer == c.provider) _count("claim.settled.selfPair");
        if (c.releasePending) _count("claim.settled.releasePending");
        if (c.cutPending) _count("claim.settled.cutPending");
    }

    /// @dev Removes and returns the open claims of `q` due by `dueBy`; a claim past its delay is dropped
    /// as expired (never happens: `warp` settles first).
    function _take(address q, uint256 dueBy) internal returns (Claim[] memory mine) {
        uint256 n;
        for (uint256 i; i < _claims.length; ++i) {
            if (_claims[i].provider == q && _claims[i].at + delay - 1 <= dueBy) n++;
        }
        mine = new Claim[](n);
        n = 0;
        for (uint256 i = _claims.length; i > 0; --i) {
            Claim memory c = _claims[i - 1];
            if (c.provider != q || c.at + delay - 1 > dueBy) continue;
            _claims[i - 1] = _claims[_claims.length - 1];
            _claims.pop();
            if (c.at + delay - 1 < block.timestamp) {
                claimsExpired++;
                continue;
            }
            mine[n++] = c;
        }
        assembly ("memory-safe") {
            mstore(mine, n)
        }
    }

    function _earliestDeadline() internal view returns (bool found, uint256 deadline, address q) {
        deadline = type(uint256).max;
        for (uint256 i; i < _claims.length; ++i) {
            uint256 d = _claims[i].at + delay - 1;
            if (d < deadline) (found, deadline, q) = (true, d, _claims[i].provider);
        }
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                    EVENTS INTO THE MODEL                                 */
    /* ---------------------------------------------------------------------------------------- */

    function _begin(address charger) internal {
        (_charger, _released, _paid) = (charger, 0, 0);
        vm.recordLogs();
    }

    /// @dev Drops the logs of a reverted call (`recordLogs` keeps them, but they never happened).
    function _discard() internal {
        vm.getRecordedLogs();
    }

    /// @dev Books the escrow's events of the last call into the model, in order, checking each first.
    /// @return refused Which of `lines` were reported in `ChargeRefused`.
    function _end(Charge[] memory lines) internal returns (bool[] memory refused) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        refused = new bool[](lines.length);
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(escrow)) continue;
            bytes32 topic = logs[i].topics[0];
            if (topic == IEscrow.Consumed.selector) _onConsumed(logs[i]);
            else if (topic == IEscrow.Released.selector) _onReleased(logs[i]);
            else if (topic == IEscrow.ChargeRefused.selector) _onRefused(logs[i], lines, refused);
        }
    }

    function _onConsumed(Vm.Log memory log) internal {
        (address p, address q) = _pairOf(log);
        if (q != _charger) _violate(Kind.Reserve, "a charge not made by its provider");
        (uint256 price, uint256 count, uint256 fromCredits) =
            abi.decode(log.data, (uint256, uint256, uint256));
        Model storage m = _m[p][q];
        _materializeCut(m);
        uint256 total = price * count;
        if (fromCredits != _min(m.credits, total)) _violate(Kind.Credit, "credits not spent first");
        m.credits -= _min(fromCredits, m.credits);
        creditsSpent += fromCredits;
        uint256 fromReserve = total - fromCredits;
        if (fromReserve == 0) {
            _count("charged.credits");
            return;
        }
        if (_relDue(m)) _violate(Kind.Reserve, "charged money whose release had matured");
        if (price > m.price) _violate(Kind.Price, "charged above the price in force");
        if (fromReserve > m.reserve) _violate(Kind.Reserve, "charged above the reserve");
        m.reserve -= _min(fromReserve, m.reserve);
        chargedTotal[p][q] += fromReserve;
        ghostEarnings[q] += fromReserve;
        earned += fromReserve;
        _paid += fromReserve;
        _count("charged.reserve");
        if (p == q) _count("charged.self");
    }

    function _onReleased(Vm.Log memory log) internal {
        (address p, address q) = _pairOf(log);
        uint256 amount = abi.decode(log.data, (uint256));
        Model storage m = _m[p][q];
        if (!_relDue(m)) _violate(Kind.Reserve, "released before its delay");
        if (amount != _min(m.rel, m.reserve)) {
            _violate(Kind.Reserve, "released other than min(release, left)");
        }
        m.reserve -= _min(amount, m.reserve);
        (m.rel, m.relAt) = (0, 0);
        ghostFree[p] += amount;
        releasedTotal[p][q] += amount;
        _released += amount;
        _count(amount != 0 ? bytes32("released") : bytes32("released.nothingLeft"));
    }

    function _onRefused(Vm.Log memory log, Charge[] memory lines, bool[] memory refused) internal {
        (address p, address q) = _pairOf(log);
        (uint256 index, bytes memory reason) = abi.decode(log.data, (uint256, bytes));
        if (q != _charger || index >= lines.length || lines[index].payer != p) {
            {
                _violate(Kind.Model, "a refusal for another line");
                return;
            }
        }
        refused[index] = true;
        _expectReason(reason, _refusal(p, q, lines[index].price, lines[index].count));
        bytes4 selector = bytes4(reason);
        if (selector == IEscrow.ZeroAmount.selector) _count("refused.ZeroAmount");
        else if (selector == IEscrow.NotApproved.selector) _count("refused.NotApproved");
        else if (selector == IEscrow.PriceAboveTerms.selector) _count("refused.PriceAboveTerms");
        else if (selector == IEscrow.InsufficientReserve.selector) _count("refused.InsufficientReserve");
    }

    /// @dev The error a charge of `count` requests at `price` must get now, by the model ("" if it fits).
    function _refusal(address p, address q, uint256 price, uint256 count)
        internal
        view
        returns (bytes memory)
    {
        if (price == 0 || count == 0) {
            return abi.encodeWithSelector(IEscrow.ZeroAmount.selector);
        }
        Model storage m = _m[p][q];
        (uint256 inForce, uint256 left) = (_effPrice(m), _effReserve(m));
        uint256 total = price * count;
        uint256 fromReserve = total - _min(m.credits, total);
        if (fromReserve == 0) return "";
        if (inForce == 0 && left == 0) return abi.encodeWithSelector(IEscrow.NotApproved.selector, p, q);
        if (price > inForce) {
            return abi.encodeWithSelector(IEscrow.PriceAboveTerms.selector, p, q, inForce, price);
        }
        if (fromReserve > left) {
            return abi.encodeWithSelector(IEscrow.InsufficientReserve.selector, p, q, left, fromReserve);
        }
        return "";
    }

    /* ---------------------------------------------------------------------------------------- */
    /*                                         HELPERS                                          */
    /* ---------------------------------------------------------------------------------------- */

    function _effPrice(Model storage m) internal view returns (uint256) {
        return m.cutAt != 0 && block.timestamp >= m.cutAt ? m.cutPrice : m.price;
    }

    function _relDue(Model storage m) internal view returns (bool) {
        return m.relAt != 0 && block.timestamp >= m.relAt;
    }

    function _effReserve(Model storage m) internal view returns (uint256) {
        return _relDue(m) ? m.reserve - _min(m.rel, m.reserve) : m.reserve;
    }

    /// @dev A matured cut is in force whenever the escrow looks: the model may apply it at any touch.
    function _materializeCut(Model storage m) internal {
        if (m.cutAt == 0 || block.timestamp < m.cutAt) return;
        (m.price, m.cutPrice, m.cutAt) = (m.cutPrice, 0, 0);
        _count("cut.matured");
    }

    function _expectReason(bytes memory reason, bytes memory expected) internal {
        if (keccak256(reason) != keccak256(expected)) _violate(Kind.Model, "a refusal with another reason");
    }

    function _violate(Kind kind, string memory why) internal {
        lastViolation = why;
        if (kind == Kind.Price) priceViolations++;
        else if (kind == Kind.Reserve) reserveViolations++;
        else if (kind == Kind.Credit) creditViolations++;
        else modelViolations++;
    }

    function _pairOf(Vm.Log memory log) internal pure returns (address p, address q) {
        (p, q) = (address(uint160(uint256(log.topics[1]))), address(uint160(uint256(log.topics[2]))));
    }

    function _actor(uint256 seed) internal view returns (address) {
        return actors[seed % ACTORS];
    }

    function _honest(uint256 seed) internal view returns (address) {
        return actors[seed % HONEST];
    }

    function _wild(uint256 seed) internal view returns (address) {
        return actors[HONEST + seed % (ACTORS - HONEST)];
    }

    function _isHonest(address a) internal view returns (bool) {
        for (uint256 j; j < HONEST; ++j) {
            if (actors[j] == a) return true;
        }
        return false;
    }

    function _count(bytes32 key) internal {
        calls[key]++;
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
