//! The on-chain directory: Registry -> Resolver through `khachapuri-chain`, cached, and invalidated by
//! the contracts' events.
//!
//! A watcher task polls `eth_getLogs` every `poll_interval` over the Registry and the resolvers of
//! cached labels. Any Registry log whose first indexed topic is a cached label's node (`Registered`,
//! `ResolverChanged`, `TransferStarted`, `Transferred`) and any log of a cached resolver (`ServerChanged`,
//! `PayeeChanged`, `RsaKeyChanged`, `OwnershipTransferred`, ...) drops that label from the cache; the next
//! request reads it afresh. (Taking a label whose resolver the new owner does not own clears it, with
//! `ResolverChanged` to zero: the label then reads as unknown until its owner sets a resolver.) Entries
//! also expire after `ttl` (and unknown labels after `negative_ttl`), in case the watcher misses something.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256},
    providers::Provider,
    rpc::types::Filter,
};
use futures::future::BoxFuture;
use khachapuri_chain::{Chain, ChainError, label_node};

use crate::{
    directory::{DirError, Directory, Route, Server},
    label::Label,
};

/// Cache and refresh settings.
#[derive(Debug, Clone)]
pub struct ChainDirectoryConfig {
    /// How often to read new logs.
    pub poll_interval: Duration,
    /// Longest a resolved label is trusted without a re-read.
    pub ttl: Duration,
    /// Longest "unknown label" is trusted (a registration event also clears it).
    pub negative_ttl: Duration,
    /// Widest block range read at once; further behind than this, the whole cache is dropped.
    pub max_block_range: u64,
}

impl Default for ChainDirectoryConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(10),
            max_block_range: 5_000,
        }
    }
}

struct Cached {
    route: Option<Route>,
    node: B256,
    resolver: Option<Address>,
    fetched: Instant,
}

/// Labels resolved on-chain. Build with [`ChainDirectory::start`].
pub struct ChainDirectory {
    chain: Chain,
    config: ChainDirectoryConfig,
    cache: Mutex<HashMap<Label, Cached>>,
    /// Every label registered so far, and the first block not yet read for `Registered` events.
    registered: tokio::sync::Mutex<(std::collections::BTreeSet<Label>, u64)>,
}

impl ChainDirectory {
    /// A directory over `chain` (no signer needed), with its log watcher running on a spawned task
    /// until the directory is dropped.
    pub fn start(chain: Chain, config: ChainDirectoryConfig) -> Arc<Self> {
        let from = chain.deployment().deployment_block;
        let dir = Arc::new(Self {
            chain,
            config,
            cache: Mutex::default(),
            registered: tokio::sync::Mutex::new((Default::default(), from)),
        });
        tokio::spawn(watch(Arc::downgrade(&dir)));
        dir
    }

