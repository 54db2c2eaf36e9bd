//! `khachapuri deploy`: upload a wasm program, write and sign its spec, encrypt it to the provider, upload.

use std::collections::BTreeMap;
use std::path::PathBuf;

use alloy::primitives::U256;
use anyhow::{Context, anyhow, bail};
use khachapuri_chain::{Server, Usdc};
use khachapuri_ipfs::KuboClient;
use khachapuri_spec::{Limits, SPEC_VERSION, Spec, seal};

use crate::net::read_dev_info;
use crate::token::{ChainArgs, parse_usdc, resolve_payee_record};

/// `khachapuri deploy` options.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The program: a WebAssembly (WASI preview 1) module.
    file: PathBuf,
    /// The provider label to deploy to (the spec is encrypted to its RSA key).
    #[arg(long)]
    provider: String,
    /// An environment variable of the program, KEY=VALUE (repeatable; encrypted in the spec).
    #[arg(long = "env")]
    env: Vec<String>,
    /// A file of KEY=VALUE lines (`#` comments and blank lines skipped); --env wins over it.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// An open deployment: the spec is not encrypted and names no provider (it holds no secrets, so
    /// --env is refused).
    #[arg(long)]
    open: bool,
    /// The most the owner pays per request, in USDC.
    #[arg(long, default_value = "0.05")]
    price: String,
    /// Terms text the owner signs.
    #[arg(long, default_value = "")]
    terms: String,
    /// Kubo RPC URL to upload to [default: the dev network's IPFS node].
    #[arg(long, env = "KHACHAPURI_IPFS_API")]
    ipfs: Option<String>,
    /// Gateway base URL for the printed URL (path mode) [default: the dev network's gateway, else the
    /// provider's own server URL].
    #[arg(long, env = "KHACHAPURI_GATEWAY")]
    gateway: Option<String>,
    /// Print JSON (cid, program, url).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    chain: ChainArgs,
}

fn parse_env(entries: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for entry in entries {
        let Some((k, v)) = entry.split_once('=') else {
            bail!("--env `{entry}`: write KEY=VALUE, e.g. --env GREETING=Hola");
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!(
                "--env `{entry}`: the name `{k}` must be letters, digits and `_`, e.g. --env GREETING=Hola"
            );
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

/// Deploys a program and prints its URL.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    if let Some(path) = &args.env_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --env-file {}", path.display()))?;
        entries.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    entries.extend(args.env.iter().cloned());
    let env = parse_env(&entries)?;
    if args.open && !env.is_empty() {
        bail!(
            "an --open deployment is plain JSON on IPFS: it cannot carry --env secrets; drop --open to encrypt them to the provider"
        );
    }
    let price: Usdc = parse_usdc("--price", &args.price)?;
    let program = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if !program.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly module; build it with `cargo build --target wasm32-wasip1 --release`",
            args.file.display()
        );
    }
    let entry = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("main.wasm")
        .to_owned();
    let dev = read_dev_info(&std::env::current_dir()?).ok();
    let ipfs = args.ipfs.clone().or_else(|| dev.as_ref().map(|d| d.ipfs.clone())).ok_or_else(|| {
        anyhow!("no IPFS node to upload to: pass --ipfs http://127.0.0.1:5001 (a Kubo RPC URL), or run `khachapuri dev`")
    })?;
    let chain = args.chain.connect(true).await?;
    let record = resolve_payee_record(&chain, &args.provider).await?;
    let owner = chain.signer().context("no signer")?.clone();

    let kubo = KuboClient::new(ipfs.clone());
    let program_cid = kubo
        .add(&entry, program.into())
        .await
        .map_err(|e| anyhow!("uploading the program to {ipfs}: {e}; is the IPFS node running?"))?;
    let d = chain.deployment();
    let mut spec = Spec {
        version: SPEC_VERSION,
        program: program_cid.to_string(),
        entry,
        env,
        owner: owner.address(),
        provider: if args.open {
            None
        } else {
            Some(args.provider.clone())
        },
        max_price: U256::from(price.units()),
        limits: Limits::default(),
        terms: args.terms.clone(),
        chain_id: d.chain_id,
        escrow: d.escrow,
        signature: Default::default(),
    };
    spec.sign(&owner).await.context("signing the spec")?;
    let sealed = if args.open {
        spec.to_json()
    } else {
        seal(&record.rsa_public_key_der, &spec.to_json())
            .map_err(|e| anyhow!("encrypting the spec to `{}`'s RSA key: {e}", args.provider))?
    };
    let cid = kubo
        .add("spec", sealed.into())
        .await
        .map_err(|e| anyhow!("uploading the spec to {ipfs}: {e}"))?
        .to_string();
    let url = match (
        args.gateway
            .clone()
            .or_else(|| dev.as_ref().map(|d| d.gateway.clone())),
        &record.server,
    ) {
        (Some(gateway), _) => format!("{}/{}/{cid}", gateway.trim_end_matches('/'), args.provider),
        (None, Server::Url(server)) => format!("{}/{cid}", server.trim_end_matches('/')),
        (None, Server::Tunnel) => format!("https://{}.khachapuri.xyz/{cid}", args.provider),
    };
    if args.json {
        let v = serde_json::json!({ "cid": cid, "program": program_cid.to_string(), "url": url, "owner": owner.address().to_string(), "maxPrice": price.to_string() });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "program {program_cid} uploaded; spec signed by {} (pays up to {price} per request), encrypted to `{}`",
            owner.address(),
            args.provider
        );
        println!("{url}");
        eprintln!("call it:  curl -d 'hi' {url}");
    }
    Ok(())
}
