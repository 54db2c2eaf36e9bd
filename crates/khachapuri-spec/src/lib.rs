//! Deployment specs for Khachapuri (docs/PROTOCOL.md, "4. The deployment spec", "5. The sealed envelope").
//!
//! - [`spec`]: the JSON spec and its checks.
//! - [`keys`]: the provider's RSA key pair (PKCS#8 PEM, mode 0600; SPKI DER on chain).
//! - [`envelope`]: the hybrid RSA-OAEP-SHA256 + AES-256-GCM envelope of an encrypted spec.
//! - [`program`]: the chunked AES-256-GCM encryption of a private program's package.
//! - [`offer`]: what a provider offers (`GET /_provider`).

pub mod envelope;
pub mod keys;
pub mod offer;
pub mod program;
pub mod spec;

pub use envelope::{EnvelopeError, is_envelope, open, seal, seal_to};
pub use keys::{KeyError, KeyId, ProviderKey, key_id, verify_proof};

/// The largest spec, sealed or open, that a provider or a gateway fetches (docs/PROTOCOL.md §4).
pub const MAX_SPEC_BYTES: u64 = 256 << 10;
pub use offer::{Caps, Offer, OfferError};
pub use program::{
    ProgramKey, ProgramSealError, is_sealed_program, open_program, seal_program,
    seal_program_in_chunks,
};
pub use spec::{Limits, SPEC_VERSION, SignError, Spec, SpecError, SpendCap};
