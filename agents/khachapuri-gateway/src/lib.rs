//! The Khachapuri gateway (docs/PROTOCOL.md, "10. The gateway and the tunnel"):
//! `https://{label}.{base-domain}/{cid}...` (or `/{label}/{cid}...` for local use) is resolved to a provider
//! and forwarded, streaming both ways; a provider behind NAT holds a WebSocket [`tunnel`] open to the gateway
//! instead.
//!
//! - [`label`]: label validation and where a request names it.
//! - [`directory`]: label -> [`directory::Route`] (the [`directory::Directory`] trait, a static table).
//! - `chain_directory` (feature `chain`, on by default): the on-chain directory, cached and refreshed
//!   from the Registry's and Resolvers' events.
//! - [`console`]: the web console, a static site at `/_console/`.
//! - [`routing`]: calls that name no provider (`{gateway}/{cid}`): who can run the spec, who is paid,
//!   which provider first, and failover before any charge.
//! - [`server`]: the gateway itself ([`server::spawn`] starts one on a port).
//! - [`tunnel`]: the gateway's end of the tunnels (the provider's end is `khachapuri-tunnel`).
//! - [`proxy`]: hop-by-hop headers, `X-Forwarded-*`, JSON errors (from `khachapuri-tunnel`).
//!
//! Errors reach callers as JSON `{"error": ..., "hint": ...}`: 400 bad label, 404 unknown label, 502
//! provider unreachable or tunnel down, 504 provider too slow.

#[cfg(feature = "chain")]
pub mod chain_directory;
pub mod console;
pub mod directory;
pub mod label;
pub use khachapuri_tunnel::proxy;
pub mod routing;
pub mod server;
pub mod tunnel;

pub use console::{ConsoleError, ConsoleSite};
pub use directory::{DirError, Directory, Route, Server, StaticDirectory};
pub use label::Label;
pub use routing::{Router, RoutingConfig};
pub use server::{Gateway, GatewayConfig, GatewayHandle, spawn};
