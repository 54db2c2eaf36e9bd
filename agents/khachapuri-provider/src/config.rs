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
    /// One `consumeBatch` every `batch-max` claims or `batch-linger`, whichever comes first.
    #[default]
    Batch,
    /// The seed's flow: the request's charge is on chain before the program runs.
    Sync,
}

/// Where compiled modules are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModuleCache {
    /// In memory and, encrypted, under `{data-dir}/modules` (its key in `modules.key`), so a restart
    /// compiles nothing again.
    #[default]
    Disk,
    /// In memory only: nothing compiled is ever written, and each restart compiles again.
    Memory,
}

/// Whether the agent runs open specs (unencrypted, naming no provider: anyone's program, in the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OpenSpecs {
    /// Runs them, under their owner's signed terms like any other.
    #[default]
    Run,
    /// Runs only specs sealed to this provider (`403 open_specs_refused` otherwise).
    Refuse,
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
    /// Chain JSON-RPC URL [default: http://127.0.0.1:8545; for `khachapuri provider up` in a `khachapuri dev`
    /// directory, its chain].
    #[arg(long, env = "KHACHAPURI_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Directory of deployments/<chainId>.json [default: ./deployments].
    #[arg(long, env = "KHACHAPURI_DEPLOYMENTS")]
    pub deployments: Option<PathBuf>,
    /// Where the agent keeps its RSA key, claims log and compiled modules [default: ./.khachapuri/provider].
    #[arg(long, env = "KHACHAPURI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Hex private key of the payee (better in the environment than on a command line other users can
    /// see); never read from the config file.
    #[arg(
        long = "private-key",
        env = khachapuri_protocol::http::PRIVATE_KEY_ENV,
        hide_env_values = true
    )]
    #[serde(skip)]
    pub private_key: Option<Secret>,
    /// Encrypted JSON keystore of the payee key, unlocked with the password in
    /// KHACHAPURI_KEYSTORE_PASSWORD; a keystore (flag, environment or file) is used over a private key.
    #[arg(long, env = "KHACHAPURI_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// Price per request in USDC, e.g. 0.01 [default: 0.01].
    #[arg(long, env = "KHACHAPURI_PRICE")]
    pub price: Option<String>,
    /// IPFS sources, tried in order: `local` (the embedded store in the data dir), `kubo=URL`,
    /// `gateway=URL` [default: local; for `khachapuri provider up` in a `khachapuri dev` directory, its node].
    #[arg(long = "ipfs", env = "KHACHAPURI_IPFS", value_delimiter = ',')]
    #[serde(default)]
    pub ipfs: Vec<String>,
    /// Serve through a gateway's WebSocket tunnel (for a provider behind NAT), e.g.
    /// `ws://gateway.example:8080/_tunnel`; the label's server record must be `tunnel:`.
    #[arg(long, env = "KHACHAPURI_TUNNEL")]
    pub tunnel: Option<String>,
    /// `batch` or `sync` [default: batch].
    #[arg(long, env = "KHACHAPURI_SETTLEMENT")]
    pub settlement: Option<SettlementMode>,
    /// Most claims settled per transaction (claims of one payer share one line) [default: 5000].
    #[arg(long, env = "KHACHAPURI_BATCH_MAX")]
    pub batch_max: Option<usize>,
    /// How long a batch waits for more claims, e.g. 1s or 250ms [default: 1s].
    #[arg(long, env = "KHACHAPURI_BATCH_LINGER")]
    pub batch_linger: Option<Setting>,
    /// The same in milliseconds (the first spelling; --batch-linger wins).
    #[arg(long, hide = true, env = "KHACHAPURI_BATCH_LINGER_MS")]
    pub batch_linger_ms: Option<u64>,
    /// When claims are fsynced: `interval` or `always` [default: interval].
    #[arg(long, env = "KHACHAPURI_WAL_DURABILITY")]
    pub wal_durability: Option<Durability>,
    /// Largest request body, e.g. 1MiB (bare numbers are bytes) [default: 1MiB].
    #[arg(long, env = "KHACHAPURI_MAX_BODY")]
    pub max_body: Option<Setting>,
    /// Most linear memory a program may use, e.g. 128MiB [default: 128MiB].
    #[arg(long, env = "KHACHAPURI_MAX_MEMORY")]
    pub max_memory: Option<Setting>,
    /// Longest a program may run, e.g. 10s or 500ms (bare numbers are seconds) [default: 10s].
    #[arg(long, env = "KHACHAPURI_MAX_TIMEOUT")]
    pub max_timeout: Option<Setting>,
    /// The same in milliseconds (the first spelling; --max-timeout wins).
    #[arg(long, hide = true, env = "KHACHAPURI_MAX_TIMEOUT_MS")]
    pub max_timeout_ms: Option<u64>,
    /// --max-body's first spelling (the new one wins).
    #[arg(long, hide = true, env = "KHACHAPURI_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<Setting>,
    /// --max-memory's first spelling (the new one wins).
    #[arg(long, hide = true, env = "KHACHAPURI_MAX_MEMORY_BYTES")]
    pub max_memory_bytes: Option<Setting>,
    /// --max-output's first spelling (the new one wins).
    #[arg(long, hide = true, env = "KHACHAPURI_MAX_OUTPUT_BYTES")]
    pub max_output_bytes: Option<Setting>,
    /// Largest response a program may write, e.g. 16MiB [default: 16MiB].
    #[arg(long, env = "KHACHAPURI_MAX_OUTPUT")]
    pub max_output: Option<Setting>,
    /// Where compiled modules are kept: `disk` (encrypted) or `memory` (nothing compiled is written, so
    /// not even a private program's ciphertext artifact lands on disk) [default: disk].
    #[arg(long, env = "KHACHAPURI_MODULE_CACHE")]
    pub module_cache: Option<ModuleCache>,
    /// Browser origins that may call functions (CORS): `*`, one origin, or `none` [default: *].
    /// Preflights are answered without running or charging anything.
    #[arg(long, env = "KHACHAPURI_CORS_ALLOW_ORIGIN")]
    pub cors_allow_origin: Option<String>,
    /// Open specs (deployed with `--open`: no provider named, nothing encrypted): `run` them, or
    /// `refuse` them and run only specs sealed to this provider [default: run].
    #[arg(long, env = "KHACHAPURI_OPEN_SPECS")]
    pub open_specs: Option<OpenSpecs>,
}

