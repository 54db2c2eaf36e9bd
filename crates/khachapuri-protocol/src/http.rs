//! Names on the wire of a call (docs/PROTOCOL.md, "8. Request and response"), and the environment
//! variables every binary reads them from.

/// Response: the price of the request, as `0.01 USDC`.
pub const PRICE_HEADER: &str = "x-khachapuri-price";
/// Response: who paid (an address).
pub const PAYER_HEADER: &str = "x-khachapuri-payer";
/// Response: the provider's signed receipt, `kr1.…` ([`crate::receipt::SignedReceipt::encode`]).
pub const RECEIPT_HEADER: &str = "x-khachapuri-receipt";

/// The environment variable every binary reads a hex private key from (payer, owner or payee).
pub const PRIVATE_KEY_ENV: &str = "KHACHAPURI_PRIVATE_KEY";
