//! A provider's [`Record`] read from the chain (docs/PROTOCOL.md §10 "Reputation"): what the escrow's
//! `Consumed` events say it settled, and since when its label is registered. Anyone with an RPC computes
//! the same figures; the gateway and `khachapuri providers` both use this [`Scan`].

use std::collections::{HashMap, HashSet};

use alloy::{primitives::Address, providers::Provider, rpc::types::Filter, sol_types::SolEvent};
use khachapuri_bindings::{Escrow, Registry};
pub use khachapuri_protocol::reputation::{Record, Score, Seen, score};

use crate::{Chain, ChainError, Usdc};

#[derive(Debug, Default)]
struct Acc {
    settled_requests: u64,
    volume: u128,
    payers: HashSet<Address>,
    credit_requests: u64,
    last_block: Option<u64>,
}

/// Widest block range read at once (halved while a node refuses it).
const RANGE: u64 = 5_000;
/// Distinct payers kept per provider (the score saturates at a few dozen).
const MAX_PAYERS_KEPT: usize = 10_000;
/// Block timestamps kept.
const MAX_TIMESTAMPS_KEPT: usize = 100_000;

/// The escrow's and the Registry's events, read onwards from the deployment block, at most `range` blocks
/// per request; [`Scan::update`] reads what is new.
#[derive(Debug)]
pub struct Scan {
    next_block: u64,
    range: u64,
    by_provider: HashMap<Address, Acc>,
    registered: HashMap<String, u64>,
    timestamps: HashMap<u64, u64>,
}

impl Scan {
    /// A scan of `chain`'s contracts from their deployment block.
    pub fn new(chain: &Chain) -> Self {
        Self {
            next_block: chain.deployment().deployment_block,
            range: RANGE,
            by_provider: HashMap::new(),
            registered: HashMap::new(),
            timestamps: HashMap::new(),
        }
    }

    /// Reads the events since the last update.
    pub async fn update(&mut self, chain: &Chain) -> Result<(), ChainError> {
        let provider = chain.provider();
        let head = provider.get_block_number().await?;
        let d = chain.deployment();
        while self.next_block <= head {
            let from = self.next_block;
            let to = head.min(from.saturating_add(self.range - 1));
            let filter = Filter::new()
                .address(vec![d.escrow, d.registry])
                .event_signature(vec![
                    Escrow::Consumed::SIGNATURE_HASH,
                    Registry::Registered::SIGNATURE_HASH,
                ])
                .from_block(from)
                .to_block(to);
            // A node that refuses the range (too wide, too many results) gets half of it.
            let logs = match provider.get_logs(&filter).await {
                Ok(logs) => {
                    self.range = (self.range * 2).min(RANGE);
                    logs
                }
                Err(_) if self.range > 1 => {
                    self.range /= 2;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for log in logs {
                let block = log.block_number.unwrap_or(to);
                if let Some(at) = log.block_timestamp {
                    self.remember(block, at);
                }
                if let Ok(c) = Escrow::Consumed::decode_log_data(log.data()) {
                    let acc = self.by_provider.entry(c.provider).or_default();
                    let total = c.price.saturating_mul(c.count);
                    let from_reserve =
                        u128::try_from(total.saturating_sub(c.fromCredits)).unwrap_or(u128::MAX);
                    let count = u64::try_from(c.count).unwrap_or(u64::MAX);
                    if from_reserve == 0 {
                        acc.credit_requests = acc.credit_requests.saturating_add(count);
                    } else {
                        acc.settled_requests = acc.settled_requests.saturating_add(count);
                        acc.volume = acc.volume.saturating_add(from_reserve);
                        // The score saturates long before: past this many, new payers are not kept.
                        if acc.payers.len() < MAX_PAYERS_KEPT {
                            acc.payers.insert(c.payer);
                        }
                    }
                    acc.last_block = Some(block);
                } else if let Ok(r) = Registry::Registered::decode_log_data(log.data()) {
                    self.registered.entry(r.label.clone()).or_insert(block);
                }
            }
            self.next_block = to + 1;
        }
        Ok(())
    }

    /// Every label registered so far, in the order of registration.
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<(&String, &u64)> = self.registered.iter().collect();
        labels.sort_by_key(|(label, block)| (**block, (*label).clone()));
        labels.into_iter().map(|(label, _)| label.clone()).collect()
    }

    /// The record of the provider paid at `payee`, registered as `label`.
    pub async fn record(&mut self, chain: &Chain, payee: Address, label: &str) -> Record {
        let registered = self.registered.get(label).copied();
        let (mut record, last) = match self.by_provider.get(&payee) {
            Some(acc) => (
                Record {
                    settled_requests: acc.settled_requests,
                    volume: Usdc::from_units(acc.volume),
                    payers: acc.payers.len() as u64,
                    credit_requests: acc.credit_requests,
                    ..Record::default()
                },
                acc.last_block,
            ),
            None => (Record::default(), None),
        };
        if let Some(block) = registered {
            record.registered_at = self.timestamp(chain, block).await;
        }
        if let Some(block) = last {
            record.last_settled_at = self.timestamp(chain, block).await;
        }
        record
    }

    fn remember(&mut self, block: u64, at: u64) {
        if self.timestamps.len() >= MAX_TIMESTAMPS_KEPT {
            self.timestamps.clear();
        }
        self.timestamps.insert(block, at);
    }

    async fn timestamp(&mut self, chain: &Chain, block: u64) -> Option<u64> {
        if let Some(t) = self.timestamps.get(&block) {
            return Some(*t);
        }
        let header = chain
            .provider()
            .get_block_by_number(block.into())
            .await
            .ok()
            .flatten()?;
        let t = header.header.timestamp;
        self.remember(block, t);
        Some(t)
    }
}