/// What a known network supplies when neither the flags nor the file say: where its chain and its IPFS
/// node are.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// The chain's RPC URL.
    pub rpc_url: Option<String>,
    /// IPFS sources.
    pub ipfs: Vec<String>,
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
    /// Where compiled modules are kept.
    pub module_cache: ModuleCache,
    /// Whether open specs run.
    pub open_specs: OpenSpecs,
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

/// A private key as given; its `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A size or duration setting as written: a flag's text, or a config file's string or number (a number is
/// bytes for a size, seconds for a duration; the `*-ms` settings are read apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting(pub String);

impl std::str::FromStr for Setting {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        Ok(Self(match Written::deserialize(d)? {
            Written::Number(n) => n.to_string(),
            Written::Text(text) => text,
        }))
    }
}

/// A size setting, read the CLI's way ([`khachapuri_protocol::measure::parse_size`]): from the flags (or
/// the environment), else the file, each in its new spelling or else its first, else `default`.
fn size(
    name: &str,
    flags: (Option<Setting>, Option<Setting>),
    file: (Option<Setting>, Option<Setting>),
    default: usize,
) -> Result<usize, ConfigError> {
    let Some(Setting(text)) = flags.0.or(flags.1).or(file.0).or(file.1) else {
        return Ok(default);
    };
    let bytes = khachapuri_protocol::measure::parse_size(&text)
        .map_err(|e| ConfigError::Invalid(format!("--{name} `{text}`: {e}")))?;
    match usize::try_from(bytes) {
        Ok(0) | Err(_) => Err(ConfigError::Invalid(format!(
            "--{name} `{text}`: must be above zero and fit this machine"
        ))),
        Ok(bytes) => Ok(bytes),
    }
}

/// A duration setting, read the CLI's way, or from its older `*-ms` spelling: from the flags (or the
/// environment), else from the file, else `default`.
fn duration(
    name: &str,
    flags: (Option<Setting>, Option<u64>),
    file: (Option<Setting>, Option<u64>),
    default: Duration,
) -> Result<Duration, ConfigError> {
    let read = |(given, ms): (Option<Setting>, Option<u64>)| match (given, ms) {
        (Some(Setting(text)), _) => khachapuri_protocol::measure::parse_duration(&text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("--{name} `{text}`: {e}"))),
        (None, ms) => Ok(ms.map(Duration::from_millis)),
    };
    Ok(read(flags)?.or(read(file)?).unwrap_or(default))
}

