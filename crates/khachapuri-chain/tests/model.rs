//! Property test: random sequences of deposits, withdrawals, reserves, price cuts, releases, charges, credits
//! and time keep a Rust model of the escrow's accounting equal to the chain's: every outcome (each refused
//! line of a batch included) and, after each operation, every view (free balances, terms with their pending
//! changes and what is releasable, earnings, the providers of each payer, the tokens held).
//! One anvil; each case starts from a snapshot taken after setup (each actor has deposited and reserved for
//! the next one). Every actor both pays and provides, itself included.

use std::collections::HashMap;

use alloy::primitives::U256;
use alloy::providers::Provider;
use khachapuri_bindings::{Escrow, TestUSDC};
use khachapuri_chain::testing::{Devnet, DevnetOptions};
use khachapuri_chain::{Chain, ChainError, Charge, ContractError, Scheduled, Terms, Usdc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const DELAY: u64 = 100;
/// Anvil accounts 1, 2, 3: each may pay, provide, or both (a payer may reserve for itself).
const ACTORS: [u32; 3] = [1, 2, 3];
const CENT: u128 = 10_000;
const MILL: u128 = 1_000;
/// Set up before the snapshot: each actor deposits this much and reserves `RESERVE` of it for the next
/// actor at `PRICE` per request.
const DEPOSIT: u128 = 10_000_000;
const RESERVE: u128 = 1_000_000;
const PRICE: u128 = 10 * MILL;
/// What the escrow clamps a release to ("everything").
const RELEASE_ALL: u128 = (1 << 96) - 1;

/// One line of a batch: (payer, price in mills, count).
type Line = (usize, u128, u32);

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        from: usize,
        to: usize,
        cents: u128,
    },
    Withdraw {
        payer: usize,
        cents: u128,
    },
    Reserve {
        payer: usize,
        provider: usize,
        price: u128,
        cents: u128,
    },
    /// `cents: None` releases everything.
    Release {
        payer: usize,
        provider: usize,
        cents: Option<u128>,
    },
    CancelPending {
        payer: usize,
        provider: usize,
    },
    ApplyPending {
        caller: usize,
        payer: usize,
        provider: usize,
    },
    Consume {
        provider: usize,
        payer: usize,
        price: u128,
    },
    Batch {
        provider: usize,
        lines: Vec<Line>,
    },
    Grant {
        provider: usize,
        user: usize,
        cents: u128,
    },
    WithdrawEarnings {
        provider: usize,
        mills: u128,
    },
    Wait {
        secs: u64,
    },
    /// Waits until the next operation lands exactly on the earliest deadline pending (if any).
    WaitForDeadline,
}

