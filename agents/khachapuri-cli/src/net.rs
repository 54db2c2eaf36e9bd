//! Shared helpers: free ports, the dev.json format, reading it back.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use anyhow::Context;
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
    /// The first provider (`dev`, at its URL).
    pub provider: DevProvider,
    /// Every provider: `dev`, and `tun` behind the gateway's tunnel, in its own process.
    #[serde(default)]
    pub providers: Vec<DevProvider>,
    /// The embedded IPFS node (trustless gateway + Kubo RPC).
    pub ipfs: String,
    /// Funded test accounts.
    pub accounts: Vec<DevAccount>,
    /// The deployed example functions.
    pub functions: Vec<DevFunction>,
    /// The web console served by the gateway (`{gateway}/_console/`), when it is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
}

impl DevInfo {
    /// The dev node as a provider's IPFS source (`gateway=URL`).
    pub fn ipfs_source(&self) -> String {
        format!("gateway={}", self.ipfs)
    }
}

/// The provider of a dev network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevProvider {
    /// Its label.
    pub label: String,
    /// Its agent's URL (`tunnel:` behind the gateway's tunnel).
    pub url: String,
    /// Its payee address.
    pub payee: String,
    /// Its price per request.
    pub price: String,
    /// The process its agent runs in, when it is not `khachapuri dev` itself: stopping it (`kill PID`) is a
    /// provider going away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
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

/// Reads `.khachapuri/dev.json` under `dir`, with what to do when it is missing.
pub fn read_dev_info(dir: &Path) -> anyhow::Result<DevInfo> {
    let path = dir.join(DEV_JSON);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {}: start the local network with `khachapuri dev` (or `make dev`), or pass --rpc-url", path.display())
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a dev.json this version wrote", path.display()))
}
