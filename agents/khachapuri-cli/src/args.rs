//! What several commands share: where the chain is and who signs, resolving a provider label, and
//! reading amounts, durations and sizes the way people write them.

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::Address;
use anyhow::anyhow;
use khachapuri_chain::{
    Chain, ChainError, PrivateKeySigner, SignerSource, Usdc, parse_private_key,
};

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
        env = khachapuri_protocol::http::PRIVATE_KEY_ENV,
        hide_env_values = true
    )]
    private_key: Option<String>,
    /// An encrypted JSON keystore of the account (e.g. from `cast wallet new`), unlocked with the password
    /// in KHACHAPURI_KEYSTORE_PASSWORD; instead of --private-key.
    #[arg(long, env = "KHACHAPURI_KEYSTORE", conflicts_with = "private_key")]
    keystore: Option<PathBuf>,
}

impl ChainArgs {
    /// The deployments directory.
    pub(crate) fn deployments(&self) -> &std::path::Path {
        &self.deployments
    }

    /// Connects as a payer or owner: the key given, else (in a `khachapuri dev` directory) its test account.
    pub(crate) async fn connect(&self, need_key: bool) -> anyhow::Result<Chain> {
        self.connect_with(need_key, DevKey::Test).await
    }

    /// Connects as a provider: the key given, else (in a `khachapuri dev` directory) the dev provider's
    /// payee key; never the test account, which is a payer.
    pub(crate) async fn connect_provider(&self) -> anyhow::Result<Chain> {
        self.connect_with(true, DevKey::Provider).await
    }

    async fn connect_with(&self, need_key: bool, role: DevKey) -> anyhow::Result<Chain> {
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
        if let Some(path) = &self.keystore {
            let password = std::env::var("KHACHAPURI_KEYSTORE_PASSWORD").map_err(|_| {
                anyhow!(
                    "--keystore {}: set its password in KHACHAPURI_KEYSTORE_PASSWORD",
                    path.display()
                )
            })?;
            let signer = SignerSource::Keystore {
                path: path.clone(),
                password,
            }
            .load()
            .map_err(|e| {
                anyhow!("{e}; is it the right key file (a JSON keystore) and the right password?")
            })?;
            return self.connect_as(&rpc_url, Some(signer)).await;
        }
        let key = self.private_key.clone().or_else(|| {
            dev.as_ref()
                .and_then(|d| d.accounts.iter().find(|a| a.label == role.label()))
                .map(|a| a.private_key.clone())
        });
        let signer: Option<PrivateKeySigner> = match key {
            Some(k) => Some(parse_private_key(&k).map_err(|e| anyhow!("--private-key: {e}"))?),
            None if need_key => {
                return Err(anyhow!(
                    "no key to sign with{}: pass --private-key 0x... (or set KHACHAPURI_PRIVATE_KEY), or run `khachapuri dev` \
                     in this directory to use its {}",
                    role.whose(),
                    role.dev_account()
                ));
            }
            None => None,
        };
        self.connect_as(&rpc_url, signer).await
    }

    async fn connect_as(
        &self,
        rpc_url: &str,
        signer: Option<PrivateKeySigner>,
    ) -> anyhow::Result<Chain> {
        Chain::connect(rpc_url, signer, &self.deployments).await.map_err(|e| match e {
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

/// Which of `khachapuri dev`'s accounts a command falls back to.
#[derive(Clone, Copy)]
enum DevKey {
    /// The funded test account: pays, deploys.
    Test,
    /// The dev provider's payee.
    Provider,
}

impl DevKey {
    fn label(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Provider => "provider",
        }
    }

    fn whose(self) -> &'static str {
        match self {
            Self::Test => "",
            Self::Provider => " as the provider (its payee's key)",
        }
    }

    fn dev_account(self) -> &'static str {
        match self {
            Self::Test => "test account",
            Self::Provider => "provider's payee key",
        }
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
        Err(ChainError::InvalidLabel { reason, .. }) => {
            Err(anyhow!("`{label}` is not a provider label: {reason}"))
        }
        Err(e) => Err(anyhow!("resolving provider `{label}`: {e}")),
    }
}

/// A duration as people write it (`250ms`, `90s` or bare seconds, `30m`, `12h`, `7d`); the error names the
/// flag. The same reading as the provider's settings ([`khachapuri_protocol::measure`]).
pub(crate) fn parse_duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    khachapuri_protocol::measure::parse_duration(text).map_err(|e| anyhow!("{flag} `{text}`: {e}"))
}

/// A size as people write it (bytes, `512KiB`, `64MiB`, `1GiB`); the error names the flag.
pub(crate) fn parse_size(flag: &str, text: &str) -> anyhow::Result<u64> {
    khachapuri_protocol::measure::parse_size(text).map_err(|e| anyhow!("{flag} `{text}`: {e}"))
}

/// An amount of USDC as people write it (`10`, `2.50`, `0.000001`); the error names the flag.
pub(crate) fn parse_usdc(flag: &str, text: &str) -> anyhow::Result<Usdc> {
    text.parse::<Usdc>()
        .map_err(|e| anyhow!("{flag} `{text}`: {e} (write USDC with up to 6 decimals, e.g. 0.05)"))
}

pub(crate) use khachapuri_protocol::unix_now;

/// A unix time as a date people read (UTC).
pub(crate) fn at(unix: u64) -> String {
    khachapuri_chain::format_time(alloy::primitives::U256::from(unix))
}

/// `--to`'s default: the signing account itself.
pub(crate) fn or_me(chain: &Chain, to: Option<Address>) -> anyhow::Result<Address> {
    match to {
        Some(to) => Ok(to),
        None => chain.address().map_err(|e| anyhow!("{e}")),
    }
}

/// Prints `human`, or `value` (plus the transaction) as JSON.
pub(crate) fn report(
    json: bool,
    human: String,
    mut value: serde_json::Value,
    tx: Option<&khachapuri_chain::Receipt>,
) {
    if let (Some(r), Some(map)) = (tx, value.as_object_mut()) {
        map.insert("tx".into(), serde_json::json!(r.tx_hash.to_string()));
        map.insert("block".into(), serde_json::json!(r.block_number));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        match tx {
            Some(r) => println!("{human} (tx {}, block {})", r.tx_hash, r.block_number),
            None => println!("{human}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag_and_what_was_written() {
        assert_eq!(parse_size("--m", "64MiB").unwrap(), 64 << 20);
        let err = parse_duration("--timeout", "5 fortnights")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--timeout `5 fortnights`: unknown unit `fortnights`; use ms, s, m, h or d"
        );
        let err = parse_size("--memory", "lots").unwrap_err().to_string();
        assert!(err.starts_with("--memory `lots`: write bytes"), "{err}");
        assert!(
            parse_usdc("--price", "0.0000001")
                .unwrap_err()
                .to_string()
                .contains("--price")
        );
    }
}