    /// Forgets `label`: the next lookup reads the chain.
    pub fn invalidate(&self, label: &Label) {
        self.lock().remove(label);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Label, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn resolve(&self, label: &Label) -> Result<Option<Route>, DirError> {
        let now = Instant::now();
        if let Some(c) = self.lock().get(label) {
            let ttl = if c.route.is_some() {
                self.config.ttl
            } else {
                self.config.negative_ttl
            };
            if now.duration_since(c.fetched) < ttl {
                return Ok(c.route.clone());
            }
        }
        let (route, resolver) = match self.chain.resolve_label(label.as_str()).await {
            Ok(record) => {
                let server = Server::parse(record.server.record())?;
                (
                    Some(Route {
                        server,
                        payee: Some(record.payee),
                        key_id: Some(khachapuri_spec::key_id(&record.rsa_public_key_der)),
                        rsa_key: Some(record.rsa_public_key_der.clone()),
                    }),
                    Some(record.resolver),
                )
            }
            Err(ChainError::UnknownLabel(_)) => (None, None),
            Err(e) => return Err(DirError::Unavailable(e.to_string())),
        };
        let node = label_node(label.as_str());
        self.lock().insert(
            label.clone(),
            Cached {
                route: route.clone(),
                node,
                resolver,
                fetched: now,
            },
        );
        Ok(route)
    }

    /// Drops the cached labels that `logs` touch.
    fn apply(&self, logs: &[alloy::rpc::types::Log]) {
        let registry = self.chain.deployment().registry;
        let mut touched_nodes = HashSet::new();
        let mut touched_resolvers = HashSet::new();
        for log in logs {
            if log.address() == registry {
                if let Some(node) = log.topics().get(1) {
                    touched_nodes.insert(*node);
                }
            } else {
                touched_resolvers.insert(log.address());
            }
        }
        self.lock().retain(|label, c| {
            let stale = touched_nodes.contains(&c.node)
                || c.resolver.is_some_and(|r| touched_resolvers.contains(&r));
            if stale {
                tracing::debug!(%label, "directory entry invalidated by an event");
            }
            !stale
        });
    }
}

impl ChainDirectory {
    /// Every registered label: the Registry's `Registered` events, read onwards from where the last call
    /// stopped (from the deployment block the first time), at most `max_block_range` blocks per request.
    async fn registered(&self) -> Result<Vec<Label>, DirError> {
        use alloy::sol_types::SolEvent;
        use khachapuri_bindings::Registry;
        let unavailable = |e: String| DirError::Unavailable(e);
        let provider = self.chain.provider();
        let mut registered = self.registered.lock().await;
        let head = provider
            .get_block_number()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        while registered.1 <= head {
            let from = registered.1;
            let to = head.min(from.saturating_add(self.config.max_block_range.max(1) - 1));
            let filter = Filter::new()
                .address(self.chain.deployment().registry)
                .event_signature(Registry::Registered::SIGNATURE_HASH)
                .from_block(from)
                .to_block(to);
            let logs = provider
                .get_logs(&filter)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            for log in logs {
                let label = Registry::Registered::decode_log_data(log.data())
                    .ok()
                    .and_then(|r| Label::new(&r.label).ok());
                if let Some(label) = label {
                    registered.0.insert(label);
                }
            }
            registered.1 = to + 1;
        }
        Ok(registered.0.iter().cloned().collect())
    }
}

impl Directory for ChainDirectory {
    fn lookup<'a>(&'a self, label: &'a Label) -> BoxFuture<'a, Result<Option<Route>, DirError>> {
        Box::pin(self.resolve(label))
    }

    fn labels(&self) -> BoxFuture<'_, Result<Vec<Label>, DirError>> {
        Box::pin(self.registered())
    }
}

/// The log watcher: runs while the directory lives.
async fn watch(dir: Weak<ChainDirectory>) {
    let mut next_block: Option<u64> = None;
    loop {
        let Some(this) = dir.upgrade() else { return };
        let interval = this.config.poll_interval;
        if let Err(e) = poll_once(&this, &mut next_block).await {
            tracing::warn!(error = %e, "directory log poll failed; entries expire by TTL meanwhile");
        }
        drop(this);
        tokio::time::sleep(interval).await;
    }
}

async fn poll_once(dir: &ChainDirectory, next_block: &mut Option<u64>) -> Result<(), String> {
    let provider = dir.chain.provider();
    let head = provider
        .get_block_number()
        .await
        .map_err(|e| e.to_string())?;
    let from = match *next_block {
        // First poll: the cache was filled from the current state, so start from here.
        None => {
            *next_block = Some(head + 1);
            return Ok(());
        }
        Some(from) if from > head => return Ok(()),
        Some(from) => from,
    };
    if head - from >= dir.config.max_block_range {
        tracing::warn!(
            from,
            head,
            "directory fell behind the chain; dropping its cache"
        );
        dir.lock().clear();
        *next_block = Some(head + 1);
        return Ok(());
    }
    let snapshot_at = Instant::now();
    let mut addresses: Vec<Address> = dir.lock().values().filter_map(|c| c.resolver).collect();
    addresses.push(dir.chain.deployment().registry);
    addresses.sort();
    addresses.dedup();
    let filter = Filter::new()
        .address(addresses.clone())
        .from_block(from)
        .to_block(head);
    let logs = provider
        .get_logs(&filter)
        .await
        .map_err(|e| e.to_string())?;
    dir.apply(&logs);
    // Entries cached while this poll ran had their resolver left out of the filter: a change in this
    // block range could have been missed, so read them again.
    dir.lock().retain(|_, c| {
        c.fetched < snapshot_at
            || c.resolver
                .is_none_or(|r| addresses.binary_search(&r).is_ok())
    });
    *next_block = Some(head + 1);
    Ok(())
}
