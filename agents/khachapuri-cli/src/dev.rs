//! `khachapuri dev`: the whole local network in one process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use khachapuri_chain::testing::{
    Anvil, AnvilOptions, DevnetOptions, anvil_binary, anvil_signer, deploy_all,
};
use khachapuri_chain::{Chain, ConnectOptions, RegistrationStep, Server, Usdc};
use khachapuri_gateway::chain_directory::{ChainDirectory, ChainDirectoryConfig};
use khachapuri_gateway::{ConsoleSite, GatewayConfig};
use khachapuri_ipfs::{FsBlockstore, KuboClient, Node};
use khachapuri_provider::{Config, Durability, SettlementMode};
use khachapuri_spec::{Limits, ProviderKey};

use crate::deploy::{Package, Publication, publish};
use crate::deployments::Deployed;
use crate::net::{
    DEV_JSON, DevAccount, DevFunction, DevInfo, DevProvider, free_port, port_is_free,
};

/// The dev network's provider label.
pub const LABEL: &str = "dev";
const PAYEE: u32 = 1;
/// The second provider, behind the gateway's tunnel (as a provider behind NAT would be).
const TUNNELED: &str = "tun";
const TUNNELED_PAYEE: u32 = 3;
const TEST_ACCOUNT: u32 = 2;
const PRICE: Usdc = Usdc::from_units(10_000); // 0.01 USDC
const EXAMPLES: [&str; 4] = ["hello", "echo", "json-transform", "cpu-heavy"];
/// hello sealed to both providers, called without naming one (the gateway routes it, and fails over).
const ROUTED: &str = "hello-any-provider";

/// `khachapuri dev` options.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// The Khachapuri repository: where `examples/target/wasm32-wasip1/release/*.wasm` and
    /// `node_modules/.bin/anvil` are [default: the current directory].
    #[arg(long, env = "KHACHAPURI_ROOT")]
    root: Option<PathBuf>,
    /// Anvil's port; when it is taken (another `khachapuri dev`?), a free port is used instead.
    #[arg(long, default_value_t = 8545)]
    anvil_port: u16,
    /// The gateway's port (0: a free one).
    #[arg(long, default_value_t = 0)]
    gateway_port: u16,
}

struct Out {
    json: bool,
}

impl Out {
    fn step(&self, text: impl AsRef<str>) {
        if self.json {
            eprintln!("==> {}", text.as_ref());
        } else {
            println!("==> {}", text.as_ref());
        }
    }
}

/// Runs the local network until Ctrl-C (or SIGTERM).
pub async fn run(args: DevArgs, json: bool) -> anyhow::Result<()> {
    let out = Out { json };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = match &args.root {
        Some(root) => root.clone(),
        None => cwd.clone(),
    };
    let state = cwd.join(".khachapuri/dev");
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    let _lock = Lock::take(&state.join("lock"))?;

    // --- chain
    let port = if port_is_free(args.anvil_port) {
        args.anvil_port
    } else {
        out.step(format!(
            "port {} is taken (another `khachapuri dev`?): anvil takes a free port",
            args.anvil_port
        ));
        0
    };
    // Its own process group: Ctrl-C reaches `khachapuri dev`, which settles the provider's claims on this
    // chain before it stops anvil itself.
    let mut anvil = Anvil::start(AnvilOptions {
        binary: Some(anvil_binary(Some(&root))),
        port,
        log: Some(state.join("anvil.log")),
        own_process_group: true,
        // A block every second besides one per transaction (mixed mining: no transaction waits for the
        // clock): the chain's time runs without transactions, so a delay (a price cut, a release) comes
        // due on the dev network as it would on a real chain.
        args: vec!["--block-time".into(), "1".into(), "--mixed-mining".into()],
    })?;
    let rpc_url = anvil.url();
    out.step(format!(
        "anvil at {rpc_url} (log: .khachapuri/dev/anvil.log)"
    ));

    let result = serve(&out, &args, &root, &cwd, &state, &rpc_url).await;
    anvil.stop();
    if !out.json {
        println!("==> stopped");
    }
    result
}

