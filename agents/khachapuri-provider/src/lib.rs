//! The Khachapuri provider agent (docs/PROTOCOL.md: "1. Overview and roles", "8. Request and response").
//!
//! Per request `{METHOD} /{cid}[/{path}][?{query}]`: fetch the spec by CID (verified), decrypt it with the
//! provider's RSA key or accept an open spec, verify the owner's EIP-712 terms and that the spec is meant
//! for this provider, choose the payer (the owner, or the signer of an `X-Khachapuri-Payer-Token` payer
//! token), fetch and compile the program (cached), claim the price against the payer's on-chain terms
//! minus unsettled claims (logged before the run), run the program, and answer with the price and a
//! signed receipt. Claims settle in batches (or one per request in `sync` mode) through one task that
//! owns the signer's nonce.

use std::io::Write as _;

mod agent;
mod caps;
mod config;
mod error;
mod ledger;
mod logs;
mod lru;
mod metrics;
mod receipts;
mod recover;
mod revocations;
mod specs;
#[cfg(feature = "testing")]
pub mod testing;
mod wal;
mod x402;

pub use agent::{PAYER_HEADER, PRICE_HEADER, RECEIPT_HEADER, RunningAgent, StartError, start};
pub use config::{
    Config, ConfigError, ModuleCache, Network, OpenSpecs, ProviderArgs, Secret, Setting,
    SettlementMode,
};
pub use error::ApiError;
pub use khachapuri_protocol::receipt::{self, Receipt, ReceiptSigner, SignedReceipt};
/// How soon a revoked deployment is refused: the agent trusts a "not revoked" read this long.
pub use revocations::TTL as REVOCATION_TTL;
pub use wal::Durability;

/// Starts the agent and serves until Ctrl-C or SIGTERM, then finishes in-flight requests and settles
/// every claim: the whole life of `khachapuri-provider` and of `khachapuri provider up`.
pub async fn run_until_signal(
    config: Config,
    signer: alloy::signers::local::PrivateKeySigner,
) -> Result<(), StartError> {
    let label = config.label.clone();
    let tunnel = config.tunnel.clone();
    let agent = start(config, signer).await?;
    // Ignore a closed stdout (a supervisor that read the first line and left): the agent serves on.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "provider agent listening on http://{}", agent.addr);
    let _ = match tunnel {
        Some(url) => writeln!(
            out,
            "provider `{label}` serves callers through the gateway tunnel {url}"
        ),
        None => writeln!(
            out,
            "provider `{label}` serves callers at its resolver's server URL"
        ),
    };
    let _ = out.flush();
    let stop = agent.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("shutting down: finishing requests and settling every claim");
        let _ = stop.send(true);
    });
    agent.wait().await;
    Ok(())
}

pub use khachapuri_process::shutdown_signal;
