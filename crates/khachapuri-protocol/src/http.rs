//! Names on the wire of a call (docs/PROTOCOL.md, "8. Request and response" and "9. Errors"), the one
//! error body every component answers with, and the environment variables every binary reads.

use serde::{Deserialize, Serialize};

/// Response: the price of the request, as `0.01 USDC`.
pub const PRICE_HEADER: &str = "x-khachapuri-price";
/// Response: who paid (an address).
pub const PAYER_HEADER: &str = "x-khachapuri-payer";
/// Response: the provider's signed receipt, `kr2.…` ([`crate::receipt::SignedReceipt::encode`]).
pub const RECEIPT_HEADER: &str = "x-khachapuri-receipt";

/// Response: whether the provider charged for this request, `yes` or `no`, on every answer of an agent
/// (its errors too). A gateway tries another provider only after `no` (docs/PROTOCOL.md §10 "Failover").
pub const CHARGED_HEADER: &str = "x-khachapuri-charged";
/// Response, added by a gateway to a routed call: the label of the provider that answered.
pub const PROVIDER_HEADER: &str = "x-khachapuri-provider";

/// Request: the payer token (`kp2.…`, docs/PROTOCOL.md §6). `Authorization: Bearer kp1.…`/`kp2.…` is still
/// read; any other `Authorization` is the program's.
pub const PAYER_TOKEN_HEADER: &str = "x-khachapuri-payer-token";

/// Whether an `Authorization` value carries a payer token (the first transport) rather than the program's
/// own credentials: its credentials, after any scheme (`Bearer`, in any case), start with `kp1.` or
/// `kp2.`. A token under another scheme still counts, so that it is refused as malformed instead of
/// reaching the program.
pub fn is_payer_token_authorization(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let credentials = match value.iter().position(u8::is_ascii_whitespace) {
        Some(end) => value[end..].trim_ascii(),
        None => value,
    };
    [value, credentials]
        .iter()
        .any(|v| v.starts_with(b"kp1.") || v.starts_with(b"kp2."))
}

/// A request that carries two different payer tokens: which one pays would be a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request carries several different payer tokens; send one, in {PAYER_TOKEN_HEADER}")]
pub struct SeveralTokens;

/// The request's payer token, if it has one: every [`PAYER_TOKEN_HEADER`] and every `Authorization` that
/// carries one ([`is_payer_token_authorization`]) must hold the same text.
pub fn payer_token(headers: &http::HeaderMap) -> Result<Option<&http::HeaderValue>, SeveralTokens> {
    let mut tokens = headers.get_all(PAYER_TOKEN_HEADER).iter().chain(
        headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter(|v| is_payer_token_authorization(v.as_bytes())),
    );
    let Some(first) = tokens.next() else {
        return Ok(None);
    };
    let text = |v: &http::HeaderValue| {
        let v = v.as_bytes().trim_ascii();
        match v.iter().position(u8::is_ascii_whitespace) {
            Some(end) if !v.starts_with(b"kp") => v[end..].trim_ascii().to_vec(),
            _ => v.to_vec(),
        }
    };
    let first_text = text(first);
    match tokens.all(|other| text(other) == first_text) {
        true => Ok(Some(first)),
        false => Err(SeveralTokens),
    }
}

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

/// What browsers may do with functions (CORS). A preflight (`OPTIONS` with
/// `Access-Control-Request-Method`) is answered by the agent or the gateway itself, `204` with these
/// headers: it never runs a program and is never charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `Access-Control-Allow-Origin`: `*`, or one origin (`https://app.example`); `None` answers
    /// preflights with no CORS headers, so browsers keep other origins out.
    pub allow_origin: Option<String>,
    /// How long a browser may cache a preflight's answer, seconds.
    pub max_age: u32,
}

impl Default for Cors {
    /// Any origin: a function's URL is public, and a call is paid by whoever signs for it.
    fn default() -> Self {
        Self {
            allow_origin: Some("*".into()),
            max_age: 600,
        }
    }
}

/// The response headers a browser script may read: the price, the payer and the receipt, and x402's offer
/// and settlement.
pub const EXPOSED_HEADERS: &str = "x-khachapuri-price, x-khachapuri-payer, x-khachapuri-receipt, x-khachapuri-charged, x-khachapuri-provider, payment-required, payment-response";