/// The network on `rpc_url`, step by step, until Ctrl-C or SIGTERM; then everything stops in order.
async fn serve(
    out: &Out,
    args: &DevArgs,
    root: &Path,
    cwd: &Path,
    state: &Path,
    rpc_url: &str,
) -> anyhow::Result<()> {
    let deployment = deploy_contracts(out, cwd, rpc_url).await?;
    let net = DevChain {
        rpc_url,
        deployment: &deployment,
    };
    // The gateway's port first: the IPFS node lets the console on the gateway's origin upload to it.
    let gateway_port = match args.gateway_port {
        0 => free_port()?,
        port => port,
    };
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let node = start_ipfs(out, state, &gateway_url).await?;
    let console = console_site(root, &net, &node, &gateway_url)?;
    let console_url = console.as_ref().map(|_| format!("{gateway_url}/_console/"));
    let gateway = start_gateway(out, gateway_port, &net, &node, console).await?;
    // Both providers register in the same commitment wait; `tun` then dials the gateway's tunnel.
    let tunnel = format!("ws://127.0.0.1:{gateway_port}/_tunnel");
    let (provider, tunneled) = tokio::try_join!(
        start_provider(out, &net, cwd, state, &node, LABEL, PAYEE, None),
        start_provider(
            out,
            &net,
            cwd,
            state,
            &node,
            TUNNELED,
            TUNNELED_PAYEE,
            Some(tunnel)
        ),
    )?;
    wait_for_tunnel(&gateway, TUNNELED, state).await?;
    // Routing knows both before the first call (it reads its table again every second anyway).
    gateway.gateway.refresh_providers().await;
    let payees = [provider.payee.address(), tunneled.payee.address()];
    let funded = fund_test_account(out, &net, &payees).await?;
    let functions = deploy_examples(
        root,
        cwd,
        &node,
        &[&provider, &tunneled],
        &funded,
        &deployment,
        &gateway_url,
    )
    .await?;
    out.step(format!(
        "{} example functions deployed (specs signed by the test account, encrypted to `{LABEL}`; \
         {ROUTED} to `{LABEL}` and `{TUNNELED}`)",
        functions.len()
    ));

    let info = DevInfo {
        rpc_url: rpc_url.into(),
        chain_id: deployment.chain_id,
        contracts: serde_json::to_value(&deployment)?,
        gateway: gateway_url.clone(),
        provider: provider.info(),
        providers: vec![provider.info(), tunneled.info()],
        ipfs: node.url(),
        accounts: vec![
            DevAccount {
                label: "test".into(),
                address: funded.account.address().to_string(),
                private_key: format!("0x{}", hex::encode(funded.account.to_bytes())),
            },
            // `khachapuri provider ...` in this directory signs as the dev provider, never as the payer.
            DevAccount {
                label: "provider".into(),
                address: provider.payee.address().to_string(),
                private_key: format!("0x{}", hex::encode(provider.payee.to_bytes())),
            },
        ],
        functions,
        console: console_url,
    };
    let dev_json = write_dev_json(cwd, &info)?;
    print_summary(out, &info, funded.deposit)?;

    khachapuri_process::shutdown_signal().await;
    if !out.json {
        println!();
    }
    out.step("stopping: providers (settling every claim), gateway, IPFS node, anvil");
    let _ = std::fs::remove_file(&dev_json);
    let earners = [
        (provider.label, provider.payee.address()),
        (tunneled.label, tunneled.payee.address()),
    ];
    tunneled.stop().await;
    gateway.shutdown().await;
    provider.stop().await;
    for (label, payee) in earners {
        let earned = net
            .chain(0)?
            .earnings(payee)
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        out.step(format!("provider `{label}` earned {earned}"));
    }
    let _ = node.stop().await;
    Ok(())
}

/// The dev chain and its contracts.
struct DevChain<'a> {
    rpc_url: &'a str,
    deployment: &'a khachapuri_chain::Deployment,
}

