//! Configuration: flags, environment variables and an optional TOML file, in that order of precedence.
//! The payee key never goes in the file: it comes from an environment variable or an encrypted keystore.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use khachapuri_chain::{SignerSource, Usdc};
use serde::Deserialize;

use crate::wal::Durability;

/// How claims are settled on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SettlementMode {
    /// One `consumeBatch` every `batch-max` claims or `batch-linger-ms`, whichever comes first.
    #[default]
    Batch,
    /// The seed's flow: the request's charge is on chain before the program runs.
    Sync,
}

/// Everything `khachapuri-provider` (and `khachapuri provider up`) accepts. Every field is optional here;
/// [`ProviderArgs::resolve`] applies the file and the defaults.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ProviderArgs {
    /// A TOML file with any of these settings (kebab-case keys).
    #[arg(long, env = "KHACHAPURI_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The provider's label (`alice` in alice.khachapuri.xyz), registered on chain.
    #[arg(long, env = "KHACHAPURI_LABEL")]
    pub label: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "KHACHAPURI_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Chain JSON-RPC URL [default: http://127.0.0.1:8545].
    #[arg(long, env = "KHACHAPURI_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Directory of deployments/<chainId>.json [default: ./deployments].
    #[arg(long, env = "KHACHAPURI_DEPLOYMENTS")]
    pub deployments: Option<PathBuf>,
    /// Where the agent keeps its RSA key, claims log and compiled modules [default: ./.khachapuri/provider].
    #[arg(long, env = "KHACHAPURI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Encrypted JSON keystore of the payee key (else the key is read from KHACHAPURI_PRIVATE_KEY).
    #[arg(long, env = "KHACHAPURI_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// Price per request in USDC, e.g. 0.01 [default: 0.01].
    #[arg(long, env = "KHACHAPURI_PRICE")]
    pub price: Option<String>,
    /// IPFS sources, tried in order: `local` (the embedded store in the data dir), `kubo=URL`,
    /// `gateway=URL` [default: local].
    #[arg(long = "ipfs", env = "KHACHAPURI_IPFS", value_delimiter = ',')]
    #[serde(default)]
    pub ipfs: Vec<String>,
    /// Serve through a gateway's WebSocket tunnel (for a provider behind NAT), e.g.
    /// `ws://gateway.example:8080/_tunnel`; the label's server record must be `tunnel:`.
    #[arg(long, env = "KHACHAPURI_TUNNEL")]
    pub tunnel: Option<String>,
    /// `batch` (default) or `sync`.
    #[arg(long, env = "KHACHAPURI_SETTLEMENT")]
    pub settlement: Option<SettlementMode>,
    /// Most claims settled per transaction (claims of one payer share one line) [default: 5000].
    #[arg(long, env = "KHACHAPURI_BATCH_MAX")]
    pub batch_max: Option<usize>,
    /// How long a batch waits for more claims, ms [default: 1000].
    #[arg(long, env = "KHACHAPURI_BATCH_LINGER_MS")]
    pub batch_linger_ms: Option<u64>,
    /// `interval` (default) or `always`: when claims are fsynced.
    #[arg(long, env = "KHACHAPURI_WAL_DURABILITY")]
    pub wal_durability: Option<Durability>,
    /// Largest request body, bytes [default: 1 MiB].
    #[arg(long, env = "KHACHAPURI_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most linear memory a program may use, bytes [default: 128 MiB].
    #[arg(long, env = "KHACHAPURI_MAX_MEMORY_BYTES")]
    pub max_memory_bytes: Option<usize>,
    /// Longest a program may run, ms [default: 10000].
    #[arg(long, env = "KHACHAPURI_MAX_TIMEOUT_MS")]
    pub max_timeout_ms: Option<u64>,
    /// Largest response a program may write, bytes [default: 16 MiB].
    #[arg(long, env = "KHACHAPURI_MAX_OUTPUT_BYTES")]
    pub max_output_bytes: Option<usize>,
    /// Browser origins that may call functions (CORS): `*`, one origin, or `none` [default: *].
    /// Preflights are answered without running or charging anything.
    #[arg(long, env = "KHACHAPURI_CORS_ALLOW_ORIGIN")]
    pub cors_allow_origin: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The provider's label.
    pub label: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Chain RPC.
    pub rpc_url: String,
    /// Deployments directory.
    pub deployments: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where the payee key comes from.
    pub signer: SignerSource,
    /// Price per request.
    pub price: Usdc,
    /// IPFS sources, as given.
    pub ipfs: Vec<String>,
    /// The gateway tunnel endpoint, if the agent is reachable only through it.
    pub tunnel: Option<String>,
    /// Settlement mode.
    pub settlement: SettlementMode,
    /// Most claims per settlement transaction.
    pub batch_max: usize,
    /// How long a batch waits for more claims.
    pub batch_linger: Duration,
    /// When claims are fsynced.
    pub wal_durability: Durability,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Program memory cap.
    pub max_memory_bytes: usize,
    /// Program time cap.
    pub max_timeout: Duration,
    /// Program output cap.
    pub max_output_bytes: usize,
    /// What browsers may do (CORS).
    pub cors: khachapuri_protocol::http::Cors,
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A setting is missing or invalid.
    #[error("{0}")]
    Invalid(String),
}

