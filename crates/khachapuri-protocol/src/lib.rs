//! The Khachapuri protocol's types and encodings: what a client, a provider and a gateway must agree on,
//! with no RPC client, no server and no runtime in its dependencies. `docs/PROTOCOL.md` describes each
//! format; `test/vectors/protocol.json` pins their bytes (checked by Rust and by Solidity).
//!
//! - [`Usdc`]: amounts (6 decimals), parsed and shown as `0.01 USDC`.
//! - [`label`]: provider labels, validated exactly as the Registry does.
//! - [`eip712`]: the escrow's domain; the payer token [`PayerToken`] (`kp2.`) and the spec terms
//!   [`SpecTerms`] an owner signs.
//! - [`receipt`]: the provider's signed receipt of a paid response (`kr2.`, signed in groups over a
//!   [`merkle`] root; `kr1.` alone).
//! - [`Server`]: where a provider answers (a URL, or a gateway's tunnel).
//! - [`tunnel`]: the handshake of a provider's tunnel to a gateway.
//! - [`http`]: header and environment-variable names.
//! - [`logs`]: the `kl1.` grant with which a spec's owner reads its logs, and their JSON.

pub mod eip712;
pub mod http;
pub mod label;
pub mod logs;
pub mod measure;
pub mod merkle;
pub mod receipt;
pub mod reputation;
pub mod server;
pub mod tunnel;
pub mod usdc;
pub mod x402;

pub use eip712::{PayerToken, SignedPayerToken, SpecTerms, TokenError};
pub use label::{InvalidLabel, Label, label_node, validate_label};
pub use receipt::{Receipt, ReceiptSigner, SignedReceipt};
pub use server::{InvalidServer, Server, TUNNEL_MARKER};
pub use usdc::{Usdc, UsdcParseError};

pub use alloy::primitives::{Address, B256, Bytes, U256};

/// Unix seconds now (0 if the clock is before 1970): the clock a payer token's expiry and a tunnel
/// challenge's are checked against.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now (0 if the clock is before 1970): a log entry's time.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
