//! `khachapuri-provider`: run a provider agent.

/// mimalloc, as in the other agents and the gateway crate's HTTP benches: glibc's malloc took about a
/// fifth of a paid call's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser;
use khachapuri_provider::ProviderArgs;

/// Serve Khachapuri functions for pay: fetch specs from IPFS, claim USDC from the escrow, run wasm.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: ProviderArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,khachapuri=info".into()),
        )
        .init();
    let config = Cli::parse().args.resolve()?;
    let signer = config.signer.load().context("cannot load the payee key")?;
    khachapuri_provider::run_until_signal(config, signer)
        .await
        .context("the provider agent could not start")?;
    Ok(())
}