impl ProviderArgs {
    /// Applies the config file (if any) under these flags, then the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => Self::read_file(path)?,
            None => Self::default(),
        };
        let label = self.label.or(file.label).ok_or_else(|| {
            ConfigError::Invalid(
                "no provider label: pass --label NAME (the label you registered)".into(),
            )
        })?;
        khachapuri_chain::validate_label(&label)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let price_text = self.price.or(file.price).unwrap_or_else(|| "0.01".into());
        let price: Usdc = price_text.parse().map_err(|e| {
            ConfigError::Invalid(format!(
                "--price `{price_text}`: {e} (write USDC, e.g. 0.01)"
            ))
        })?;
        if price == Usdc::ZERO {
            return Err(ConfigError::Invalid("--price must be above 0 USDC".into()));
        }
        let keystore = self.keystore.or(file.keystore);
        let signer = match keystore {
            Some(path) => SignerSource::Keystore {
                path,
                password: std::env::var("KHACHAPURI_KEYSTORE_PASSWORD").map_err(|_| {
                    ConfigError::Invalid(
                        "--keystore needs its password in KHACHAPURI_KEYSTORE_PASSWORD".into(),
                    )
                })?,
            },
            None => SignerSource::Env(khachapuri_protocol::http::PRIVATE_KEY_ENV.into()),
        };
        let ipfs = if !self.ipfs.is_empty() {
            self.ipfs
        } else {
            file.ipfs
        };
        let runtime = khachapuri_runtime::Limits::default();
        Ok(Config {
            label,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            rpc_url: self
                .rpc_url
                .or(file.rpc_url)
                .unwrap_or_else(|| "http://127.0.0.1:8545".into()),
            deployments: self
                .deployments
                .or(file.deployments)
                .unwrap_or_else(|| "deployments".into()),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| ".khachapuri/provider".into()),
            signer,
            price,
            ipfs: if ipfs.is_empty() {
                vec!["local".into()]
            } else {
                ipfs
            },
            tunnel: self.tunnel.or(file.tunnel),
            settlement: self.settlement.or(file.settlement).unwrap_or_default(),
            batch_max: self.batch_max.or(file.batch_max).unwrap_or(5000).max(1),
            batch_linger: Duration::from_millis(
                self.batch_linger_ms
                    .or(file.batch_linger_ms)
                    .unwrap_or(1000),
            ),
            wal_durability: self
                .wal_durability
                .or(file.wal_durability)
                .unwrap_or_default(),
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(1 << 20),
            // The runtime's defaults are the provider's maxima: one place says what they are.
            max_memory_bytes: self
                .max_memory_bytes
                .or(file.max_memory_bytes)
                .unwrap_or(runtime.memory_bytes),
            max_timeout: self
                .max_timeout_ms
                .or(file.max_timeout_ms)
                .map_or(runtime.deadline, Duration::from_millis),
            max_output_bytes: self
                .max_output_bytes
                .or(file.max_output_bytes)
                .unwrap_or(runtime.output_bytes),
            cors: self
                .cors_allow_origin
                .as_deref()
                .or(file.cors_allow_origin.as_deref())
                .map_or_else(
                    Default::default,
                    khachapuri_protocol::http::Cors::from_setting,
                ),
        })
    }

    fn read_file(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }
}
