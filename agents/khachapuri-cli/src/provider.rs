//! `khachapuri provider`: become a provider (`init`: RSA key, resolver, commit-reveal registration), run the
//! agent (`up`, directly or through a gateway tunnel), grant trial credits, see and take earnings.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use anyhow::{Context, anyhow, bail};
use khachapuri_chain::{Chain, ChainError, RegistrationStep, Server, Usdc, validate_label};
use khachapuri_provider::ProviderArgs;
use khachapuri_spec::ProviderKey;
use serde_json::json;

use crate::args::{ChainArgs, or_me, parse_usdc, report};
use crate::progress;

/// Where `provider init` keeps the agent's files unless told otherwise.
const DATA_DIR: &str = ".khachapuri/provider";
/// The config file `provider init` writes in the data directory, and `provider up` reads by default.
const CONFIG_FILE: &str = "provider.toml";

/// `khachapuri provider ...`
#[derive(clap::Subcommand, Debug)]
pub enum ProviderCommand {
    /// Become a provider: make an RSA key, deploy a resolver, register the label (commit, wait, reveal),
    /// and write the agent's config. Run again to update the resolver's server or key.
    Init(InitArgs),
    /// Run the provider agent until Ctrl-C (settling every claim before it stops). Reads the config
    /// `provider init` wrote, and in a `khachapuri dev` directory finds its chain and IPFS node; the payee
    /// key comes from --private-key (KHACHAPURI_PRIVATE_KEY) or --keystore.
    Up(Box<ProviderArgs>),
    /// Trial credits: spendable by one user with you only, never earned by you.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Your earnings in the escrow; with --withdraw, send them to --to.
    Earnings {
        /// Withdraw this much (USDC) or `all`.
        #[arg(long)]
        withdraw: Option<String>,
        /// Where withdrawn earnings go [default: the signing account].
        #[arg(long)]
        to: Option<Address>,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// `khachapuri provider credits ...`
#[derive(clap::Subcommand, Debug)]
pub enum CreditsCommand {
    /// Grant a user trial credits with you (the signer must be the provider's payee).
    Grant {
        /// The user's address.
        user: Address,
        /// How much, in USDC.
        amount: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// `khachapuri provider init` options.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("server").required(true).args(["url", "tunnel"])))]
pub struct InitArgs {
    /// The label to register (`alice` in alice.khachapuri.xyz): 1..63 of [a-z0-9-], not `xn--…` (no `--` at
    /// positions 3–4), not an infrastructure name (`www`, `api`, `gateway`, ...).
    #[arg(long)]
    label: String,
    /// The agent's public base URL, where the gateway forwards requests (e.g. https://alice.example:8443).
    #[arg(long)]
    url: Option<String>,
    /// Serve through a gateway's WebSocket tunnel instead (behind NAT): its URL, e.g.
    /// ws://gateway.example/_tunnel. The resolver's server record becomes `tunnel:`.
    #[arg(long)]
    tunnel: Option<String>,
    /// Price per request the agent charges, USDC.
    #[arg(long, default_value = "0.01")]
    price: String,
    /// The agent's data directory (RSA key, claims log, module cache, config).
    #[arg(long, default_value = DATA_DIR)]
    data_dir: PathBuf,
    /// An existing RSA key (PKCS#8 PEM) to publish instead of the data directory's `rsa.pem`.
    #[arg(long)]
    rsa_key: Option<PathBuf>,
    /// Where the agent fetches specs and programs: `local`, `kubo=URL`, `gateway=URL` (repeatable)
    /// [default: the dev network's IPFS node in a `khachapuri dev` directory, else the local store and
    /// the public trustless gateway https://trustless-gateway.link].
    #[arg(long = "ipfs", value_delimiter = ',')]
    ipfs: Vec<String>,
    #[command(flatten)]
    chain: ChainArgs,
}

/// The IPFS sources `provider init` writes: those given, else the dev node where there is one, else the local
/// store and a public trustless gateway (every block is verified against its CID, whoever serves it).
fn ipfs_sources(given: &[String]) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let dev = std::env::current_dir()
        .ok()
        .and_then(|dir| crate::net::read_dev_info(&dir).ok());
    match dev {
        Some(dev) => vec![dev.ipfs_source()],
        None => vec![
            "local".into(),
            "gateway=https://trustless-gateway.link".into(),
        ],
    }
}

/// Runs a provider command.
pub async fn provider(command: ProviderCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ProviderCommand::Init(args) => init(args, json).await,
        ProviderCommand::Up(args) => up(*args).await,
        ProviderCommand::Credits {
            command:
                CreditsCommand::Grant {
                    user,
                    amount,
                    chain,
                },
        } => {
            let amount = parse_usdc("amount", &amount)?;
            let chain = chain.connect_provider().await?;
            let me = or_me(&chain, None)?;
            let r = progress::wait(
                format!("granting {amount} of trial credits to {user}"),
                chain.grant_credits(user, amount),
            )
            .await
            .map_err(|e| anyhow!("granting credits failed: {e}"))?;
            let credits = chain
                .credits(user, me)
                .await
                .context("reading the credits")?;
            report(
                json,
                format!("{user} now has {credits} of trial credits with provider {me}"),
                json!({"user": user.to_string(), "provider": me.to_string(), "granted": amount.to_string(), "credits": credits.to_string()}),
                Some(&r),
            );
            Ok(())
        }
        ProviderCommand::Earnings {
            withdraw,
            to,
            chain,
        } => {
            let chain = chain.connect_provider().await?;
            let me = or_me(&chain, None)?;
            let earned = chain.earnings(me).await.context("reading the earnings")?;
            if let (None, Some(to)) = (&withdraw, to) {
                bail!(
                    "--to {to} says where --withdraw sends the earnings; add --withdraw <amount|all>"
                );
            }
            let Some(amount) = withdraw else {
                report(
                    json,
                    format!("provider {me} has {earned} of earnings in the escrow"),
                    json!({"provider": me.to_string(), "earnings": earned.to_string()}),
                    None,
                );
                return Ok(());
            };
            let amount = if amount.trim() == "all" {
                earned
            } else {
                parse_usdc("--withdraw", &amount)?
            };
            if amount == Usdc::ZERO || amount > earned {
                bail!(
                    "provider {me} has {earned} of earnings; withdraw at most that (--withdraw all)"
                );
            }
            let to = to.unwrap_or(me);
            let r = progress::wait(
                format!("withdrawing {amount} of earnings to {to}"),
                chain.withdraw_earnings(to, amount),
            )
            .await
            .map_err(|e| anyhow!("withdrawing earnings failed: {e}"))?;
            report(
                json,
                format!("withdrew {amount} of earnings to {to}"),
                json!({"withdrawn": amount.to_string(), "to": to.to_string()}),
                Some(&r),
            );
            Ok(())
        }
    }
}

/// Loads the RSA key to publish, saying what to do when the file is not one.
fn rsa_key(args: &InitArgs) -> anyhow::Result<(ProviderKey, PathBuf)> {
    let wrong = |path: &Path, e: khachapuri_spec::KeyError| {
        anyhow!(
            "wrong key file {}: {e}; pass the PKCS#8 PEM RSA key `khachapuri provider init` wrote (rsa.pem in its \
             data directory), or leave --rsa-key out to make a new one",
            path.display()
        )
    };
    match &args.rsa_key {
        Some(path) => Ok((
            ProviderKey::load(path).map_err(|e| wrong(path, e))?,
            path.clone(),
        )),
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
            let path = args.data_dir.join("rsa.pem");
            let existed = path.exists();
            // RSA-3072 generation takes a moment: show it.
            let bar = progress::spinner(if existed {
                format!("reading the RSA key {}", path.display())
            } else {
                format!("generating an RSA key in {}", path.display())
            });
            let key = ProviderKey::load_or_generate(&path).map_err(|e| wrong(&path, e));
            bar.finish_and_clear();
            let key = key?;
            Ok((key, path))
        }
    }
}

async fn init(args: InitArgs, json: bool) -> anyhow::Result<()> {
    validate_label(&args.label).map_err(|e| anyhow!("--label: {e}"))?;
    let price = parse_usdc("--price", &args.price)?;
    if price == Usdc::ZERO {
        bail!("--price must be above 0 USDC");
    }
    let server = match (&args.url, &args.tunnel) {
        (Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--url `{url}`: write the agent's base URL, e.g. https://alice.example:8443");
            }
            Server::Url(url.trim_end_matches('/').to_owned())
        }
        _ => Server::Tunnel,
    };
    let (key, key_path) = rsa_key(&args)?;
    let chain = args.chain.connect_provider().await?;
    let me = or_me(&chain, None)?;
    let owner = chain
        .label_owner(&args.label)
        .await
        .context("reading the label's owner")?;
    let label = &args.label;
    let resolver = if owner == Address::ZERO {
        // One wait: the commitment names the resolver's predicted address, and the resolver is deployed while
        // the commitment ages.
        let bar = progress::spinner(format!("registering `{label}`: committing"));
        let (resolver, _) = chain
            .register_provider(
                label,
                me,
                &server,
                key.public_key_der().to_vec().into(),
                |step| match step {
                    RegistrationStep::Committed { .. } => bar.set_message(format!(
                        "registering `{label}`: committed; deploying your resolver (payee, server, RSA key)"
                    )),
                    RegistrationStep::ResolverDeployed { resolver } => bar.set_message(format!(
                        "registering `{label}`: resolver {resolver} deployed"
                    )),
                    RegistrationStep::Waiting { seconds_left } => bar.set_message(format!(
                        "registering `{label}`: the commitment ages, {seconds_left} s left"
                    )),
                    RegistrationStep::Registered => bar.finish_and_clear(),
                },
            )
            .await
            .map_err(|e| anyhow!("registering `{label}` failed: {e}"))?;
        bar.finish_and_clear();
        resolver
    } else if owner == me {
        let record = match chain.resolve_label(label).await {
            // Ours, but with no resolver: taking a label clears the seller's. Give it one.
            Err(ChainError::UnknownLabel(_)) => {
                let resolver = progress::wait(
                    "deploying your resolver (payee, server, RSA key)",
                    chain.deploy_resolver(me, &server, key.public_key_der().to_vec().into()),
                )
                .await
                .map_err(|e| anyhow!("deploying the resolver failed: {e}"))?;
                progress::wait(
                    format!("pointing `{label}` at the resolver {resolver}"),
                    chain.set_label_resolver(label, resolver),
                )
                .await
                .map_err(|e| anyhow!("setting `{label}`'s resolver failed: {e}"))?;
                chain.resolve_label(label).await
            }
            other => other,
        }
        .with_context(|| format!("resolving `{label}`"))?;
        if record.server != server {
            progress::wait(
                format!("setting `{label}`'s server to {}", server.record()),
                chain.set_server(record.resolver, &server),
            )
            .await
            .map_err(|e| anyhow!("updating the server record failed: {e}"))?;
        }
        if record.rsa_public_key_der.as_ref() != key.public_key_der() {
            eprintln!(
                "note: `{label}` published another RSA key (version {}); specs sealed to it cannot be read with {}                  and must be deployed again",
                record.key_version,
                key_path.display()
            );
            progress::wait(
                format!("publishing the RSA key {}", key_path.display()),
                chain.set_rsa_key(record.resolver, key.public_key_der().to_vec().into()),
            )
            .await
            .map_err(|e| anyhow!("rotating the RSA key failed: {e}"))?;
        }
        if record.payee != me {
            eprintln!(
                "note: `{label}` pays {}, not this key ({me}); run `provider up` with the payee's key",
                record.payee
            );
        }
        record.resolver
    } else {
        bail!(
            "label `{label}` is registered to {owner}, not to you ({me}); choose another --label"
        );
    };

