//! The provider's side of the tunnel: connect out to a gateway, prove the payee key, serve requests.
//!
//! The provider agent calls [`run_tunnel`] once and keeps the [`TunnelHandle`]:
//!
//! ```no_run
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use khachapuri_tunnel::client::{ForwardToUrl, TunnelConfig, run_tunnel};
//!
//! let signer: alloy::signers::local::PrivateKeySigner = "0x...payee key...".parse()?;
//! let config = TunnelConfig::new("ws://gateway.example:8080/_tunnel", "alice".parse()?);
//! // Forward every request to the agent's own HTTP server...
//! let handle = run_tunnel(config, Arc::new(signer), ForwardToUrl::new("http://127.0.0.1:3000"));
//! // ...or serve it in-process: any hyper `Service` (`hyper::service::service_fn`, or a tower/axum
//! // service wrapped in `hyper_util::service::TowerToHyperService`).
//! if let Err(status) = handle.wait_connected(std::time::Duration::from_secs(10)).await {
//!     eprintln!("tunnel not up yet: {status:?}"); // it keeps retrying in the background
//! }
//! # Ok(()) }
//! ```
//!
//! [`run_tunnel`] reconnects forever with exponential backoff (also after a refusal, since the on-chain
//! records may be fixed meanwhile); [`TunnelHandle::status`] says what is happening. [`connect`] and
//! [`TunnelSession::serve`] are the single-attempt building blocks.

use std::{convert::Infallible, fmt, sync::Arc, time::Duration};

use alloy::signers::Signer;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::watch, task::JoinHandle};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use khachapuri_protocol::{Label, unix_now};

use crate::proxy::{Body, BoxError, boxed, error_response, join_url, strip_hop_by_hop};
use crate::{Handshake, PROTOCOL_VERSION, WsIo, challenge_message};

/// Where and how to hold a tunnel open.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The gateway's tunnel endpoint: `wss://host/_tunnel` (a gateway behind a TLS terminator), or
    /// `ws://host:port/_tunnel` for local use.
    pub gateway_url: String,
    /// The label to serve; its resolver's payee must be the signer's address.
    pub label: Label,
    /// If set, refuse challenges from a gateway with another id.
    pub expected_gateway_id: Option<String>,
    /// Most time for connect + handshake.
    pub handshake_timeout: Duration,
    /// First wait before reconnecting; doubles after each failure up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest wait before reconnecting.
    pub backoff_max: Duration,
    /// HTTP/2 ping interval; a gateway that misses a ping is considered gone, and the tunnel reconnects.
    pub keepalive: Duration,
    /// Most requests in flight at once on the tunnel (HTTP/2 streams); more wait at the gateway.
    pub max_concurrent_streams: u32,
    /// How a `wss://` gateway is verified ([`khachapuri_tls::client_config`] by default).
    pub tls: Arc<rustls::ClientConfig>,
}

impl TunnelConfig {
    /// Defaults: 10 s handshake, backoff 250 ms doubling to 30 s, 20 s keep-alive, 256 streams.
    pub fn new(gateway_url: impl Into<String>, label: Label) -> Self {
        Self {
            gateway_url: gateway_url.into(),
            label,
            expected_gateway_id: None,
            handshake_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            keepalive: Duration::from_secs(20),
            max_concurrent_streams: 256,
            tls: khachapuri_tls::client_config(),
        }
    }
}

/// Why a tunnel attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The WebSocket could not be opened.
    #[error("cannot reach the gateway: {0}")]
    Connect(String),
    /// The gateway refused the handshake.
    #[error("gateway refused the tunnel: {error} ({hint})")]
    Refused {
        /// What went wrong.
        error: String,
        /// What to do next.
        hint: String,
    },
    /// The gateway broke the protocol (or is not a khachapuri gateway).
    #[error("tunnel protocol error: {0}")]
    Protocol(String),
    /// Signing the challenge failed.
    #[error("signing the challenge: {0}")]
    Sign(String),
    /// Connect + handshake took too long.
    #[error("tunnel handshake timed out")]
    Timeout,
    /// The HTTP/2 connection failed after the handshake.
    #[error("tunnel connection lost: {0}")]
    Lost(String),
}

