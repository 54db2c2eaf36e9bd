//! Claims before runs: what a payer can still be charged, from the chain's terms minus what this agent
//! claimed and has not seen settled yet; each claim logged durably, then handed to the settlement sender.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use khachapuri_chain::{Address, Chain, ChainError, Charge, Settlement, Settler, Usdc};

use crate::wal::{OpenClaim, Record, Wal};

/// Why a claim is refused: the caller must pay (402), or the chain cannot tell (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The payer never approved this provider and has no credits with it.
    #[error("{payer} has not approved this provider ({provider}) and has no trial credits with it")]
    NotApproved {
        /// The payer.
        payer: Address,
        /// This provider.
        provider: Address,
    },
    /// The price is above what the payer approved per request.
    #[error("this provider charges {price} per request; {payer} approved at most {approved}")]
    PriceAboveApproved {
        /// The payer.
        payer: Address,
        /// The approved price.
        approved: Usdc,
        /// This provider's price.
        price: Usdc,
    },
    /// The budget is spent.
    #[error("budget exhausted: {left} left of {payer}'s approval, {asked} asked")]
    BudgetExhausted {
        /// The payer.
        payer: Address,
        /// What is left (after unsettled claims).
        left: Usdc,
        /// What this request needs.
        asked: Usdc,
    },
    /// The escrow balance is too low.
    #[error("insufficient balance: {payer} has {available} in the escrow (after unsettled claims), {asked} asked")]
    InsufficientBalance {
        /// The payer.
        payer: Address,
        /// What is available.
        available: Usdc,
        /// What this request needs.
        asked: Usdc,
    },
    /// The settlement transaction was refused (sync mode), e.g. the payer's funds moved meanwhile.
    #[error("settlement refused: {0}")]
    Refused(String),
    /// The chain could not be read.
    #[error("chain unavailable: {0}")]
    Chain(String),
    /// The claim could not be logged.
    #[error("cannot log the claim: {0}")]
    Log(String),
}

impl ClaimError {
    /// A machine-readable code for the 402 body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotApproved { .. } => "not_approved",
            Self::PriceAboveApproved { .. } => "price_above_approved",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::Refused(_) => "settlement_refused",
            Self::Chain(_) => "chain_unavailable",
            Self::Log(_) => "internal",
        }
    }
}

/// The payer's terms as last read from the chain. A pending withdrawal or approval cut is applied at once
/// (the payer has asked to leave: new claims are made as if it had), so the delay covers only what was
/// claimed before.
#[derive(Debug, Clone, Copy)]
struct View {
    price: Usdc,
    budget: Usdc,
    credits: Usdc,
    balance: Usdc,
    read_at: Instant,
    /// `landed` when the view was read: claims landed later are not in it yet.
    landed_at_read: u128,
}

#[derive(Debug, Default)]
struct Payer {
    view: Option<View>,
    /// Every claim made (base units), settled or not.
    claimed: u128,
    /// Claims confirmed on chain.
    landed: u128,
    /// Claims that will never settle.
    failed: u128,
}

/// Settings of the [`Ledger`].
#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// How long a chain read stays good. Safe to cache: only this agent's own claims (which it counts)
    /// lower the terms at once; anything the payer does is delayed by the escrow.
    pub view_ttl: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { view_ttl: Duration::from_secs(2) }
    }
}

/// A claim made: its sequence number, for the receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// Sequence number.
    pub id: u64,
    /// Who pays.
    pub payer: Address,
    /// The price.
    pub price: Usdc,
}

/// The claims of this agent.
pub struct Ledger {
    chain: Chain,
    settler: Settler,
    wal: Arc<Wal>,
    provider: Address,
    config: LedgerConfig,
    payers: Mutex<HashMap<Address, Arc<tokio::sync::Mutex<Payer>>>>,
    next_id: AtomicU64,
    outstanding: Arc<AtomicUsize>,
    settled_tx: tokio::sync::watch::Sender<usize>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("provider", &self.provider).field("outstanding", &self.outstanding()).finish()
    }
}

impl Ledger {
    /// Builds the ledger over an opened log; `open` (from [`Wal::open`]) are claims to settle again.
    pub fn new(
        chain: Chain,
        settler: Settler,
        wal: Arc<Wal>,
        next_id: u64,
        open: Vec<OpenClaim>,
        config: LedgerConfig,
    ) -> Result<Arc<Self>, ChainError> {
        let provider = chain.address()?;
        let (settled_tx, _) = tokio::sync::watch::channel(0);
        let ledger = Arc::new(Self {
            chain,
            settler,
            wal,
            provider,
            config,
            payers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(next_id),
            outstanding: Arc::new(AtomicUsize::new(0)),
            settled_tx,
        });
        if !open.is_empty() {
            tracing::info!(claims = open.len(), "settling claims recovered from the log");
        }
        for claim in open {
            let payer = ledger.payer(claim.payer);
            // Not awaited: the payer's lock is free at start-up.
            if let Ok(mut p) = payer.try_lock() {
                p.claimed += claim.price.units();
            }
            drop(ledger.settle(claim.id, claim.payer, claim.price));
        }
        Ok(ledger)
    }

    /// Claims `price` from `payer`, or says why not. On success the claim is logged and queued for
    /// settlement: the program may run.
    pub async fn claim(&self, payer: Address, price: Usdc) -> Result<Claimed, ClaimError> {
        self.claim_inner(payer, price).await.map(|(claimed, _)| claimed)
    }

