//! The settlement sender: one task owns the signer's nonce and settles queued charges in `consumeBatch`
//! transactions.
//!
//! - Charges queued while a batch is in flight form the next batch (at most `max_batch` charges; charges of
//!   one payer at one price share a line).
//! - Each batch is simulated (`eth_estimateGas`) first. The escrow settles every line that fits and
//!   reports each one that does not in a `ChargeRefused` event: those lines fail with the decoded reason,
//!   the rest settle. (A revert of the whole batch that names a payer still fails that payer's charges and
//!   sends the rest.)
//! - A batch is signed once, with the nonce the task owns. Re-broadcasting the same signed bytes cannot
//!   charge twice (one nonce, one hash). Before any re-signing (new nonce) the task checks that the old
//!   transaction has not landed: so a batch never lands twice.
//! - While nothing is signed, an unreachable RPC is retried `max_attempts` times, then the charges fail
//!   with [`ChainError::Unavailable`] (nothing was charged). Once a batch is signed and broadcast, its
//!   outcome is awaited (re-broadcasting, polling) until known, however long the RPC is down.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::consensus::TxEnvelope;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use khachapuri_bindings::Escrow;
use tokio::sync::{mpsc, oneshot};

use crate::{Chain, ChainError, Charge, Receipt};

/// Settings of a [`Settler`].
#[derive(Clone, Debug)]
pub struct SettlerConfig {
    /// The most charges settled by one transaction.
    pub max_batch: usize,
    /// How long to wait after the first charge of a batch for more to queue (0: send what is queued).
    pub linger: Duration,
    /// Attempts for a batch while nothing of it is on chain (simulation, nonce, rejected sends).
    pub max_attempts: u32,
    /// First delay between attempts (doubles, up to 5 s).
    pub retry_delay: Duration,
}

impl Default for SettlerConfig {
    fn default() -> Self {
        Self {
            max_batch: 200,
            linger: Duration::ZERO,
            max_attempts: 5,
            retry_delay: Duration::from_millis(200),
        }
    }
}

/// A charge that landed on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The batch it was settled in (counts from 1 in this sender).
    pub batch_id: u64,
    /// The batch transaction.
    pub receipt: Receipt,
}

struct Job {
    charge: Charge,
    reply: oneshot::Sender<Result<Settlement, ChainError>>,
}

/// An x402 payment to settle with the token's `transferWithAuthorization`, in a transaction of its own.
struct Transfer {
    authorization: khachapuri_protocol::x402::Authorization,
    signature: alloy::primitives::Bytes,
    reply: oneshot::Sender<Result<Settlement, ChainError>>,
}

/// What the task is asked to send.
enum Work {
    Charge(Job),
    Transfer(Transfer),
}

/// The pending result of a submitted charge.
#[derive(Debug)]
pub struct SettlementHandle(oneshot::Receiver<Result<Settlement, ChainError>>);

impl Future for SettlementHandle {
    type Output = Result<Settlement, ChainError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(ChainError::Unavailable {
                    message: "the settlement sender stopped".into(),
                })
            })
        })
    }
}

/// Handle to the settlement task; cheap to clone. The task ends when every clone is dropped and the queue
/// is drained.
#[derive(Clone, Debug)]
pub struct Settler {
    queue: mpsc::UnboundedSender<Work>,
}