/// What the tunnel is doing, as seen through [`TunnelHandle::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelStatus {
    /// Attempt number `attempt` (from 1) is under way.
    Connecting {
        /// Attempts since the last successful connection.
        attempt: u32,
    },
    /// The gateway accepted the tunnel; requests are flowing.
    Connected,
    /// The last attempt or connection failed; retrying after `retry_in`.
    Down {
        /// Why.
        error: String,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A handshaken tunnel, ready to serve.
pub struct TunnelSession {
    ws: Ws,
    keepalive: Duration,
    max_concurrent_streams: u32,
}

impl fmt::Debug for TunnelSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSession").finish_non_exhaustive()
    }
}

/// Opens the WebSocket and completes the handshake once.
pub async fn connect<G>(config: &TunnelConfig, signer: &G) -> Result<TunnelSession, TunnelError>
where
    G: Signer + Send + Sync + ?Sized,
{
    let attempt = async {
        let tls = Some(tokio_tungstenite::Connector::Rustls(config.tls.clone()));
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            config.gateway_url.as_str(),
            None,
            true,
            tls,
        )
        .await
        .map_err(|e| TunnelError::Connect(crate::proxy::error_chain(&e)))?;
        send(
            &mut ws,
            &Handshake::Hello {
                label: config.label.to_string(),
                version: PROTOCOL_VERSION,
            },
        )
        .await?;
        let challenge = match recv(&mut ws).await? {
            Handshake::Challenge(c) => c,
            other => return Err(unexpected(other)),
        };
        if challenge.label != config.label.as_str() {
            return Err(TunnelError::Protocol(format!(
                "challenge is for label {:?}",
                challenge.label
            )));
        }
        if let Some(expected) = &config.expected_gateway_id
            && &challenge.gateway != expected
        {
            return Err(TunnelError::Protocol(format!(
                "gateway id {:?}, expected {expected:?}",
                challenge.gateway
            )));
        }
        if challenge.expires_at < unix_now() {
            return Err(TunnelError::Protocol(
                "challenge already expired (clock skew?)".into(),
            ));
        }
        let signature = signer
            .sign_message(challenge_message(&challenge).as_bytes())
            .await
            .map_err(|e| TunnelError::Sign(e.to_string()))?;
        let signature = format!("0x{}", alloy::hex::encode(signature.as_bytes()));
        send(&mut ws, &Handshake::Answer { signature }).await?;
        match recv(&mut ws).await? {
            Handshake::Accepted => Ok(ws),
            other => Err(unexpected(other)),
        }
    };
    let ws = tokio::time::timeout(config.handshake_timeout, attempt)
        .await
        .map_err(|_| TunnelError::Timeout)??;
    Ok(TunnelSession {
        ws,
        keepalive: config.keepalive,
        max_concurrent_streams: config.max_concurrent_streams,
    })
}

fn unexpected(msg: Handshake) -> TunnelError {
    match msg {
        Handshake::Refused { error, hint } => TunnelError::Refused { error, hint },
        other => TunnelError::Protocol(format!("unexpected message {other:?}")),
    }
}

async fn send(ws: &mut Ws, msg: &Handshake) -> Result<(), TunnelError> {
    let text = serde_json::to_string(msg).map_err(|e| TunnelError::Protocol(e.to_string()))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| TunnelError::Connect(e.to_string()))
}

async fn recv(ws: &mut Ws) -> Result<Handshake, TunnelError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| TunnelError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => {
                return Err(TunnelError::Protocol(format!("unexpected frame {other:?}")));
            }
            Some(Err(e)) => return Err(TunnelError::Connect(e.to_string())),
            None => return Err(TunnelError::Connect("gateway closed the socket".into())),
        }
    }
}

impl TunnelSession {
    /// Serves the gateway's requests with `service` until the tunnel closes. Requests arrive as HTTP/2
    /// requests whose URI is `http://{label}{path}?{query}` and whose headers carry `X-Forwarded-*`.
    pub async fn serve<S, B>(self, service: S) -> Result<(), TunnelError>
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keepalive)
            .keep_alive_timeout(self.keepalive)
            .max_concurrent_streams(self.max_concurrent_streams)
            .adaptive_window(true)
            .serve_connection(TokioIo::new(WsIo::new(self.ws)), service)
            .await
            .map_err(|e| TunnelError::Lost(e.to_string()))
    }
}

