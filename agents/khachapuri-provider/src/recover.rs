//! After a restart: reconcile the claims log with the chain, so that no claim is lost and none is charged
//! twice.
//!
//! The one dangerous window is a settlement that landed on chain while the agent died before logging it.
//! So, before settling anything again: wait until the previous run's transactions are mined or dropped
//! (the account has no pending nonce), then read this provider's `Consumed` events since the log's last
//! reconciled block. Per payer, what landed beyond what the log recorded belongs to the oldest open
//! claims: they are settled already. Only this agent signs `consume` with its key (one key, one agent).

use std::{collections::BTreeMap, time::Duration};

use alloy::{providers::Provider, rpc::types::Filter, sol_types::SolEvent};
use khachapuri_bindings::Escrow;
use khachapuri_chain::{Address, Chain, ChainError, Usdc};

use crate::wal::{OpenClaim, Replay};

/// The outcome: claims still to settle, and the first block the new log has not reconciled.
#[derive(Debug)]
pub struct Reconciled {
    /// Claims that did not land.
    pub open: Vec<OpenClaim>,
    /// Claims the chain shows landed although the log did not record it.
    pub found_landed: usize,
    /// The next `from_block`.
    pub from_block: u64,
}

/// Reconciles `replay` with the chain (see the module docs).
pub async fn reconcile(
    chain: &Chain,
    replay: Replay,
    patience: Duration,
) -> Result<Reconciled, ChainError> {
    let me = chain.address()?;
    let provider = chain.provider();
    let started = std::time::Instant::now();
    loop {
        let latest = provider.get_transaction_count(me).latest().await?;
        let pending = provider.get_transaction_count(me).pending().await?;
        if pending <= latest {
            break;
        }
        if started.elapsed() > patience {
            return Err(ChainError::InvalidArgument(format!(
                "{} settlement transaction(s) of the previous run are still pending after {}s; \
                 start again once they are mined or dropped",
                pending - latest,
                patience.as_secs()
            )));
        }
        tracing::info!(
            pending = pending - latest,
            "waiting for the previous run's settlements to be mined"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let head = provider.get_block_number().await?;
    if replay.open.is_empty() {
        return Ok(Reconciled {
            open: Vec::new(),
            found_landed: 0,
            from_block: head + 1,
        });
    }

    let filter = Filter::new()
        .address(chain.deployment().escrow)
        .event_signature(Escrow::Consumed::SIGNATURE_HASH)
        .topic2(me.into_word())
        .from_block(replay.from_block)
        .to_block(head);
    let mut on_chain: BTreeMap<Address, u128> = BTreeMap::new();
    for log in provider.get_logs(&filter).await? {
        let event = Escrow::Consumed::decode_log(&log.inner)
            .map_err(|e| ChainError::InvalidArgument(format!("undecodable Consumed event: {e}")))?;
        let total = Usdc::from_u256(event.price)
            .units()
            .saturating_mul(Usdc::from_u256(event.count).units());
        *on_chain.entry(event.payer).or_default() += total;
    }

    let mut unrecorded: BTreeMap<Address, u128> = on_chain
        .into_iter()
        .map(|(payer, total)| {
            (
                payer,
                total.saturating_sub(replay.landed.get(&payer).copied().unwrap_or(0)),
            )
        })
        .collect();
    let mut open = Vec::new();
    let mut found_landed = 0;
    for claim in replay.open {
        let left = unrecorded.entry(claim.payer).or_default();
        if *left >= claim.price.units() {
            *left -= claim.price.units();
            found_landed += 1;
        } else {
            open.push(claim);
        }
    }
    Ok(Reconciled {
        open,
        found_landed,
        from_block: head + 1,
    })
}