impl DevChain<'_> {
    /// A client signing as anvil account `index`.
    fn chain(&self, index: u32) -> anyhow::Result<Chain> {
        Ok(Chain::new(
            self.rpc_url,
            Some(anvil_signer(index)),
            self.deployment.clone(),
            ConnectOptions::default(),
        )?)
    }
}

/// Deploys every contract (short delays: a local network is for trying the flows, not waiting a day for
/// them) and writes `deployments/<chainId>.json`.
async fn deploy_contracts(
    out: &Out,
    cwd: &Path,
    rpc_url: &str,
) -> anyhow::Result<khachapuri_chain::Deployment> {
    let options = DevnetOptions {
        withdrawal_delay: 300,
        min_commitment_age: 1,
        max_commitment_age: 86_400,
    };
    let deployment = deploy_all(rpc_url, anvil_signer(0), options)
        .await
        .context("deploying the contracts")?;
    let deployments_dir = cwd.join("deployments");
    std::fs::create_dir_all(&deployments_dir)
        .with_context(|| format!("cannot create {}", deployments_dir.display()))?;
    let deployment_file = deployment
        .write(&deployments_dir)
        .context("writing the deployment file")?;
    out.step(format!(
        "contracts deployed on chain {}: escrow {}, registry {}, USDC {} ({})",
        deployment.chain_id,
        deployment.escrow,
        deployment.registry,
        deployment.usdc,
        deployment_file
            .strip_prefix(cwd)
            .unwrap_or(&deployment_file)
            .display()
    ));
    Ok(deployment)
}

/// The embedded IPFS node, its blocks under `.khachapuri/dev/ipfs`; pages on `origin` (the gateway's, where
/// the web console is) may upload to it.
async fn start_ipfs(out: &Out, state: &Path, origin: &str) -> anyhow::Result<Node> {
    let store = FsBlockstore::open(state.join("ipfs"))
        .context("opening the IPFS store under .khachapuri/dev/ipfs")?;
    let cors = khachapuri_protocol::http::Cors::from_setting(origin);
    let node = Node::start_with_cors(store, 0, cors)
        .await
        .context("starting the embedded IPFS node")?;
    out.step(format!(
        "IPFS node at {} (store: .khachapuri/dev/ipfs)",
        node.url()
    ));
    Ok(node)
}

/// A dev provider: registered on chain, its agent running.
struct DevProviderAgent {
    label: &'static str,
    agent: DevAgent,
    payee: khachapuri_chain::PrivateKeySigner,
    key: ProviderKey,
}

/// A dev provider's agent: in this process, or in its own (`khachapuri provider up`), which a newcomer can
/// stop to watch a routed call go to the other provider.
enum DevAgent {
    Here(khachapuri_provider::RunningAgent),
    Process(std::process::Child),
}

impl DevProviderAgent {
    /// What dev.json says of it.
    fn info(&self) -> DevProvider {
        let (url, pid) = match &self.agent {
            DevAgent::Here(agent) => (format!("http://{}", agent.addr), None),
            DevAgent::Process(child) => ("tunnel:".into(), Some(child.id())),
        };
        DevProvider {
            label: self.label.into(),
            url,
            payee: self.payee.address().to_string(),
            price: PRICE.to_string(),
            pid,
        }
    }

    /// Stops it as an operator would: it settles what it claimed (unless it was stopped already).
    async fn stop(self) {
        match self.agent {
            DevAgent::Here(agent) => agent.shutdown().await,
            DevAgent::Process(mut child) => {
                let stopped = tokio::task::spawn_blocking(move || {
                    khachapuri_process::terminate(&mut child, Duration::from_secs(30))
                })
                .await;
                if let Ok(Ok(status)) = stopped
                    && !status.success()
                    && status.code().is_some()
                {
                    eprintln!("warning: provider `{}` exited with {status}", self.label);
                }
            }
        }
    }
}

