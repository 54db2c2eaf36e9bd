//! Where a label leads: the [`Directory`] trait, and the [`StaticDirectory`] read from a file or flags.
//!
//! The on-chain directory (Registry -> Resolver) implements the same trait.

use std::{collections::HashMap, path::Path, sync::Arc};

use alloy::primitives::Address;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::label::{InvalidLabel, Label};

pub use khachapuri_protocol::server::{Server, TUNNEL_MARKER};

/// What the directory knows about a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Where to forward.
    pub server: Server,
    /// The address whose key may open this label's tunnel (the resolver's payee). `None`: nobody may.
    pub payee: Option<Address>,
    /// The id of the RSA key specs are sealed to (`sha256` of its DER, docs/PROTOCOL.md §5): a sealed spec
    /// is routed to the labels whose key it names. `None`: unknown (a static route), never a recipient.
    pub key_id: Option<khachapuri_spec::KeyId>,
    /// That RSA key's DER (SPKI), to check a provider's key proof against. `None` with `key_id`.
    pub rsa_key: Option<alloy::primitives::Bytes>,
}

/// A directory lookup failed (not "unknown label": that is `Ok(None)`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirError {
    /// The source could not be read (RPC down, file unreadable).
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// A record exists but makes no sense.
    #[error("bad directory record: {0}")]
    BadRecord(String),
}

/// Resolves labels to routes. Implementations cache as they see fit; the gateway calls
/// [`Directory::lookup`] once per request and once per tunnel handshake.
pub trait Directory: Send + Sync + 'static {
    /// The route of `label`, `Ok(None)` if it is not registered.
    fn lookup<'a>(&'a self, label: &'a Label) -> BoxFuture<'a, Result<Option<Route>, DirError>>;

    /// Every label the directory knows of (registered, whatever its route is now): where routed calls
    /// look for providers.
    fn labels(&self) -> BoxFuture<'_, Result<Vec<Label>, DirError>>;
}

impl<D: Directory + ?Sized> Directory for Arc<D> {
    fn lookup<'a>(&'a self, label: &'a Label) -> BoxFuture<'a, Result<Option<Route>, DirError>> {
        (**self).lookup(label)
    }

    fn labels(&self) -> BoxFuture<'_, Result<Vec<Label>, DirError>> {
        (**self).labels()
    }
}

impl From<khachapuri_protocol::InvalidServer> for DirError {
    fn from(err: khachapuri_protocol::InvalidServer) -> Self {
        Self::BadRecord(err.to_string())
    }
}

impl From<khachapuri_protocol::InvalidServer> for StaticDirError {
    fn from(err: khachapuri_protocol::InvalidServer) -> Self {
        Self::Record(err.into())
    }
}

/// A fixed table of routes, for local use and tests.
///
/// File format (JSON): `{"alice": {"server": "http://127.0.0.1:3000"}, "bob": {"server": "tunnel:",
/// "payee": "0x..."}}`. Flag format ([`StaticDirectory::parse_entry`]): `alice=http://127.0.0.1:3000` or
/// `bob=tunnel:@0xPAYEE` (any server may carry `@0xPAYEE`).
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    routes: HashMap<Label, Route>,
}

#[derive(Deserialize)]
struct FileEntry {
    server: String,
    #[serde(default)]
    payee: Option<Address>,
}

/// A static directory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StaticDirError {
    /// Bad label.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// Bad server record or entry syntax.
    #[error(transparent)]
    Record(#[from] DirError),
    /// Bad entry syntax.
    #[error("bad route {0:?}: expected LABEL=SERVER or LABEL=SERVER@0xPAYEE")]
    Syntax(String),
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("parsing {path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl StaticDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a route.
    pub fn insert(&mut self, label: Label, server: Server, payee: Option<Address>) -> &mut Self {
        self.routes.insert(
            label,
            Route {
                server,
                payee,
                key_id: None,
                rsa_key: None,
            },
        );
        self
    }

    /// Builder form of [`StaticDirectory::insert`].
    pub fn with(
        mut self,
        label: &str,
        server: Server,
        payee: Option<Address>,
    ) -> Result<Self, InvalidLabel> {
        self.insert(Label::new(label)?, server, payee);
        Ok(self)
    }

    /// Reads the JSON file format described on the type.
    pub fn from_file(path: &Path) -> Result<Self, StaticDirError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StaticDirError::Io {
            path: shown.clone(),
            source,
        })?;
        let entries: HashMap<String, FileEntry> =
            serde_json::from_str(&text).map_err(|source| StaticDirError::Json {
                path: shown,
                source,
            })?;
        let mut dir = Self::new();
        for (label, entry) in entries {
            dir.insert(
                Label::new(&label)?,
                Server::parse(&entry.server)?,
                entry.payee,
            );
        }
        Ok(dir)
    }

    /// Parses one `LABEL=SERVER[@0xPAYEE]` entry and adds it.
    pub fn parse_entry(&mut self, entry: &str) -> Result<&mut Self, StaticDirError> {
        let (label, server) = entry
            .split_once('=')
            .ok_or_else(|| StaticDirError::Syntax(entry.to_owned()))?;
        let (server, payee) = match server.rsplit_once('@') {
            Some((s, p)) if p.starts_with("0x") => (
                s,
                Some(
                    p.parse::<Address>()
                        .map_err(|_| StaticDirError::Syntax(entry.to_owned()))?,
                ),
            ),
            _ => (server, None),
        };
        Ok(self.insert(Label::new(label)?, Server::parse(server)?, payee))
    }
}

impl Directory for StaticDirectory {
    fn lookup<'a>(&'a self, label: &'a Label) -> BoxFuture<'a, Result<Option<Route>, DirError>> {
        Box::pin(futures::future::ready(Ok(self.routes.get(label).cloned())))
    }

    fn labels(&self) -> BoxFuture<'_, Result<Vec<Label>, DirError>> {
        Box::pin(futures::future::ready(Ok(self
            .routes
            .keys()
            .cloned()
            .collect())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        let mut d = StaticDirectory::new();
        d.parse_entry("alice=http://127.0.0.1:3000/").unwrap();
        d.parse_entry("bob=tunnel:@0x00000000000000000000000000000000000000b0")
            .unwrap();
        assert_eq!(
            d.routes[&Label::new("alice").unwrap()].server,
            Server::Url("http://127.0.0.1:3000".into())
        );
        let bob = &d.routes[&Label::new("bob").unwrap()];
        assert_eq!(bob.server, Server::Tunnel);
        assert!(bob.payee.is_some());
        assert!(d.parse_entry("Bad=http://x").is_err());
        assert!(d.parse_entry("c=ftp://x").is_err());
        assert!(d.parse_entry("c").is_err());
    }
}