impl Settler {
    /// Starts the task on the current tokio runtime; `chain` must have a signer (the provider).
    pub fn spawn(chain: Chain, config: SettlerConfig) -> Result<Self, ChainError> {
        chain.address()?;
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            Task {
                chain,
                config,
                nonce: None,
                batches: 0,
            }
            .run(rx),
        );
        Ok(Self { queue })
    }

    /// Queues a charge; the handle resolves when its batch is on chain, or with why it was not charged.
    pub fn submit(&self, charge: Charge) -> SettlementHandle {
        let (reply, rx) = oneshot::channel();
        let job = Job { charge, reply };
        if let Err(mpsc::error::SendError(Work::Charge(job))) = self.queue.send(Work::Charge(job)) {
            let _ = job.reply.send(Err(ChainError::Unavailable {
                message: "the settlement sender stopped".into(),
            }));
        }
        SettlementHandle(rx)
    }

    /// Queues an x402 payment (an EIP-3009 authorization and its signature) to be settled with the
    /// token's `transferWithAuthorization`; the handle resolves when it is on chain, or with why it never
    /// will be (a used nonce, a bad signature, a short balance: the token's reason, decoded). It goes in a
    /// transaction of its own, sent by the same task as the batches (one nonce sequence).
    pub fn submit_transfer(
        &self,
        authorization: khachapuri_protocol::x402::Authorization,
        signature: alloy::primitives::Bytes,
    ) -> SettlementHandle {
        let (reply, rx) = oneshot::channel();
        let work = Work::Transfer(Transfer {
            authorization,
            signature,
            reply,
        });
        if let Err(mpsc::error::SendError(Work::Transfer(t))) = self.queue.send(work) {
            let _ = t.reply.send(Err(ChainError::Unavailable {
                message: "the settlement sender stopped".into(),
            }));
        }
        SettlementHandle(rx)
    }

    /// Queues several charges at once (they go in the same batch when they fit).
    pub fn submit_all(&self, charges: impl IntoIterator<Item = Charge>) -> Vec<SettlementHandle> {
        charges.into_iter().map(|c| self.submit(c)).collect()
    }

    /// Queues a charge and waits for it.
    pub async fn settle(&self, charge: Charge) -> Result<Settlement, ChainError> {
        self.submit(charge).await
    }
}

/// Jobs that share one line of the batch (same payer and price).
struct Line {
    charge: Charge,
    jobs: Vec<Job>,
}

impl Line {
    fn fail(self, err: &ChainError) {
        for job in self.jobs {
            let _ = job.reply.send(Err(err.clone()));
        }
    }
}

/// What became of a signed transaction.
enum Outcome {
    Mined(Box<alloy::rpc::types::TransactionReceipt>),
    /// The node refused it and it is not on chain: sign again with a fresh nonce.
    Refused(ChainError),
}