impl Cors {
    /// Reads an operator's setting: an origin, `*`, or `none`.
    pub fn from_setting(allow_origin: &str) -> Self {
        let allow_origin = match allow_origin.trim() {
            "" | "none" => None,
            origin => Some(origin.to_owned()),
        };
        Self {
            allow_origin,
            ..Self::default()
        }
    }

    /// Whether a request is a CORS preflight.
    pub fn is_preflight(method: &http::Method, headers: &http::HeaderMap) -> bool {
        method == http::Method::OPTIONS
            && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight: `204`, allowing the method and headers asked for.
    pub fn preflight(&self, request: &http::HeaderMap) -> http::Response<()> {
        use http::header;
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::NO_CONTENT;
        let Some(origin) = &self.allow_origin else {
            return response;
        };
        let h = response.headers_mut();
        if let Ok(origin) = http::HeaderValue::try_from(origin.as_str()) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        for (asked, allow) in [
            (
                header::ACCESS_CONTROL_REQUEST_METHOD,
                header::ACCESS_CONTROL_ALLOW_METHODS,
            ),
            (
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
            ),
        ] {
            if let Some(value) = request.get(asked) {
                h.insert(allow, value.clone());
            }
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.into());
        h.insert(header::VARY, http::HeaderValue::from_static("origin"));
        response
    }

    /// Adds to an answer the headers that let a browser script read it, price and receipt included. A
    /// program that set its own `Access-Control-Allow-Origin` keeps its policy whole.
    pub fn decorate(&self, headers: &mut http::HeaderMap) {
        let Some(origin) = &self.allow_origin else {
            return;
        };
        if headers.contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            return;
        }
        if let Ok(origin) = http::HeaderValue::try_from(origin.as_str()) {
            headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
                http::HeaderValue::from_static(EXPOSED_HEADERS),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_programs_own_cors_policy_is_kept_whole() {
        let cors = Cors::default();
        let mut ours = http::HeaderMap::new();
        cors.decorate(&mut ours);
        assert_eq!(ours[http::header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            ours[http::header::ACCESS_CONTROL_EXPOSE_HEADERS],
            EXPOSED_HEADERS
        );

        let mut theirs = http::HeaderMap::new();
        theirs.insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            http::HeaderValue::from_static("https://app.example"),
        );
        theirs.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            http::HeaderValue::from_static("true"),
        );
        cors.decorate(&mut theirs);
        assert_eq!(
            theirs[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert!(!theirs.contains_key(http::header::ACCESS_CONTROL_EXPOSE_HEADERS));

        let mut none = http::HeaderMap::new();
        Cors::from_setting("none").decorate(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn the_payer_token_is_found_wherever_it_rides_and_only_once() {
        let map = |pairs: &[(&str, &str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        for auth in [
            "Bearer kp2.x",
            "bearer kp2.x",
            "BEARER\tkp1.x",
            "kp2.x",
            "Token kp2.x",
        ] {
            assert!(is_payer_token_authorization(auth.as_bytes()), "{auth}");
        }
        for auth in ["Basic YWxhZGRpbg==", "Bearer eyJhbGciOi", ""] {
            assert!(!is_payer_token_authorization(auth.as_bytes()), "{auth}");
        }
        let found = |pairs: &[(&str, &str)]| {
            payer_token(&map(pairs)).map(|t| t.map(|v| v.to_str().unwrap().to_owned()))
        };
        assert_eq!(found(&[("authorization", "Basic abc")]), Ok(None));
        assert_eq!(
            found(&[
                (PAYER_TOKEN_HEADER, "kp2.a"),
                ("authorization", "Basic abc")
            ]),
            Ok(Some("kp2.a".into()))
        );
        // A program's credentials first, the token second: the token is still found.
        assert_eq!(
            found(&[
                ("authorization", "Basic abc"),
                ("authorization", "bearer kp2.a")
            ]),
            Ok(Some("bearer kp2.a".into()))
        );
        assert_eq!(
            found(&[
                (PAYER_TOKEN_HEADER, "kp2.a"),
                ("authorization", "Bearer kp2.a")
            ]),
            Ok(Some("kp2.a".into())),
            "the same token twice is one token"
        );
        assert_eq!(
            found(&[
                (PAYER_TOKEN_HEADER, "kp2.a"),
                ("authorization", "Bearer kp2.b")
            ]),
            Err(SeveralTokens)
        );
        assert_eq!(
            found(&[(PAYER_TOKEN_HEADER, "kp2.a"), (PAYER_TOKEN_HEADER, "kp2.b")]),
            Err(SeveralTokens)
        );
    }
}
