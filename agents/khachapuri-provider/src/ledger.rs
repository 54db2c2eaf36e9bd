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

use futures::{FutureExt as _, StreamExt as _, stream::FuturesUnordered};
use khachapuri_chain::{
    Address, B256, Chain, ChainError, Charge, Settlement, SettlementHandle, Settler, Terms, Usdc,
};
use tokio::sync::{mpsc, oneshot};

use crate::wal::{OpenClaim, Record, Wal};

/// Why a claim is refused: the caller must pay (402), or the chain cannot tell (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The payer has no terms with this provider and no credits with it.
    #[error(
        "{payer} has no terms with this provider ({provider}): no price, nothing reserved, and no trial credits left"
    )]
    NotApproved {
        /// The payer.
        payer: Address,
        /// This provider.
        provider: Address,
    },
    /// The price is above what the payer allows per request (or will allow once a pending cut applies).
    #[error("this provider charges {price} per request; {payer} allows at most {max}{}", pending_note(*.cut_at))]
    PriceAboveTerms {
        /// The payer.
        payer: Address,
        /// The most the payer allows, counting a pending cut.
        max: Usdc,
        /// This provider's price.
        price: Usdc,
        /// When the pending cut that sets `max` applies (`None`: `max` is the price in force).
        cut_at: Option<u64>,
    },
    /// The reserve with this provider cannot cover the request.
    #[error("{payer} has {available} reserved for this provider (after unsettled claims{}), {asked} needed", releasing_note(*.releasing))]
    InsufficientReserve {
        /// The payer.
        payer: Address,
        /// What the reserve still covers: less unsettled claims and a pending release.
        available: Usdc,
        /// What this request needs.
        asked: Usdc,
        /// A pending release counted against the reserve, if any.
        releasing: Option<Usdc>,
    },
    /// The token's issuer froze (blacklisted) the payer: the escrow will charge it nothing.
    #[error(
        "{payer} is frozen by the token's issuer (blacklisted): the escrow charges it nothing until the issuer lifts the freeze"
    )]
    Frozen {
        /// The payer.
        payer: Address,
    },
    /// The settlement transaction was refused (sync mode), e.g. the payer's funds moved meanwhile.
    #[error("settlement refused: {0}")]
    Refused(String),
    /// The token refused an x402 payment's transfer (a used nonce, a bad signature, a short balance).
    #[error("the x402 payment did not settle: {0}")]
    X402Refused(String),
    /// The chain could not be read.
    #[error("chain unavailable: {0}")]
    Chain(String),
    /// The claim could not be logged.
    #[error("cannot log the claim: {0}")]
    Log(String),
    /// The claim was logged, and its settlement's outcome is unknown (sync mode): it may be charged.
    #[error("the claim's settlement ended without an outcome: {0}")]
    Unsettled(String),
}

fn pending_note(cut_at: Option<u64>) -> String {
    match cut_at {
        Some(at) => format!(
            " (a price cut the payer scheduled, in force from {})",
            khachapuri_chain::format_time(khachapuri_chain::U256::from(at))
        ),
        None => String::new(),
    }
}

fn releasing_note(releasing: Option<Usdc>) -> String {
    match releasing {
        Some(amount) => format!(" and a pending release of {amount}"),
        None => String::new(),
    }
}

impl ClaimError {
    /// A machine-readable code for the 402 body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotApproved { .. } => "not_approved",
            Self::PriceAboveTerms { .. } => "price_above_terms",
            Self::InsufficientReserve { .. } => "insufficient_reserve",
            Self::Frozen { .. } => "payer_frozen",
            Self::Refused(_) => "settlement_refused",
            Self::X402Refused(_) => "x402_payment_refused",
            Self::Chain(_) => "chain_unavailable",
            Self::Log(_) | Self::Unsettled(_) => "internal",
        }
    }
}

/// The payer's terms with this provider as last read from the chain, as a claim made now can count on them
/// for the whole delay: a pending price cut or release is applied at once (the payer has asked for it),
/// so the delay covers only what was claimed before.
#[derive(Debug, Clone, Copy)]
struct View {
    terms: Terms,
    read_at: Instant,
    /// `landed` when the view was read: claims landed later are not in it yet.
    landed_at_read: u128,
}