impl ProviderArgs {
    /// Applies the config file (if any) under these flags, then the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        self.resolve_with(Network::default())
    }

    /// Like [`Self::resolve`], with `network` (e.g. a running `khachapuri dev`) filling what neither the
    /// flags nor the file set, before the defaults.
    pub fn resolve_with(self, network: Network) -> Result<Config, ConfigError> {
        let mut file = match &self.config {
            Some(path) => Self::read_file(path)?,
            None => Self::default(),
        };
        file.rpc_url = file.rpc_url.or(network.rpc_url);
        if file.ipfs.is_empty() {
            file.ipfs = network.ipfs;
        }
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
        // A keystore, wherever it is given, is used over a private key (as before --private-key existed:
        // a key left in the environment never overrides the keystore an operator chose).
        let signer = match (self.keystore.or(file.keystore), self.private_key) {
            (Some(path), _) => SignerSource::Keystore {
                path,
                password: std::env::var("KHACHAPURI_KEYSTORE_PASSWORD").map_err(|_| {
                    ConfigError::Invalid(
                        "--keystore needs its password in KHACHAPURI_KEYSTORE_PASSWORD".into(),
                    )
                })?,
            },
            (None, Some(Secret(key))) => SignerSource::Key(key),
            (None, None) => SignerSource::Env(khachapuri_protocol::http::PRIVATE_KEY_ENV.into()),
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
            batch_linger: duration(
                "batch-linger",
                (self.batch_linger, self.batch_linger_ms),
                (file.batch_linger, file.batch_linger_ms),
                Duration::from_secs(1),
            )?,
            wal_durability: self
                .wal_durability
                .or(file.wal_durability)
                .unwrap_or_default(),
            max_body_bytes: size(
                "max-body",
                (self.max_body, self.max_body_bytes),
                (file.max_body, file.max_body_bytes),
                1 << 20,
            )?,
            // The runtime's defaults are the provider's maxima: one place says what they are.
            max_memory_bytes: size(
                "max-memory",
                (self.max_memory, self.max_memory_bytes),
                (file.max_memory, file.max_memory_bytes),
                runtime.memory_bytes,
            )?,
            max_timeout: duration(
                "max-timeout",
                (self.max_timeout, self.max_timeout_ms),
                (file.max_timeout, file.max_timeout_ms),
                runtime.deadline,
            )?,
            max_output_bytes: size(
                "max-output",
                (self.max_output, self.max_output_bytes),
                (file.max_output, file.max_output_bytes),
                runtime.output_bytes,
            )?,
            module_cache: self.module_cache.or(file.module_cache).unwrap_or_default(),
            open_specs: self.open_specs.or(file.open_specs).unwrap_or_default(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProviderArgs,
    }

    fn parse(flags: &[&str]) -> ProviderArgs {
        let argv = ["khachapuri-provider", "--label", "alice"];
        Cli::try_parse_from(argv.iter().chain(flags)).unwrap().args
    }

    #[test]
    fn sizes_and_durations_read_like_the_cli_s_and_the_first_spellings_still_work() {
        let config = parse(&[
            "--max-body",
            "2MiB",
            "--max-memory",
            "64MiB",
            "--max-timeout",
            "3s",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.max_body_bytes, 2 << 20);
        assert_eq!(config.max_memory_bytes, 64 << 20);
        assert_eq!(config.max_timeout, Duration::from_secs(3));
        assert_eq!(config.batch_linger, Duration::from_secs(1), "the default");
        let config = parse(&[
            "--max-body-bytes",
            "2048",
            "--max-output-bytes",
            "4096",
            "--max-timeout-ms",
            "1500",
            "--batch-linger-ms",
            "20",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.max_output_bytes, 4096);
        assert_eq!(config.max_timeout, Duration::from_millis(1500));
        assert_eq!(config.batch_linger, Duration::from_millis(20));
        let err = parse(&["--max-memory", "lots"]).resolve().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--max-memory `lots`: write bytes"),
            "{err}"
        );
        let err = parse(&["--max-body", "0"]).resolve().unwrap_err();
        assert!(err.to_string().contains("above zero"), "{err}");
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_network_which_beats_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("provider.toml");
        std::fs::write(
            &file,
            "max-body-bytes = 4096\nmax-timeout = \"2s\"\nbatch-linger-ms = 5\nipfs = [\"local\"]\n",
        )
        .unwrap();
        let network = || Network {
            rpc_url: Some("http://127.0.0.1:9999".into()),
            ipfs: vec!["gateway=http://127.0.0.1:7777".into()],
        };
        let config = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--max-timeout-ms",
            "700",
        ])
        .resolve_with(network())
        .unwrap();
        assert_eq!(config.max_body_bytes, 4096, "a number in the file is bytes");
        assert_eq!(
            config.max_timeout,
            Duration::from_millis(700),
            "the flag wins"
        );
        assert_eq!(config.batch_linger, Duration::from_millis(5));
        assert_eq!(config.ipfs, ["local"], "the file wins over the network");
        assert_eq!(
            config.rpc_url, "http://127.0.0.1:9999",
            "the network fills the gap"
        );
        let config = parse(&[]).resolve_with(network()).unwrap();
        assert_eq!(config.ipfs, ["gateway=http://127.0.0.1:7777"]);
        let config = parse(&[]).resolve().unwrap();
        assert_eq!(
            (config.rpc_url.as_str(), config.ipfs.as_slice()),
            ("http://127.0.0.1:8545", ["local".to_owned()].as_slice())
        );
    }

    #[test]
    fn a_private_key_flag_signs_and_never_shows() {
        let key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        let config = parse(&["--private-key", key]).resolve().unwrap();
        assert!(
            !format!("{config:?}").contains(&key[2..]),
            "Debug shows no key"
        );
        assert_eq!(
            config.signer.load().unwrap().address().to_string(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
    }
}
