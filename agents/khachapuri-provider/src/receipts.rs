//! Receipts by group commit: one signature for every receipt that became ready while the previous one was
//! being made (PROTOCOL §7, `kr2.`).
//!
//! A caller that finds nobody signing leads: it signs its own receipt at once, unless calls overlap
//! (below; a lone call waits for nothing). Receipts that become ready while it signs queue; when its signature is made, the first of
//! them is handed the lead with the rest (at most [`MAX_GROUP`]), signs their root and answers the
//! others. So a receipt waits for the signature in progress, its new leader's turn on the executor
//! (woken on the signing worker, it usually runs next), and its own group's signature. A leader whose
//! caller went away signs for the others all the same.
//!
//! Under load (the last group had more than one receipt) a leader first gives the executor a few turns,
//! 100 µs at most, so that calls already read reach their receipts and join its group
//! ([`Leadership::gather`]). Waiting for calls still running their programs was tried first: it barely
//! grew the groups, since a call is read, run and answered in one go on its worker. A turn can last
//! longer than planned behind a CPU-bound program (until its 2 ms epoch tick), which is why the gathering
//! is bounded in turns as well as in time.

use std::sync::{Arc, Mutex};

use khachapuri_protocol::receipt::{Receipt, ReceiptSigner, SignedReceipt};
use tokio::sync::oneshot;

/// The most receipts one signature covers (an inclusion proof of at most 6 hashes).
pub const MAX_GROUP: usize = 64;

/// How long a leader under load may gather receipts before it signs, and how many turns on the executor
/// it takes for it (see [`Leadership::gather`]).
const GATHER: std::time::Duration = std::time::Duration::from_micros(100);
const GATHER_TURNS: usize = 4;

/// Signs receipts by group commit; shared by every request of the agent.
#[derive(Debug)]
pub struct Receipts(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    signer: ReceiptSigner,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A caller leads a group now: the others queue.
    leading: bool,
    queued: Vec<Waiter>,
    /// The last signature covered more than one receipt: calls overlap, and a leader gathers.
    overlapping: bool,
    /// Receipts signed and signatures made, for the metrics.
    receipts: u64,
    signatures: u64,
}

#[derive(Debug)]
struct Waiter {
    receipt: Receipt,
    reply: oneshot::Sender<Turn>,
}

/// What a queued caller gets: its signed receipt, or the next group to lead.
#[derive(Debug)]
enum Turn {
    Signed(SignedReceipt),
    Lead(Leadership),
}

/// A group to sign: the leader's own receipt and those it signs for. Dropped unsigned (its caller went
/// away before taking it), it signs the others anyway and passes the lead on, so nobody is left waiting.
#[derive(Debug)]
struct Leadership {
    inner: Arc<Inner>,
    own: Option<Receipt>,
    others: Vec<Waiter>,
    /// Signed, or handed back unsent by `hand_off`: nothing left to do when dropped.
    done: bool,
}

impl Receipts {
    /// Group-commits receipts signed by `signer`.
    pub fn new(signer: ReceiptSigner) -> Self {
        Self(Arc::new(Inner {
            signer,
            state: Mutex::new(State::default()),
        }))
    }

    /// The payee address receipts are signed by.
    pub fn address(&self) -> khachapuri_chain::Address {
        self.0.signer.address()
    }

    /// Receipts signed so far, and the signatures that covered them.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.0.lock();
        (state.receipts, state.signatures)
    }

    /// Signs `receipt` now if nobody is signing (after gathering others, under load), else in the next
    /// group.
    pub async fn sign(&self, receipt: Receipt) -> SignedReceipt {
        let queued = {
            let mut state = self.0.lock();
            if state.leading {
                let (reply, turn) = oneshot::channel();
                state.queued.push(Waiter { receipt, reply });
                Err(turn)
            } else {
                state.leading = true;
                Ok(receipt)
            }
        };
        let lead = match queued {
            Ok(receipt) => Leadership {
                inner: self.0.clone(),
                own: Some(receipt),
                others: Vec::new(),
                done: false,
            },
            Err(turn) => match turn.await {
                Ok(Turn::Signed(signed)) => return signed,
                Ok(Turn::Lead(lead)) => lead,
                Err(_) => panic!("the receipt signer failed while signing this receipt's group"),
            },
        };
        lead.gather().await.sign()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Passes the lead to the first queued caller with its group, or ends leading if none is queued. A
    /// caller that went away is skipped (its turn comes back to us unsent).
    fn hand_off(self: &Arc<Self>) {
        let mut group = Vec::new();
        loop {
            if group.is_empty() {
                let mut state = self.lock();
                if state.queued.is_empty() {
                    state.leading = false;
                    return;
                }
                let n = state.queued.len().min(MAX_GROUP);
                group = state.queued.drain(..n).collect();
            }
            let first = group.remove(0);
            let lead = Leadership {
                inner: self.clone(),
                own: Some(first.receipt),
                others: std::mem::take(&mut group),
                done: false,
            };
            match first.reply.send(Turn::Lead(lead)) {
                Ok(()) => return,
                Err(Turn::Lead(mut unsent)) => {
                    unsent.done = true;
                    group = std::mem::take(&mut unsent.others);
                }
                Err(Turn::Signed(_)) => unreachable!("a lead was sent"),
            }
        }
    }
}