    /// [`Ledger::claim`], then waits until the charge is on chain (the seed's `sync` flow).
    pub async fn claim_settled(&self, payer: Address, price: Usdc) -> Result<Claimed, ClaimError> {
        let (claimed, settlement) = self.claim_inner(payer, price).await?;
        match settlement.await {
            Ok(Ok(_)) => Ok(claimed),
            Ok(Err(err)) if err.is_unavailable() => Err(ClaimError::Chain(err.to_string())),
            Ok(Err(err)) => Err(ClaimError::Refused(err.to_string())),
            Err(join) => Err(ClaimError::Log(join.to_string())),
        }
    }

    async fn claim_inner(
        &self,
        payer: Address,
        price: Usdc,
    ) -> Result<(Claimed, tokio::task::JoinHandle<Result<Settlement, ChainError>>), ClaimError> {
        let state = self.payer(payer);
        let mut p = state.lock().await;
        // A view stays exact as claims land: they are counted against `landed_at_read`. Only what others do
        // (deposits, approvals) needs a re-read, and that can only raise the terms.
        let fresh = p.view.is_some_and(|v| v.read_at.elapsed() < self.config.view_ttl);
        if !fresh {
            p.view = Some(self.read_view(payer, p.landed).await?);
        }
        let view = p.view.unwrap_or_else(|| unreachable!("view was just read"));

        // What the chain does not know yet: claims made but not landed when the view was read.
        let unsettled = p.claimed.saturating_sub(p.failed).saturating_sub(view.landed_at_read);
        let credits_left = view.credits.units().saturating_sub(unsettled);
        let balance_part_unsettled = unsettled.saturating_sub(view.credits.units());
        let from_credits = credits_left.min(price.units());
        let from_balance = price.units() - from_credits;
        if from_balance > 0 {
            if view.price.units() == 0 && view.budget.units() == 0 {
                return Err(ClaimError::NotApproved { payer, provider: self.provider });
            }
            if price > view.price {
                return Err(ClaimError::PriceAboveApproved { payer, approved: view.price, price });
            }
            let budget_left = view.budget.units().saturating_sub(balance_part_unsettled);
            if from_balance > budget_left {
                return Err(ClaimError::BudgetExhausted {
                    payer,
                    left: Usdc::from_units(budget_left),
                    asked: Usdc::from_units(from_balance),
                });
            }
            let available = view.balance.units().saturating_sub(balance_part_unsettled);
            if from_balance > available {
                return Err(ClaimError::InsufficientBalance {
                    payer,
                    available: Usdc::from_units(available),
                    asked: Usdc::from_units(from_balance),
                });
            }
        }

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.wal
            .append(&Record::Claim { id, payer, price: price.units() })
            .map_err(|e| ClaimError::Log(e.to_string()))?;
        p.claimed += price.units();
        drop(p);
        let settlement = self.settle(id, payer, price);
        Ok((Claimed { id, payer, price }, settlement))
    }

    /// Claims logged and not yet settled or failed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Waits until every claim made so far is settled or failed (graceful shutdown).
    pub async fn drain(&self) {
        let mut rx = self.settled_tx.subscribe();
        while self.outstanding() > 0 {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn payer(&self, payer: Address) -> Arc<tokio::sync::Mutex<Payer>> {
        let mut payers = self.payers.lock().unwrap_or_else(|e| e.into_inner());
        payers.entry(payer).or_default().clone()
    }

    async fn read_view(&self, payer: Address, landed: u128) -> Result<View, ClaimError> {
        let chain_err = |e: ChainError| ClaimError::Chain(e.to_string());
        let (allowance, balance, withdrawal, cut) = tokio::try_join!(
            self.chain.allowance(payer, self.provider),
            self.chain.balance(payer),
            self.chain.pending_withdrawal(payer),
            self.chain.pending_cut(payer, self.provider),
        )
        .map_err(chain_err)?;
        let mut view = View {
            price: allowance.price_per_request,
            budget: allowance.budget_left,
            credits: allowance.credits,
            balance,
            read_at: Instant::now(),
            landed_at_read: landed,
        };
        if let Some(w) = withdrawal {
            view.balance = Usdc::from_units(view.balance.units().saturating_sub(w.amount.units()));
        }
        if let Some(c) = cut {
            view.price = view.price.min(c.price_per_request);
            view.budget = view.budget.min(c.budget);
        }
        Ok(view)
    }

    /// Queues the claim for settlement and records its outcome when known.
    fn settle(&self, id: u64, payer: Address, price: Usdc) -> tokio::task::JoinHandle<Result<Settlement, ChainError>> {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let handle = self.settler.submit(Charge::one(payer, price));
        let state = self.payer(payer);
        let wal = self.wal.clone();
        let outstanding = self.outstanding.clone();
        let settled_tx = self.settled_tx.clone();
        tokio::spawn(async move {
            let outcome = handle.await;
            let mut p = state.lock().await;
            let record = match &outcome {
                Ok(s) => {
                    p.landed += price.units();
                    Record::Landed { ids: vec![id], tx: s.receipt.tx_hash }
                }
                Err(err) => {
                    tracing::warn!(id, %payer, %price, %err, "claim could not be settled");
                    p.failed += price.units();
                    p.view = None;
                    Record::Failed { ids: vec![id], reason: err.to_string() }
                }
            };
            drop(p);
            if let Err(err) = wal.append(&record) {
                tracing::error!(id, %err, "cannot log a settlement outcome");
            }
            let left = outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
            settled_tx.send_replace(left);
            outcome
        })
    }
}
