//! `khachapuri deploy`: build or read a program, zip it, upload it, write and sign its spec, encrypt it to
//! the provider's RSA key, upload that, print the URL. [`publish`] is also how `khachapuri dev` deploys the
//! examples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::primitives::U256;
use anyhow::{Context, anyhow, bail};
use khachapuri_chain::{Deployment, PrivateKeySigner, Server, Usdc};
use khachapuri_ipfs::{Cid, KuboClient};
use khachapuri_runtime::PackageLimits;
use khachapuri_runtime::package::{check_module, unzip_module, zip_module};
use khachapuri_spec::{
    Limits, Offer, OfferError, ProgramKey, SPEC_VERSION, Spec, SpendCap, seal_program, seal_to,
};

use crate::args::{ChainArgs, parse_duration, parse_size, parse_usdc, resolve_payee_record};
use crate::net::read_dev_info;
use crate::progress;

/// `khachapuri deploy` options.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    program: ProgramArgs,
    /// The provider label to deploy to (the spec is encrypted to its RSA key); repeat it to deploy to
    /// several (one spec sealed to each of their keys, any of which runs it under the same terms).
    #[arg(long, required = true)]
    provider: Vec<String>,
    #[command(flatten)]
    env: EnvArgs,
    /// An open deployment: the spec is not encrypted and names no provider (it holds no secrets, so
    /// --env is refused), and the program is uploaded in the clear.
    #[arg(long)]
    open: bool,
    /// Upload the program in the clear, readable by anyone on IPFS (a sealed deployment's program is
    /// otherwise encrypted, its key inside the sealed spec).
    #[arg(long, conflicts_with = "open")]
    public_program: bool,
    /// The most the owner pays per request, in USDC.
    #[arg(long, default_value = "0.05")]
    price: String,
    #[command(flatten)]
    limits: LimitArgs,
    /// The most providers may charge you for this deployment per period, e.g. `5/day`, `0.50/1h`, `20/7d`:
    /// what a leaked URL can cost before you revoke it. Calls paid with someone else's payer token do not
    /// count.
    #[arg(long, value_name = "USDC/PERIOD")]
    spend_cap: Option<String>,
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
    #[command(flatten)]
    chain: ChainArgs,
}

/// The program, as `deploy` and `run` take it.
#[derive(clap::Args, Debug)]
pub struct ProgramArgs {
    /// The program: a WebAssembly (WASI preview 1) module, a .zip holding one, or a cargo project directory
    /// (built with `cargo build --release --target wasm32-wasip1`).
    path: PathBuf,
    /// The entry module's path inside a .zip [default: its only .wasm].
    #[arg(long)]
    entry: Option<String>,
    /// Which binary of a cargo project [default: its only one].
    #[arg(long)]
    bin: Option<String>,
}

impl ProgramArgs {
    /// Builds (a cargo project) or reads the program, zipped with its entry module.
    pub fn package(&self) -> anyhow::Result<Package> {
        if self.path.is_dir() {
            Package::from_cargo(&self.path, self.bin.as_deref())
        } else if self.path.extension().is_some_and(|e| e == "zip") {
            Package::from_zip(&self.path, self.entry.as_deref())
        } else {
            Package::from_module(&self.path)
        }
    }
}

/// The program's environment, as `deploy` and `run` take it.
#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    /// An environment variable of the program, KEY=VALUE (repeatable; encrypted in the spec).
    #[arg(long = "env")]
    env: Vec<String>,
    /// A dotenv file: KEY=VALUE lines, `export` allowed, `#` comments, values in quotes; --env wins over it.
    #[arg(long)]
    env_file: Option<PathBuf>,
}

impl EnvArgs {
    /// The variables of --env-file, then of --env (which win).
    pub fn read(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        if let Some(path) = &self.env_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --env-file {}", path.display()))?;
            env = parse_env_file(&text, &path.display().to_string())?;
        }
        env.extend(parse_env(&self.env)?);
        Ok(env)
    }
}