/// One payer's books: its claims behind an async lock (held across a chain read, so one payer's claims
/// check against one view at a time), and what settled of them behind a plain one, which the outcomes
/// task takes without waiting for any claim.
#[derive(Debug, Default)]
struct PayerState {
    claims: tokio::sync::Mutex<Payer>,
    settled: Mutex<Settled>,
}

#[derive(Debug, Default)]
struct Payer {
    view: Option<View>,
    /// Every claim made (base units), settled or not.
    claimed: u128,
}

#[derive(Debug, Default)]
struct Settled {
    /// Claims confirmed on chain.
    landed: u128,
    /// The newest block one of them landed in: a view must be read at this block or later, or a lagging
    /// RPC node's terms would leave out charges `landed` counts (and the agent claim them twice).
    landed_block: u64,
    /// Claims that will never settle.
    failed: u128,
    /// A claim failed since the view was read (a freeze, a moved reserve): read it again.
    stale: bool,
}

impl PayerState {
    fn settled(&self) -> std::sync::MutexGuard<'_, Settled> {
        self.settled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `price` can be claimed from `payer` under `terms` when `unsettled` (base units) is already
/// claimed and not on chain: credits first, then the reserve, as the escrow will charge it, counting a
/// pending price cut and release as if in force.
fn check(
    terms: &Terms,
    unsettled: u128,
    payer: Address,
    provider: Address,
    price: Usdc,
) -> Result<(), ClaimError> {
    if terms.frozen {
        // Not even from credits: the escrow charges a frozen payer nothing.
        return Err(ClaimError::Frozen { payer });
    }
    let credits = terms.credits.units();
    let credits_left = credits.saturating_sub(unsettled);
    let reserve_part_unsettled = unsettled.saturating_sub(credits);
    let from_credits = credits_left.min(price.units());
    let from_reserve = price.units() - from_credits;
    if from_reserve == 0 {
        return Ok(());
    }
    if terms.price_per_request == Usdc::ZERO && terms.reserve == Usdc::ZERO {
        return Err(ClaimError::NotApproved { payer, provider });
    }
    let max = terms.claimable_price();
    if price > max {
        let cut_at = terms
            .price_cut
            .filter(|c| c.amount < terms.price_per_request)
            .map(|c| c.at);
        return Err(ClaimError::PriceAboveTerms {
            payer,
            max,
            price,
            cut_at,
        });
    }
    let available = terms
        .claimable_reserve()
        .units()
        .saturating_sub(reserve_part_unsettled);
    if from_reserve > available {
        return Err(ClaimError::InsufficientReserve {
            payer,
            available: Usdc::from_units(available),
            asked: Usdc::from_units(from_reserve),
            releasing: terms.release.map(|r| r.amount.min(terms.reserve)),
        });
    }
    Ok(())
}

/// Settings of the [`Ledger`].
#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// How long a chain read stays good. Safe to cache: only this agent's own charges (which it counts)
    /// lower its reserve at once; whatever the payer does to it waits for the escrow's delay, and nobody
    /// else can touch it. The one exception is the token's issuer freezing the payer: claims made in the
    /// `view_ttl` after a freeze will not settle (the escrow's stated exception to its promise).
    pub view_ttl: Duration,
    /// The oldest block a view may be read at: the chain's head when the claims log was reconciled at
    /// start, which holds every charge that landed before (the books of this run count none of them).
    pub reconciled_block: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            view_ttl: Duration::from_secs(2),
            reconciled_block: 0,
        }
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
    provider: Address,
    config: LedgerConfig,
    books: Arc<Books>,
    next_id: AtomicU64,
    /// Claims whose settlement the outcomes task awaits.
    settling: mpsc::UnboundedSender<Settling>,
}

/// What the ledger and its outcomes task share.
struct Books {
    wal: Arc<Wal>,
    payers: Mutex<HashMap<Address, Arc<PayerState>>>,
    outstanding: AtomicUsize,
    settled_tx: tokio::sync::watch::Sender<usize>,
}

/// A claim queued for settlement, and its settlement.
struct Settling {
    claim: Waiting,
    settlement: SettlementHandle,
}

