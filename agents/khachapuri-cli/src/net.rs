//! Shared helpers: the anvil process, free ports, the dev.json format, reading it back.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use khachapuri_chain::testing::{ANVIL_ACCOUNTS, ANVIL_MNEMONIC};
use serde::{Deserialize, Serialize};

/// Where `khachapuri dev` describes what it started.
pub const DEV_JSON: &str = ".khachapuri/dev.json";

/// What `khachapuri dev` started, as written to `.khachapuri/dev.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevInfo {
    /// The chain's JSON-RPC URL.
    pub rpc_url: String,
    /// The chain id.
    pub chain_id: u64,
    /// Contract addresses (and the deployment's parameters).
    pub contracts: serde_json::Value,
    /// The gateway's base URL (path mode: `{gateway}/{label}/{cid}`).
    pub gateway: String,
    /// The provider agent.
    pub provider: DevProvider,
    /// The embedded IPFS node (trustless gateway + Kubo RPC).
    pub ipfs: String,
    /// Funded test accounts.
    pub accounts: Vec<DevAccount>,
    /// The deployed example functions.
    pub functions: Vec<DevFunction>,
}

/// The provider of a dev network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevProvider {
    /// Its label.
    pub label: String,
    /// Its agent's URL.
    pub url: String,
    /// Its payee address.
    pub payee: String,
    /// Its price per request.
    pub price: String,
}

/// A funded account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevAccount {
    /// What it is for.
    pub label: String,
    /// Its address.
    pub address: String,
    /// Its private key (anvil's well-known test keys: never use them elsewhere).
    pub private_key: String,
}

/// A deployed function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevFunction {
    /// The example's name.
    pub name: String,
    /// Its URL, through the gateway.
    pub url: String,
    /// Its spec CID.
    pub cid: String,
    /// A curl line that calls it.
    pub curl: String,
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Whether `port` on 127.0.0.1 can be bound now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}

/// The anvil binary: `$ANVIL`, else `<root>/node_modules/.bin/anvil`, else `anvil` on the PATH.
pub fn anvil_binary(root: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("ANVIL") {
        return path.into();
    }
    let local = root.join("node_modules/.bin/anvil");
    if local.exists() {
        local
    } else {
        PathBuf::from("anvil")
    }
}

/// A running anvil, killed on drop.
pub struct AnvilProcess {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl AnvilProcess {
    /// Starts anvil on `port` (0: a free one) and waits until it listens.
    pub fn spawn(binary: &Path, port: u16, log: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        // Its own process group: Ctrl-C reaches `khachapuri dev`, which settles the provider's claims on
        // this chain before it stops anvil itself.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // Out of the group, it must still end with `khachapuri dev`, however that ends (`run` spawns it from
        // the main thread).
        khachapuri_chain::child::die_with_parent(&mut command);
        let mut child = command
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .args([
                "--mnemonic",
                ANVIL_MNEMONIC,
                "--accounts",
                &ANVIL_ACCOUNTS.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start anvil ({}): run `make toolchain`, or set ANVIL=/path/to/anvil",
                    binary.display()
                )
            })?;
        let stdout = child.stdout.take().context("anvil has no stdout")?;
        let mut log = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write as _;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    let _ = tx.send(
                        addr.rsplit(':')
                            .next()
                            .and_then(|p| p.trim().parse::<u16>().ok()),
                    );
                }
            }
        });
        let mut anvil = Self { child, port: 0 };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => anvil.port = port,
            _ => {
                if let Ok(Some(status)) = anvil.child.try_wait() {
                    bail!("anvil exited ({status}) before listening; is port {port} taken?")
                }
                bail!("anvil did not report a listening port within 30 s")
            }
        }
        Ok(anvil)
    }

    /// Its RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AnvilProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `.khachapuri/dev.json` under `dir`, with what to do when it is missing.
pub fn read_dev_info(dir: &Path) -> anyhow::Result<DevInfo> {
    let path = dir.join(DEV_JSON);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {}: start the local network with `khachapuri dev` (or `make dev`), or pass --rpc-url", path.display())
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a dev.json this version wrote", path.display()))
}
