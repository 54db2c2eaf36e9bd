//! The deployment spec: JSON, versioned, signed by its owner.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy::signers::Signer;
use alloy::sol_types::SolStruct;
use khachapuri_protocol::{SpecTerms, eip712};
use serde::{Deserialize, Serialize};

/// The only spec version this build reads and writes.
pub const SPEC_VERSION: u32 = 1;

/// Resource limits the owner asks for (the provider may impose lower maxima of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap of the program, bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline of one request, milliseconds.
    pub timeout_ms: u64,
    /// Cap on the response body, bytes.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            timeout_ms: 5_000,
            output_bytes: 4 << 20,
        }
    }
}

/// The most a provider may charge the owner for a deployment in one period: what bounds a leaked
/// owner-pays URL before the owner notices. Periods are fixed windows of `period_seconds` counted from
/// the unix epoch (a day cap resets at 00:00 UTC); calls paid with a payer token do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpendCap {
    /// The most charged to the owner per period, in USDC base units, as a decimal string.
    #[serde(with = "decimal")]
    pub amount: U256,
    /// The period's length in seconds.
    pub period_seconds: u64,
}

impl std::fmt::Display for SpendCap {
    /// As people read it: `5.00 USDC per day`, `0.25 USDC per 12 hours`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let amount = khachapuri_protocol::Usdc::from_u256(self.amount);
        match self.period_seconds {
            3_600 => write!(f, "{amount} per hour"),
            86_400 => write!(f, "{amount} per day"),
            604_800 => write!(f, "{amount} per week"),
            s if s % 86_400 == 0 => write!(f, "{amount} per {} days", s / 86_400),
            s if s % 3_600 == 0 => write!(f, "{amount} per {} hours", s / 3_600),
            s => write!(f, "{amount} per {s} s"),
        }
    }
}

impl SpendCap {
    /// The window `unix` falls in, and the unix time that window ends.
    pub fn window(&self, unix: u64) -> (u64, u64) {
        let period = self.period_seconds.max(1);
        let index = unix / period;
        (index, index.saturating_add(1).saturating_mul(period))
    }
}

/// A deployment spec: which program to run, with which environment, for whom, at what price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// Format version, [`SPEC_VERSION`].
    pub version: u32,
    /// CID of the program: a zip holding the entry module, or a bare `.wasm`.
    pub program: String,
    /// Path of the entry module inside the zip (ignored for a bare module, where it names the module).
    pub entry: String,
    /// Environment variables given to the program (secrets stay secret only in an encrypted spec).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Who signed the terms; pays for calls that present no payer token.
    pub owner: Address,
    /// The provider label this spec is meant for, or several separated by commas ([`Spec::providers`]);
    /// `None` for an open deployment any provider may run.
    #[serde(default)]
    pub provider: Option<String>,
    /// The most the owner pays per request, in USDC base units (6 decimals), as a decimal string.
    #[serde(with = "decimal")]
    pub max_price: U256,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Terms and conditions text the owner agreed to (its keccak256 is signed).
    #[serde(default)]
    pub terms: String,
    /// The chain and escrow of the EIP-712 domain the signature is bound to.
    pub chain_id: u64,
    /// The escrow contract (the EIP-712 verifying contract).
    pub escrow: Address,
    /// The key of a private program (`program` names its ciphertext, [`crate::program`]); only in a sealed
    /// spec, and not part of the signed terms (a wrong key only makes the program unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_key: Option<crate::ProgramKey>,
    /// The most a provider may charge the owner per period; `None` for no cap (the reserve still bounds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_cap: Option<SpendCap>,
    /// The owner's EIP-712 signature over the terms (65 bytes, hex).
    #[serde(default)]
    pub signature: Bytes,
}

/// Why a spec could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key is not the spec's owner's.
    #[error("the spec's owner is {owner} but the signing key is {signer}")]
    NotTheOwner {
        /// The spec's owner.
        owner: Address,
        /// The key's address.
        signer: Address,
    },
    /// The signer failed (a wallet refused, a keystore could not sign).
    #[error("signer: {0}")]
    Signer(#[from] alloy::signers::Error),
}