/// A claim whose outcome is awaited.
struct Waiting {
    id: u64,
    payer: Address,
    price: Usdc,
    /// Told the outcome as well (the `sync` flow waits for it).
    notify: Option<oneshot::Sender<Result<Settlement, ChainError>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("provider", &self.provider)
            .field("outstanding", &self.outstanding())
            .finish()
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
        let books = Arc::new(Books {
            wal,
            payers: Mutex::new(HashMap::new()),
            outstanding: AtomicUsize::new(0),
            settled_tx: tokio::sync::watch::channel(0).0,
        });
        let (settling, queue) = mpsc::unbounded_channel();
        tokio::spawn(books.clone().record_outcomes(queue));
        let ledger = Arc::new(Self {
            chain,
            settler,
            provider,
            config,
            books,
            next_id: AtomicU64::new(next_id),
            settling,
        });
        if !open.is_empty() {
            tracing::info!(
                claims = open.len(),
                "settling claims recovered from the log"
            );
        }
        for claim in open {
            let payer = ledger.books.payer(claim.payer);
            // Not awaited: the payer's lock is free at start-up.
            if let Ok(mut p) = payer.claims.try_lock() {
                p.claimed += claim.price.units();
            }
            ledger.settle(claim.id, claim.payer, claim.price, None);
        }
        Ok(ledger)
    }

    /// Claims `price` from `payer`, or says why not. On success the claim is logged and queued for
    /// settlement: the program may run.
    pub async fn claim(&self, payer: Address, price: Usdc) -> Result<Claimed, ClaimError> {
        self.claim_inner(payer, price, None).await
    }

    /// [`Ledger::claim`], then waits until the charge is on chain (the seed's `sync` flow).
    pub async fn claim_settled(&self, payer: Address, price: Usdc) -> Result<Claimed, ClaimError> {
        let (notify, outcome) = oneshot::channel();
        let claimed = self.claim_inner(payer, price, Some(notify)).await?;
        match outcome.await {
            Ok(Ok(_)) => Ok(claimed),
            Ok(Err(err)) if err.is_unavailable() => Err(ClaimError::Chain(err.to_string())),
            Ok(Err(err)) => Err(ClaimError::Refused(err.to_string())),
            Err(_) => Err(ClaimError::Unsettled(
                "the settlement's outcome was not reported".into(),
            )),
        }
    }

    async fn claim_inner(
        &self,
        payer: Address,
        price: Usdc,
        notify: Option<oneshot::Sender<Result<Settlement, ChainError>>>,
    ) -> Result<Claimed, ClaimError> {
        let state = self.books.payer(payer);
        let mut p = state.claims.lock().await;
        // A view stays exact as claims land: they are counted against `landed_at_read`. Only what others do
        // (deposits, approvals) needs a re-read, and that can only raise the terms.
        // One look at what settled: a failure since the last read drops the view (before any await, so a
        // read that fails or is cancelled leaves none), and a failure after this look only makes the
        // check below more cautious.
        let (landed, landed_block, failed) = {
            let mut settled = state.settled();
            if std::mem::take(&mut settled.stale) {
                p.view = None;
            }
            (settled.landed, settled.landed_block, settled.failed)
        };
        let fresh = p
            .view
            .is_some_and(|v| v.read_at.elapsed() < self.config.view_ttl);
        if !fresh {
            // `landed` as it was before the read: a batch whose outcome arrives during the read counts as
            // unsettled until the next one (too cautious for a moment, never too generous).
            p.view = Some(self.read_view(payer, landed, landed_block).await?);
        }
        let view = p.view.unwrap_or_else(|| unreachable!("view was just read"));

        // What the chain does not know yet: claims made but not landed when the view was read.
        let unsettled = p
            .claimed
            .saturating_sub(failed)
            .saturating_sub(view.landed_at_read);
        check(&view.terms, unsettled, payer, self.provider, price)?;

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.books
            .wal
            .append(&Record::Claim {
                id,
                payer,
                price: price.units(),
            })
            .map_err(|e| ClaimError::Log(e.to_string()))?;
        p.claimed += price.units();
        drop(p);
        self.settle(id, payer, price, notify);
        Ok(Claimed { id, payer, price })
    }

    /// Takes an x402 payment: logs it, then settles its transfer with the token before the program runs
    /// (an authorization is redeemable only on chain, so the program never runs unpaid and nothing is left
    /// to settle after a crash). `price` is what it moves.
    pub async fn pay_x402(
        &self,
        payment: &khachapuri_protocol::x402::PaymentPayload,
        price: Usdc,
    ) -> Result<(Claimed, Settlement), ClaimError> {
        let payer = payment.payload.authorization.from;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.books
            .wal
            .append(&Record::X402 {
                id,
                payer,
                price: price.units(),
                nonce: payment.payload.authorization.nonce,
            })
            .map_err(|e| ClaimError::Log(e.to_string()))?;
        let settled = self
            .settler
            .submit_transfer(
                payment.payload.authorization.clone(),
                payment.payload.signature.clone(),
            )
            .await;
        match settled {
            Ok(settlement) => Ok((Claimed { id, payer, price }, settlement)),
            Err(err) if err.is_unavailable() => Err(ClaimError::Chain(err.to_string())),
            Err(err) => Err(ClaimError::X402Refused(err.to_string())),
        }
    }

    /// Claims logged and not yet settled or failed.
    pub fn outstanding(&self) -> usize {
        self.books.outstanding.load(Ordering::Acquire)
    }

    /// Waits until every claim made so far is settled or failed (graceful shutdown).
    pub async fn drain(&self) {
        let mut rx = self.books.settled_tx.subscribe();
        while self.outstanding() > 0 {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn read_view(
        &self,
        payer: Address,
        landed: u128,
        landed_block: u64,
    ) -> Result<View, ClaimError> {
        let terms = self
            .chain
            .terms_since(
                payer,
                self.provider,
                landed_block.max(self.config.reconciled_block),
            )
            .await
            .map_err(|e| ClaimError::Chain(e.to_string()))?;
        Ok(View {
            terms,
            read_at: Instant::now(),
            landed_at_read: landed,
        })
    }

    /// Queues the claim for settlement; the outcomes task records how it ends.
    fn settle(
        &self,
        id: u64,
        payer: Address,
        price: Usdc,
        notify: Option<oneshot::Sender<Result<Settlement, ChainError>>>,
    ) {
        self.books.outstanding.fetch_add(1, Ordering::AcqRel);
        let settlement = self.settler.submit(Charge::one(payer, price));
        let settling = Settling {
            claim: Waiting {
                id,
                payer,
                price,
                notify,
            },
            settlement,
        };
        if self.settling.send(settling).is_err() {
            // Only while the runtime shuts down: the log keeps the claim, and the next start settles it.
            tracing::warn!(
                id,
                "the outcomes task stopped; the claim stays open in the log"
            );
            let left = self.books.outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
            self.books.settled_tx.send_replace(left);
        }
    }
}

impl Books {
    fn payer(&self, payer: Address) -> Arc<PayerState> {
        let mut payers = self.payers.lock().unwrap_or_else(|e| e.into_inner());
        payers.entry(payer).or_default().clone()
    }

    /// One task for every claim's outcome: those that end together (a batch lands) update the payers'
    /// books and go to the log in one write, a line per transaction and per reason of failure.
    async fn record_outcomes(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Settling>) {
        let mut waiting = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                next = queue.recv(), if open => match next {
                    Some(Settling { claim, settlement }) => {
                        waiting.push(settlement.map(move |outcome| (claim, outcome)));
                    }
                    None => open = false,
                },
                Some(first) = waiting.next(), if !waiting.is_empty() => {
                    let mut ended = vec![first];
                    while let Some(Some(more)) = waiting.next().now_or_never() {
                        ended.push(more);
                    }
                    self.record(ended);
                }
                else => return,
            }
        }
    }

    fn record(&self, ended: Vec<(Waiting, Result<Settlement, ChainError>)>) {
        let mut landed: Vec<(B256, Vec<u64>)> = Vec::new();
        let mut failed: Vec<(String, Vec<u64>)> = Vec::new();
        let mut told = Vec::new();
        let count = ended.len();
        for (claim, outcome) in ended {
            let state = self.payer(claim.payer);
            let mut p = state.settled();
            match &outcome {
                Ok(s) => {
                    p.landed += claim.price.units();
                    p.landed_block = p.landed_block.max(s.receipt.block_number);
                    match landed.iter_mut().find(|(tx, _)| *tx == s.receipt.tx_hash) {
                        Some((_, ids)) => ids.push(claim.id),
                        None => landed.push((s.receipt.tx_hash, vec![claim.id])),
                    }
                }
                Err(err) => {
                    let (id, payer, price) = (claim.id, claim.payer, claim.price);
                    tracing::warn!(id, %payer, %price, %err, "claim could not be settled");
                    p.failed += claim.price.units();
                    p.stale = true;
                    let reason = err.to_string();
                    match failed.iter_mut().find(|(r, _)| *r == reason) {
                        Some((_, ids)) => ids.push(claim.id),
                        None => failed.push((reason, vec![claim.id])),
                    }
                }
            }
            drop(p);
            if let Some(notify) = claim.notify {
                told.push((notify, outcome));
            }
        }
        let records: Vec<Record> = landed
            .into_iter()
            .map(|(tx, ids)| Record::Landed { ids, tx })
            .chain(
                failed
                    .into_iter()
                    .map(|(reason, ids)| Record::Failed { ids, reason }),
            )
            .collect();
        if let Err(err) = self.wal.append_all(&records) {
            tracing::error!(%err, "cannot log settlement outcomes");
        }
        // Told once logged, as a claim is acknowledged once logged.
        for (notify, outcome) in told {
            let _ = notify.send(outcome);
        }
        let left = self.outstanding.fetch_sub(count, Ordering::AcqRel) - count;
        self.settled_tx.send_replace(left);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use khachapuri_chain::Scheduled;

    use super::*;

    const PAYER: Address = Address::repeat_byte(1);
    const PROVIDER: Address = Address::repeat_byte(2);

    fn usdc(units: u128) -> Usdc {
        Usdc::from_units(units)
    }

    fn terms(price: u128, reserve: u128, credits: u128) -> Terms {
        Terms {
            price_per_request: usdc(price),
            reserve: usdc(reserve),
            credits: usdc(credits),
            ..Terms::default()
        }
    }

    #[test]
    fn a_frozen_payer_is_refused_even_with_credits_and_reserve() {
        let t = Terms {
            frozen: true,
            ..terms(10, 25, 15)
        };
        assert_eq!(
            check(&t, 0, PAYER, PROVIDER, usdc(10)),
            Err(ClaimError::Frozen { payer: PAYER })
        );
    }

    #[test]
    fn credits_first_then_the_reserve_less_unsettled_claims() {
        let t = terms(10, 25, 15);
        assert_eq!(check(&t, 0, PAYER, PROVIDER, usdc(10)), Ok(()));
        // 15 of credits and 25 of reserve: 40 in all; 30 unsettled leaves 10.
        assert_eq!(check(&t, 30, PAYER, PROVIDER, usdc(10)), Ok(()));
        assert_eq!(
            check(&t, 31, PAYER, PROVIDER, usdc(10)),
            Err(ClaimError::InsufficientReserve {
                payer: PAYER,
                available: usdc(9),
                asked: usdc(10),
                releasing: None
            })
        );
        // Credits alone need no terms.
        assert_eq!(
            check(&terms(0, 0, 10), 0, PAYER, PROVIDER, usdc(10)),
            Ok(())
        );
        assert_eq!(
            check(&terms(0, 0, 10), 10, PAYER, PROVIDER, usdc(10)),
            Err(ClaimError::NotApproved {
                payer: PAYER,
                provider: PROVIDER
            })
        );
    }

    #[test]
    fn a_pending_release_or_price_cut_counts_as_if_in_force() {
        let mut t = terms(10, 30, 0);
        t.release = Some(Scheduled {
            amount: usdc(25),
            at: 1_000,
        });
        assert_eq!(check(&t, 0, PAYER, PROVIDER, usdc(5)), Ok(()));
        assert_eq!(
            check(&t, 0, PAYER, PROVIDER, usdc(10)),
            Err(ClaimError::InsufficientReserve {
                payer: PAYER,
                available: usdc(5),
                asked: usdc(10),
                releasing: Some(usdc(25))
            })
        );
        // A release of "everything" is told as what it takes: the whole reserve.
        t.release = Some(Scheduled {
            amount: Usdc::MAX,
            at: 1_000,
        });
        let err = check(&t, 0, PAYER, PROVIDER, usdc(1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("a pending release of 0.00003 USDC"),
            "{err}"
        );

        let mut t = terms(10, 30, 0);
        t.price_cut = Some(Scheduled {
            amount: usdc(4),
            at: 1_700_000_000,
        });
        assert_eq!(
            check(&t, 0, PAYER, PROVIDER, usdc(5)),
            Err(ClaimError::PriceAboveTerms {
                payer: PAYER,
                max: usdc(4),
                price: usdc(5),
                cut_at: Some(1_700_000_000)
            })
        );
        assert!(
            check(&t, 0, PAYER, PROVIDER, usdc(5))
                .unwrap_err()
                .to_string()
                .contains("2023-11-14")
        );
        assert_eq!(check(&t, 0, PAYER, PROVIDER, usdc(4)), Ok(()));
    }
}