struct Task {
    chain: Chain,
    config: SettlerConfig,
    /// The next nonce to use; `None`: read the pending nonce from the chain.
    nonce: Option<u64>,
    batches: u64,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Work>) {
        while let Some(first) = rx.recv().await {
            // A payer waits on an x402 transfer before its program runs: no linger for those.
            if matches!(first, Work::Charge(_)) && !self.config.linger.is_zero() {
                tokio::time::sleep(self.config.linger).await;
            }
            let (mut jobs, mut transfers) = (Vec::new(), Vec::new());
            let mut next = Some(first);
            while let Some(work) = next.take() {
                match work {
                    Work::Charge(job) => jobs.push(job),
                    Work::Transfer(transfer) => transfers.push(transfer),
                }
                if jobs.len() < self.config.max_batch.max(1) {
                    next = rx.try_recv().ok();
                }
            }
            for transfer in transfers {
                self.batches += 1;
                self.transfer(transfer).await;
            }
            if !jobs.is_empty() {
                self.batches += 1;
                self.settle(jobs).await;
            }
        }
    }

    /// Settles one x402 payment, answering its job. A refusal by the token (found by the simulation) fails
    /// it at once; an unreachable RPC is retried like a batch.
    async fn transfer(&mut self, transfer: Transfer) {
        let id = self.batches;
        let mut attempt = 0;
        loop {
            // Nobody waits for it any more (the caller went away, so its program will not run), or it
            // would expire on the way: sending it would take the payer's money for nothing.
            if transfer.reply.is_closed() {
                tracing::info!(payer = %transfer.authorization.from, "x402 payment abandoned by its caller: not sent");
                return;
            }
            let now = alloy::primitives::U256::from(khachapuri_protocol::unix_now() + 2);
            if transfer.authorization.valid_before <= now {
                let _ = transfer.reply.send(Err(ChainError::InvalidArgument(
                    "the x402 authorization expired before it could be sent".into(),
                )));
                return;
            }
            let result = async {
                let me = self.chain.address()?;
                let token = self.chain.token();
                let call = crate::escrow::transfer_with_authorization_call(
                    &token,
                    &transfer.authorization,
                    &transfer.signature,
                )
                .from(me);
                let gas = call.estimate_gas().await?;
                self.send_call(call.into_transaction_request(), gas).await
            }
            .await;
            match result {
                Ok(receipt) => {
                    let settlement = Settlement {
                        batch_id: id,
                        receipt: Receipt::from(&receipt),
                    };
                    let _ = transfer.reply.send(Ok(settlement));
                    return;
                }
                Err(err) => {
                    attempt += 1;
                    let retry =
                        matches!(err, ChainError::Unavailable { .. } | ChainError::Rpc { .. });
                    if !retry || attempt >= self.config.max_attempts {
                        tracing::info!(payer = %transfer.authorization.from, %err, "x402 settlement failed");
                        let _ = transfer.reply.send(Err(err));
                        return;
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        (self.config.retry_delay * 2u32.saturating_pow(attempt.min(8))).min(Duration::from_secs(5))
    }

    /// Settles one batch, answering every job.
    async fn settle(&mut self, jobs: Vec<Job>) {
        let mut lines = merge(jobs);
        let id = self.batches;
        let mut attempt = 0;
        while !lines.is_empty() {
            match self.attempt(&lines).await {
                Ok(receipt) => {
                    let settlement = Settlement {
                        batch_id: id,
                        receipt: Receipt::from(&receipt),
                    };
                    let refused = self.refused_lines(&receipt);
                    for (index, line) in lines.into_iter().enumerate() {
                        match refused.iter().find(|(i, _)| *i == index) {
                            Some((_, err)) => {
                                tracing::info!(batch = id, payer = %line.charge.payer, %err, "the escrow refused a charge");
                                line.fail(err);
                            }
                            None => {
                                for job in line.jobs {
                                    let _ = job.reply.send(Ok(settlement));
                                }
                            }
                        }
                    }
                    return;
                }
                Err(err) => {
                    if let Some(payer) = err
                        .payer()
                        .filter(|p| lines.iter().any(|l| l.charge.payer == *p))
                    {
                        tracing::info!(batch = id, %payer, %err, "dropping a refused payer from the batch");
                        let (failed, rest): (Vec<Line>, Vec<Line>) =
                            lines.into_iter().partition(|l| l.charge.payer == payer);
                        failed.into_iter().for_each(|l| l.fail(&err));
                        lines = rest;
                        continue;
                    }
                    attempt += 1;
                    let retry =
                        matches!(err, ChainError::Unavailable { .. } | ChainError::Rpc { .. })
                            || matches!(err, ChainError::Reverted { error: None, .. });
                    if !retry || attempt >= self.config.max_attempts {
                        tracing::warn!(batch = id, %err, "settlement failed");
                        lines.into_iter().for_each(|l| l.fail(&err));
                        return;
                    }
                    tracing::debug!(batch = id, attempt, %err, "retrying settlement");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
            }
        }
    }

    /// One try: simulate, sign with the owned nonce, broadcast, await the outcome.
    async fn attempt(
        &mut self,
        lines: &[Line],
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let me = self.chain.address()?;
        let charges = lines
            .iter()
            .map(|l| l.charge.to_binding())
            .collect::<Result<Vec<_>, _>>()?;
        let escrow = Escrow::new(self.chain.deployment().escrow, self.chain.provider());
        let call = escrow.consumeBatch(charges).from(me);
        let gas = call.estimate_gas().await?;
        self.send_call(call.into_transaction_request(), gas).await
    }

    /// Signs `request` with the owned nonce and fresh fees (gas limit: `gas` and a fifth), broadcasts it
    /// and awaits its outcome: a receipt of success, or an error (a revert on chain, or a refusal that
    /// means it never lands).
    async fn send_call(
        &mut self,
        request: alloy::rpc::types::TransactionRequest,
        gas: u64,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let me = self.chain.address()?;
        let nonce = match self.nonce {
            Some(n) => n,
            None => {
                self.chain
                    .provider()
                    .get_transaction_count(me)
                    .pending()
                    .await?
            }
        };
        let fees = self.chain.provider().estimate_eip1559_fees().await?;
        let request = request
            .with_nonce(nonce)
            .with_gas_limit(gas + gas / 5)
            .with_chain_id(self.chain.deployment().chain_id)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let wallet = EthereumWallet::from(self.chain.signer_required()?.clone());
        let envelope = request
            .build(&wallet)
            .await
            .map_err(|e| ChainError::Signer(e.to_string()))?;
        match self.deliver(me, nonce, envelope).await {
            Outcome::Mined(receipt) => {
                self.nonce = Some(nonce + 1);
                if receipt.status() {
                    Ok(*receipt)
                } else {
                    Err(ChainError::Reverted {
                        reason: format!(
                            "transaction {} reverted on chain",
                            receipt.transaction_hash
                        ),
                        error: None,
                    })
                }
            }
            Outcome::Refused(err) => {
                self.nonce = None;
                Err(err)
            }
        }
    }

    /// The lines of a mined batch the escrow refused (`ChargeRefused` events of this escrow and this
    /// provider), by index, with the decoded reason.
    fn refused_lines(
        &self,
        receipt: &alloy::rpc::types::TransactionReceipt,
    ) -> Vec<(usize, ChainError)> {
        let escrow = self.chain.deployment().escrow;
        let me = self.chain.address().ok();
        receipt
            .inner
            .logs()
            .iter()
            .filter(|log| log.address() == escrow)
            .filter_map(|log| log.log_decode::<Escrow::ChargeRefused>().ok())
            .filter(|log| Some(log.inner.data.provider) == me)
            .map(|log| {
                let event = log.inner.data;
                let index = usize::try_from(event.index).unwrap_or(usize::MAX);
                (index, ChainError::from_revert_data(&event.reason))
            })
            .collect()
    }

    /// Broadcasts a signed transaction until its outcome is known: mined, or refused and never to land.
    async fn deliver(&self, me: Address, nonce: u64, envelope: TxEnvelope) -> Outcome {
        let hash: B256 = *envelope.tx_hash();
        let provider = self.chain.provider();
        let mut attempt = 0;
        loop {
            match provider
                .send_tx_envelope(envelope.clone())
                .await
                .map_err(ChainError::from)
            {
                Ok(_) => {}
                Err(ChainError::Rpc { message })
                    if message.contains("already known")
                        || message.contains("already imported") => {}
                Err(err @ (ChainError::Rpc { .. } | ChainError::Reverted { .. })) => {
                    // Refused. It may still be on chain from an earlier broadcast of the same bytes.
                    match provider.get_transaction_receipt(hash).await {
                        Ok(Some(receipt)) => return Outcome::Mined(Box::new(receipt)),
                        Ok(None) => return Outcome::Refused(err),
                        Err(_) => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(%hash, %err, "broadcast outcome unknown; retrying the same transaction")
                }
            }
            // Accepted (or unknown): poll for the receipt; if the nonce moved on without it, it never lands.
            match self.chain.wait_receipt(hash).await {
                Ok(receipt) => return Outcome::Mined(Box::new(receipt)),
                Err(err) => {
                    if let Ok(latest) = provider.get_transaction_count(me).latest().await
                        && latest > nonce
                    {
                        match provider.get_transaction_receipt(hash).await {
                            Ok(Some(receipt)) => return Outcome::Mined(Box::new(receipt)),
                            Ok(None) => return Outcome::Refused(err),
                            Err(_) => {}
                        }
                    }
                }
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }
}

/// Groups jobs into lines: one per (payer, price), counts added (a new line when a count would overflow).
fn merge(jobs: Vec<Job>) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for job in jobs {
        let c = job.charge;
        if c.count == 0 || c.price.units() == 0 {
            let _ = job.reply.send(Err(ChainError::InvalidArgument(
                "a charge needs a non-zero price and count".into(),
            )));
            continue;
        }
        let slot = lines.iter_mut().find(|l| {
            l.charge.payer == c.payer
                && l.charge.price == c.price
                && l.charge.count.checked_add(c.count).is_some()
        });
        match slot {
            Some(line) => {
                line.charge.count += c.count;
                line.jobs.push(job);
            }
            None => lines.push(Line {
                charge: c,
                jobs: vec![job],
            }),
        }
    }
    lines
}