/// Registers `label` (its RSA key; a local URL, or `tunnel:` when it dials the gateway's `tunnel`) for
/// anvil account `payee` and starts its agent: here, or behind the tunnel in its own process.
#[allow(clippy::too_many_arguments)]
async fn start_provider(
    out: &Out,
    net: &DevChain<'_>,
    cwd: &Path,
    state: &Path,
    node: &Node,
    label: &'static str,
    payee: u32,
    tunnel: Option<String>,
) -> anyhow::Result<DevProviderAgent> {
    let data_dir = match label {
        LABEL => state.join("provider"),
        other => state.join(format!("provider-{other}")),
    };
    std::fs::create_dir_all(&data_dir)?;
    // A fresh chain: claims a previous run left refer to a chain that is gone.
    let _ = std::fs::remove_file(data_dir.join("claims.wal"));
    let key = ProviderKey::load_or_generate(&data_dir.join("rsa.pem"))
        .context("the provider's RSA key")?;
    let provider_port = free_port()?;
    let server = match &tunnel {
        Some(_) => Server::Tunnel,
        None => Server::Url(format!("http://127.0.0.1:{provider_port}")),
    };
    let index = payee;
    let payee = anvil_signer(index);
    net.chain(index)?
        .register_provider(
            label,
            payee.address(),
            &server,
            key.public_key_der().to_vec().into(),
            |step| match step {
                RegistrationStep::Committed { .. } => {
                    out.step(format!("label `{label}`: committed"))
                }
                RegistrationStep::ResolverDeployed { resolver } => {
                    out.step(format!("label `{label}`: resolver {resolver} deployed"))
                }
                RegistrationStep::Waiting { seconds_left } => out.step(format!(
                    "label `{label}`: waiting {seconds_left} s for the commitment to age"
                )),
                RegistrationStep::Registered => out.step(format!("label `{label}`: registered")),
            },
        )
        .await
        .context("registering the provider label")?;

    let (agent, reached) = match tunnel {
        Some(tunnel) => {
            let child = spawn_agent(net, cwd, state, node, label, &payee, &data_dir, &tunnel)?;
            let reached = format!(
                "behind the gateway's tunnel, in its own process (pid {})",
                child.id()
            );
            (DevAgent::Process(child), reached)
        }
        None => {
            let maxima = khachapuri_runtime::Limits::default();
            let config = Config {
                label: label.into(),
                listen: SocketAddr::from(([127, 0, 0, 1], provider_port)),
                rpc_url: net.rpc_url.into(),
                deployments: cwd.join("deployments"),
                data_dir,
                signer: khachapuri_chain::SignerSource::Env(
                    khachapuri_protocol::http::PRIVATE_KEY_ENV.into(),
                ),
                price: PRICE,
                ipfs: vec![format!("gateway={}", node.url())],
                settlement: SettlementMode::Batch,
                batch_max: 200,
                batch_linger: Duration::from_millis(1000),
                wal_durability: Durability::Interval,
                max_body_bytes: 1 << 20,
                max_memory_bytes: maxima.memory_bytes,
                max_timeout: maxima.deadline,
                max_output_bytes: maxima.output_bytes,
                tunnel: None,
                cors: Default::default(),
                module_cache: Default::default(),
                open_specs: Default::default(),
            };
            let agent = khachapuri_provider::start(config, payee.clone())
                .await
                .with_context(|| format!("starting the agent of provider `{label}`"))?;
            let reached = format!("at http://{}", agent.addr);
            (DevAgent::Here(agent), reached)
        }
    };
    out.step(format!(
        "provider `{label}` {reached} (payee {}, {PRICE} per request)",
        payee.address()
    ));
    Ok(DevProviderAgent {
        label,
        agent,
        payee,
        key,
    })
}

