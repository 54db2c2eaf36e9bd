//! Deployment specs for Khachapuri (docs/PROTOCOL.md, "4. The deployment spec", "5. The sealed envelope").
//!
//! - [`spec`]: the JSON spec and its checks.
//! - [`keys`]: the provider's RSA key pair (PKCS#8 PEM, mode 0600; SPKI DER on chain).
//! - [`envelope`]: the hybrid RSA-OAEP-SHA256 + AES-256-GCM envelope of an encrypted spec.

pub mod envelope;
pub mod keys;
pub mod offer;
pub mod spec;

pub use envelope::{EnvelopeError, is_envelope, open, seal};
pub use keys::{KeyError, ProviderKey, key_id};
pub use offer::{Caps, Offer, OfferError};
pub use spec::{Limits, SPEC_VERSION, SignError, Spec, SpecError, SpendCap};
