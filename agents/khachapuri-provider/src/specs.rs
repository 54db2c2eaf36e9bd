//! Specs by CID: fetched (verified against the CID), decrypted with the provider's key or read as open
//! JSON, checked and signature-verified once, then cached. Decryption failures are remembered and rate
//! limited, so nobody can use the agent as a decryption oracle or a CPU sink.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::http::StatusCode;
use khachapuri_ipfs::{Cid, Fetcher};
use khachapuri_spec::{ProviderKey, Spec, envelope};

use crate::{error::ApiError, lru::Lru};

pub use khachapuri_spec::MAX_SPEC_BYTES;

/// A spec that passed every check that does not depend on the request.
#[derive(Debug)]
pub struct VerifiedSpec {
    /// The spec.
    pub spec: Spec,
    /// Whether it came encrypted to this provider (else it is an open spec).
    pub encrypted: bool,
    /// [`Spec::terms_hash`]: the deployment's key in the escrow's revocations.
    pub terms_hash: alloy::primitives::B256,
    /// The program's CID, parsed.
    pub program: khachapuri_ipfs::Cid,
    /// The program's key in the runtime's caches: its canonical CID, and for a private program the id of
    /// its key too, so that a spec with another key never runs a program someone else's key opened.
    pub program_id: String,
}

/// Specs by CID.
pub struct SpecStore {
    fetcher: Arc<Fetcher>,
    keys: Vec<ProviderKey>,
    cache: Mutex<Lru<Result<Arc<VerifiedSpec>, ApiError>>>,
    failures: Mutex<TokenBucket>,
}

impl std::fmt::Debug for SpecStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecStore").finish_non_exhaustive()
    }
}

impl SpecStore {
    /// A store over `fetcher`, decrypting with `keys` (the current key first; older ones during a rotation).
    pub fn new(fetcher: Arc<Fetcher>, keys: Vec<ProviderKey>, capacity: usize) -> Self {
        Self {
            fetcher,
            keys,
            cache: Mutex::new(Lru::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            failures: Mutex::new(TokenBucket::new(20.0, 5.0)),
        }
    }

    /// The spec at `cid`, or why it cannot be run. Refusals of a given CID are cached like successes.
    pub async fn get(&self, cid: &Cid) -> Result<Arc<VerifiedSpec>, ApiError> {
        let key = cid.to_string();
        if let Some(hit) = self.lock().get(&key) {
            return hit;
        }
        let bytes = self
            .fetcher
            .get(cid, MAX_SPEC_BYTES)
            .await
            .map_err(|e| match e {
                khachapuri_ipfs::FetchError::TooLarge { .. } => ApiError::unprocessable(
                    "spec_too_large",
                    format!("{cid} is larger than a spec may be ({MAX_SPEC_BYTES} bytes)"),
                )
                .hint("if this is a program's CID, call the spec's CID that `khachapuri deploy` printed"),
                other => ApiError::from(other),
            })?;
        let result = self.open(&bytes);
        // Transient outcomes (rate limiting) are not remembered; verdicts on the bytes are.
        if result
            .as_ref()
            .err()
            .is_none_or(|e| e.status != StatusCode::TOO_MANY_REQUESTS)
        {
            self.lock().put(key, result.clone());
        }
        result
    }

    fn open(&self, bytes: &[u8]) -> Result<Arc<VerifiedSpec>, ApiError> {
        let encrypted = envelope::is_envelope(bytes);
        let plain = if encrypted {
            if !self.failures_lock().has_budget() {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many undecryptable specs",
                )
                .hint("retry in a few seconds"));
            }
            match envelope::open(&self.keys, bytes) {
                Ok(plain) => plain,
                // Named no key of ours: no RSA work was done, so it costs the failure budget nothing (a
                // wrong URL for a spec sealed to other providers must not rate-limit everyone else).
                Err(err @ envelope::EnvelopeError::AnotherKey { .. }) => {
                    return Err(ApiError::unprocessable("undecryptable_spec", err.to_string())
                        .hint("call it through one of the providers it was deployed to, or redeploy it to this one with `khachapuri deploy --provider <label>` (its resolver's rsaKey record)"));
                }
                Err(err) => {
                    self.failures_lock().take();
                    return Err(ApiError::unprocessable("undecryptable_spec", err.to_string())
                        .hint("redeploy it with `khachapuri deploy`, which encrypts the spec to this provider's current RSA key (its resolver's rsaKey record)"));
                }
            }
        } else {
            bytes.to_vec()
        };
        if let Some(kind) = program_kind(&plain) {
            return Err(ApiError::unprocessable(
                "program_not_spec",
                format!("this CID is a program ({kind}), not a deployment spec"),
            )
            .hint("call the spec's CID (`khachapuri deploy` prints the URL to call), not the program's"));
        }
        let spec = Spec::from_json(&plain).map_err(|e| {
            ApiError::unprocessable("invalid_spec", e.to_string())
                .hint("rebuild the spec with `khachapuri deploy`")
        })?;
        if !spec.verify_signature() {
            return Err(ApiError::unauthorized(
                "bad_spec_signature",
                format!(
                    "the spec's terms are not signed by its owner {}",
                    spec.owner
                ),
            )
            .hint("the owner must sign the terms (EIP-712) in the escrow's domain"));
        }
        let terms_hash = spec.terms_hash();
        // The program must be a CID: its canonical text (never the spec's own string) keys the caches, so
        // no spec can name another program's cache entry.
        let program = khachapuri_ipfs::parse_cid(&spec.program).map_err(|e| {
            ApiError::unprocessable("invalid_spec", format!("program `{}`: {e}", spec.program))
                .hint("rebuild the spec with `khachapuri deploy`")
        })?;
        let program_id = match &spec.program_key {
            Some(key) => format!("{program}~{}", key.id()),
            None => program.to_string(),
        };
        Ok(Arc::new(VerifiedSpec {
            spec,
            encrypted,
            terms_hash,
            program,
            program_id,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Result<Arc<VerifiedSpec>, ApiError>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures_lock(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Failures allowed: a burst of `capacity`, refilled at `per_second`.
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(capacity: f64, per_second: f64) -> Self {
        Self {
            capacity,
            per_second,
            tokens: capacity,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let elapsed = self.at.elapsed().as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.at = Instant::now();
    }

    fn has_budget(&mut self) -> bool {
        self.refill();
        self.tokens >= 1.0
    }

    fn take(&mut self) {
        self.refill();
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// What a program package looks like, if `bytes` is one: a caller who pasted the program's CID in place of
/// the spec's gets told so.
fn program_kind(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\0asm") {
        Some("a wasm module")
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some("a zip package")
    } else if khachapuri_spec::is_sealed_program(bytes) {
        Some("an encrypted program")
    } else {
        None
    }
}