/// A (payer, provider) pair: mostly one of the pairs set up with terms (actor `i` pays `i + 1`), so that
/// charges, cuts and releases meet reserves; any pair (an actor paying itself included) otherwise.
fn pair() -> impl Strategy<Value = (usize, usize)> {
    let n = ACTORS.len();
    prop_oneof![
        3 => (0..n).prop_map(move |i| (i, (i + 1) % n)),
        2 => (0..n, 0..n),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let n = ACTORS.len();
    let who = 0..n;
    // Mostly valid amounts so that sequences reach deep states; zeros and overdrafts stay possible.
    let count = || prop_oneof![9 => 1..4u32, 1 => Just(0u32)];
    // Around the price the pairs are set up with (10 mills): above and below it, sometimes zero.
    let price = || prop_oneof![9 => 1..14u128, 1 => Just(0u128), 1 => 14..60u128];
    let batch = (0..n).prop_flat_map(move |provider| {
        // Mostly the payer set up to pay this provider.
        let payer = prop_oneof![3 => Just((provider + n - 1) % n), 2 => 0..n];
        let lines = proptest::collection::vec((payer, price(), count()), 1..=3);
        lines.prop_map(move |lines| Op::Batch { provider, lines })
    });
    prop_oneof![
        2 => (who.clone(), who.clone(), 0..300u128).prop_map(|(from, to, cents)| Op::Deposit { from, to, cents }),
        2 => (who.clone(), prop_oneof![1 => Just(0u128), 6 => 1..400u128, 1 => 900..1100u128])
            .prop_map(|(payer, cents)| Op::Withdraw { payer, cents }),
        // The price in force (often still the one set up) as well as raises and cuts.
        4 => (pair(), prop_oneof![3 => 0..25u128, 1 => Just(PRICE / MILL)], prop_oneof![1 => Just(0u128), 3 => 0..200u128, 1 => 600..1200u128])
            .prop_map(|((payer, provider), price, cents)| Op::Reserve { payer, provider, price, cents }),
        3 => (pair(), prop_oneof![1 => Just(Some(0)), 6 => (1..150u128).prop_map(Some), 2 => Just(None)])
            .prop_map(|((payer, provider), cents)| Op::Release { payer, provider, cents }),
        1 => pair().prop_map(|(payer, provider)| Op::CancelPending { payer, provider }),
        2 => (who.clone(), pair())
            .prop_map(|(caller, (payer, provider))| Op::ApplyPending { caller, payer, provider }),
        3 => (pair(), price()).prop_map(|((payer, provider), price)| Op::Consume { provider, payer, price }),
        4 => batch,
        1 => (pair(), 0..5u128).prop_map(|((user, provider), cents)| Op::Grant { provider, user, cents }),
        1 => (who, 0..40u128).prop_map(|(provider, mills)| Op::WithdrawEarnings { provider, mills }),
        // DELAY - 2: the next operation lands exactly on a deadline set by the one before the wait.
        3 => prop_oneof![Just(DELAY / 2), Just(DELAY - 2), Just(DELAY + 3)].prop_map(|secs| Op::Wait { secs }),
        2 => Just(Op::WaitForDeadline),
    ]
}

/// What a payer has with one provider, as stored: the terms in force and the changes pending.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Pair {
    price: u128,
    reserve: u128,
    credits: u128,
    /// (price, when).
    cut: Option<(u128, u64)>,
    /// (amount, when).
    release: Option<(u128, u64)>,
}

/// The escrow, as the contract's documentation states it.
#[derive(Clone, Debug, Default)]
struct Model {
    free: HashMap<usize, u128>,
    pairs: HashMap<(usize, usize), Pair>,
    earnings: HashMap<usize, u128>,
    /// Per payer, the providers it set terms with, in the order first seen (`providers_of`).
    providers: HashMap<usize, Vec<usize>>,
}

/// Ok: the indexes of the batch lines refused, with the error's name. Err: the error's name.
type Outcome = Result<Vec<(usize, String)>, String>;

impl Model {
    /// The state set up before the snapshot.
    fn start() -> Self {
        let n = ACTORS.len();
        let mut model = Self::default();
        for i in 0..n {
            model.free.insert(i, DEPOSIT - RESERVE);
            let pair = Pair {
                price: PRICE,
                reserve: RESERVE,
                ..Pair::default()
            };
            model.pairs.insert((i, (i + 1) % n), pair);
            model.providers.insert(i, vec![(i + 1) % n]);
        }
        model
    }

    /// Runs `op` at time `now`; a refused operation leaves the model as it was (the transaction reverts).
    fn apply(&mut self, op: &Op, now: u64) -> Outcome {
        let mut next = self.clone();
        let outcome = next.run(op, now).map_err(str::to_owned)?;
        *self = next;
        Ok(outcome)
    }

