//! A spec owner's access to its logs (docs/PROTOCOL.md, "13. Logs"): what a provider kept of a spec's
//! recent runs (status, failure reason, the program's stderr) is served only to the spec's owner, on
//! `GET /_logs/{cid}` with the header [`LOGS_ACCESS_HEADER`] carrying a `kl1.` grant the owner signed.
//!
//! The grant is EIP-712 [`LogsAccess`] in the escrow's domain (the payer token's), naming the provider's
//! address, the spec and an expiry; it travels as `kl1.` + base64url(expiry ‖ signature), because the
//! provider and the spec are already the request's.

use alloy::primitives::{Address, Signature};
use alloy::signers::Signer;
use alloy::sol_types::{Eip712Domain, SolStruct};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Request header of `GET /_logs/{cid}`: the owner's `kl1.` grant.
pub const LOGS_ACCESS_HEADER: &str = "x-khachapuri-logs-access";
/// The prefix of an encoded grant (its format version).
pub const LOGS_ACCESS_PREFIX: &str = "kl1.";
/// The longest a grant may run: a provider refuses one whose expiry is further away.
pub const LOGS_ACCESS_MAX_SECS: u64 = 3600;

alloy::sol! {
    /// A spec owner lets the bearer read what `provider` kept of `spec`'s runs until `expiry`
    /// (unix seconds).
    #[derive(Debug, PartialEq, Eq)]
    struct LogsAccess {
        address provider;
        string spec;
        uint64 expiry;
    }
}

/// Why a logs grant is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogsAccessError {
    /// Not a grant this crate wrote.
    #[error("malformed logs grant: {0}")]
    Malformed(&'static str),
    /// Past its expiry.
    #[error("the logs grant expired at unix {expiry} (now {now})")]
    Expired {
        /// Its expiry.
        expiry: u64,
        /// The time of the check.
        now: u64,
    },
    /// Its expiry is further away than [`LOGS_ACCESS_MAX_SECS`].
    #[error(
        "the logs grant runs to unix {expiry}, more than {LOGS_ACCESS_MAX_SECS} s from now ({now})"
    )]
    TooLong {
        /// Its expiry.
        expiry: u64,
        /// The time of the check.
        now: u64,
    },
    /// The signature recovers to nobody, or to someone other than the spec's owner.
    #[error("the logs grant is not signed by the spec's owner {owner}")]
    NotOwner {
        /// The spec's owner.
        owner: Address,
    },
}

/// A [`LogsAccess`] grant with its signature, for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedLogsAccess {
    /// Until when it is valid (unix seconds).
    pub expiry: u64,
    /// The owner's signature over [`LogsAccess`].
    pub signature: Signature,
}

impl SignedLogsAccess {
    /// Signs a grant to read `spec`'s logs at `provider` until `expiry`, as the spec's owner.
    pub async fn sign(
        owner: &impl Signer,
        domain: &Eip712Domain,
        provider: Address,
        spec: &str,
        expiry: u64,
    ) -> Result<Self, alloy::signers::Error> {
        let access = LogsAccess {
            provider,
            spec: spec.to_owned(),
            expiry,
        };
        let signature = owner.sign_hash(&access.eip712_signing_hash(domain)).await?;
        Ok(Self { expiry, signature })
    }

