//! A real local chain (feature `testing`): start anvil (the one spawner, for tests and `khachapuri dev`),
//! deploy every contract from the bindings' bytecode, act as anvil's funded accounts, move time.
//!
//! ```no_run
//! # async fn demo() -> Result<(), khachapuri_chain::ChainError> {
//! use khachapuri_chain::{testing::Devnet, Usdc};
//! let net = Devnet::start().await?;            // anvil on a free port + all contracts
//! let payer = net.chain(1);                     // a Chain signing as anvil account 1
//! net.fund(1, Usdc::from_whole(100)).await?;    // mint test USDC to it
//! # Ok(()) }
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner};
use khachapuri_bindings::{Escrow, Registry, ResolverFactory, TestUSDC};

use crate::{Chain, ChainError, ConnectOptions, Deployment, Usdc};

/// The mnemonic anvil funds its accounts from.
pub const ANVIL_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// How many accounts [`Anvil::spawn`] funds.
pub const ANVIL_ACCOUNTS: u32 = 20;

/// Anvil's account `index`, derived from [`ANVIL_MNEMONIC`] (m/44'/60'/0'/0/index). The first
/// [`ANVIL_ACCOUNTS`] are derived once and cached (derivation costs milliseconds).
pub fn anvil_signer(index: u32) -> PrivateKeySigner {
    static KEYS: OnceLock<Vec<PrivateKeySigner>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        (0..ANVIL_ACCOUNTS)
            .map(|i| MnemonicBuilder::from_phrase_nth(ANVIL_MNEMONIC, i))
            .collect()
    });
    match keys.get(index as usize) {
        Some(key) => key.clone(),
        None => MnemonicBuilder::from_phrase_nth(ANVIL_MNEMONIC, index),
    }
}

/// The anvil binary: `$ANVIL`, else `<root>/node_modules/.bin/anvil` (the npm toolchain of a checkout, for
/// `khachapuri dev --root`), else this workspace's, else `anvil` on the PATH.
pub fn anvil_binary(root: Option<&Path>) -> PathBuf {
    if let Some(path) = std::env::var_os("ANVIL") {
        return path.into();
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.into_iter()
        .chain([workspace.as_path()])
        .map(|dir| dir.join("node_modules/.bin/anvil"))
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("anvil"))
}

/// How to start anvil.
#[derive(Debug, Clone, Default)]
pub struct AnvilOptions {
    /// The binary [default: [`anvil_binary`]`(None)`].
    pub binary: Option<PathBuf>,
    /// The port on 127.0.0.1 (0: a free one).
    pub port: u16,
    /// Where anvil's output goes [default: nowhere; it is drained].
    pub log: Option<PathBuf>,
    /// Its own process group, so that a terminal's Ctrl-C reaches only the parent (which then stops anvil
    /// when it is done with the chain).
    pub own_process_group: bool,
    /// More arguments (e.g. `--block-time 1`).
    pub args: Vec<String>,
}