    fn run(&mut self, op: &Op, now: u64) -> Result<Vec<(usize, String)>, &'static str> {
        match *op {
            Op::Deposit { to, cents, .. } => {
                if cents == 0 {
                    return Err("ZeroAmount");
                }
                *self.free.entry(to).or_default() += cents * CENT;
            }
            Op::Withdraw { payer, cents } => {
                if cents == 0 {
                    return Err("ZeroAmount");
                }
                let free = self.free.entry(payer).or_default();
                if cents * CENT > *free {
                    return Err("InsufficientBalance");
                }
                *free -= cents * CENT;
            }
            Op::Reserve {
                payer,
                provider,
                price,
                cents,
            } => {
                self.apply_due(payer, provider, now);
                let (price, amount) = (price * MILL, cents * CENT);
                let free = self.free.entry(payer).or_default();
                let pair = self.pairs.entry((payer, provider)).or_default();
                if amount != 0 {
                    if amount > *free {
                        return Err("InsufficientBalance");
                    }
                    *free -= amount;
                    pair.reserve += amount;
                }
                let raise = price > pair.price;
                if raise {
                    // A raise applies now and drops a price cut not yet in force.
                    (pair.price, pair.cut) = (price, None);
                } else if price < pair.price {
                    // A cut waits for the delay (replacing a pending one, whose delay starts again).
                    pair.cut = Some((price, now + DELAY));
                }
                // The price in force changes nothing.
                if amount != 0 || raise {
                    self.seen(payer, provider);
                }
            }
            Op::Release {
                payer,
                provider,
                cents,
            } => {
                let amount = cents.map_or(RELEASE_ALL, |c| c * CENT);
                if amount == 0 {
                    return Err("ZeroAmount");
                }
                self.apply_due(payer, provider, now);
                self.pairs.entry((payer, provider)).or_default().release =
                    Some((amount, now + DELAY));
                self.seen(payer, provider);
            }
            Op::CancelPending { payer, provider } => {
                self.apply_due(payer, provider, now);
                let pair = self.pairs.entry((payer, provider)).or_default();
                if pair.cut.is_none() && pair.release.is_none() {
                    return Err("NothingPending");
                }
                (pair.cut, pair.release) = (None, None);
            }
            Op::ApplyPending {
                payer, provider, ..
            } => self.apply_due(payer, provider, now),
            Op::Consume {
                provider,
                payer,
                price,
            } => self.charge(payer, provider, price * MILL, 1, now)?,
            Op::Batch {
                provider,
                ref lines,
            } => {
                // Lines are charged in order; one that does not fit charges nothing (but a change whose
                // time has come is applied all the same) and the rest go on.
                let mut refused = Vec::new();
                for (i, &(payer, price, count)) in lines.iter().enumerate() {
                    if let Err(e) = self.charge(payer, provider, price * MILL, count, now) {
                        refused.push((i, e.to_owned()));
                    }
                }
                return Ok(refused);
            }
            Op::Grant {
                provider,
                user,
                cents,
            } => {
                if cents == 0 {
                    return Err("ZeroAmount");
                }
                self.pairs.entry((user, provider)).or_default().credits += cents * CENT;
            }
            Op::WithdrawEarnings { provider, mills } => {
                if mills == 0 {
                    return Err("ZeroAmount");
                }
                let earned = self.earnings.entry(provider).or_default();
                if mills * MILL > *earned {
                    return Err("InsufficientEarnings");
                }
                *earned -= mills * MILL;
            }
            Op::Wait { .. } | Op::WaitForDeadline => {}
        }
        Ok(Vec::new())
    }

    /// The earliest price cut or release pending after `now`.
    fn next_deadline(&self, now: u64) -> Option<u64> {
        self.pairs
            .values()
            .flat_map(|p| [p.cut.map(|c| c.1), p.release.map(|r| r.1)])
            .flatten()
            .filter(|&at| at > now)
            .min()
    }

    fn seen(&mut self, payer: usize, provider: usize) {
        let seen = self.providers.entry(payer).or_default();
        if !seen.contains(&provider) {
            seen.push(provider);
        }
    }

    /// Puts the pending changes whose time has come into force; a release returns what is left of its
    /// amount (no more than the reserve now) to the free balance.
    fn apply_due(&mut self, payer: usize, provider: usize, now: u64) {
        let pair = self.pairs.entry((payer, provider)).or_default();
        if let Some((price, at)) = pair.cut
            && now >= at
        {
            (pair.price, pair.cut) = (price, None);
        }
        if let Some((amount, at)) = pair.release
            && now >= at
        {
            let released = amount.min(pair.reserve);
            pair.reserve -= released;
            pair.release = None;
            *self.free.entry(payer).or_default() += released;
        }
    }

    /// `count` requests at `price`: credits first, then the reserve, within the terms.
    fn charge(
        &mut self,
        payer: usize,
        provider: usize,
        price: u128,
        count: u32,
        now: u64,
    ) -> Result<(), &'static str> {
        if price == 0 || count == 0 {
            return Err("ZeroAmount");
        }
        self.apply_due(payer, provider, now);
        let pair = self.pairs.entry((payer, provider)).or_default();
        let total = price * u128::from(count);
        let from_credits = pair.credits.min(total);
        let from_reserve = total - from_credits;
        if from_reserve != 0 {
            if pair.price == 0 && pair.reserve == 0 {
                return Err("NotApproved");
            }
            if price > pair.price {
                return Err("PriceAboveTerms");
            }
            if from_reserve > pair.reserve {
                return Err("InsufficientReserve");
            }
            pair.reserve -= from_reserve;
            *self.earnings.entry(provider).or_default() += from_reserve;
        }
        pair.credits -= from_credits;
        Ok(())
    }

    /// `terms(payer, provider)` at time `now`: a change whose time has come is shown in force, a release's
    /// money as releasable.
    fn terms(&self, payer: usize, provider: usize, now: u64) -> Terms {
        let pair = self
            .pairs
            .get(&(payer, provider))
            .copied()
            .unwrap_or_default();
        let mut t = Terms {
            price_per_request: Usdc::from_units(pair.price),
            reserve: Usdc::from_units(pair.reserve),
            credits: Usdc::from_units(pair.credits),
            ..Terms::default()
        };
        if let Some((price, at)) = pair.cut {
            if now >= at {
                t.price_per_request = Usdc::from_units(price);
            } else {
                t.price_cut = Some(Scheduled {
                    amount: Usdc::from_units(price),
                    at,
                });
            }
        }
        if let Some((amount, at)) = pair.release {
            if now >= at {
                let released = amount.min(pair.reserve);
                t.releasable = Usdc::from_units(released);
                t.reserve = Usdc::from_units(pair.reserve - released);
            } else {
                t.release = Some(Scheduled {
                    amount: Usdc::from_units(amount),
                    at,
                });
            }
        }
        t
    }
}

