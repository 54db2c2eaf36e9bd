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
use khachapuri_gateway::GatewayConfig;
use khachapuri_gateway::chain_directory::{ChainDirectory, ChainDirectoryConfig};
use khachapuri_ipfs::{FsBlockstore, KuboClient, Node};
use khachapuri_provider::{Config, SettlementMode, wal::Durability};
use khachapuri_spec::{Limits, ProviderKey};

use crate::deploy::{Package, Publication, publish};
use crate::net::{
    DEV_JSON, DevAccount, DevFunction, DevInfo, DevProvider, free_port, port_is_free,
};

/// The dev network's provider label.
pub const LABEL: &str = "dev";
const PAYEE: u32 = 1;
const TEST_ACCOUNT: u32 = 2;
const PRICE: Usdc = Usdc::from_units(10_000); // 0.01 USDC
const EXAMPLES: [&str; 4] = ["hello", "echo", "json-transform", "cpu-heavy"];

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
        args: Vec::new(),
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

async fn serve(
    out: &Out,
    args: &DevArgs,
    root: &Path,
    cwd: &Path,
    state: &Path,
    rpc_url: &str,
) -> anyhow::Result<()> {
    // Short delays: a local network is for trying the flows, not waiting a day for them.
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
    let chain = |index: u32| {
        Chain::new(
            rpc_url,
            Some(anvil_signer(index)),
            deployment.clone(),
            ConnectOptions::default(),
        )
    };

    // --- IPFS
    let store = FsBlockstore::open(state.join("ipfs"))
        .context("opening the IPFS store under .khachapuri/dev/ipfs")?;
    let node = Node::start(store, 0)
        .await
        .context("starting the embedded IPFS node")?;
    out.step(format!(
        "IPFS node at {} (store: .khachapuri/dev/ipfs)",
        node.url()
    ));

    // --- provider registration
    let data_dir = state.join("provider");
    std::fs::create_dir_all(&data_dir)?;
    // A fresh chain: claims a previous run left refer to a chain that is gone.
    let _ = std::fs::remove_file(data_dir.join("claims.wal"));
    let key = ProviderKey::load_or_generate(&data_dir.join("rsa.pem"))
        .context("the provider's RSA key")?;
    let provider_port = free_port()?;
    let provider_url = format!("http://127.0.0.1:{provider_port}");
    let payee = anvil_signer(PAYEE);
    let provider_chain = chain(PAYEE)?;
    provider_chain
        .register_provider(
            LABEL,
            payee.address(),
            &Server::Url(provider_url.clone()),
            key.public_key_der().to_vec().into(),
            |step| match step {
                RegistrationStep::Committed { .. } => {
                    out.step(format!("label `{LABEL}`: committed"))
                }
                RegistrationStep::ResolverDeployed { resolver } => {
                    out.step(format!("label `{LABEL}`: resolver {resolver} deployed"))
                }
                RegistrationStep::Waiting { seconds_left } => out.step(format!(
                    "label `{LABEL}`: waiting {seconds_left} s for the commitment to age"
                )),
                RegistrationStep::Registered => out.step(format!("label `{LABEL}`: registered")),
            },
        )
        .await
        .context("registering the provider label")?;

    // --- provider agent
    let config = Config {
        label: LABEL.into(),
        listen: SocketAddr::from(([127, 0, 0, 1], provider_port)),
        rpc_url: rpc_url.into(),
        deployments: deployments_dir.clone(),
        data_dir: data_dir.clone(),
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
        max_memory_bytes: 128 << 20,
        max_timeout: Duration::from_secs(10),
        max_output_bytes: 16 << 20,
        tunnel: None,
    };
    let agent = khachapuri_provider::start(config, payee.clone())
        .await
        .context("starting the provider agent")?;
    out.step(format!(
        "provider `{LABEL}` at http://{} (payee {}, {PRICE} per request)",
        agent.addr,
        payee.address()
    ));

    // --- gateway
    let directory = ChainDirectory::start(
        Chain::new(rpc_url, None, deployment.clone(), ConnectOptions::default())?,
        ChainDirectoryConfig {
            poll_interval: Duration::from_millis(500),
            ..ChainDirectoryConfig::default()
        },
    );
    let gateway = khachapuri_gateway::spawn(
        SocketAddr::from(([127, 0, 0, 1], args.gateway_port)),
        GatewayConfig {
            base_domain: Some("localhost".into()),
            gateway_id: "khachapuri-dev".into(),
            ..GatewayConfig::default()
        },
        directory,
    )
    .await
    .with_context(|| format!("starting the gateway on port {}", args.gateway_port))?;
    let gateway_url = format!("http://127.0.0.1:{}", gateway.addr.port());
    out.step(format!(
        "gateway at {gateway_url} (path mode: {gateway_url}/{{label}}/{{cid}})"
    ));

    // --- the test account: mint, deposit, reserve for the provider
    let test = anvil_signer(TEST_ACCOUNT);
    let minted = Usdc::from_whole(1_000);
    let deposit = Usdc::from_whole(100);
    let reserve = Usdc::from_whole(50);
    chain(0)?
        .mint_test_usdc(test.address(), minted)
        .await
        .context("minting test USDC")?;
    let test_chain = chain(TEST_ACCOUNT)?;
    test_chain
        .deposit(test.address(), deposit)
        .await
        .context("depositing into the escrow")?;
    let max_price = Usdc::from_units(50_000);
    test_chain
        .reserve(payee.address(), max_price, reserve)
        .await
        .context("reserving for the provider")?;
    out.step(format!(
        "test account {} funded: {minted} minted, {deposit} deposited, {reserve} of it reserved for provider `{LABEL}` at up to {max_price} per request",
        test.address()
    ));

    // --- example functions
    let kubo = KuboClient::new(node.url());
    let mut functions = Vec::new();
    for name in EXAMPLES {
        let path = root.join(format!("examples/target/wasm32-wasip1/release/{name}.wasm"));
        if !path.exists() {
            eprintln!(
                "warning: skipping example `{name}`: {} is missing (build the examples with `make examples`)",
                path.display()
            );
            continue;
        }
        let env: BTreeMap<String, String> = match name {
            "hello" => [("GREETING".to_string(), "Hello from Khachapuri".to_string())].into(),
            _ => BTreeMap::new(),
        };
        let package = Package::from_module(&path)?;
        let cid = publish(
            &kubo,
            Publication {
                package: &package,
                env,
                owner: &test,
                provider: Some((LABEL, key.public_key_der())),
                max_price,
                limits: Limits {
                    memory_bytes: 64 << 20,
                    timeout_ms: 5_000,
                    output_bytes: 1 << 20,
                },
                terms: "khachapuri dev example".into(),
                deployment: &deployment,
            },
        )
        .await
        .with_context(|| format!("deploying the example {name}"))?
        .spec
        .to_string();
        let url = format!("{gateway_url}/{LABEL}/{cid}");
        let curl = match name {
            "hello" => format!("curl -d 'Khachapuri' {url}"),
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
    out.step(format!(
        "{} example functions deployed (specs signed by the test account, encrypted to `{LABEL}`)",
        functions.len()
    ));

    let info = DevInfo {
        rpc_url: rpc_url.into(),
        chain_id: deployment.chain_id,
        contracts: serde_json::to_value(&deployment)?,
        gateway: gateway_url.clone(),
        provider: DevProvider {
            label: LABEL.into(),
            url: format!("http://{}", agent.addr),
            payee: payee.address().to_string(),
            price: PRICE.to_string(),
        },
        ipfs: node.url(),
        accounts: vec![DevAccount {
            label: "test".into(),
            address: test.address().to_string(),
            private_key: format!("0x{}", hex::encode(test.to_bytes())),
        }],
        functions,
    };
    let text = serde_json::to_string_pretty(&info)?;
    let dev_json = cwd.join(DEV_JSON);
    let tmp = dev_json.with_extension("json.tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &dev_json)
        .with_context(|| format!("cannot write {}", dev_json.display()))?;

    if out.json {
        println!("{text}");
    } else {
        println!();
        println!(
            "Khachapuri dev network is up (chain {}, RPC {rpc_url}).",
            deployment.chain_id
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
        println!();
        println!("Everything above is in {DEV_JSON}. Ctrl-C stops it.");
    }

    khachapuri_process::shutdown_signal().await;
    if !out.json {
        println!();
    }
    out.step("stopping: gateway, provider (settling every claim), IPFS node, anvil");
    let _ = std::fs::remove_file(&dev_json);
    gateway.shutdown().await;
    agent.shutdown().await;
    let earned = chain(0)?
        .earnings(payee.address())
        .await
        .map(|u| u.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    out.step(format!("provider `{LABEL}` earned {earned}"));
    let _ = node.stop().await;
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
