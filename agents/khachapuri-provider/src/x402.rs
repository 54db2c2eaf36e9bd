//! x402 at the agent (docs/PROTOCOL.md §14): every 402 offers one call at this provider's price, payable
//! with an EIP-3009 authorization of the chain's USDC to the payee (`PAYMENT-REQUIRED`); a request that
//! brings one (`PAYMENT-SIGNATURE`) is checked, settled with the token before the program runs, and
//! answered with `PAYMENT-RESPONSE`. The escrow stays the cheap path: a reserve pays many calls with one
//! batched transaction, an x402 payment is one transaction per call, for callers with no reserve.

use alloy::sol_types::Eip712Domain;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use khachapuri_chain::{Address, Chain, Settlement, Usdc};
use khachapuri_protocol::x402::{
    PAYMENT_SIGNATURE_HEADER, PaymentPayload, PaymentRequired, PaymentRequirements, Resource,
    SettlementResponse, X402_VERSION,
};

use crate::error::ApiError;

/// How long an authorization must stay valid after it arrives: the time its transfer may take to land.
pub(crate) const SETTLE_WITHIN: u64 = 15;
/// The validity a client is asked to give its authorization (`maxTimeoutSeconds`).
const MAX_TIMEOUT_SECONDS: u64 = 120;

/// What this agent takes as an x402 payment.
pub(crate) struct X402 {
    offer: PaymentRequirements,
    /// The token's EIP-712 domain, which payments are signed in.
    domain: Eip712Domain,
}

impl X402 {
    /// The offer for `payee` at `price`, in the token's domain as the chain reports it; `None` (with a
    /// warning) when the token's domain cannot be read, and then no 402 offers x402.
    pub(crate) async fn discover(chain: &Chain, payee: Address, price: Usdc) -> Option<Self> {
        let domain = match chain.token_domain().await {
            Ok(domain) => domain,
            Err(e) => {
                tracing::warn!(error = %e, "the token's EIP-712 domain cannot be read: x402 payments are off");
                return None;
            }
        };
        let amount = khachapuri_chain::U256::from(price.units());
        let offer = PaymentRequirements::exact(&domain, payee, amount, MAX_TIMEOUT_SECONDS);
        Some(Self { offer, domain })
    }

    /// `PAYMENT-REQUIRED` for a 402 of the call to `resource`, saying `error`.
    pub(crate) fn required(&self, resource: String, error: Option<String>) -> Option<HeaderValue> {
        let required = PaymentRequired {
            x402_version: X402_VERSION,
            error,
            resource: Resource {
                url: resource,
                description: "one call of a Khachapuri function".into(),
                mime_type: String::new(),
            },
            accepts: vec![self.offer.clone()],
        };
        HeaderValue::try_from(required.encode()).ok()
    }

    /// The payment a request brings, checked against the offer (its payer recovered), or `None` when it
    /// brings none. A payment that does not pass is a 402 that runs nothing.
    pub(crate) fn payment(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(PaymentPayload, Address)>, ApiError> {
        let Some(value) = headers.get(PAYMENT_SIGNATURE_HEADER) else {
            return Ok(None);
        };
        let refused = |message: String| {
            ApiError::payment_required("x402_payment_invalid", message)
                .hint("nothing ran and nothing was charged; sign a new payment for the offer in PAYMENT-REQUIRED")
        };
        let text = value
            .to_str()
            .map_err(|_| refused("PAYMENT-SIGNATURE is not text".into()))?;
        let payment = PaymentPayload::decode(text).map_err(|e| refused(e.to_string()))?;
        let now = khachapuri_protocol::unix_now();
        let payer = payment
            .check(&self.offer, &self.domain, now, SETTLE_WITHIN)
            .map_err(|e| refused(e.to_string()))?;
        Ok(Some((payment, payer)))
    }

    /// What the chain says before the transfer is queued: the nonce unused and the wallet holding the
    /// value (read together). Junk (random or empty wallets, replays) is refused here, never reaching the
    /// one task that sends transactions.
    pub(crate) async fn precheck(
        &self,
        chain: &Chain,
        payment: &PaymentPayload,
    ) -> Result<(), ApiError> {
        let a = &payment.payload.authorization;
        let (used, held) = tokio::join!(
            chain.authorization_state(a.from, a.nonce),
            chain.token_balance(a.from)
        );
        let unavailable =
            |e: khachapuri_chain::ChainError| ApiError::chain_unavailable(e.to_string());
        let hint = "nothing ran and nothing was charged; sign a new payment for the offer in PAYMENT-REQUIRED";
        if used.map_err(unavailable)? {
            return Err(ApiError::payment_required(
                "x402_payment_refused",
                format!(
                    "the authorization {} of {} was already used or cancelled (a retry of a call this payment \
                     already paid for?)",
                    a.nonce, a.from
                ),
            )
            .hint(hint));
        }
        let held = held.map_err(unavailable)?;
        let value = Usdc::from_u256(a.value);
        if held < value {
            return Err(ApiError::payment_required(
                "x402_payment_refused",
                format!("{} holds {held}; the payment moves {value}", a.from),
            )
            .hint("get USDC into that wallet, then sign a new payment"));
        }
        Ok(())
    }

    /// `PAYMENT-RESPONSE` for a payment settled by `settlement`.
    pub(crate) fn response(&self, settlement: &Settlement, payer: Address) -> Option<HeaderValue> {
        let response = SettlementResponse {
            success: true,
            error_reason: None,
            transaction: settlement.receipt.tx_hash.to_string(),
            network: self.offer.network.clone(),
            payer: Some(payer),
        };
        HeaderValue::try_from(response.encode()).ok()
    }
}

/// The URL a caller used, as well as the agent can tell (a gateway forwards `X-Forwarded-Host` and
/// `X-Forwarded-Proto`, and its own path prefix in `X-Forwarded-Prefix`).
pub(crate) fn resource_url(headers: &HeaderMap, uri: &Uri) -> String {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("localhost");
    let proto = get("x-forwarded-proto").unwrap_or("http");
    let prefix = get("x-forwarded-prefix").unwrap_or("");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{proto}://{host}{prefix}{path}")
}
