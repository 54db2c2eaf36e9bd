//! Names on the wire of a call (docs/PROTOCOL.md, "8. Request and response" and "9. Errors"), the one
//! error body every component answers with, and the environment variables every binary reads.

use serde::{Deserialize, Serialize};

/// Response: the price of the request, as `0.01 USDC`.
pub const PRICE_HEADER: &str = "x-khachapuri-price";
/// Response: who paid (an address).
pub const PAYER_HEADER: &str = "x-khachapuri-payer";
/// Response: the provider's signed receipt, `kr1.…` ([`crate::receipt::SignedReceipt::encode`]).
pub const RECEIPT_HEADER: &str = "x-khachapuri-receipt";

/// The environment variable every binary reads a hex private key from (payer, owner or payee).
pub const PRIVATE_KEY_ENV: &str = "KHACHAPURI_PRIVATE_KEY";

/// The JSON body of every error a provider or a gateway answers:
/// `{"error": "<code>", "message": "<sentence>", "hint": "<what to do next>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`insufficient_reserve`, `unknown_provider`, ...).
    pub error: String,
    /// What happened, in a sentence (amounts in USDC).
    pub message: String,
    /// What to do next; absent when there is nothing to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ErrorBody {
    /// A body with a hint.
    pub fn new(code: &str, message: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            error: code.to_owned(),
            message: message.into(),
            hint,
        }
    }
}