/// A running anvil with [`ANVIL_ACCOUNTS`] funded accounts, killed on drop and when the thread that started
/// it ends (see [`khachapuri_process::die_with_parent`]): `khachapuri dev`'s chain and every test's.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    /// Starts anvil on a free port and waits until it listens.
    pub fn spawn() -> Result<Self, ChainError> {
        Self::start(AnvilOptions::default())
    }

    /// Starts anvil on a free port with extra arguments (e.g. `--block-time 1`).
    pub fn spawn_with(args: &[&str]) -> Result<Self, ChainError> {
        Self::start(AnvilOptions {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..AnvilOptions::default()
        })
    }

    /// Starts anvil as `options` say and waits (30 s at most) until it listens.
    pub fn start(options: AnvilOptions) -> Result<Self, ChainError> {
        let unavailable = |message: String| ChainError::Unavailable { message };
        let binary = options.binary.unwrap_or_else(|| anvil_binary(None));
        let mut command = Command::new(&binary);
        #[cfg(unix)]
        if options.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        khachapuri_process::die_with_parent(&mut command);
        let mut child = command
            .args(["--port", &options.port.to_string(), "--host", "127.0.0.1"])
            .args([
                "--mnemonic",
                ANVIL_MNEMONIC,
                "--accounts",
                &ANVIL_ACCOUNTS.to_string(),
            ])
            .args(&options.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                unavailable(format!(
                    "cannot start anvil ({}): {e}; run `make toolchain`, or set ANVIL=/path/to/anvil",
                    binary.display()
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| unavailable("anvil has no stdout".into()))?;
        let mut log = match &options.log {
            Some(path) => Some(
                std::fs::File::create(path)
                    .map_err(|e| unavailable(format!("cannot create {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        // Reads the port, then keeps draining anvil's output so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            use std::io::Write as _;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    let port = addr
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let mut anvil = Self { child, port: 0 };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => anvil.port = port,
            _ => {
                let why = match anvil.child.try_wait() {
                    Ok(Some(status)) => format!(
                        "anvil exited ({status}) before listening; is port {} taken?",
                        options.port
                    ),
                    _ => "anvil did not report a listening port within 30 s".to_owned(),
                };
                return Err(unavailable(why));
            }
        }
        Ok(anvil)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its HTTP RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Anvil {
    /// Stops it (also on drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Contract parameters of a test deployment.
#[derive(Clone, Copy, Debug)]
pub struct DevnetOptions {
    /// Escrow withdrawal delay, seconds.
    pub withdrawal_delay: u64,
    /// Registry minimum commitment age, seconds (> 0).
    pub min_commitment_age: u64,
    /// Registry maximum commitment age, seconds.
    pub max_commitment_age: u64,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            withdrawal_delay: 300,
            min_commitment_age: 1,
            max_commitment_age: 86_400,
        }
    }
}

/// Deploys TestUSDC, Registry, ResolverFactory and Escrow from `deployer` (the deploy script's order).
pub async fn deploy_all(
    rpc_url: &str,
    deployer: PrivateKeySigner,
    options: DevnetOptions,
) -> Result<Deployment, ChainError> {
    let placeholder = Deployment {
        withdrawal_delay: options.withdrawal_delay,
        min_commitment_age: options.min_commitment_age,
        max_commitment_age: options.max_commitment_age,
        test_token: true,
        ..crate::client::placeholder_deployment()
    };
    let chain = Chain::new(
        rpc_url,
        Some(deployer),
        placeholder.clone(),
        ConnectOptions::default(),
    )?;
    let p = chain.provider();
    let deployment_block = p.get_block_number().await?;
    let usdc = TestUSDC::deploy(p).await?;
    let registry = Registry::deploy(
        p,
        U256::from(options.min_commitment_age),
        U256::from(options.max_commitment_age),
    )
    .await?;
    let factory = ResolverFactory::deploy(p).await?;
    let escrow = Escrow::deploy(p, *usdc.address(), U256::from(options.withdrawal_delay)).await?;
    Ok(Deployment {
        chain_id: p.get_chain_id().await?,
        deployment_block,
        usdc: *usdc.address(),
        registry: *registry.address(),
        resolver_factory: *factory.address(),
        resolver_implementation: factory.implementation().call().await?,
        escrow: *escrow.address(),
        ..placeholder
    })
}

/// A fresh anvil with every contract deployed (by account 0).
#[derive(Debug)]
pub struct Devnet {
    /// The node (killed when the devnet drops).
    pub anvil: Anvil,
    /// Where the contracts are.
    pub deployment: Deployment,
}

impl Devnet {
    /// Starts anvil and deploys with [`DevnetOptions::default`].
    pub async fn start() -> Result<Self, ChainError> {
        Self::start_with(DevnetOptions::default()).await
    }

    /// Starts anvil and deploys with `options`.
    pub async fn start_with(options: DevnetOptions) -> Result<Self, ChainError> {
        let anvil = Anvil::spawn()?;
        let deployment = deploy_all(&anvil.url(), anvil_signer(0), options).await?;
        Ok(Self { anvil, deployment })
    }

    /// A client signing as anvil account `index`.
    pub fn chain(&self, index: u32) -> Chain {
        self.chain_with(index, ConnectOptions::default())
    }

    /// A client signing as anvil account `index`, with connection options.
    pub fn chain_with(&self, index: u32, options: ConnectOptions) -> Chain {
        // The URL is ours and valid; `Chain::new` performs no I/O.
        #[allow(clippy::expect_used)]
        Chain::new(
            &self.anvil.url(),
            Some(anvil_signer(index)),
            self.deployment.clone(),
            options,
        )
        .expect("a devnet URL is valid")
    }

    /// The address of anvil account `index`.
    pub fn address(&self, index: u32) -> Address {
        anvil_signer(index).address()
    }

    /// Mints `amount` of test USDC to account `index`'s wallet.
    pub async fn fund(&self, index: u32, amount: Usdc) -> Result<(), ChainError> {
        self.chain(0)
            .mint_test_usdc(self.address(index), amount)
            .await
            .map(drop)
    }

    /// Moves chain time forward by `secs` and mines a block.
    pub async fn increase_time(&self, secs: u64) -> Result<(), ChainError> {
        let p = self.chain(0).provider().clone();
        p.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (secs,))
            .await?;
        self.mine().await
    }

    /// Sets the timestamp of the next block.
    pub async fn set_next_block_timestamp(&self, timestamp: u64) -> Result<(), ChainError> {
        let p = self.chain(0).provider().clone();
        p.raw_request::<_, serde_json::Value>("evm_setNextBlockTimestamp".into(), (timestamp,))
            .await?;
        Ok(())
    }

    /// Takes a snapshot of the chain's state; [`Devnet::revert`] returns to it (once).
    pub async fn snapshot(&self) -> Result<serde_json::Value, ChainError> {
        let p = self.chain(0).provider().clone();
        Ok(
            p.raw_request::<_, serde_json::Value>("evm_snapshot".into(), ())
                .await?,
        )
    }

    /// Returns the chain to a snapshot (which is used up).
    pub async fn revert(&self, snapshot: serde_json::Value) -> Result<(), ChainError> {
        let p = self.chain(0).provider().clone();
        let reverted = p
            .raw_request::<_, bool>("evm_revert".into(), (snapshot,))
            .await?;
        if reverted {
            Ok(())
        } else {
            Err(ChainError::InvalidArgument("unknown snapshot".into()))
        }
    }

    /// Has TestUSDC blacklist `account` (USDC's freeze; `frozen: false` lifts it), as its admin, account 0.
    pub async fn freeze(&self, account: Address, frozen: bool) -> Result<(), ChainError> {
        self.chain(0)
            .freeze_test_account(account, frozen)
            .await
            .map(drop)
    }

    /// Has TestUSDC pause (or resume) every transfer, as its admin, account 0.
    pub async fn pause_token(&self, paused: bool) -> Result<(), ChainError> {
        self.chain(0).pause_test_token(paused).await.map(drop)
    }

    /// Mines one block.
    pub async fn mine(&self) -> Result<(), ChainError> {
        let p = self.chain(0).provider().clone();
        p.raw_request::<_, serde_json::Value>("evm_mine".into(), ())
            .await?;
        Ok(())
    }
}
