//! Connecting: an RPC URL, a signer (private key from the environment or an encrypted keystore) and the
//! chain's deployment file give a [`Chain`], the handle every other call hangs off.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;

use crate::{ChainError, Deployment};

/// How long one RPC request may take before the endpoint counts as unavailable.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a transaction's receipt before its outcome counts as unknown.
pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the signing key comes from. Its `Debug` never shows a key or a password.
#[derive(Clone)]
pub enum SignerSource {
    /// A hex private key in this environment variable (e.g. `KHACHAPURI_PRIVATE_KEY`).
    Env(String),
    /// A hex private key given as it is (a `--private-key` flag).
    Key(String),
    /// An encrypted JSON keystore (Web3 Secret Storage, as written by `cast wallet import`) and its password.
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// Its password.
        password: String,
    },
}

impl std::fmt::Debug for SignerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(var) => f.debug_tuple("Env").field(var).finish(),
            Self::Key(_) => f.write_str("Key(<redacted>)"),
            Self::Keystore { path, .. } => f
                .debug_struct("Keystore")
                .field("path", path)
                .finish_non_exhaustive(),
        }
    }
}

impl SignerSource {
    /// Loads the key.
    pub fn load(&self) -> Result<PrivateKeySigner, ChainError> {
        match self {
            Self::Key(key) => parse_private_key(key)
                .map_err(|e| ChainError::Signer(format!("--private-key: {e}"))),
            Self::Env(var) => {
                let key = std::env::var(var).map_err(|_| {
                    ChainError::Signer(format!("environment variable {var} is not set"))
                })?;
                parse_private_key(&key).map_err(|e| ChainError::Signer(format!("{var}: {e}")))
            }
            Self::Keystore { path, password } => PrivateKeySigner::decrypt_keystore(path, password)
                .map_err(|e| {
                    ChainError::Signer(format!("cannot decrypt keystore {}: {e}", path.display()))
                }),
        }
    }
}

/// Parses a hex private key (with or without `0x`). The error never echoes the key.
pub fn parse_private_key(key: &str) -> Result<PrivateKeySigner, ChainError> {
    key.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| ChainError::Signer("not a valid hex secp256k1 private key".into()))
}

/// Connection settings beyond the URL.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Per-request timeout; past it the RPC counts as unavailable.
    pub request_timeout: Duration,
    /// How often to poll for a receipt (default: 20 ms on localhost, 1 s elsewhere).
    pub poll_interval: Option<Duration>,
    /// How long to wait for a receipt.
    pub receipt_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            poll_interval: None,
            receipt_timeout: DEFAULT_RECEIPT_TIMEOUT,
        }
    }
}

/// A transaction that made it into a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Its hash.
    pub tx_hash: B256,
    /// The block it is in.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
}

impl From<&TransactionReceipt> for Receipt {
    fn from(r: &TransactionReceipt) -> Self {
        Self {
            tx_hash: r.transaction_hash,
            block_number: r.block_number.unwrap_or_default(),
            gas_used: r.gas_used,
        }
    }
}

/// A connection to one chain's Khachapuri contracts, with an optional signer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: DynProvider,
    signer: Option<PrivateKeySigner>,
    deployment: Arc<Deployment>,
    url: reqwest::Url,
    options: ConnectOptions,
}

impl Chain {
    /// Connects to `rpc_url`, asks it for its chain id and reads `<deployments_dir>/<chainId>.json`.
    pub async fn connect(
        rpc_url: &str,
        signer: Option<PrivateKeySigner>,
        deployments_dir: &Path,
    ) -> Result<Self, ChainError> {
        let probe = Self::new(
            rpc_url,
            None,
            placeholder_deployment(),
            ConnectOptions::default(),
        )?;
        let chain_id = probe.provider.get_chain_id().await?;
        let deployment = Deployment::load(deployments_dir, chain_id)?;
        Self::new(rpc_url, signer, deployment, ConnectOptions::default())
    }

    /// A client for a known deployment, without any request yet (the chain id is checked on first send).
    pub fn new(
        rpc_url: &str,
        signer: Option<PrivateKeySigner>,
        deployment: Deployment,
        options: ConnectOptions,
    ) -> Result<Self, ChainError> {
        let url: reqwest::Url = rpc_url
            .parse()
            .map_err(|e| ChainError::InvalidArgument(format!("RPC URL `{rpc_url}`: {e}")))?;
        let provider = build_provider(&url, signer.clone(), &options)?;
        Ok(Self {
            provider,
            signer,
            deployment: Arc::new(deployment),
            url,
            options,
        })
    }