/// Runs provider `label`'s agent in its own process, `khachapuri provider up` from this very binary, dialing
/// the gateway's `tunnel`; its output goes to `.khachapuri/dev/provider-{label}.log`. It dies with this
/// process. Spawned on the thread that runs `khachapuri dev` (the main one), which lives as long as it.
#[allow(clippy::too_many_arguments)]
fn spawn_agent(
    net: &DevChain<'_>,
    cwd: &Path,
    state: &Path,
    node: &Node,
    label: &str,
    payee: &khachapuri_chain::PrivateKeySigner,
    data_dir: &Path,
    tunnel: &str,
) -> anyhow::Result<std::process::Child> {
    use std::io::BufRead as _;
    let exe =
        std::env::current_exe().context("cannot find this binary to run the provider agent")?;
    let log_path = state.join(format!("provider-{label}.log"));
    // Its settings are the flags below, never a provider.toml a newcomer wrote in this directory.
    let config = state.join(format!("provider-{label}.toml"));
    std::fs::write(
        &config,
        "# khachapuri dev runs this provider with flags only\n",
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args([
            "provider",
            "up",
            "--label",
            label,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .args(["--price", &PRICE.to_string(), "--rpc-url", net.rpc_url])
        .arg("--deployments")
        .arg(cwd.join("deployments"))
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--ipfs",
            &format!("gateway={}", node.url()),
            "--tunnel",
            tunnel,
        ])
        .args(["--batch-linger-ms", "1000"])
        .env(
            khachapuri_protocol::http::PRIVATE_KEY_ENV,
            format!("0x{}", hex::encode(payee.to_bytes())),
        )
        .env("RUST_LOG", "warn")
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(log.try_clone()?);
    khachapuri_process::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting provider `{label}`'s agent"))?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if !line.starts_with("provider agent listening on ") {
        let _ = khachapuri_process::terminate(&mut child, Duration::from_secs(5));
        bail!(
            "provider `{label}`'s agent did not start (its output is in {})",
            log_path.display()
        );
    }
    // What it prints later goes to its log, not to a closed pipe.
    std::thread::spawn(move || {
        let mut log = log;
        let _ = std::io::copy(&mut stdout, &mut log);
    });
    Ok(child)
}

