//! `khachapuri`: the command line of Khachapuri.
//!
//! - `khachapuri dev`: the one-command local network (anvil, contracts, IPFS node, provider, gateway,
//!   a funded test account and the example functions), described in `.khachapuri/dev.json`.
//! - `khachapuri new` and `khachapuri run`: write a function, run it here through the provider's runtime.
//! - `khachapuri deploy`: a .wasm, a .zip or a cargo project to a provider, as an encrypted, signed spec.
//! - `khachapuri call` and `khachapuri token`: call a function as a payer.
//! - `khachapuri logs`, `khachapuri deployments` and `khachapuri revoke`: a function's recent runs and their
//!   stderr, what the owner deployed and what it costs, and stopping it for good, for its owner.
//! - `khachapuri escrow`: deposit (with permit), reserve for a provider, release, withdraw, balances.
//! - `khachapuri provider`: init (key, resolver, registration), up (the agent, or through a tunnel),
//!   credits, earnings.
//!
//! Human output by default, `--json` for scripts; progress on stderr; amounts in USDC.

/// mimalloc, as in the other agents and the gateway crate's HTTP benches: glibc's malloc took about a
/// fifth of a paid call's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod call;
mod deploy;
mod deployments;
mod dev;
mod escrow;
mod logs;
mod net;
mod new;
mod progress;
mod provider;
mod providers;
mod request;
mod revoke;
mod run;
mod token;

use clap::{Parser, Subcommand};

/// Serverless wasm functions on IPFS, paid in USDC.
#[derive(Parser)]
#[command(name = "khachapuri", version, about)]
struct Cli {
    /// Print JSON on stdout (for scripts) instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local network: anvil, contracts, IPFS node, provider `dev`, gateway, a funded test
    /// account and the example functions. Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Write a new function: a cargo project that reads the request and answers it.
    New(new::NewArgs),
    /// Run a function here (a .wasm, a .zip or a cargo project) through the provider's runtime and curl
    /// interface, under the limits deploy would sign: no chain, no IPFS, nothing paid.
    Run(Box<run::RunArgs>),
    /// Deploy a program (.wasm, .zip or cargo project) to a provider: upload, sign the spec, encrypt it to
    /// the provider, print the URL.
    Deploy(Box<deploy::DeployArgs>),
    /// Call a function like curl, paying with a payer token made for this call.
    Call(Box<call::CallArgs>),
    /// Show a function's recent runs at its provider (status, failure, the program's stderr): for the
    /// spec's owner only.
    Logs(logs::LogsArgs),
    /// List your deployments (recorded by `deploy` in this directory): where, what they pay, whether
    /// revoked, and the calls and charges their providers counted.
    Deployments(deployments::DeploymentsArgs),
    /// Revoke a deployment for good, as its owner: providers refuse every call to it from then on.
    Revoke(revoke::RevokeArgs),
    /// Make a payer token for `curl -H "X-Khachapuri-Payer-Token: ..."`.
    Token(token::TokenArgs),
    /// List the registered providers with their reputation and its parts: what they settled on chain,
    /// and what a gateway saw of them.
    Providers(providers::ProvidersArgs),
    /// Escrow: deposit, reserve for a provider, release, withdraw, balances.
    Escrow {
        #[command(subcommand)]
        command: escrow::EscrowCommand,
    },
    /// Be a provider: init, up, credits, earnings.
    Provider {
        #[command(subcommand)]
        command: provider::ProviderCommand,
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
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args, json).await,
            Command::New(args) => new::new(args, json),
            Command::Run(args) => run::run(*args, json).await,
            Command::Logs(args) => logs::logs(args, json).await,
            Command::Deployments(args) => deployments::deployments(args, json).await,
            Command::Revoke(args) => revoke::revoke(args, json).await,
            Command::Deploy(args) => deploy::deploy(*args, json).await,
            Command::Call(args) => call::call(*args, json).await,
            Command::Token(args) => token::token(args, json).await,
            Command::Providers(args) => providers::providers(args, json).await,
            Command::Escrow { command } => escrow::escrow(command, json).await,
            Command::Provider { command } => provider::provider(command, json).await,
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
