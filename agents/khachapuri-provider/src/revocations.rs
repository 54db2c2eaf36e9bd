//! Revoked deployments: just before it claims a call, the agent asks the escrow whether the spec's owner
//! revoked the spec (`Escrow.revokedAt(owner, terms hash)`: keyed by the signed terms, so no other CID of
//! the same spec escapes it). An answer that says "not revoked" stays good for [`TTL`], so a
//! revocation takes effect within that long and a busy spec costs one chain read per [`TTL`]; "revoked"
//! is for good and is never asked again. A chain that cannot answer refuses the call (fail closed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use khachapuri_chain::{Address, B256, Chain, ChainError};

/// How long "not revoked" stays good.
pub const TTL: Duration = Duration::from_secs(2);
/// Specs remembered; past it, the whole memory is dropped (each spec then costs one read again).
const REMEMBERED: usize = 16_384;

/// What the agent knows of (owner, spec) revocations.
pub(crate) struct Revocations {
    chain: Chain,
    known: Mutex<HashMap<(Address, B256), Known>>,
}

#[derive(Clone, Copy)]
enum Known {
    /// Not revoked, as read at this instant.
    Live(Instant),
    /// Revoked at this unix time.
    Revoked(u64),
}

impl Revocations {
    pub(crate) fn new(chain: Chain) -> Self {
        Self {
            chain,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// When `owner` revoked the deployment with terms hash `spec`, if it did (reading the chain when the
    /// last answer is older than [`TTL`]).
    pub(crate) async fn revoked_at(
        &self,
        owner: Address,
        spec: B256,
    ) -> Result<Option<u64>, ChainError> {
        let key = (owner, spec);
        let known = self.lock().get(&key).copied();
        match known {
            Some(Known::Revoked(at)) => return Ok(Some(at)),
            Some(Known::Live(read)) if read.elapsed() < TTL => return Ok(None),
            _ => {}
        }
        let read = Instant::now();
        let at = self.chain.revoked_at(owner, spec).await?;
        let mut known = self.lock();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(
            key,
            match at {
                Some(at) => Known::Revoked(at),
                None => Known::Live(read),
            },
        );
        Ok(at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Address, B256), Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}