    let config_path = write_config(&args, &chain, &key_path, price)?;
    let value = json!({
        "label": label, "resolver": resolver.to_string(), "payee": me.to_string(),
        "server": server.record(), "rsaKey": key_path.display().to_string(),
        "config": config_path.display().to_string(),
    });
    let human = format!(
        "provider `{label}` is registered: resolver {resolver}, payee {me}, server {}\n\
         start it with:\n  KHACHAPURI_PRIVATE_KEY=<payee key> khachapuri provider up --config {}",
        server.record(),
        config_path.display()
    );
    report(json, human, value, None);
    Ok(())
}

/// Writes the agent's config next to its key, so that `provider up` needs no flags.
fn write_config(
    args: &InitArgs,
    chain: &Chain,
    key_path: &Path,
    price: Usdc,
) -> anyhow::Result<PathBuf> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let data_dir = absolute(&args.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    if args.rsa_key.is_some() {
        // The agent reads its key from the data directory.
        let target = data_dir.join("rsa.pem");
        if absolute(key_path) != target {
            std::fs::copy(key_path, &target).with_context(|| {
                format!("copying {} to {}", key_path.display(), target.display())
            })?;
        }
    }
    let mut table = toml::Table::new();
    table.insert("label".into(), args.label.clone().into());
    table.insert("rpc-url".into(), chain.url().to_owned().into());
    table.insert(
        "deployments".into(),
        absolute(args.chain.deployments())
            .display()
            .to_string()
            .into(),
    );
    table.insert("data-dir".into(), data_dir.display().to_string().into());
    table.insert("price".into(), price.to_string().into());
    if let Some(tunnel) = &args.tunnel {
        table.insert("tunnel".into(), tunnel.clone().into());
    }
    table.insert("ipfs".into(), ipfs_sources(&args.ipfs).into());
    let path = data_dir.join(CONFIG_FILE);
    let text = format!(
        "# Written by `khachapuri provider init`; read by `khachapuri provider up`. Every key is also a flag.\n{}",
        toml::to_string(&table)?
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

async fn up(mut args: ProviderArgs) -> anyhow::Result<()> {
    if args.config.is_none() {
        let default = Path::new(DATA_DIR).join(CONFIG_FILE);
        if default.exists() {
            args.config = Some(default);
        }
    }
    // In a `khachapuri dev` directory, its chain and IPFS node, unless the flags or the file say otherwise.
    let network = match crate::net::read_dev_info(&std::env::current_dir()?) {
        Ok(dev) => khachapuri_provider::Network {
            ipfs: vec![dev.ipfs_source()],
            rpc_url: Some(dev.rpc_url),
        },
        Err(_) => khachapuri_provider::Network::default(),
    };
    let config = args.resolve_with(network).map_err(|e| {
        anyhow!("{e}; `khachapuri provider init` writes a config that `provider up` reads")
    })?;
    let signer = config.signer.load().map_err(|e| {
        anyhow!(
            "{e}: pass --private-key (or set KHACHAPURI_PRIVATE_KEY) with the payee's key, or --keystore"
        )
    })?;
    khachapuri_provider::run_until_signal(config, signer)
        .await
        .context("the provider agent could not start")
}
