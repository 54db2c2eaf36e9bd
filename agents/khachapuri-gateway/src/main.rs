//! `khachapuri-gateway`: serves `{label}.{base-domain}/{cid}` and provider tunnels.

/// mimalloc, as in the other agents and the gateway crate's HTTP benches: glibc's malloc took about a
/// fifth of a paid call's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use khachapuri_gateway::{
    ConsoleSite, Directory, Gateway, GatewayConfig, RoutingConfig, StaticDirectory,
    routing::ChainView,
};

/// The Khachapuri gateway: resolves provider labels and forwards requests, directly or through the
/// providers' WebSocket tunnels (at /_tunnel).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "KHACHAPURI_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Base domain: `alice.{base}` means label `alice`. Path mode (`/alice/...`) works on any host.
    #[arg(
        long,
        env = "KHACHAPURI_GATEWAY_BASE_DOMAIN",
        default_value = "localhost"
    )]
    base_domain: String,
    /// This gateway's id in tunnel challenges (defaults to the base domain).
    #[arg(long, env = "KHACHAPURI_GATEWAY_ID")]
    gateway_id: Option<String>,
    /// Static directory file (JSON: {"alice": {"server": "http://127.0.0.1:3000", "payee": "0x.."}}).
    #[arg(long, env = "KHACHAPURI_GATEWAY_ROUTES")]
    routes: Option<PathBuf>,
    /// Static route, repeatable: LABEL=SERVER or LABEL=tunnel:@0xPAYEE.
    #[arg(long = "route")]
    route: Vec<String>,
    /// Chain RPC URL: resolve labels on-chain (Registry -> Resolver) instead of a static table.
    #[arg(long, env = "KHACHAPURI_RPC_URL")]
    rpc_url: Option<String>,
    /// Deployments file (deployments/<chainId>.json) with the Registry address; with --rpc-url.
    #[arg(long, env = "KHACHAPURI_DEPLOYMENTS")]
    deployments: Option<PathBuf>,
    /// Seconds to connect to a provider.
    #[arg(long, default_value_t = 5)]
    connect_timeout: u64,
    /// Seconds for a provider to send its response head.
    #[arg(long, default_value_t = 60)]
    response_timeout: u64,
    /// Seconds a request or response body may go without data before it is cut.
    #[arg(long, default_value_t = 30)]
    body_idle_timeout: u64,
    /// X-Forwarded-Proto to send (https behind a TLS terminator).
    #[arg(long, default_value = "http")]
    forwarded_proto: String,
    /// Browser origins that may call functions (CORS): `*`, one origin, or `none`. Preflights are
    /// answered here, never forwarded.
    #[arg(long, env = "KHACHAPURI_CORS_ALLOW_ORIGIN", default_value = "*")]
    cors_allow_origin: String,
    /// Serve the web console (a built console directory, `console/dist`: `make console`) at
    /// /_console/; needs --rpc-url and --deployments.
    #[arg(long, env = "KHACHAPURI_CONSOLE")]
    console: Option<PathBuf>,
    /// The public chain RPC URL the console tells wallets to add. Never --rpc-url by default (that one
    /// may be private): without this, the console leaves the RPC to the wallet.
    #[arg(long, requires = "console")]
    console_rpc_url: Option<String>,
    /// A Kubo RPC API URL the console's Deploy uploads to (it must allow this gateway's origin: CORS).
    #[arg(long, requires = "console")]
    console_ipfs_api: Option<String>,
    /// A provider label the console suggests, repeatable.
    #[arg(long = "console-provider", requires = "console")]
    console_provider: Vec<String>,
    /// Where to read specs for calls that name no provider (`/{cid}`), repeatable: `kubo=URL` (a Kubo
    /// RPC API) or `gateway=URL` (a trustless gateway). Without it, such calls are refused.
    #[arg(long = "ipfs", env = "KHACHAPURI_GATEWAY_IPFS", value_delimiter = ',')]
    ipfs: Vec<String>,
    /// Most providers one routed call is tried at (the next only when one failed before charging).
    #[arg(long, default_value_t = 3)]
    route_tries: usize,
    /// Largest body of a routed call, bytes (it is kept for the next provider).
    #[arg(long, default_value_t = 1 << 20)]
    route_max_body: usize,
}