impl Leadership {
    /// Under load (the last signature covered more than one receipt), the leader gives the executor a few
    /// turns, at most [`GATHER`] in all, before it signs: calls that were read but not yet answered reach
    /// their receipts and join this group rather than the next one (what PostgreSQL's `commit_delay` does
    /// for commits). A signature costs about as much CPU as a warm call of a small program, so at 16
    /// connections it cut a paid call's CPU by about a fifth (groups of about 7 instead of 1.7); alone,
    /// or when calls do not overlap, a receipt is signed at once.
    async fn gather(mut self) -> Self {
        if !self.inner.lock().overlapping {
            return self;
        }
        let started = std::time::Instant::now();
        for _ in 0..GATHER_TURNS {
            if self.inner.lock().queued.len() + self.others.len() + 1 >= MAX_GROUP
                || started.elapsed() >= GATHER
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut state = self.inner.lock();
        let room = (MAX_GROUP - 1).saturating_sub(self.others.len());
        let n = state.queued.len().min(room);
        self.others.extend(state.queued.drain(..n));
        drop(state);
        self
    }

    /// Signs the group, answers the others, passes the lead on, and returns the leader's receipt.
    fn sign(mut self) -> SignedReceipt {
        let own = self.own.take();
        self.finish(own)
            .unwrap_or_else(|| unreachable!("a leader has its own receipt"))
    }

    /// Signs `own` (if any) and the others, answers them, and passes the lead on.
    fn finish(&mut self, own: Option<Receipt>) -> Option<SignedReceipt> {
        self.done = true;
        let others = std::mem::take(&mut self.others);
        if own.is_none() && others.is_empty() {
            self.inner.hand_off();
            return None;
        }
        let had_own = own.is_some();
        let (receipts, replies): (Vec<Receipt>, Vec<_>) = own
            .into_iter()
            .map(|r| (r, None))
            .chain(others.into_iter().map(|w| (w.receipt, Some(w.reply))))
            .unzip();
        let count = receipts.len() as u64;
        let mut signed = self.inner.signer.sign_group(receipts).into_iter();
        let mine = if had_own { signed.next() } else { None };
        for (signed, reply) in signed.zip(replies.into_iter().skip(usize::from(had_own))) {
            if let Some(reply) = reply {
                // A caller that went away no longer needs its receipt.
                let _ = reply.send(Turn::Signed(signed));
            }
        }
        {
            let mut state = self.inner.lock();
            state.receipts += count;
            state.signatures += u64::from(count > 0);
            state.overlapping = count > 1;
        }
        self.inner.hand_off();
        mine
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // A lead whose caller went away: sign for the others, and pass the lead on.
        if !self.done {
            self.own = None;
            let _ = self.finish(None);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use alloy::primitives::{Address, B256, U256};
    use alloy::signers::local::PrivateKeySigner;

    use super::*;

    fn receipt(provider: Address, sequence: u64) -> Receipt {
        Receipt {
            provider,
            payer: Address::repeat_byte(7),
            spec: "bafy".into(),
            price: U256::from(10_000),
            sequence,
            requestDigest: B256::repeat_byte(1),
            responseDigest: B256::repeat_byte(2),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_receipts_share_signatures_and_each_verifies() {
        let key = PrivateKeySigner::random();
        let domain = khachapuri_protocol::eip712::domain(31337, Address::repeat_byte(0xe5));
        let receipts = Arc::new(Receipts::new(ReceiptSigner::new(&key, domain.clone())));
        // Alone: a group of one, at once.
        let one = receipts.sign(receipt(key.address(), 0)).await;
        assert_eq!(one.proof.as_deref(), Some(&[][..]));
        assert_eq!(one.signer(&domain), Some(key.address()));

        let calls: Vec<_> = (1..=500)
            .map(|i| {
                let receipts = receipts.clone();
                let provider = key.address();
                tokio::spawn(async move { receipts.sign(receipt(provider, i)).await })
            })
            .collect();
        let mut signatures = std::collections::HashSet::new();
        for (i, call) in calls.into_iter().enumerate() {
            let signed = call.await.unwrap();
            assert_eq!(signed.receipt.sequence, i as u64 + 1, "its own receipt");
            assert_eq!(signed.signer(&domain), Some(key.address()));
            signatures.insert(signed.signature);
        }
        let (count, made) = receipts.counts();
        assert_eq!(count, 501);
        assert_eq!(made as usize, signatures.len() + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receipts_queued_during_a_signature_share_the_next_ones() {
        let key = PrivateKeySigner::random();
        let domain = khachapuri_protocol::eip712::domain(31337, Address::repeat_byte(0xe5));
        let receipts = Arc::new(Receipts::new(ReceiptSigner::new(&key, domain.clone())));
        // A signature in progress: every receipt queues behind it.
        receipts.0.lock().leading = true;
        let calls: Vec<_> = (0..100)
            .map(|i| {
                let receipts = receipts.clone();
                let provider = key.address();
                tokio::spawn(async move { receipts.sign(receipt(provider, i)).await })
            })
            .collect();
        while receipts.0.lock().queued.len() < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // It ends: the first queued leads a group of 64, then the next one the other 36.
        receipts.0.hand_off();
        let mut signatures = std::collections::HashSet::new();
        for (i, call) in calls.into_iter().enumerate() {
            let signed = call.await.unwrap();
            assert_eq!(signed.receipt.sequence, i as u64);
            assert_eq!(signed.signer(&domain), Some(key.address()));
            signatures.insert(signed.signature);
        }
        assert_eq!(receipts.counts(), (100, 2));
        assert_eq!(signatures.len(), 2);
        assert!(!receipts.0.lock().leading, "the lead is free again");
    }

    /// On one thread, so the order is certain: two calls are ready to run when a third's receipt is ready.
    async fn three_on_one_thread(receipts: &Arc<Receipts>, provider: Address) {
        let others: Vec<_> = (1..=2)
            .map(|i| {
                let receipts = receipts.clone();
                tokio::spawn(async move { receipts.sign(receipt(provider, i)).await })
            })
            .collect();
        receipts.sign(receipt(provider, 0)).await;
        for call in others {
            call.await.unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn under_load_a_leader_gathers_the_calls_ready_to_run_into_its_group() {
        let key = PrivateKeySigner::random();
        let domain = khachapuri_protocol::eip712::domain(31337, Address::repeat_byte(0xe5));
        let receipts = Arc::new(Receipts::new(ReceiptSigner::new(&key, domain)));
        // The last group had more than one receipt: calls overlap.
        receipts.0.lock().overlapping = true;
        three_on_one_thread(&receipts, key.address()).await;
        assert_eq!(receipts.counts(), (3, 1), "one signature for the three");
        assert!(receipts.0.lock().overlapping, "still under load");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn when_calls_do_not_overlap_a_receipt_is_signed_without_waiting() {
        let key = PrivateKeySigner::random();
        let domain = khachapuri_protocol::eip712::domain(31337, Address::repeat_byte(0xe5));
        let receipts = Arc::new(Receipts::new(ReceiptSigner::new(&key, domain)));
        // The first receipt gives the others no turn before it is signed, nor they each other.
        three_on_one_thread(&receipts, key.address()).await;
        assert_eq!(receipts.counts(), (3, 3), "each signed at once, alone");
        assert!(!receipts.0.lock().overlapping);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_goes_away_leaves_nobody_waiting() {
        let key = PrivateKeySigner::random();
        let domain = khachapuri_protocol::eip712::domain(31337, Address::repeat_byte(0xe5));
        let receipts = Arc::new(Receipts::new(ReceiptSigner::new(&key, domain.clone())));
        for round in 0..50u64 {
            let calls: Vec<_> = (0..20u64)
                .map(|i| {
                    let receipts = receipts.clone();
                    let provider = key.address();
                    tokio::spawn(async move { receipts.sign(receipt(provider, i)).await })
                })
                .collect();
            // Abort every other call wherever it is: queued, handed the lead, or done.
            for call in calls.iter().step_by(2) {
                call.abort();
            }
            for (i, call) in calls.into_iter().enumerate() {
                match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
                    Ok(Ok(signed)) => assert_eq!(signed.signer(&domain), Some(key.address())),
                    Ok(Err(join)) => assert!(join.is_cancelled() && i % 2 == 0, "{join}"),
                    Err(_) => panic!("round {round}: call {i} waits forever"),
                }
            }
        }
        assert!(!receipts.0.lock().leading, "the lead is free again");
    }
}