/// A run's limits, as `deploy` signs them and `run` applies them.
#[derive(clap::Args, Debug)]
pub struct LimitArgs {
    /// Memory the program may use per request, e.g. 64MiB.
    #[arg(long, default_value = "64MiB")]
    memory: String,
    /// Longest a request may run, e.g. 5s or 500ms.
    #[arg(long, default_value = "5s")]
    timeout: String,
    /// Largest response the program may write, e.g. 4MiB.
    #[arg(long, default_value = "4MiB")]
    max_output: String,
}

impl LimitArgs {
    /// The limits, parsed.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        Ok(Limits {
            memory_bytes: parse_size("--memory", &self.memory)?,
            timeout_ms: u64::try_from(parse_duration("--timeout", &self.timeout)?.as_millis())
                .unwrap_or(u64::MAX),
            output_bytes: parse_size("--max-output", &self.max_output)?,
        })
    }
}

/// `--spend-cap AMOUNT/PERIOD`: USDC per period (`day`, `hour`, `week`, or a duration like `12h`, `7d`).
fn parse_spend_cap(text: &str) -> anyhow::Result<SpendCap> {
    let (amount, period) = text.split_once('/').ok_or_else(|| {
        anyhow!("--spend-cap `{text}`: write USDC/PERIOD, e.g. 5/day, 0.50/1h or 20/7d")
    })?;
    let amount = parse_usdc("--spend-cap", amount.trim())?;
    if amount == Usdc::ZERO {
        bail!("--spend-cap `{text}`: a zero cap allows no call; leave --spend-cap out for no cap");
    }
    let period = match period.trim() {
        "hour" => Duration::from_secs(3_600),
        "day" => Duration::from_secs(86_400),
        "week" => Duration::from_secs(7 * 86_400),
        other => parse_duration("--spend-cap", other).map_err(|_| {
            anyhow!(
                "--spend-cap `{text}`: the period `{other}` is not one; write day, hour, week or a duration \
                 like 12h or 7d"
            )
        })?,
    };
    if period.as_secs() == 0 || period.subsec_millis() != 0 {
        bail!("--spend-cap `{text}`: the period is whole seconds, at least 1s");
    }
    Ok(SpendCap {
        amount: amount.to_u256(),
        period_seconds: period.as_secs(),
    })
}

/// A program ready to upload: a zip holding its entry module.
pub struct Package {
    /// The entry module's path in the zip.
    pub entry: String,
    /// The zip.
    pub zip: Vec<u8>,
}

impl Package {
    /// Zips a module read from `path`, named after the file.
    pub fn from_module(path: &Path) -> anyhow::Result<Self> {
        let module =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let limits = PackageLimits::default();
        check_module(&module, &limits).map_err(|e| match e {
            khachapuri_runtime::Error::MissingStart => anyhow!(
                "{} exports no `_start`: it is a library, and every provider would refuse it; build a \
                 command (a `fn main` binary, not a cdylib) with `cargo build --target wasm32-wasip1 --release`",
                path.display()
            ),
            e => anyhow!(
                "{} is not a WebAssembly module ({e}); build it with `cargo build --target wasm32-wasip1 --release`",
                path.display()
            ),
        })?;
        let entry = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("main.wasm")
            .to_owned();
        let zip = zip_module(&entry, &module, &limits)
            .with_context(|| format!("zipping {}", path.display()))?;
        Ok(Self { entry, zip })
    }

    /// Reads a program zip, checking that it holds its entry module (`entry`, or its only .wasm).
    fn from_zip(path: &Path, entry: Option<&str>) -> anyhow::Result<Self> {
        let zip = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let (entry, _) = unzip_module(&zip, entry, &PackageLimits::default()).map_err(|e| {
            anyhow!(
                "{}: {e}; a program zip holds one .wasm module, or name it with --entry",
                path.display()
            )
        })?;
        Ok(Self { entry, zip })
    }