    /// The same chain and deployment, acting as another account.
    pub fn with_signer(&self, signer: PrivateKeySigner) -> Result<Self, ChainError> {
        let provider = build_provider(&self.url, Some(signer.clone()), &self.options)?;
        Ok(Self {
            provider,
            signer: Some(signer),
            deployment: self.deployment.clone(),
            url: self.url.clone(),
            options: self.options.clone(),
        })
    }

    /// The underlying alloy provider (signs with the wallet, if any).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The contracts' addresses and parameters.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The RPC URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The signer, if connected with one.
    pub fn signer(&self) -> Option<&PrivateKeySigner> {
        self.signer.as_ref()
    }

    /// The signer's address.
    pub fn address(&self) -> Result<Address, ChainError> {
        self.signer
            .as_ref()
            .map(|s| s.address())
            .ok_or(ChainError::NoSigner)
    }

    /// The EIP-712 domain of payer tokens and spec terms: the escrow's.
    pub fn domain(&self) -> Eip712Domain {
        crate::eip712::domain(self.deployment.chain_id, self.deployment.escrow)
    }

    /// The latest block's timestamp, unix seconds.
    pub async fn block_timestamp(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| ChainError::Decode("the node has no latest block".into()))?;
        Ok(block.header.timestamp)
    }

    pub(crate) fn signer_required(&self) -> Result<&PrivateKeySigner, ChainError> {
        self.signer.as_ref().ok_or(ChainError::NoSigner)
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.options.poll_interval.unwrap_or_else(|| {
            let local = matches!(
                self.url.host_str(),
                Some("localhost" | "127.0.0.1" | "[::1]")
            );
            if local {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(1)
            }
        })
    }

    /// Sends a contract call as a transaction and waits for its receipt; a failed receipt is a revert.
    pub(crate) async fn send<P: Provider, D: CallDecoder>(
        &self,
        call: CallBuilder<P, D>,
    ) -> Result<TransactionReceipt, ChainError> {
        self.signer_required()?;
        let pending = call.send().await?;
        let receipt = self.wait_receipt(*pending.tx_hash()).await?;
        if !receipt.status() {
            return Err(ChainError::Reverted {
                reason: format!("transaction {} reverted on chain", receipt.transaction_hash),
                error: None,
            });
        }
        Ok(receipt)
    }

    /// Polls for the receipt of `hash` until it is mined or the receipt timeout passes.
    pub async fn wait_receipt(&self, hash: B256) -> Result<TransactionReceipt, ChainError> {
        let deadline = Instant::now() + self.options.receipt_timeout;
        loop {
            if let Some(r) = self.provider.get_transaction_receipt(hash).await? {
                return Ok(r);
            }
            if Instant::now() >= deadline {
                return Err(ChainError::Unavailable {
                    message: format!(
                        "no receipt for {hash} after {:?}",
                        self.options.receipt_timeout
                    ),
                });
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }
}

fn build_provider(
    url: &reqwest::Url,
    signer: Option<PrivateKeySigner>,
    options: &ConnectOptions,
) -> Result<DynProvider, ChainError> {
    let http = khachapuri_tls::http_client()
        .timeout(options.request_timeout)
        .build()
        .map_err(|e| ChainError::InvalidArgument(format!("HTTP client: {e}")))?;
    let builder = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id();
    Ok(match signer {
        Some(s) => builder
            .wallet(EthereumWallet::from(s))
            .connect_reqwest(http, url.clone())
            .erased(),
        None => builder.connect_reqwest(http, url.clone()).erased(),
    })
}

/// A deployment with no addresses yet: for asking a fresh connection its chain id, or deploying.
pub(crate) fn placeholder_deployment() -> Deployment {
    Deployment {
        chain_id: 0,
        deployment_block: 0,
        usdc: Address::ZERO,
        registry: Address::ZERO,
        resolver_factory: Address::ZERO,
        resolver_implementation: Address::ZERO,
        escrow: Address::ZERO,
        withdrawal_delay: 0,
        min_commitment_age: 0,
        max_commitment_age: 0,
        test_token: false,
    }
}
