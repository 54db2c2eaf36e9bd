//! `khachapuri`: the command line of Khachapuri.
//!
//! - `khachapuri dev`: the one-command local network (anvil, contracts, IPFS node, provider, gateway,
//!   a funded test account and the example functions), described in `.khachapuri/dev.json`.
//! - `khachapuri token`: a payer token for `Authorization: Bearer`.
//! - `khachapuri escrow balance`: balances, allowance and credits, in USDC.

mod deploy;
mod dev;
mod net;
mod token;

use clap::{Parser, Subcommand};

/// Serverless wasm functions on IPFS, paid in USDC.
#[derive(Parser)]
#[command(name = "khachapuri", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local network: anvil, contracts, IPFS node, provider `dev`, gateway, a funded test
    /// account and the example functions. Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Deploy a wasm program to a provider: upload, sign the spec, encrypt it to the provider, print the URL.
    Deploy(deploy::DeployArgs),
    /// Make a payer token for `curl -H "Authorization: Bearer ..."`.
    Token(token::TokenArgs),
    /// Escrow: show balances, allowance and credits.
    Escrow {
        #[command(subcommand)]
        command: token::EscrowCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Token(args) => token::token(args).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::Escrow { command } => token::escrow(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