    /// Builds a cargo project for wasm32-wasip1 and zips its binary.
    fn from_cargo(dir: &Path, bin: Option<&str>) -> anyhow::Result<Self> {
        let module = cargo_build(dir, bin)?;
        Self::from_module(&module)
    }
}

/// `cargo build --release --target wasm32-wasip1` in `dir`; returns the .wasm it wrote. Cargo's own
/// progress shows on stderr.
fn cargo_build(dir: &Path, bin: Option<&str>) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "==> building {} for wasm32-wasip1 (cargo build --release)",
        dir.display()
    );
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest);
    if let Some(bin) = bin {
        command.args(["--bin", bin]);
    }
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo; is Rust installed (https://rustup.rs)?")?;
    if !output.status.success() {
        bail!(
            "cargo build failed for {} (its errors are above); if it says the wasm32-wasip1 target is missing, run \
             `rustup target add wasm32-wasip1`",
            manifest.display()
        );
    }
    let wasm: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect();
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{} built no binary: a function is a `[[bin]]` (src/main.rs) crate",
            manifest.display()
        ),
        _ => bail!(
            "{} builds several binaries ({}); choose one with --bin",
            manifest.display(),
            wasm.iter()
                .filter_map(|p| p.file_stem()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reads KEY=VALUE lines (from --env-file, then --env) into the spec's environment.
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

/// Reads a dotenv file: `KEY=VALUE` lines, an optional `export ` before the key, `#` comments (whole
/// lines, or after an unquoted value and a space), values in double quotes (with `\\n`, `\\"` and `\\\\`
/// escapes) or single quotes (taken as they are). Errors name the file and the line.
fn parse_env_file(text: &str, file: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, raw)) = line.split_once('=') else {
            bail!("{at}: write KEY=VALUE (found `{line}`)");
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("{at}: the name `{key}` must be letters, digits and `_`");
        }
        env.insert(
            key.to_owned(),
            dotenv_value(raw.trim()).map_err(|e| anyhow!("{at}: {e}"))?,
        );
    }
    Ok(env)
}

/// One dotenv value, quotes and trailing comment removed.
fn dotenv_value(raw: &str) -> Result<String, &'static str> {
    let rest_is_comment = |rest: &str| {
        let rest = rest.trim();
        rest.is_empty() || rest.starts_with('#')
    };
    if let Some(inner) = raw.strip_prefix('\'') {
        let end = inner
            .find('\'')
            .ok_or("a single quote is not closed on its line")?;
        if !rest_is_comment(&inner[end + 1..]) {
            return Err("text after the closing quote");
        }
        return Ok(inner[..end].to_owned());
    }
    if let Some(inner) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    if !rest_is_comment(&inner[i + 1..]) {
                        return Err("text after the closing quote");
                    }
                    return Ok(value);
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c @ ('"' | '\\')) => value.push(c),
                    // Any other backslash is kept as written (a Windows path, a regex).
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err("a double quote is not closed on its line"),
                },
                c => value.push(c),
            }
        }
        return Err("a double quote is not closed on its line");
    }
    if raw.starts_with('#') {
        return Ok(String::new()); // `KEY= # note`: an empty value and a comment
    }
    let value = match raw.find(" #").or_else(|| raw.find("\t#")) {
        Some(i) => &raw[..i],
        None => raw,
    };
    Ok(value.trim_end().to_owned())
}

/// What to publish: a program and the terms its owner signs.
pub struct Publication<'a> {
    /// The program.
    pub package: &'a Package,
    /// The program's environment (secret once sealed).
    pub env: BTreeMap<String, String>,
    /// The owner: signs the terms and pays for calls made without a payer token.
    pub owner: &'a PrivateKeySigner,
    /// The provider labels and their RSA public keys (DER) the spec is sealed to; none: an open spec.
    pub providers: Vec<(&'a str, &'a [u8])>,
    /// The most the owner pays per request.
    pub max_price: Usdc,
    /// Per-request limits.
    pub limits: Limits,
    /// Terms text.
    pub terms: String,
    /// The most charged to the owner per period, if capped.
    pub spend_cap: Option<SpendCap>,
    /// Upload a sealed spec's program in the clear (it is encrypted with the spec otherwise).
    pub public_program: bool,
    /// The chain and escrow the terms are signed for.
    pub deployment: &'a Deployment,
}