/// The console of `--console DIR`, configured from the deployments file.
fn console_site(args: &Args, dir: &std::path::Path) -> anyhow::Result<ConsoleSite> {
    let (Some(_), Some(deployments)) = (&args.rpc_url, &args.deployments) else {
        bail!(
            "--console needs --rpc-url and --deployments deployments/<chainId>.json (the console works with the on-chain directory)"
        )
    };
    let text = std::fs::read_to_string(deployments)
        .with_context(|| format!("reading {}", deployments.display()))?;
    let deployment: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", deployments.display()))?;
    Ok(ConsoleSite::new(
        dir,
        deployment,
        args.console_rpc_url.clone(),
        args.console_ipfs_api.clone(),
        None,
        args.console_provider.clone(),
    )?)
}

/// The directory, and where routing reads payers' terms.
type Chained = (Arc<dyn Directory>, Option<Arc<dyn ChainView>>);

#[cfg(feature = "chain")]
fn chain_directory(
    rpc_url: &str,
    deployments: Option<&std::path::Path>,
) -> anyhow::Result<Chained> {
    use khachapuri_chain::{Chain, ConnectOptions, Deployment};
    use khachapuri_gateway::chain_directory::{ChainDirectory, ChainDirectoryConfig};
    let Some(path) = deployments else {
        bail!("--rpc-url needs --deployments deployments/<chainId>.json")
    };
    let deployment =
        Deployment::read(path).with_context(|| format!("reading {}", path.display()))?;
    tracing::info!(registry = %deployment.registry, chain_id = deployment.chain_id, "resolving labels on-chain");
    let chain = Chain::new(rpc_url, None, deployment, ConnectOptions::default())?;
    let reads: Arc<dyn ChainView> = khachapuri_gateway::routing::ChainReads::new(chain.clone());
    let directory = ChainDirectory::start(chain, ChainDirectoryConfig::default());
    Ok((directory, Some(reads)))
}

#[cfg(not(feature = "chain"))]
fn chain_directory(_: &str, _: Option<&std::path::Path>) -> anyhow::Result<Chained> {
    bail!("this build has no on-chain directory: rebuild with the `chain` feature")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let console = match &args.console {
        Some(dir) => Some(console_site(&args, dir)?),
        None => None,
    };
    let (directory, chain): Chained = match (&args.rpc_url, &args.routes, args.route.is_empty()) {
        (Some(rpc_url), _, _) => chain_directory(rpc_url, args.deployments.as_deref())?,
        (None, None, true) => {
            bail!("give a directory: --routes FILE, --route LABEL=SERVER, or --rpc-url")
        }
        (None, file, _) => {
            let mut dir = match file {
                Some(path) => StaticDirectory::from_file(path)?,
                None => StaticDirectory::new(),
            };
            for entry in &args.route {
                dir.parse_entry(entry)
                    .with_context(|| format!("--route {entry}"))?;
            }
            (Arc::new(dir), None)
        }
    };
    let routing = match args.ipfs.is_empty() {
        true => None,
        false => Some(RoutingConfig {
            ipfs: args
                .ipfs
                .iter()
                .map(|s| match s.as_str() {
                    "local" => bail!(
                        "--ipfs: the gateway has no local store; give kubo=URL or gateway=URL"
                    ),
                    s => khachapuri_ipfs::Source::parse(s, std::path::Path::new("."))
                        .map_err(anyhow::Error::msg),
                })
                .collect::<anyhow::Result<_>>()?,
            max_tries: args.route_tries,
            max_body_bytes: args.route_max_body,
            chain,
            ..RoutingConfig::default()
        }),
    };
    let config = GatewayConfig {
        gateway_id: args
            .gateway_id
            .clone()
            .unwrap_or_else(|| args.base_domain.clone()),
        base_domain: Some(args.base_domain),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        response_timeout: Duration::from_secs(args.response_timeout),
        body_idle_timeout: Duration::from_secs(args.body_idle_timeout),
        forwarded_proto: args.forwarded_proto,
        cors: khachapuri_protocol::http::Cors::from_setting(&args.cors_allow_origin),
        console,
        routing,
        ..GatewayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "gateway listening");
    if let Some(routing) = &config.routing {
        tracing::info!(sources = ?routing.ipfs, "routing calls that name no provider: http://{addr}/{{cid}}");
    }
    if config.console.is_some() {
        tracing::info!("web console at http://{addr}/_console/");
    }
    let gateway = Gateway::new(config, directory);
    let serving = tokio::spawn(gateway.clone().serve(listener));
    khachapuri_process::shutdown_signal().await;
    tracing::info!("shutting down");
    gateway.shutdown();
    serving.await?;
    Ok(())
}
