//! What a caller sees when a request is not served: a status and a short JSON body saying why and what
//! to do next.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use khachapuri_protocol::http::ErrorBody;

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable reason, e.g. `insufficient_reserve`.
    pub code: &'static str,
    /// What happened, in a sentence (amounts in USDC).
    pub message: String,
    /// What to do next.
    pub hint: Option<String>,
    /// Seconds until a retry can succeed (`Retry-After`), when the refusal ends at a known time.
    pub retry_after: Option<u64>,
    /// The request may have been charged (an error after the claim): `X-Khachapuri-Charged: yes`, so
    /// that nobody sends it again elsewhere.
    pub charged: bool,
}

impl ApiError {
    /// An error with no hint.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            hint: None,
            retry_after: None,
            charged: false,
        }
    }

    /// Marks an error that came after the claim: the request may have been charged.
    pub fn charged(mut self) -> Self {
        self.charged = true;
        self
    }

    /// Adds what the caller should do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Says when a retry can succeed (`Retry-After`, seconds).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 402.
    pub fn payment_required(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYMENT_REQUIRED, code, message)
    }

    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503 for a chain RPC that does not answer: fail closed, nothing runs for free.
    pub fn chain_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "chain_unavailable",
            message,
        )
        .hint("the provider cannot check payment right now; retry later")
    }
}

impl ApiError {
    /// The JSON body this error answers with ([`ErrorBody`]).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.error_body()).unwrap_or_default()
    }

    fn error_body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone(), self.hint.clone())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.error_body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<khachapuri_ipfs::FetchError> for ApiError {
    fn from(err: khachapuri_ipfs::FetchError) -> Self {
        use khachapuri_ipfs::FetchError as F;
        match &err {
            F::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
                .hint("check the CID; the content must be reachable from this provider's IPFS sources"),
            F::Block(_) => Self::bad_request("malformed_cid", err.to_string()),
            F::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "content_too_large", err.to_string()),
            F::BadDag { .. } => Self::unprocessable("bad_content", err.to_string()),
            F::Unavailable { .. } | F::Remote(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "ipfs_unavailable", err.to_string()).hint("retry later")
            }
        }
    }
}

impl From<khachapuri_runtime::Error> for ApiError {
    fn from(err: khachapuri_runtime::Error) -> Self {
        use khachapuri_runtime::Error as E;
        let status =
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match &err {
            E::Timeout(_) => "program_timeout",
            E::Trap(_) | E::Exit(_) => "program_trap",
            E::MemoryLimit { .. } => "program_memory_limit",
            E::OutputLimit { .. } => "program_output_limit",
            E::Busy(_) => "busy",
            E::BadRequest(_) => "bad_request",
            E::NotWasm(_) | E::BadPackage(_) | E::Compile(_) | E::MissingStart | E::Link(_) => {
                "bad_program"
            }
            E::ModuleTooLarge { .. } | E::UnzippedTooLarge { .. } => "program_too_large",
            E::Io(_) | E::Engine(_) => "internal",
        };
        Self::new(status, code, err.to_string())
    }
}