/// Where a publication landed.
pub struct Published {
    /// The program zip's CID.
    pub program: Cid,
    /// The spec's CID: the function's name in its URL.
    pub spec: Cid,
    /// The spec's terms hash: what `khachapuri revoke` records.
    pub terms_hash: alloy::primitives::B256,
    /// The signed spec.
    pub signed: Spec,
}

/// Uploads the program, signs the spec, seals it to the provider (unless open) and uploads it.
pub async fn publish(kubo: &KuboClient, p: Publication<'_>) -> anyhow::Result<Published> {
    // A sealed spec's program is private unless the owner says otherwise: encrypted under a fresh key that
    // travels inside the spec's envelope, so IPFS holds only ciphertext.
    let sealed_to = !p.providers.is_empty();
    let program_key = (sealed_to && !p.public_program).then(ProgramKey::generate);
    let (zip, what) = match &program_key {
        Some(key) => (
            seal_program(key, &p.package.zip).context("encrypting the program")?,
            "zipped, encrypted",
        ),
        None => (p.package.zip.clone(), "zipped"),
    };
    let zip = bytes::Bytes::from(zip);
    // The size shown is what travels, so the line says what it is.
    let bar = progress::bytes(
        format!("uploading {} ({what})", p.package.entry),
        zip.len() as u64,
    );
    let ticker = bar.clone();
    let program = kubo
        .add_with_progress(&p.package.entry, zip, move |sent| ticker.set_position(sent))
        .await
        .map_err(|e| anyhow!("uploading the program: {e}; is the IPFS node running?"))?;
    bar.finish_and_clear();
    let mut spec = Spec {
        version: SPEC_VERSION,
        program: program.to_string(),
        entry: p.package.entry.clone(),
        env: p.env,
        owner: p.owner.address(),
        provider: sealed_to.then(|| {
            let labels: Vec<&str> = p.providers.iter().map(|(label, _)| *label).collect();
            labels.join(",")
        }),
        max_price: U256::from(p.max_price.units()),
        limits: p.limits,
        terms: p.terms,
        chain_id: p.deployment.chain_id,
        escrow: p.deployment.escrow,
        spend_cap: p.spend_cap,
        program_key,
        signature: Default::default(),
    };
    spec.sign(p.owner).await.context("signing the spec")?;
    let terms_hash = spec.terms_hash();
    let sealed = match sealed_to {
        false => spec.to_json(),
        true => {
            let keys: Vec<&[u8]> = p.providers.iter().map(|(_, key)| *key).collect();
            seal_to(&keys, &spec.to_json()).map_err(|e| {
                anyhow!(
                    "encrypting the spec to {}: {e}",
                    spec.provider.as_deref().unwrap_or_default()
                )
            })?
        }
    };
    let spec_cid = progress::wait("uploading the spec", kubo.add("spec", sealed.into()))
        .await
        .map_err(|e| anyhow!("uploading the spec: {e}"))?;
    Ok(Published {
        program,
        spec: spec_cid,
        terms_hash,
        signed: spec,
    })
}

