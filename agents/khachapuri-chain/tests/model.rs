//! Property test: random sequences of deposits, approvals, consumes, credits and withdrawals keep a Rust
//! model of the escrow's accounting equal to the chain's (every outcome, every balance, every allowance).
//! One anvil; each case starts from a snapshot taken after setup.

use std::collections::HashMap;

use alloy::primitives::U256;
use khachapuri_bindings::TestUSDC;
use khachapuri_chain::testing::{Devnet, DevnetOptions};
use khachapuri_chain::{Chain, ChainError, Charge, ContractError, Usdc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const DELAY: u64 = 100;
/// Accounts 1, 2 pay; 3, 4 provide.
const PAYERS: [u32; 2] = [1, 2];
const PROVIDERS: [u32; 2] = [3, 4];
const CENT: u128 = 10_000;
const MILL: u128 = 1_000;

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        payer: usize,
        cents: u128,
    },
    Approve {
        payer: usize,
        provider: usize,
        price: u128,
        budget: u128,
    },
    Consume {
        provider: usize,
        payer: usize,
        price: u128,
        count: u32,
    },
    Grant {
        provider: usize,
        payer: usize,
        cents: u128,
    },
    RequestWithdrawal {
        payer: usize,
        cents: u128,
    },
    CancelWithdrawal {
        payer: usize,
    },
    Withdraw {
        payer: usize,
    },
    WithdrawEarnings {
        provider: usize,
        mills: u128,
    },
    Wait {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..2usize;
    // Mostly valid amounts so that sequences reach deep states; zeros and overdrafts stay possible.
    let count = prop_oneof![9 => 1..4u32, 1 => Just(0u32)];
    let price = prop_oneof![9 => 1..12u128, 1 => Just(0u128), 1 => 12..60u128];
    prop_oneof![
        3 => (who.clone(), 0..300u128).prop_map(|(payer, cents)| Op::Deposit { payer, cents }),
        3 => (who.clone(), who.clone(), 0..40u128, 0..400u128)
            .prop_map(|(payer, provider, price, budget)| Op::Approve { payer, provider, price, budget }),
        5 => (who.clone(), who.clone(), price, count)
            .prop_map(|(provider, payer, price, count)| Op::Consume { provider, payer, price, count }),
        1 => (who.clone(), who.clone(), 0..10u128).prop_map(|(provider, payer, cents)| Op::Grant { provider, payer, cents }),
        2 => (who.clone(), 0..120u128).prop_map(|(payer, cents)| Op::RequestWithdrawal { payer, cents }),
        1 => who.clone().prop_map(|payer| Op::CancelWithdrawal { payer }),
        2 => who.clone().prop_map(|payer| Op::Withdraw { payer }),
        1 => (who, 0..30u128).prop_map(|(provider, mills)| Op::WithdrawEarnings { provider, mills }),
        // DELAY - 2: the next operation lands exactly on a deadline set by the one before the wait.
        2 => prop_oneof![Just(DELAY / 2), Just(DELAY - 2), Just(DELAY + 3)].prop_map(|secs| Op::Wait { secs }),
    ]
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Line {
    price: u128,
    budget: u128,
    credits: u128,
    cut_at: u64,
    cut: (u128, u128),
}

impl Line {
    fn apply_cut(&mut self, now: u64) {
        if self.cut_at != 0 && now >= self.cut_at {
            (self.price, self.budget, self.cut_at) = (self.cut.0, self.cut.1.min(self.budget), 0);
            self.cut = (0, 0);
        }
    }
}

/// The escrow, as the contract's documentation states it.
#[derive(Clone, Debug, Default)]
struct Model {
    balance: HashMap<usize, u128>,
    withdrawal: HashMap<usize, (u128, u64)>,
    lines: HashMap<(usize, usize), Line>,
    earnings: HashMap<usize, u128>,
}

type Outcome = Result<(), &'static str>;

impl Model {
    fn apply(&mut self, op: &Op, now: u64) -> Outcome {
        match *op {
            Op::Deposit { payer, cents } => {
                if cents == 0 {
                    return Err("ZeroAmount");
                }
                *self.balance.entry(payer).or_default() += cents * CENT;
            }
            Op::Approve {
                payer,
                provider,
                price,
                budget,
            } => {
                let line = self.lines.entry((payer, provider)).or_default();
                line.apply_cut(now);
                let (price, budget) = (price * CENT / 10, budget * CENT);
                if price >= line.price && budget >= line.budget {
                    (line.price, line.budget, line.cut_at, line.cut) = (price, budget, 0, (0, 0));
                } else {
                    (line.cut, line.cut_at) = ((price, budget), now + DELAY);
                }
            }
            Op::Consume {
                provider,
                payer,
                price,
                count,
            } => {
                let price = price * CENT / 10;
                if price == 0 || count == 0 {
                    return Err("ZeroAmount");
                }
                let mut line = self
                    .lines
                    .get(&(payer, provider))
                    .copied()
                    .unwrap_or_default();
                line.apply_cut(now);
                let total = price * u128::from(count);
                let from_credits = line.credits.min(total);
                let from_balance = total - from_credits;
                let balance = self.balance.get(&payer).copied().unwrap_or_default();
                if from_balance != 0 {
                    if line.price == 0 && line.budget == 0 {
                        return Err("NotApproved");
                    }
                    if price > line.price {
                        return Err("PriceAboveApproved");
                    }
                    if from_balance > line.budget {
                        return Err("BudgetExceeded");
                    }
                    if from_balance > balance {
                        return Err("InsufficientFunds");
                    }
                    self.balance.insert(payer, balance - from_balance);
                    line.budget -= from_balance;
                    *self.earnings.entry(provider).or_default() += from_balance;
                }
                line.credits -= from_credits;
                self.lines.insert((payer, provider), line);
            }
            Op::Grant {
                provider,
                payer,
                cents,
            } => {
                if cents == 0 {
                    return Err("ZeroAmount");
                }
                self.lines.entry((payer, provider)).or_default().credits += cents * CENT;
            }
            Op::RequestWithdrawal { payer, cents } => {
                if cents == 0 {
                    return Err("ZeroAmount");
                }
                if cents * CENT > self.balance.get(&payer).copied().unwrap_or_default() {
                    return Err("InsufficientBalance");
                }
                self.withdrawal.insert(payer, (cents * CENT, now + DELAY));
            }
            Op::CancelWithdrawal { payer } => {
                if self.withdrawal.remove(&payer).is_none() {
                    return Err("NoWithdrawal");
                }
            }
            Op::Withdraw { payer } => {
                let Some(&(amount, ready_at)) = self.withdrawal.get(&payer) else {
                    return Err("NoWithdrawal");
                };
                if now < ready_at {
                    return Err("WithdrawalNotReady");
                }
                let balance = self.balance.entry(payer).or_default();
                *balance -= amount.min(*balance);
                self.withdrawal.remove(&payer);
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
            Op::Wait { .. } => {}
        }
        Ok(())
    }

    /// `allowance(payer, provider)` at time `now`: (price, budget left, credits).
    fn allowance(&self, payer: usize, provider: usize, now: u64) -> (u128, u128, u128) {
        let l = self
            .lines
            .get(&(payer, provider))
            .copied()
            .unwrap_or_default();
        if l.cut_at != 0 && now >= l.cut_at {
            (l.cut.0, l.cut.1.min(l.budget), l.credits)
        } else {
            (l.price, l.budget, l.credits)
        }
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
    payers: Vec<Chain>,
    providers: Vec<Chain>,
}

impl World {
    async fn run(&self, op: &Op) -> Result<(), ChainError> {
        let amount = |cents: u128| Usdc::from_units(cents * CENT);
        let price = |tenths: u128| Usdc::from_units(tenths * CENT / 10);
        match *op {
            Op::Deposit { payer, cents } => {
                let chain = &self.payers[payer];
                chain.deposit(chain.address()?, amount(cents)).await?;
            }
            Op::Approve {
                payer,
                provider,
                price: p,
                budget,
            } => {
                let to = self.providers[provider].address()?;
                self.payers[payer]
                    .approve(to, price(p), amount(budget))
                    .await?;
            }
            Op::Consume {
                provider,
                payer,
                price: p,
                count,
            } => {
                let payer = self.payers[payer].address()?;
                let chain = &self.providers[provider];
                if count == 1 && p % 2 == 0 {
                    chain.consume(payer, price(p)).await?;
                } else {
                    // `consume_batch` refuses zero prices and counts locally; send them raw to see the revert.
                    let charge = Charge {
                        payer,
                        price: price(p),
                        count,
                    };
                    match chain.consume_batch(&[charge]).await {
                        Err(ChainError::InvalidArgument(_)) => {
                            let escrow = khachapuri_bindings::Escrow::new(
                                chain.deployment().escrow,
                                chain.provider(),
                            );
                            let line = khachapuri_bindings::Escrow::Charge {
                                payer,
                                price: u64::try_from(price(p).units()).unwrap_or_default(),
                                count,
                            };
                            escrow.consumeBatch(vec![line]).call().await?;
                        }
                        other => {
                            other?;
                        }
                    }
                }
            }
            Op::Grant {
                provider,
                payer,
                cents,
            } => {
                let user = self.payers[payer].address()?;
                self.providers[provider]
                    .grant_credits(user, amount(cents))
                    .await?;
            }
            Op::RequestWithdrawal { payer, cents } => {
                self.payers[payer].request_withdrawal(amount(cents)).await?;
            }
            Op::CancelWithdrawal { payer } => {
                self.payers[payer].cancel_withdrawal().await?;
            }
            Op::Withdraw { payer } => {
                let chain = &self.payers[payer];
                chain.withdraw(chain.address()?).await?;
            }
            Op::WithdrawEarnings { provider, mills } => {
                let chain = &self.providers[provider];
                chain
                    .withdraw_earnings(chain.address()?, Usdc::from_units(mills * MILL))
                    .await?;
            }
            Op::Wait { .. } => {}
        }
        Ok(())
    }

    /// Runs `ops` on chain and in the model side by side, comparing outcomes and state.
    async fn replay(&self, ops: &[Op]) -> Result<(), TestCaseError> {
        let fail = |e: ChainError| TestCaseError::fail(e.to_string());
        let mut model = Model::default();
        let mut now = self.payers[0].block_timestamp().await.map_err(fail)?;
        for op in ops {
            now += 1 + if let Op::Wait { secs } = op { *secs } else { 0 };
            self.net.set_next_block_timestamp(now).await.map_err(fail)?;
            let expected = model.apply(op, now);
            let got = self.run(op).await.map_err(|e| error_name(&e));
            prop_assert_eq!(
                got.clone().err(),
                expected.err().map(str::to_owned),
                "{:?} at {}",
                op,
                now
            );
            if got.is_ok() && !matches!(op, Op::Wait { .. }) {
                self.check(&model).await?;
            }
        }
        self.check(&model).await
    }

    async fn check(&self, model: &Model) -> Result<(), TestCaseError> {
        let fail = |e: ChainError| TestCaseError::fail(e.to_string());
        let chain = &self.payers[0];
        let now = chain.block_timestamp().await.map_err(fail)?;
        for (i, payer) in self.payers.iter().enumerate() {
            let p = payer.address().map_err(fail)?;
            let balance = chain.balance(p).await.map_err(fail)?.units();
            prop_assert_eq!(
                balance,
                model.balance.get(&i).copied().unwrap_or_default(),
                "balance of payer {}",
                i
            );
            let w = chain
                .pending_withdrawal(p)
                .await
                .map_err(fail)?
                .map(|w| (w.amount.units(), w.ready_at));
            prop_assert_eq!(
                w,
                model.withdrawal.get(&i).copied(),
                "withdrawal of payer {}",
                i
            );
            for (j, provider) in self.providers.iter().enumerate() {
                let a = chain
                    .allowance(p, provider.address().map_err(fail)?)
                    .await
                    .map_err(fail)?;
                let got = (
                    a.price_per_request.units(),
                    a.budget_left.units(),
                    a.credits.units(),
                );
                prop_assert_eq!(got, model.allowance(i, j, now), "allowance {} -> {}", i, j);
            }
        }
        let mut held = 0;
        for (j, provider) in self.providers.iter().enumerate() {
            let earned = chain
                .earnings(provider.address().map_err(fail)?)
                .await
                .map_err(fail)?
                .units();
            prop_assert_eq!(
                earned,
                model.earnings.get(&j).copied().unwrap_or_default(),
                "earnings of {}",
                j
            );
            held += earned;
        }
        held += model.balance.values().sum::<u128>();
        // Conservation: the escrow holds exactly the balances and the earnings.
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
        let payers: Vec<Chain> = PAYERS.iter().map(|&i| net.chain(i)).collect();
        let providers: Vec<Chain> = PROVIDERS.iter().map(|&i| net.chain(i)).collect();
        for (payer, &i) in payers.iter().zip(&PAYERS) {
            net.fund(i, Usdc::from_whole(1_000)).await?;
            let token = TestUSDC::new(net.deployment.usdc, payer.provider());
            let pending = token
                .approve(net.deployment.escrow, U256::MAX)
                .send()
                .await?;
            payer.wait_receipt(*pending.tx_hash()).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(World {
            net,
            payers,
            providers,
        })
    })?;

    // Modest by default (16 cases of up to 20 operations); `PROPTEST_CASES=500` digs deeper.
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