/// The escrow error's name, or the whole error if it is something else.
fn error_name(err: &ChainError) -> String {
    match err.contract_error() {
        Some(ContractError::Escrow(e)) => {
            let debug = format!("{e:?}");
            debug.split('(').next().unwrap_or_default().to_owned()
        }
        _ => err.to_string(),
    }
}

struct World {
    net: Devnet,
    actors: Vec<Chain>,
}

impl World {
    fn address(&self, actor: usize) -> Result<khachapuri_chain::Address, ChainError> {
        self.actors[actor].address()
    }

    /// Runs `op` on chain; a batch answers the lines the escrow refused (`ChargeRefused`).
    async fn run(&self, op: &Op) -> Result<Vec<(usize, String)>, ChainError> {
        let amount = |cents: u128| Usdc::from_units(cents * CENT);
        let price = |mills: u128| Usdc::from_units(mills * MILL);
        match *op {
            Op::Deposit { from, to, cents } => {
                self.actors[from]
                    .deposit(self.address(to)?, amount(cents))
                    .await?;
            }
            Op::Withdraw { payer, cents } => {
                let chain = &self.actors[payer];
                chain.withdraw(chain.address()?, amount(cents)).await?;
            }
            Op::Reserve {
                payer,
                provider,
                price: p,
                cents,
            } => {
                self.actors[payer]
                    .reserve(self.address(provider)?, price(p), amount(cents))
                    .await?;
            }
            Op::Release {
                payer,
                provider,
                cents,
            } => {
                let all = cents.map_or(Usdc::MAX, amount);
                self.actors[payer]
                    .release(self.address(provider)?, all)
                    .await?;
            }
            Op::CancelPending { payer, provider } => {
                self.actors[payer]
                    .cancel_pending(self.address(provider)?)
                    .await?;
            }
            Op::ApplyPending {
                caller,
                payer,
                provider,
            } => {
                self.actors[caller]
                    .apply_pending(self.address(payer)?, self.address(provider)?)
                    .await?;
            }
            Op::Consume {
                provider,
                payer,
                price: p,
            } => {
                self.actors[provider]
                    .consume(self.address(payer)?, price(p))
                    .await?;
            }
            Op::Batch {
                provider,
                ref lines,
            } => {
                let chain = &self.actors[provider];
                let mut charges = Vec::new();
                for &(payer, p, count) in lines {
                    charges.push(Charge {
                        payer: self.address(payer)?,
                        price: price(p),
                        count,
                    });
                }
                let tx = match chain.consume_batch(&charges).await {
                    Ok(receipt) => receipt.tx_hash,
                    // `consume_batch` refuses zero prices and counts locally; send them raw to see the
                    // escrow refuse the line.
                    Err(ChainError::InvalidArgument(_)) => {
                        let escrow = Escrow::new(chain.deployment().escrow, chain.provider());
                        let raw = charges
                            .iter()
                            .map(|c| Escrow::Charge {
                                payer: c.payer,
                                price: u64::try_from(c.price.units()).unwrap_or_default(),
                                count: c.count,
                            })
                            .collect();
                        let pending = escrow.consumeBatch(raw).send().await?;
                        let receipt = chain.wait_receipt(*pending.tx_hash()).await?;
                        if !receipt.status() {
                            return Err(ChainError::Reverted {
                                reason: "the raw batch reverted".into(),
                                error: None,
                            });
                        }
                        receipt.transaction_hash
                    }
                    Err(e) => return Err(e),
                };
                let receipt = chain
                    .provider()
                    .get_transaction_receipt(tx)
                    .await?
                    .ok_or_else(|| ChainError::Decode("no receipt for the batch".into()))?;
                let me = chain.address()?;
                let mut refused = Vec::new();
                for log in receipt.inner.logs() {
                    if let Ok(log) = log.log_decode::<Escrow::ChargeRefused>() {
                        let e = log.inner.data;
                        let index = usize::try_from(e.index).unwrap_or(usize::MAX);
                        if e.provider != me || charges.get(index).map(|c| c.payer) != Some(e.payer)
                        {
                            return Err(ChainError::Decode(format!(
                                "a refusal names the wrong line: {e:?}"
                            )));
                        }
                        refused.push((index, error_name(&ChainError::from_revert_data(&e.reason))));
                    }
                }
                return Ok(refused);
            }
            Op::Grant {
                provider,
                user,
                cents,
            } => {
                self.actors[provider]
                    .grant_credits(self.address(user)?, amount(cents))
                    .await?;
            }
            Op::WithdrawEarnings { provider, mills } => {
                let chain = &self.actors[provider];
                chain
                    .withdraw_earnings(chain.address()?, Usdc::from_units(mills * MILL))
                    .await?;
            }
            Op::Wait { .. } | Op::WaitForDeadline => {}
        }
        Ok(Vec::new())
    }

