//! The HTTP plumbing shared by the gateway and the tunnel client: the forwarding client (HTTP and
//! HTTPS), body type, hop-by-hop headers, `X-Forwarded-*`, and the JSON error responses.

use std::{
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Any error a body or service may raise.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the gateway sends and returns: streamed, never buffered whole.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The client that forwards to providers' URLs, `http://` or `https://` (verified with `tls`).
pub type ForwardClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Body,
>;

/// A [`ForwardClient`]: TCP_NODELAY, `connect_timeout` per TCP connect, idle connections pooled.
pub fn forward_client(
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Option<Duration>,
) -> ForwardClient {
    use hyper_util::{
        client::legacy::{Client, connect::HttpConnector},
        rt::{TokioExecutor, TokioTimer},
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(connect_timeout);
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(https)
}

pub use khachapuri_tls::error_chain;

/// `body`, failing once it has been waited on for `idle` without a frame coming: a caller or provider
/// that stops sending in the middle of a body frees its connection (and the other side learns the body
/// is cut) instead of holding both for ever. Only time spent waiting for data counts, so a body that
/// trickles keeps flowing, and so does one whose reader is slow.
pub fn idle_limited(body: Body, idle: Duration) -> Body {
    boxed(IdleTimeout {
        inner: body,
        idle,
        timer: None,
        waiting: false,
    })
}

struct IdleTimeout {
    inner: Body,
    idle: Duration,
    /// Made at the first wait: most bodies are ready whenever they are polled and never need one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the last poll found no frame: the timer runs from when the wait began.
    waiting: bool,
}

/// What [`idle_limited`] fails a stalled body with.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}: the body was cut")]
pub struct BodyIdle(pub Duration);

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A whole body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and every header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Host` and `X-Forwarded-Proto`; says
/// the same in the standard form too, appending `for=...;host="...";proto=...` to `Forwarded`
/// (RFC 7239).
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, host: Option<&str>, proto: &str) {
    let node = match client.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut element = format!("for={node}");
    if let Some(host) = host.filter(|h| !h.contains(['"', '\\'])) {
        element.push_str(&format!(";host=\"{host}\""));
    }
    element.push_str(&format!(";proto={proto}"));
    let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {element}"),
        _ => element,
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(header::FORWARDED, value);
    }
    let ip = client.ip().to_string();
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(xff, value);
    }
    if let Some(host) = host.and_then(|h| HeaderValue::try_from(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Ok(proto) = HeaderValue::try_from(proto) {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), proto);
    }
}

/// The protocol's JSON error ([`khachapuri_protocol::http::ErrorBody`]): a code, the sentence, and what to
/// do next.
pub fn error_response(status: StatusCode, code: &str, message: &str, hint: &str) -> Response<Body> {
    let body = khachapuri_protocol::http::ErrorBody::new(code, message, Some(hint.to_owned()));
    let body = serde_json::to_string(&body).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Joins a base URL (`http://h:p` or `http://h:p/prefix`) and a request's path and query.
pub fn join_url(base: &str, path_and_query: &str) -> String {
    let base = base.trim_end_matches('/');
    if path_and_query.starts_with('/') {
        format!("{base}{path_and_query}")
    } else {
        format!("{base}/{path_and_query}")
    }
}

/// True if an error, or any error it wraps, is an I/O timeout.
pub fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "close"),
            ("x-kept", "yes"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.9:5".parse().unwrap(),
            Some("alice.example"),
            "https",
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-host"], "alice.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.9;host=\"alice.example\";proto=https"
        );
        add_forwarded(&mut h, "[::1]:5".parse().unwrap(), None, "http");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.9;host=\"alice.example\";proto=https, for=\"[::1]\";proto=http"
        );
    }

    #[test]
    fn joins_urls() {
        assert_eq!(join_url("http://a:1/", "/x?y"), "http://a:1/x?y");
        assert_eq!(join_url("http://a:1/p", "/x"), "http://a:1/p/x");
    }
}
