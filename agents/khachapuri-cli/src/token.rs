//! `khachapuri token` and `khachapuri escrow balance`: talk to a chain as one account.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, U256};
use anyhow::{Context, anyhow};
use khachapuri_chain::{Chain, ChainError, PayerToken, PrivateKeySigner, Usdc, parse_private_key};

use crate::net::read_dev_info;

/// Where the chain is and who signs. Without `--rpc-url`, a running `khachapuri dev` in this directory
/// (its `.khachapuri/dev.json`) supplies the RPC URL and, without a key, its funded test account.
#[derive(clap::Args, Debug, Clone)]
pub struct ChainArgs {
    /// Chain JSON-RPC URL [default: from .khachapuri/dev.json, else http://127.0.0.1:8545].
    #[arg(long, env = "KHACHAPURI_RPC_URL")]
    rpc_url: Option<String>,
    /// Directory of deployments/<chainId>.json.
    #[arg(long, env = "KHACHAPURI_DEPLOYMENTS", default_value = "deployments")]
    deployments: PathBuf,
    /// Hex private key of the account [default: the dev network's test account].
    #[arg(
        long = "private-key",
        env = "KHACHAPURI_PRIVATE_KEY",
        hide_env_values = true
    )]
    private_key: Option<String>,
}

impl ChainArgs {
    pub(crate) async fn connect(&self, need_key: bool) -> anyhow::Result<Chain> {
        let dev = if self.rpc_url.is_none() || self.private_key.is_none() {
            read_dev_info(&std::env::current_dir()?).ok()
        } else {
            None
        };
        let rpc_url = self
            .rpc_url
            .clone()
            .or_else(|| dev.as_ref().map(|d| d.rpc_url.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8545".into());
        let key = self.private_key.clone().or_else(|| {
            dev.as_ref()
                .and_then(|d| d.accounts.first())
                .map(|a| a.private_key.clone())
        });
        let signer: Option<PrivateKeySigner> = match key {
            Some(k) => Some(parse_private_key(&k).map_err(|e| anyhow!("--private-key: {e}"))?),
            None if need_key => {
                return Err(anyhow!(
                    "no key to sign with: pass --private-key 0x... (or set KHACHAPURI_PRIVATE_KEY), or run `khachapuri dev` \
                     in this directory to use its test account"
                ));
            }
            None => None,
        };
        Chain::connect(&rpc_url, signer, &self.deployments).await.map_err(|e| match e {
            ChainError::Unavailable { message } => anyhow!(
                "cannot reach the chain at {rpc_url} ({message}); start a local one with `khachapuri dev`, or pass --rpc-url"
            ),
            ChainError::Deployment(message) => anyhow!(
                "{message}; pass --deployments DIR holding <chainId>.json for this chain (`khachapuri dev` writes ./deployments)"
            ),
            other => anyhow!("connecting to {rpc_url}: {other}"),
        })
    }
}

pub(crate) async fn resolve_payee(chain: &Chain, label: &str) -> anyhow::Result<Address> {
    Ok(resolve_payee_record(chain, label).await?.payee)
}

pub(crate) async fn resolve_payee_record(
    chain: &Chain,
    label: &str,
) -> anyhow::Result<khachapuri_chain::ProviderRecord> {
    match chain.resolve_label(label).await {
        Ok(record) => Ok(record),
        Err(ChainError::UnknownLabel(_)) => Err(anyhow!(
            "provider `{label}` is not registered on chain {}; check the label (the dev network's provider is `dev`)",
            chain.deployment().chain_id
        )),
        Err(ChainError::InvalidLabel { .. }) => Err(anyhow!(
            "`{label}` is not a provider label: 1..63 of [a-z0-9-], no leading or trailing `-`"
        )),
        Err(e) => Err(anyhow!("resolving provider `{label}`: {e}")),
    }
}

/// `khachapuri token` options.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The provider label the token is for (its payee is read from chain).
    #[arg(long)]
    provider: String,
    /// The spec CID the token is limited to [default: any spec].
    #[arg(long)]
    spec: Option<String>,
    /// Most the provider may charge per request, in USDC (e.g. 0.05).
    #[arg(long, default_value = "0.05")]
    max_price: String,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h")]
    expires_in: String,
    /// Print JSON (token, payer, provider, expiry) instead of the bare token.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    chain: ChainArgs,
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("--expires-in `{text}`: write seconds or 90s, 30m, 12h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(anyhow!(
                "--expires-in `{text}`: unknown unit `{unit}`; use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

pub(crate) fn parse_usdc(flag: &str, text: &str) -> anyhow::Result<Usdc> {
    text.parse::<Usdc>()
        .map_err(|e| anyhow!("{flag} `{text}`: {e} (write USDC with up to 6 decimals, e.g. 0.05)"))
}

/// Prints a payer token.
pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let max_price = parse_usdc("--max-price", &args.max_price)?;
    let lifetime = parse_duration(&args.expires_in)?;
    let chain = args.chain.connect(true).await?;
    let payee = resolve_payee(&chain, &args.provider).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expiry = now + lifetime.as_secs();
    let token = PayerToken {
        provider: payee,
        spec: args.spec.clone().unwrap_or_default(),
        maxPrice: U256::from(max_price.units()),
        expiry,
        session: B256::random(),
    };
    let signer = chain.signer().context("no signer")?.clone();
    let signed = token
        .sign(&signer, &chain.domain())
        .await
        .context("signing the payer token")?;
    let encoded = signed.encode();
    if args.json {
        let value = serde_json::json!({
            "token": encoded,
            "payer": signer.address().to_string(),
            "provider": args.provider,
            "payee": payee.to_string(),
            "spec": args.spec,
            "maxPrice": max_price.to_string(),
            "expiry": expiry,
            "header": format!("Authorization: Bearer {encoded}"),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{encoded}");
        eprintln!(
            "payer {} lets `{}` charge up to {max_price} per request{} until unix {expiry}; use it as:\n  curl -H 'Authorization: Bearer {encoded}' ...",
            signer.address(),
            args.provider,
            args.spec
                .as_deref()
                .map(|s| format!(" for spec {s}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

/// `khachapuri escrow ...`
#[derive(clap::Subcommand, Debug)]
pub enum EscrowCommand {
    /// Deposit USDC from the wallet into the escrow.
    Deposit {
        /// How much, in USDC (e.g. 10 or 2.50).
        amount: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Let a provider charge up to --price per request, --budget in all.
    Approve {
        /// The provider label.
        #[arg(long)]
        provider: String,
        /// Most per request, USDC.
        #[arg(long)]
        price: String,
        /// Most in all, USDC.
        #[arg(long)]
        budget: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Wallet and escrow balances; with --provider, the allowance and credits with it.
    Balance {
        /// Whose balances [default: the signing account].
        #[arg(long)]
        address: Option<Address>,
        /// A provider label: show the allowance (price per request, budget left) and credits with it.
        #[arg(long)]
        provider: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// Runs an escrow command.
pub async fn escrow(command: EscrowCommand) -> anyhow::Result<()> {
    match command {
        EscrowCommand::Deposit { amount, chain } => {
            let amount = parse_usdc("amount", &amount)?;
            let chain = chain.connect(true).await?;
            let me = chain.address().map_err(|e| anyhow!("{e}"))?;
            let wallet = chain
                .token_balance(me)
                .await
                .context("reading the USDC balance")?;
            if wallet < amount {
                return Err(anyhow!(
                    "{me} holds {wallet}, less than {amount}; get USDC into this wallet first"
                ));
            }
            let r = chain
                .deposit(me, amount)
                .await
                .map_err(|e| anyhow!("deposit failed: {e}"))?;
            println!(
                "deposited {amount} into the escrow for {me} (tx {}, block {})",
                r.tx_hash, r.block_number
            );
            Ok(())
        }
        EscrowCommand::Approve {
            provider,
            price,
            budget,
            chain,
        } => {
            let price = parse_usdc("--price", &price)?;
            let budget = parse_usdc("--budget", &budget)?;
            let chain = chain.connect(true).await?;
            let payee = resolve_payee(&chain, &provider).await?;
            let r = chain
                .approve(payee, price, budget)
                .await
                .map_err(|e| anyhow!("approve failed: {e}"))?;
            let me = chain.address().map_err(|e| anyhow!("{e}"))?;
            match chain
                .pending_cut(me, payee)
                .await
                .context("reading the pending cut")?
            {
                Some(cut) => println!(
                    "lowering `{provider}` ({payee}) to {} per request, {} in all takes effect at unix {} (the escrow's \
                     delay); until then the old terms hold (tx {})",
                    cut.price_per_request, cut.budget, cut.effective_at, r.tx_hash
                ),
                None => println!(
                    "provider `{provider}` ({payee}) may charge up to {price} per request, {budget} in all (tx {})",
                    r.tx_hash
                ),
            }
            Ok(())
        }
        EscrowCommand::Balance {
            address,
            provider,
            json,
            chain,
        } => {
            let chain = chain.connect(address.is_none()).await?;
            let who = match address {
                Some(a) => a,
                None => chain.address().map_err(|e| anyhow!("{e}"))?,
            };
            let wallet = chain
                .token_balance(who)
                .await
                .context("reading the USDC balance")?;
            let escrowed = chain
                .balance(who)
                .await
                .context("reading the escrow balance")?;
            let pending = chain
                .pending_withdrawal(who)
                .await
                .context("reading the pending withdrawal")?;
            let mut value = serde_json::json!({
                "address": who.to_string(),
                "wallet": wallet.to_string(),
                "escrow": escrowed.to_string(),
                "pendingWithdrawal": pending.as_ref().map(|p| serde_json::json!({"amount": p.amount.to_string(), "readyAt": p.ready_at})),
            });
            let mut lines = vec![
                format!("account  {who}"),
                format!("wallet   {wallet}"),
                format!("escrow   {escrowed}"),
            ];
            if let Some(p) = &pending {
                lines.push(format!(
                    "pending  {} withdrawal, ready at unix {}",
                    p.amount, p.ready_at
                ));
            }
            if let Some(label) = provider {
                let payee = resolve_payee(&chain, &label).await?;
                let a = chain
                    .allowance(who, payee)
                    .await
                    .context("reading the allowance")?;
                value["provider"] = serde_json::json!({
                    "label": label,
                    "payee": payee.to_string(),
                    "pricePerRequest": a.price_per_request.to_string(),
                    "budgetLeft": a.budget_left.to_string(),
                    "credits": a.credits.to_string(),
                });
                lines.push(format!(
                    "provider `{label}` ({payee}): up to {} per request, {} budget left, {} credits",
                    a.price_per_request, a.budget_left, a.credits
                ));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                for l in lines {
                    println!("{l}");
                }
            }
            Ok(())
        }
    }
}