    /// Runs `ops` on chain and in the model side by side, comparing outcomes and state.
    async fn replay(&self, ops: &[Op]) -> Result<(), TestCaseError> {
        let fail = |e: ChainError| TestCaseError::fail(e.to_string());
        let mut model = Model::start();
        let mut now = self.actors[0].block_timestamp().await.map_err(fail)?;
        for op in ops {
            now += match *op {
                Op::Wait { secs } => 1 + secs,
                // This wait at `at - 1`, the next operation at `at`.
                Op::WaitForDeadline => model
                    .next_deadline(now)
                    .map_or(1, |at| at.saturating_sub(1 + now).max(1)),
                _ => 1,
            };
            self.net.set_next_block_timestamp(now).await.map_err(fail)?;
            let expected = model.apply(op, now);
            let got = self.run(op).await.map_err(|e| error_name(&e));
            prop_assert_eq!(&got, &expected, "{:?} at {}", op, now);
            if got.is_ok() && !matches!(op, Op::Wait { .. } | Op::WaitForDeadline) {
                self.check(&model).await?;
            }
        }
        self.check(&model).await
    }

    async fn check(&self, model: &Model) -> Result<(), TestCaseError> {
        let fail = |e: ChainError| TestCaseError::fail(e.to_string());
        let chain = &self.actors[0];
        let now = chain.block_timestamp().await.map_err(fail)?;
        let addresses = (0..self.actors.len())
            .map(|i| self.address(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let mut reserved = 0;
        for (i, &p) in addresses.iter().enumerate() {
            let free = chain.free_balance(p).await.map_err(fail)?.units();
            prop_assert_eq!(
                free,
                model.free.get(&i).copied().unwrap_or_default(),
                "free balance of {}",
                i
            );
            for (j, &v) in addresses.iter().enumerate() {
                let terms = chain.terms(p, v).await.map_err(fail)?;
                prop_assert_eq!(terms, model.terms(i, j, now), "terms {} -> {}", i, j);
                reserved += terms.reserve.units() + terms.releasable.units();
            }
            let providers = chain.providers_of(p).await.map_err(fail)?;
            let expected = model
                .providers
                .get(&i)
                .map(|seen| seen.iter().map(|&j| addresses[j]).collect::<Vec<_>>())
                .unwrap_or_default();
            prop_assert_eq!(providers, expected, "providers of {}", i);
        }
        let mut held = reserved;
        for (j, &v) in addresses.iter().enumerate() {
            let earned = chain.earnings(v).await.map_err(fail)?.units();
            prop_assert_eq!(
                earned,
                model.earnings.get(&j).copied().unwrap_or_default(),
                "earnings of {}",
                j
            );
            held += earned;
        }
        held += model.free.values().sum::<u128>();
        // Conservation: the escrow holds exactly the free balances, the reserves and the earnings.
        let escrow_tokens = chain
            .token_balance(self.net.deployment.escrow)
            .await
            .map_err(fail)?
            .units();
        prop_assert_eq!(escrow_tokens, held);
        Ok(())
    }
}

#[test]
fn random_escrow_sequences_match_the_model() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    let world = rt.block_on(async {
        let net = Devnet::start_with(DevnetOptions {
            withdrawal_delay: DELAY,
            ..Default::default()
        })
        .await?;
        let actors: Vec<Chain> = ACTORS.iter().map(|&i| net.chain(i)).collect();
        for (actor, &i) in actors.iter().zip(&ACTORS) {
            net.fund(i, Usdc::from_whole(1_000)).await?;
            let token = TestUSDC::new(net.deployment.usdc, actor.provider());
            let pending = token
                .approve(net.deployment.escrow, U256::MAX)
                .send()
                .await?;
            actor.wait_receipt(*pending.tx_hash()).await?;
        }
        for (i, actor) in actors.iter().enumerate() {
            let next = actors[(i + 1) % actors.len()].address()?;
            actor
                .deposit(actor.address()?, Usdc::from_units(DEPOSIT))
                .await?;
            actor
                .reserve(next, Usdc::from_units(PRICE), Usdc::from_units(RESERVE))
                .await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(World { net, actors })
    })?;

    // Modest by default (16 cases of up to 24 operations); `PROPTEST_CASES=500` digs deeper.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&proptest::collection::vec(op(), 12..=24), |ops| {
        rt.block_on(async {
            let fail = |e: ChainError| TestCaseError::fail(e.to_string());
            let snapshot = world.net.snapshot().await.map_err(fail)?;
            let result = world.replay(&ops).await;
            // Every case, passing or not, starts from the same state.
            world.net.revert(snapshot).await.map_err(fail)?;
            result
        })
    })?;
    Ok(())
}