/// The offer a provider serves at `{base}/_provider` (its payee, price, caps and chain), or why not.
pub(crate) async fn fetch_offer(base: &str) -> Result<Offer, String> {
    let response = khachapuri_tls::http()
        .get(format!("{base}/_provider"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| khachapuri_tls::error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice::<Offer>(&bytes).map_err(|e| e.to_string())
}

/// Reads the provider's offer (`{base}/_provider`) and refuses terms it would refuse at every call. A
/// provider that cannot be reached is not a reason to refuse: the spec is checked again at each call.
async fn check_offer(
    base: &str,
    label: &str,
    payee: alloy::primitives::Address,
    deployment: &Deployment,
    max_price: Usdc,
    limits: &Limits,
) -> anyhow::Result<Option<Offer>> {
    let url = format!("{base}/_provider");
    let offer = match progress::wait(format!("reading `{label}`'s offer"), fetch_offer(base)).await
    {
        Ok(offer) => offer,
        Err(e) => {
            eprintln!(
                "warning: cannot read `{label}`'s price and caps at {url} ({e}); deploying without checking them"
            );
            return Ok(None);
        }
    };
    if offer.payee != payee {
        eprintln!(
            "warning: {url} answers as `{}` ({}), not as `{label}` ({payee}) as registered; deploying without \
             checking its price and caps (is --gateway right?)",
            offer.label, offer.payee
        );
        return Ok(None);
    }
    let checked = offer.check(deployment.chain_id, deployment.escrow, max_price, limits);
    checked.map_err(|e| match &e {
        OfferError::PriceAboveSpec { price, .. } => anyhow!(
            "`{label}` charges {price} per request, more than --price {max_price}: it would refuse every call; \
             pass --price {} or more",
            price.to_string().trim_end_matches(" USDC")
        ),
        OfferError::LimitAboveCap { what, .. } => {
            let flag = match *what {
                "memory" => "--memory",
                "time" => "--timeout",
                _ => "--max-output",
            };
            anyhow!("{e} (`{label}`): it would refuse every call; lower {flag}")
        }
        OfferError::WrongChain { .. } => anyhow!("`{label}`: {e}; deploy with that chain's RPC"),
    })?;
    Ok(Some(offer))
}

/// Says so when calls without a payer token, which the owner pays, would be refused (402): the owner is
/// frozen, or has neither credits nor a reserve (net of a pending release) with the provider at its price
/// (net of a pending cut). Not an error: callers may bring tokens.
async fn warn_if_owner_cannot_pay(
    chain: &khachapuri_chain::Chain,
    label: &str,
    payee: alloy::primitives::Address,
    price: Usdc,
) {
    let Ok(owner) = chain.address() else { return };
    let Ok(terms) = chain.terms(owner, payee).await else {
        return;
    };
    let covered = !terms.frozen
        && (terms.credits >= price
            || (terms.claimable_reserve() >= price && terms.claimable_price() >= price));
    if !covered {
        let price = price.to_string();
        let bare = price.trim_end_matches(" USDC");
        eprintln!(
            "note: plain calls (no payer token) are paid by you, {owner}, and you have nothing set aside for \
             `{label}` at {price}: they will answer 402 until you run `khachapuri escrow reserve --provider {label} \
             --price {bare} --amount {bare}` (or more)"
        );
    }
}

/// Deploys a program and prints its URL.
pub async fn deploy(args: DeployArgs, json: bool) -> anyhow::Result<()> {
    let env = args.env.read()?;
    if args.open && !env.is_empty() {
        bail!(
            "an --open deployment is plain JSON on IPFS: it cannot carry --env secrets; drop --open to encrypt them to the provider"
        );
    }
    let price: Usdc = parse_usdc("--price", &args.price)?;
    let limits = args.limits.limits()?;
    let spend_cap = args.spend_cap.as_deref().map(parse_spend_cap).transpose()?;
    let dev = read_dev_info(&std::env::current_dir()?).ok();
    let ipfs = args.ipfs.clone().or_else(|| dev.as_ref().map(|d| d.ipfs.clone())).ok_or_else(|| {
        anyhow!("no IPFS node to upload to: pass --ipfs http://127.0.0.1:5001 (a Kubo RPC URL), or run `khachapuri dev`")
    })?;
    let chain = args.chain.connect(true).await?;
    let owner = chain.signer().context("no signer")?.clone();
    let gateway = args
        .gateway
        .clone()
        .or_else(|| dev.as_ref().map(|d| d.gateway.clone()));
    // Each provider: its records, where the function will answer (`{base}/{cid}`), and what it would
    // refuse at call time, refused now, before anything is uploaded.
    let mut targets: Vec<(&str, khachapuri_chain::ProviderRecord, String)> =
        Vec::with_capacity(args.provider.len());
    for label in &args.provider {
        if args.provider.iter().filter(|l| *l == label).count() > 1 {
            bail!("--provider {label} is given twice");
        }
        let record = resolve_payee_record(&chain, label).await?;
        let base = match (&gateway, &record.server) {
            (Some(gateway), _) => format!("{}/{label}", gateway.trim_end_matches('/')),
            (None, Server::Url(server)) => server.trim_end_matches('/').to_owned(),
            (None, Server::Tunnel) => format!("https://{label}.khachapuri.xyz"),
        };
        let offer = check_offer(
            &base,
            label,
            record.payee,
            chain.deployment(),
            price,
            &limits,
        )
        .await?;
        if let Some(offer) = &offer {
            if args.open && !offer.open_specs {
                bail!(
                    "`{label}` runs only specs sealed to it (its operator refuses open specs): drop --open to seal \
                     the spec to it"
                );
            }
            if let Some(cap) = &spend_cap
                && cap.amount < offer.price.to_u256()
            {
                bail!(
                    "--spend-cap {cap} is below `{label}`'s price of {} per request: no call you pay would fit; \
                     raise the cap to at least the price",
                    offer.price
                );
            }
            warn_if_owner_cannot_pay(&chain, label, record.payee, offer.price).await;
        }
        if let Some((other, _, _)) = targets
            .iter()
            .find(|(_, r, _)| r.rsa_public_key_der == record.rsa_public_key_der)
        {
            bail!(
                "`{other}` and `{label}` publish the same RSA key: one envelope entry would serve both; deploy to \
                 one of them"
            );
        }
        targets.push((label.as_str(), record, base));
    }
    if targets.len() > khachapuri_spec::envelope::MAX_RECIPIENTS {
        bail!(
            "{} providers: a spec is sealed to at most {}",
            targets.len(),
            khachapuri_spec::envelope::MAX_RECIPIENTS
        );
    }

    let package = args.program.package()?;
    let published = publish(
        &KuboClient::new(ipfs.clone()),
        Publication {
            package: &package,
            env,
            owner: &owner,
            providers: match args.open {
                true => Vec::new(),
                false => targets
                    .iter()
                    .map(|(label, record, _)| (*label, &record.rsa_public_key_der[..]))
                    .collect(),
            },
            max_price: price,
            limits,
            terms: args.terms.clone(),
            spend_cap,
            public_program: args.public_program,
            deployment: chain.deployment(),
        },
    )
    .await
    .map_err(|e| anyhow!("{e} (IPFS node {ipfs})"))?;
    let cid = published.spec;
    let urls: Vec<String> = targets
        .iter()
        .map(|(_, _, base)| format!("{base}/{cid}"))
        .collect();
    // The URLs are live from here on: a record that cannot be written is a warning, never a lost URL.
    for ((label, _, _), url) in targets.iter().zip(&urls) {
        let deployed = crate::deployments::Deployed::new(&published, label, url);
        if let Err(e) = std::env::current_dir()
            .map_err(anyhow::Error::from)
            .and_then(|dir| crate::deployments::record(&dir, &deployed))
        {
            eprintln!(
                "warning: {e:#}; `khachapuri deployments` will not list {url}: keep it, and its terms hash {} \
                 to revoke it",
                published.terms_hash
            );
        }
    }
    let url = &urls[0];
    let labels = args.provider.join("`, `");
    // Several runners (or any, for an open spec): the gateway picks one per call, and fails over.
    let routed = match (&gateway, targets.len() > 1 || args.open) {
        (Some(gateway), true) => Some(format!("{}/{cid}", gateway.trim_end_matches('/'))),
        _ => None,
    };
    if json {
        let v = serde_json::json!({
            "cid": cid.to_string(), "program": published.program.to_string(), "entry": package.entry,
            "url": url, "urls": urls, "routedUrl": routed, "providers": args.provider,
            "owner": owner.address().to_string(), "maxPrice": price.to_string(),
            "limits": limits, "open": args.open, "termsHash": published.terms_hash.to_string(),
            "spendCap": spend_cap,
            "privateProgram": published.signed.program_key.is_some(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "program {} uploaded{}; spec signed by {} (pays up to {price} per request{}){}",
            published.program,
            if published.signed.program_key.is_some() {
                " encrypted (readable only by the spec's providers)"
            } else {
                " in the clear"
            },
            owner.address(),
            spend_cap.map_or(String::new(), |c| format!(", at most {c}")),
            if args.open {
                ", open to any provider".to_owned()
            } else {
                format!(", encrypted to `{labels}`")
            }
        );
        for url in &urls {
            println!("{url}");
        }
        eprintln!("call it:    curl -d 'hi' {url}");
        if let Some(routed) = &routed {
            eprintln!(
                "any runner: curl -i -d 'hi' {routed}   (the gateway picks one, and fails over)"
            );
        }
        eprintln!("its logs:   khachapuri logs {url}");
        eprintln!("revoke it:  khachapuri revoke {url}   (for good: the URL spends your money)");
        eprintln!("all yours:  khachapuri deployments");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_the_usual_dotenv_syntax() {
        let text = "# secrets\n\nexport API_KEY=abc123\nGREETING=\"Hola, mundo\"  # a comment\nRAW='$HOME \\n as is'\nMULTI=\"a\\nb \\\"q\\\"\"\nPLAIN = spaced value # note\nEMPTY=\n";
        let env = parse_env_file(text, ".env").unwrap();
        assert_eq!(env["API_KEY"], "abc123");
        assert_eq!(env["GREETING"], "Hola, mundo");
        assert_eq!(env["RAW"], "$HOME \\n as is");
        assert_eq!(env["MULTI"], "a\nb \"q\"");
        assert_eq!(env["PLAIN"], "spaced value");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env.len(), 6);
        let env = parse_env_file(
            "BLANK= # nothing here\r\nWIN=\"C:\\dir\\bin\"\nRE=\"a\\d+\"\nHASH=\"x # y\"\nURL=a=b\n",
            ".env",
        )
        .unwrap();
        assert_eq!(env["BLANK"], "", "a comment after nothing is not the value");
        assert_eq!(
            env["WIN"], "C:\\dir\\bin",
            "unknown escapes keep their backslash"
        );
        assert_eq!(env["RE"], "a\\d+");
        assert_eq!(env["HASH"], "x # y", "a # inside quotes is the value's");
        assert_eq!(env["URL"], "a=b");
    }

    #[test]
    fn spend_caps_read_like_people_write_them() {
        let cap = parse_spend_cap("5/day").unwrap();
        assert_eq!(cap.amount, U256::from(5_000_000));
        assert_eq!(cap.period_seconds, 86_400);
        assert_eq!(cap.to_string(), "5.00 USDC per day");
        let cap = parse_spend_cap("0.25 / 12h").unwrap();
        assert_eq!(
            (cap.amount, cap.period_seconds),
            (U256::from(250_000), 43_200)
        );
        assert_eq!(cap.to_string(), "0.25 USDC per 12 hours");
        for bad in ["5", "0/day", "5/fortnight", "5/500ms", "x/day"] {
            let err = parse_spend_cap(bad).unwrap_err().to_string();
            assert!(err.contains("--spend-cap"), "{bad}: {err}");
        }
    }

    #[test]
    fn env_file_errors_name_the_file_and_line() {
        let err = parse_env_file("A=1\nnot a pair\n", "prod.env")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("prod.env:2: write KEY=VALUE"), "{err}");
        let err = parse_env_file("A=1\n\nB-C=2\n", "prod.env")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("prod.env:3: the name `B-C`"), "{err}");
        let err = parse_env_file("Q=\"open\n", "prod.env")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "prod.env:1: a double quote is not closed on its line");
        assert!(!err.contains("--env"));
    }
}