/// A running tunnel: reconnects on its own until dropped or [`TunnelHandle::stop`]ped.
#[derive(Debug)]
pub struct TunnelHandle {
    status: watch::Receiver<TunnelStatus>,
    task: JoinHandle<()>,
}

impl TunnelHandle {
    /// The current status; `.changed().await` on it to follow changes.
    pub fn status(&self) -> watch::Receiver<TunnelStatus> {
        self.status.clone()
    }

    /// Waits until the tunnel is [`TunnelStatus::Connected`] (returns at once if it is). On timeout,
    /// returns the last status.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), TunnelStatus> {
        let mut status = self.status.clone();
        let wait = status.wait_for(|s| *s == TunnelStatus::Connected);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.status.borrow().clone()),
        }
    }

    /// Closes the tunnel and stops reconnecting.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Holds a tunnel to the gateway open for `config.label`, serving requests with `service`, and
/// reconnects with exponential backoff (plus jitter) whenever it fails. The backoff resets after a
/// connection that stayed up for 10 s.
pub fn run_tunnel<G, S, B>(config: TunnelConfig, signer: Arc<G>, service: S) -> TunnelHandle
where
    G: Signer + Send + Sync + ?Sized + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (tx, rx) = watch::channel(TunnelStatus::Connecting { attempt: 1 });
    let task = tokio::spawn(async move {
        let mut backoff = config.backoff_initial;
        let mut attempt = 1;
        loop {
            tx.send_replace(TunnelStatus::Connecting { attempt });
            let error = match connect(&config, &*signer).await {
                Ok(session) => {
                    tracing::info!(label = %config.label, gateway = %config.gateway_url, "tunnel connected");
                    tx.send_replace(TunnelStatus::Connected);
                    let since = tokio::time::Instant::now();
                    let result = session.serve(service.clone()).await;
                    if since.elapsed() >= Duration::from_secs(10) {
                        backoff = config.backoff_initial;
                        attempt = 0;
                    }
                    match result {
                        Ok(()) => "gateway closed the tunnel".to_owned(),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            let jitter = backoff.mul_f64(rand::random::<f64>() * 0.2);
            let retry_in = backoff + jitter;
            tracing::warn!(label = %config.label, %error, ?retry_in, "tunnel down");
            tx.send_replace(TunnelStatus::Down { error, retry_in });
            tokio::time::sleep(retry_in).await;
            backoff = (backoff * 2).min(config.backoff_max);
            attempt += 1;
        }
    });
    TunnelHandle { status: rx, task }
}

/// A service that forwards each tunneled request to a local base URL (the agent's own HTTP server),
/// streaming both ways. Failures become a 502 JSON response.
#[derive(Clone, Debug)]
pub struct ForwardToUrl {
    base: Arc<str>,
    client: crate::proxy::ForwardClient,
}

impl ForwardToUrl {
    /// Forwards to `base` (`http://127.0.0.1:3000`, optionally with a path prefix; `https://` is
    /// verified with [`khachapuri_tls::client_config`]).
    pub fn new(base: &str) -> Self {
        let client = crate::proxy::forward_client(khachapuri_tls::client_config(), None);
        Self {
            base: base.trim_end_matches('/').into(),
            client,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ForwardToUrl {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let Ok(uri) = join_url(&this.base, pq).parse::<Uri>() else {
                return Ok(error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_local_url",
                    "bad local URL",
                    "fix the agent's forward URL",
                ));
            };
            parts.uri = uri;
            parts.version = http::Version::HTTP_11;
            strip_hop_by_hop(&mut parts.headers);
            parts.headers.remove(header::HOST);
            match this
                .client
                .request(Request::from_parts(parts, boxed(body)))
                .await
            {
                Ok(response) => {
                    let mut response = response.map(boxed);
                    strip_hop_by_hop(response.headers_mut());
                    Ok(response)
                }
                Err(e) => Ok(error_response(
                    StatusCode::BAD_GATEWAY,
                    "local_server_failed",
                    &format!("provider's local server failed: {e}"),
                    "the provider's agent is running but its server is not; retry later",
                )),
            }
        })
    }
}
