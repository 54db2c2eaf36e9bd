//! Requests settled per second against a local anvil: the batch settlement sender versus one `consume`
//! transaction per request, in the same run. Prints the figures and writes `target/bench/chain.json`.

use std::path::PathBuf;
use std::time::Instant;

use khachapuri_chain::testing::Devnet;
use khachapuri_chain::{Charge, Settler, SettlerConfig, Usdc};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const PAYERS: u32 = 10;
const SINGLE_REQUESTS: u32 = 300;
const BATCH_REQUESTS: u32 = 3_000;
const MAX_BATCH: usize = 200;

fn main() -> Result {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result {
    let net = Devnet::start().await?;
    let provider = net.chain(0);
    let price = Usdc::from_units(1_000);
    for i in 1..=PAYERS {
        net.fund(i, Usdc::from_whole(1_000)).await?;
        let payer = net.chain(i);
        payer
            .deposit(net.address(i), Usdc::from_whole(1_000))
            .await?;
        payer
            .reserve(net.address(0), price, Usdc::from_whole(1_000))
            .await?;
    }
    let payer = |n: u32| net.address(1 + n % PAYERS);

    // One transaction per request, each awaited (the seed's `sync` mode).
    let start = Instant::now();
    for n in 0..SINGLE_REQUESTS {
        provider.consume(payer(n), price).await?;
    }
    let single_secs = start.elapsed().as_secs_f64();
    let single_rps = f64::from(SINGLE_REQUESTS) / single_secs;

    // The batch sender, every request submitted at once.
    let settler = Settler::spawn(
        provider.clone(),
        SettlerConfig {
            max_batch: MAX_BATCH,
            ..Default::default()
        },
    )?;
    let start = Instant::now();
    let handles = settler.submit_all((0..BATCH_REQUESTS).map(|n| Charge::one(payer(n), price)));
    let mut batches = std::collections::HashSet::new();
    for h in handles {
        batches.insert(h.await?.batch_id);
    }
    let batch_secs = start.elapsed().as_secs_f64();
    let batch_rps = f64::from(BATCH_REQUESTS) / batch_secs;

    let earned = provider.earnings(net.address(0)).await?;
    let expected = price
        .checked_mul(u128::from(SINGLE_REQUESTS + BATCH_REQUESTS))
        .unwrap_or(Usdc::MAX);
    if earned != expected {
        return Err(format!("earnings {earned} != expected {expected}").into());
    }

    println!("chain settlement against anvil ({PAYERS} payers, price {price}):");
    println!(
        "  one consume per request: {SINGLE_REQUESTS} requests in {single_secs:.2} s = {single_rps:.0} req/s"
    );
    println!(
        "  batch sender (max {MAX_BATCH}/tx): {BATCH_REQUESTS} requests in {batch_secs:.2} s = {batch_rps:.0} req/s, {} transactions",
        batches.len()
    );
    println!("  speed-up: {:.1}x", batch_rps / single_rps);

    let json = serde_json::json!({
        "bench": "chain-settlement",
        "node": "anvil (automine)",
        "payers": PAYERS,
        "single": { "requests": SINGLE_REQUESTS, "seconds": single_secs, "requests_per_second": single_rps },
        "batch": {
            "requests": BATCH_REQUESTS,
            "seconds": batch_secs,
            "requests_per_second": batch_rps,
            "transactions": batches.len(),
            "max_batch": MAX_BATCH,
        },
        "speedup": batch_rps / single_rps,
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("chain.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