/// Why a spec is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not JSON of the spec's shape.
    #[error("not a valid deployment spec: {0}")]
    Malformed(String),
    /// A version this build does not know.
    #[error("spec version {0} is not supported (this build reads version {SPEC_VERSION})")]
    UnsupportedVersion(u32),
    /// A field has a value that can never be valid.
    #[error("invalid spec field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Spec {
    /// Parses and checks a spec from its JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))?;
        if v.version != SPEC_VERSION {
            return Err(SpecError::UnsupportedVersion(v.version));
        }
        let spec: Spec =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// The labels the spec is meant for: `provider` holds one, or several separated by commas
    /// (`alice,bob`: a spec sealed to each of them, any of which may run it); none for an open spec.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.provider.iter().flat_map(|p| p.split(','))
    }

    /// Whether provider `label` is one the spec is meant for.
    pub fn is_for(&self, label: &str) -> bool {
        self.providers().any(|p| p == label)
    }

    /// The JSON bytes of the spec.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Structural checks that need no chain: fields that can never be valid.
    pub fn check(&self) -> Result<(), SpecError> {
        let invalid = |field, reason: &str| {
            Err(SpecError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.program.trim().is_empty() {
            return invalid("program", "empty: the program's CID is required");
        }
        if self.entry.is_empty() || self.entry.contains("..") || self.entry.starts_with('/') {
            return invalid(
                "entry",
                "must be a relative path inside the program, without `..`",
            );
        }
        if self.owner == Address::ZERO {
            return invalid("owner", "the zero address cannot sign");
        }
        if self.max_price.is_zero() {
            return invalid("maxPrice", "zero: a provider would never run it");
        }
        let mut named: Vec<&str> = Vec::new();
        for label in self.providers() {
            if let Err(khachapuri_protocol::InvalidLabel { reason, .. }) =
                khachapuri_protocol::validate_label(label)
            {
                return invalid(
                    "provider",
                    &format!("`{label}` is not a provider label: {reason}"),
                );
            }
            if named.contains(&label) {
                return invalid("provider", &format!("`{label}` is named twice"));
            }
            named.push(label);
        }
        if named.len() > crate::envelope::MAX_RECIPIENTS {
            return invalid(
                "provider",
                &format!("at most {} providers", crate::envelope::MAX_RECIPIENTS),
            );
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid(
                    "env",
                    "variable names must be non-empty, without `=` or NUL",
                );
            }
        }
        let l = &self.limits;
        if l.memory_bytes == 0 || l.timeout_ms == 0 || l.output_bytes == 0 {
            return invalid("limits", "every limit must be above zero");
        }
        if let Some(cap) = &self.spend_cap {
            if cap.amount.is_zero() {
                return invalid(
                    "spendCap",
                    "a zero cap allows no call: leave it out for no cap",
                );
            }
            if cap.period_seconds == 0 {
                return invalid("spendCap", "the period must be at least one second");
            }
        }
        Ok(())
    }

    /// `keccak256` of the environment's canonical JSON (keys sorted): what the signature covers.
    pub fn env_digest(&self) -> B256 {
        keccak256(serde_json::to_vec(&self.env).unwrap_or_default())
    }

    /// `keccak256` of the terms text.
    pub fn terms_digest(&self) -> B256 {
        keccak256(self.terms.as_bytes())
    }

    /// The EIP-712 terms the owner signs.
    pub fn signed_terms(&self) -> SpecTerms {
        SpecTerms {
            program: self.program.clone(),
            entry: self.entry.clone(),
            envDigest: self.env_digest(),
            provider: self.provider.clone().unwrap_or_default(),
            owner: self.owner,
            maxPrice: self.max_price,
            memoryBytes: self.limits.memory_bytes,
            timeoutMs: self.limits.timeout_ms,
            outputBytes: self.limits.output_bytes,
            termsDigest: self.terms_digest(),
            spendCap: self.spend_cap.map_or(U256::ZERO, |c| c.amount),
            spendPeriod: self.spend_cap.map_or(0, |c| c.period_seconds),
        }
    }

    /// The deployment's identity on chain: the EIP-712 signing hash of its terms in its own domain, what
    /// the owner signed. Every encoding of the spec has the same one (re-serialized JSON, another CID of
    /// the same envelope, a malleated signature): it is what `Escrow.revokeSpec` takes.
    pub fn terms_hash(&self) -> B256 {
        self.signed_terms()
            .eip712_signing_hash(&eip712::domain(self.chain_id, self.escrow))
    }

    /// Signs the terms as the owner (`signer` must be `owner`), filling `signature`.
    pub async fn sign(&mut self, signer: &impl Signer) -> Result<(), SignError> {
        if signer.address() != self.owner {
            return Err(SignError::NotTheOwner {
                owner: self.owner,
                signer: signer.address(),
            });
        }
        let domain = eip712::domain(self.chain_id, self.escrow);
        let signature = self.signed_terms().sign(signer, &domain).await?;
        self.signature = Bytes::from(signature.as_bytes().to_vec());
        Ok(())
    }

    /// Whether `signature` is the owner's over these terms, in the spec's own domain. A spec that does not
    /// verify is never run.
    pub fn verify_signature(&self) -> bool {
        let Ok(signature) = Signature::try_from(self.signature.as_ref()) else {
            return false;
        };
        self.signed_terms()
            .verify(&eip712::domain(self.chain_id, self.escrow), &signature)
    }
}

/// Serde for a `U256` as a decimal string (JSON numbers lose precision above 2^53).
mod decimal {
    use alloy::primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom(
                "expected a decimal string of USDC base units, e.g. \"10000\"",
            ));
        }
        U256::from_str_radix(&s, 10).map_err(D::Error::custom)
    }
}