/// Waits until `label`'s agent holds its tunnel to `gateway`.
async fn wait_for_tunnel(
    gateway: &khachapuri_gateway::GatewayHandle,
    label: &str,
    state: &Path,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !gateway
        .gateway
        .tunnels()
        .labels()
        .iter()
        .any(|l| l.as_str() == label)
    {
        if std::time::Instant::now() > deadline {
            bail!(
                "provider `{label}` did not open its tunnel within 20 s (its output is in {})",
                state.join(format!("provider-{label}.log")).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The web console of `<root>/console/dist`, set up for this network; `None` (and a warning) when it is
/// not built.
fn console_site(
    root: &Path,
    net: &DevChain<'_>,
    node: &Node,
    gateway_url: &str,
) -> anyhow::Result<Option<ConsoleSite>> {
    let dir = root.join("console/dist");
    if !dir.join("index.html").is_file() {
        eprintln!(
            "warning: the web console is not built (run `make console`); the gateway serves none"
        );
        return Ok(None);
    }
    let site = ConsoleSite::new(
        dir,
        serde_json::to_value(net.deployment)?,
        Some(net.rpc_url.into()),
        Some(node.url()),
        Some(gateway_url.into()),
        vec![LABEL.into()],
    )?;
    Ok(Some(site))
}

/// The gateway in path mode (`{gateway}/{label}/{cid}`) on `port`, its directory read from the chain, and
/// the web console when there is one.
async fn start_gateway(
    out: &Out,
    port: u16,
    net: &DevChain<'_>,
    node: &Node,
    console: Option<ConsoleSite>,
) -> anyhow::Result<khachapuri_gateway::GatewayHandle> {
    let chain = Chain::new(
        net.rpc_url,
        None,
        net.deployment.clone(),
        ConnectOptions::default(),
    )?;
    let routing = khachapuri_gateway::RoutingConfig {
        ipfs: vec![khachapuri_ipfs::Source::Gateway(node.url())],
        refresh: Duration::from_secs(1),
        chain: Some(khachapuri_gateway::routing::ChainReads::new(chain.clone())),
        ..Default::default()
    };
    let directory = ChainDirectory::start(
        chain,
        ChainDirectoryConfig {
            poll_interval: Duration::from_millis(500),
            ..ChainDirectoryConfig::default()
        },
    );
    let has_console = console.is_some();
    let gateway = khachapuri_gateway::spawn(
        SocketAddr::from(([127, 0, 0, 1], port)),
        GatewayConfig {
            base_domain: Some("localhost".into()),
            gateway_id: "khachapuri-dev".into(),
            console,
            routing: Some(routing),
            ..GatewayConfig::default()
        },
        directory,
    )
    .await
    .with_context(|| format!("starting the gateway on port {port}"))?;
    let gateway_url = format!("http://127.0.0.1:{}", gateway.addr.port());
    let console = match has_console {
        true => format!("; web console: {gateway_url}/_console/"),
        false => String::new(),
    };
    out.step(format!(
        "gateway at {gateway_url} (any provider: {gateway_url}/{{cid}}; one: {gateway_url}/{{label}}/{{cid}}{console})"
    ));
    Ok(gateway)
}

/// The test account, funded and with a reserve for the provider.
struct Funded {
    account: khachapuri_chain::PrivateKeySigner,
    deposit: Usdc,
    max_price: Usdc,
}

/// Mints test USDC to the test account, deposits some and reserves part of it for each provider.
async fn fund_test_account(
    out: &Out,
    net: &DevChain<'_>,
    payees: &[khachapuri_chain::Address],
) -> anyhow::Result<Funded> {
    let test = anvil_signer(TEST_ACCOUNT);
    let minted = Usdc::from_whole(1_000);
    let deposit = Usdc::from_whole(100);
    let reserve = Usdc::from_whole(25);
    net.chain(0)?
        .mint_test_usdc(test.address(), minted)
        .await
        .context("minting test USDC")?;
    let test_chain = net.chain(TEST_ACCOUNT)?;
    test_chain
        .deposit(test.address(), deposit)
        .await
        .context("depositing into the escrow")?;
    let max_price = Usdc::from_units(50_000);
    for payee in payees {
        test_chain
            .reserve(*payee, max_price, reserve)
            .await
            .context("reserving for a provider")?;
    }
    out.step(format!(
        "test account {} funded: {minted} minted, {deposit} deposited, {reserve} of it reserved for each provider \
         (`{LABEL}`, `{TUNNELED}`) at up to {max_price} per request",
        test.address()
    ));
    Ok(Funded {
        account: test,
        deposit,
        max_price,
    })
}

/// Publishes each built example as a spec signed by the test account and sealed to the first provider;
/// and hello once more, sealed to every provider, called without naming one.
async fn deploy_examples(
    root: &Path,
    cwd: &Path,
    node: &Node,
    providers: &[&DevProviderAgent],
    funded: &Funded,
    deployment: &khachapuri_chain::Deployment,
    gateway_url: &str,
) -> anyhow::Result<Vec<DevFunction>> {
    let kubo = KuboClient::new(node.url());
    // This chain is new: the records of an earlier dev chain name deployments it does not have.
    crate::deployments::forget(cwd, deployment.chain_id, deployment.escrow)?;
    let jobs = EXAMPLES
        .iter()
        .map(|name| (*name, *name, &providers[..1]))
        .chain([(ROUTED, "hello", providers)]);
    let mut functions = Vec::new();
    for (name, example, runners) in jobs {
        let path = root.join(format!(
            "examples/target/wasm32-wasip1/release/{example}.wasm"
        ));
        if !path.exists() {
            eprintln!(
                "warning: skipping example `{name}`: {} is missing (build the examples with `make examples`)",
                path.display()
            );
            continue;
        }
        let env: BTreeMap<String, String> = match example {
            "hello" => [("GREETING".to_string(), "Hello from Khachapuri".to_string())].into(),
            _ => BTreeMap::new(),
        };
        let package = Package::from_module(&path)?;
        let published = publish(
            &kubo,
            Publication {
                package: &package,
                env,
                owner: &funded.account,
                providers: runners
                    .iter()
                    .map(|p| (p.label, p.key.public_key_der()))
                    .collect(),
                max_price: funded.max_price,
                limits: Limits {
                    memory_bytes: 64 << 20,
                    timeout_ms: 5_000,
                    output_bytes: 1 << 20,
                },
                terms: "khachapuri dev example".into(),
                spend_cap: None,
                public_program: false,
                deployment,
            },
        )
        .await
        .with_context(|| format!("deploying the example {name}"))?;
        let cid = published.spec.to_string();
        for runner in runners {
            let url = format!("{gateway_url}/{}/{cid}", runner.label);
            if let Err(e) =
                crate::deployments::record(cwd, &Deployed::new(&published, runner.label, &url))
            {
                eprintln!(
                    "warning: {e:#}; `khachapuri deployments` will not list the example {name}"
                );
            }
        }
        // One runner: its label's URL; several: the gateway picks one.
        let url = match runners {
            [one] => format!("{gateway_url}/{}/{cid}", one.label),
            _ => format!("{gateway_url}/{cid}"),
        };
        let curl = match name {
            "hello" => format!("curl -d 'Khachapuri' {url}"),
            ROUTED => format!("curl -i -d 'any provider' {url}"),
            "echo" => format!("curl -d 'ping' '{url}/some/path?x=1'"),
            "json-transform" => format!(
                "curl -H 'content-type: application/json' -d '{{\"name\":\"khachapuri\",\"tags\":[\"wasm\",\"ipfs\"]}}' {url}"
            ),
            _ => format!("curl -d 'data' '{url}?n=100000'"),
        };
        functions.push(DevFunction {
            name: name.into(),
            url,
            cid,
            curl,
        });
    }
    Ok(functions)
}

/// Writes `.khachapuri/dev.json` whole (a reader never sees half of it); returns its path.
fn write_dev_json(cwd: &Path, info: &DevInfo) -> anyhow::Result<PathBuf> {
    let text = serde_json::to_string_pretty(info)?;
    let dev_json = cwd.join(DEV_JSON);
    let tmp = dev_json.with_extension("json.tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &dev_json)
        .with_context(|| format!("cannot write {}", dev_json.display()))?;
    Ok(dev_json)
}

/// What is up and how to call it (`--json`: dev.json itself, on stdout).
fn print_summary(out: &Out, info: &DevInfo, deposit: Usdc) -> anyhow::Result<()> {
    if out.json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    println!();
    println!(
        "Khachapuri dev network is up (chain {}, RPC {}).",
        info.chain_id, info.rpc_url
    );
    println!(
        "Test account {} (private key {}): {deposit} in the escrow, pays for these calls:",
        info.accounts[0].address, info.accounts[0].private_key
    );
    println!();
    for f in &info.functions {
        println!("  # {}", f.name);
        println!("  {}", f.curl);
    }
    // A provider going away, for whoever wants to watch routing fail over.
    for p in &info.providers {
        if let Some(pid) = p.pid {
            println!();
            println!(
                "Provider `{}` runs behind the gateway's tunnel in its own process: `kill {pid}` stops it, and \
                 {ROUTED} goes on answering, from `{LABEL}`.",
                p.label
            );
        }
    }
    if let Some(console) = &info.console {
        println!();
        println!(
            "Web console: {console} (connect a wallet to chain {} at RPC {}; the test account's key above imports into it)",
            info.chain_id, info.rpc_url
        );
    }
    println!();
    println!("Everything above is in {DEV_JSON}. Ctrl-C stops it.");
    Ok(())
}

/// One `khachapuri dev` per directory: its state (.khachapuri/dev) is not shareable.
struct Lock {
    path: PathBuf,
}

impl Lock {
    fn take(path: &Path) -> anyhow::Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<u32>()
            && pid != std::process::id()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!(
                "another `khachapuri dev` (pid {pid}) runs in this directory; stop it with Ctrl-C, or run this one \
                 from another directory (ports never collide, the state in .khachapuri/dev would)"
            );
        }
        std::fs::write(path, std::process::id().to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