    /// `kl1.` + base64url of expiry (8 bytes, big-endian) ‖ signature (65 bytes).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(8 + 65);
        bytes.extend_from_slice(&self.expiry.to_be_bytes());
        bytes.extend_from_slice(&self.signature.as_bytes());
        format!("{LOGS_ACCESS_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses [`SignedLogsAccess::encode`]'s output.
    pub fn decode(text: &str) -> Result<Self, LogsAccessError> {
        let body = text
            .trim()
            .strip_prefix(LOGS_ACCESS_PREFIX)
            .ok_or(LogsAccessError::Malformed("missing the kl1. prefix"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| LogsAccessError::Malformed("not base64url"))?;
        let (expiry, signature) = bytes
            .split_first_chunk::<8>()
            .filter(|(_, rest)| rest.len() == 65)
            .ok_or(LogsAccessError::Malformed("not 73 bytes"))?;
        let signature = Signature::from_raw(signature)
            .map_err(|_| LogsAccessError::Malformed("bad signature bytes"))?;
        Ok(Self {
            expiry: u64::from_be_bytes(*expiry),
            signature,
        })
    }

    /// Checks the grant for reading `spec` at `provider` at time `now`: not expired, not longer than
    /// [`LOGS_ACCESS_MAX_SECS`], and signed by `owner`.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        provider: Address,
        spec: &str,
        owner: Address,
        now: u64,
    ) -> Result<(), LogsAccessError> {
        let expiry = self.expiry;
        if expiry <= now {
            return Err(LogsAccessError::Expired { expiry, now });
        }
        if expiry > now.saturating_add(LOGS_ACCESS_MAX_SECS) {
            return Err(LogsAccessError::TooLong { expiry, now });
        }
        let access = LogsAccess {
            provider,
            spec: spec.to_owned(),
            expiry,
        };
        let signer = self
            .signature
            .recover_address_from_prehash(&access.eip712_signing_hash(domain));
        match signer {
            Ok(signer) if signer == owner => Ok(()),
            _ => Err(LogsAccessError::NotOwner { owner }),
        }
    }
}

/// One run of a spec as its provider kept it, in the answer of `GET /_logs/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Increasing across the provider's runs (and its restarts): ask for `?after=` the last one seen.
    pub seq: u64,
    /// When the run ended, unix milliseconds.
    pub time_ms: u64,
    /// The request's method.
    pub method: String,
    /// The request's path below the spec's CID (no query).
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The error code of a failed run (`program_trap`, `program_timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it failed, as the caller was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the program wrote to stderr (lossy UTF-8, cut at the provider's cap).
    pub stderr: String,
    /// How long the run took, milliseconds.
    pub duration_ms: u64,
    /// Who paid for it.
    pub payer: Address,
}

/// The answer of `GET /_logs/{cid}`: the entries after `?after=`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Logs {
    /// The spec's CID.
    pub spec: String,
    /// The spec's terms hash: its key in the escrow's revocations (`khachapuri revoke` sends it).
    pub terms_hash: alloy::primitives::B256,
    /// The runs kept, oldest first.
    pub entries: Vec<LogEntry>,
    /// What to pass as `?after=` to get only newer entries.
    pub next: u64,
    /// What the provider counted of the spec's calls, beyond the entries it keeps; absent when it
    /// counted none (since it started, or since it forgot the spec), and from agents that do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// What the owner was charged in the spending cap's current period, when the spec has a cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_spent: Option<CapSpent>,
}

/// A provider's count of one spec's claimed runs, in its memory: since `sinceMs` (when it started, or
/// began counting the spec again after forgetting it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// When the count began, unix milliseconds.
    pub since_ms: u64,
    /// Claimed runs that finished, whoever paid.
    pub calls: u64,
    /// What those runs charged the spec's owner (USDC base units, decimal string).
    #[serde(with = "crate::usdc::units")]
    pub owner_charged: crate::Usdc,
}

/// The owner's charges in the current period of a spec's spending cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapSpent {
    /// Charged so far in the period (USDC base units, decimal string).
    #[serde(with = "crate::usdc::units")]
    pub spent: crate::Usdc,
    /// When the period ends, unix seconds.
    pub resets_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    #[tokio::test]
    async fn only_the_owner_s_unexpired_grant_for_this_spec_and_provider_passes()
    -> Result<(), Box<dyn std::error::Error>> {
        let (owner, stranger) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let domain = crate::eip712::domain(31337, Address::repeat_byte(1));
        let provider = Address::repeat_byte(7);
        let now = 1_000;
        let grant = SignedLogsAccess::sign(&owner, &domain, provider, "bafyspec", now + 60).await?;
        let decoded = SignedLogsAccess::decode(&grant.encode())?;
        assert_eq!(decoded, grant);
        let check = |g: &SignedLogsAccess, provider, spec, now| {
            g.verify(&domain, provider, spec, owner.address(), now)
        };
        assert_eq!(check(&grant, provider, "bafyspec", now), Ok(()));
        let not_owner = Err(LogsAccessError::NotOwner {
            owner: owner.address(),
        });
        assert_eq!(check(&grant, provider, "bafyother", now), not_owner);
        assert_eq!(
            check(&grant, Address::repeat_byte(8), "bafyspec", now),
            not_owner
        );
        assert!(matches!(
            check(&grant, provider, "bafyspec", now + 60),
            Err(LogsAccessError::Expired { .. })
        ));
        let by_stranger =
            SignedLogsAccess::sign(&stranger, &domain, provider, "bafyspec", now + 60).await?;
        assert_eq!(check(&by_stranger, provider, "bafyspec", now), not_owner);
        let long = SignedLogsAccess::sign(
            &owner,
            &domain,
            provider,
            "bafyspec",
            now + LOGS_ACCESS_MAX_SECS + 1,
        )
        .await?;
        assert!(matches!(
            check(&long, provider, "bafyspec", now),
            Err(LogsAccessError::TooLong { .. })
        ));
        for bad in [
            "",
            "kl1.",
            "kl1.!!",
            "kp1.AAAA",
            &format!("kl1.{}", "A".repeat(96)),
        ] {
            assert!(
                matches!(
                    SignedLogsAccess::decode(bad),
                    Err(LogsAccessError::Malformed(_))
                ),
                "{bad}"
            );
        }
        Ok(())
    }
}
