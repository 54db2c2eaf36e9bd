//! The gateway server: finds the label, resolves it, forwards (directly or down a tunnel), streams back.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};
use tokio_util::sync::CancellationToken;

use crate::{
    console::{self, ConsoleSite},
    directory::{Directory, Route, Server},
    label::{Addressing, Label, addressing},
    proxy::{
        Body, ForwardClient, add_forwarded, boxed, error_chain, error_response, forward_client,
        full, idle_limited, is_timeout, join_url, strip_hop_by_hop,
    },
    routing::{PROVIDERS_PATH, Router, RoutingConfig},
    tunnel::{
        TUNNEL_PATH,
        server::{TunnelServerConfig, TunnelTable, serve_tunnel},
    },
};

/// Gateway settings. [`GatewayConfig::default`] suits local use and tests.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `khachapuri.xyz` makes `alice.khachapuri.xyz` mean label `alice`. `None`: path mode only.
    pub base_domain: Option<String>,
    /// This gateway's id in tunnel challenges.
    pub gateway_id: String,
    /// Most time to open a TCP connection to a provider (then 504).
    pub connect_timeout: Duration,
    /// Most time from sending a request to receiving the response head, connect included (then 504).
    /// Bodies stream for as long as they flow.
    pub response_timeout: Duration,
    /// Most time a request or response body may go without data before it is cut.
    pub body_idle_timeout: Duration,
    /// `X-Forwarded-Proto` to send: `https` when a TLS terminator sits in front of the gateway.
    pub forwarded_proto: String,
    /// Most time for an agent to complete the tunnel handshake.
    pub handshake_timeout: Duration,
    /// HTTP/2 ping interval on tunnels.
    pub tunnel_keepalive: Duration,
    /// How `https://` provider URLs are verified ([`khachapuri_tls::client_config`] by default).
    pub tls: Arc<rustls::ClientConfig>,
    /// What browsers may do (CORS): preflights are answered here, never forwarded, never charged.
    pub cors: khachapuri_protocol::http::Cors,
    /// The web console served at `/_console/` in path mode (`/` then redirects there); `None`: none.
    pub console: Option<ConsoleSite>,
    /// Routing of calls that name no provider (`{gateway}/{cid}`); `None`: such calls are refused.
    pub routing: Option<RoutingConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            base_domain: Some("localhost".into()),
            gateway_id: "khachapuri-gateway".into(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(30),
            forwarded_proto: "http".into(),
            handshake_timeout: Duration::from_secs(10),
            tunnel_keepalive: Duration::from_secs(20),
            tls: khachapuri_tls::client_config(),
            cors: khachapuri_protocol::http::Cors::default(),
            console: None,
            routing: None,
        }
    }
}

/// The gateway: a directory, an HTTP client to providers, and the live tunnels.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) directory: Arc<dyn Directory>,
    client: ForwardClient,
    pub(crate) tunnels: Arc<TunnelTable>,
    pub(crate) router: Option<Router>,
    shutdown: CancellationToken,
}

impl Gateway {
    /// A gateway over `directory`.
    pub fn new(config: GatewayConfig, directory: Arc<dyn Directory>) -> Arc<Self> {
        let client = forward_client(config.tls.clone(), Some(config.connect_timeout));
        let router = config.routing.clone().map(Router::new);
        Arc::new(Self {
            config,
            directory,
            client,
            tunnels: Arc::default(),
            router,
            shutdown: CancellationToken::new(),
        })
    }

    /// The live tunnels.
    pub fn tunnels(&self) -> &TunnelTable {
        &self.tunnels
    }

    /// Stops [`Gateway::serve`], its connections and its tunnels.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The router of calls that name no provider, when routing is on.
    pub fn router(&self) -> Option<&Router> {
        self.router.as_ref()
    }

    /// Accepts connections on `listener` until [`Gateway::shutdown`] (and keeps the routing table fresh).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        if self.router.is_some() {
            tokio::spawn(self.clone().refresh_providers_until_shutdown());
        }
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = self.shutdown.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(req, remote).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::select! {
                    res = conn => if let Err(e) = res { tracing::debug!(error = %e, %remote, "connection ended") },
                    () = gateway.shutdown.cancelled() => {}
                }
            });
        }
    }

    /// Answers one request.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        // In path mode the agent sees `/{cid}`: the prefix it lost goes in `X-Forwarded-Prefix`, so that it
        // can name the URL the caller used (x402's `resource`).
        let mut prefix = None;
        let (label, forward_path) = match addressing(
            host.as_deref(),
            self.config.base_domain.as_deref(),
            req.uri().path(),
        ) {
            Addressing::Host(label) => (label, path_and_query),
            Addressing::Path { label, .. } if label == TUNNEL_PATH[1..] => {
                return self.accept_tunnel(req);
            }
            Addressing::Path { label, .. } if label == "_health" => {
                let body =
                    serde_json::json!({ "ok": true, "tunnels": self.tunnels.labels().len() });
                return Response::new(full(body.to_string()));
            }
            Addressing::Path { label, .. } if label == console::CONSOLE_PATH[1..] => {
                let site = self.config.console.as_ref();
                return console::serve(site, req.method(), req.uri().path()).await;
            }
            Addressing::Path { label, .. } if label == PROVIDERS_PATH[1..] => {
                return self.providers_json();
            }
            // `/{cid}...`: a call that names no provider (a label is never a CID).
            Addressing::Path { label, .. }
                if self.router.is_some() && khachapuri_ipfs::parse_cid(&label).is_ok() =>
            {
                if khachapuri_protocol::http::Cors::is_preflight(req.method(), req.headers()) {
                    return self.config.cors.preflight(req.headers()).map(|()| full(""));
                }
                let sandbox = self.config.console.is_some();
                let mut response = self.route_call(req, remote, host.as_deref()).await;
                if sandbox {
                    response.headers_mut().insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(console::FUNCTION_SANDBOX),
                    );
                }
                return response;
            }
            Addressing::Path { label, rest } => {
                let query = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                prefix = Some(format!("/{label}"));
                (label, format!("{rest}{query}"))
            }
            Addressing::None
                if self.config.console.is_some()
                    && matches!(*req.method(), http::Method::GET | http::Method::HEAD) =>
            {
                return console::redirect_to_console();
            }
            Addressing::None => return self.no_label(),
        };
        if khachapuri_protocol::http::Cors::is_preflight(req.method(), req.headers()) {
            return self.config.cors.preflight(req.headers()).map(|()| full(""));
        }
        let label = match Label::new(&label) {
            Ok(label) => label,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_label",
                    &format!("invalid provider label \"{label}\""),
                    e.reason,
                );
            }
        };
        let route = match self.directory.lookup(&label).await {
            Ok(Some(route)) => route,
            Ok(None) => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "unknown_provider",
                    &format!("unknown provider \"{label}\""),
                    "check the spelling; providers register their label in the Registry contract",
                );
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "directory_unavailable",
                    &format!("cannot resolve \"{label}\": {e}"),
                    "the gateway's directory is unavailable; retry shortly",
                );
            }
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        add_forwarded(
            &mut parts.headers,
            remote,
            host.as_deref(),
            &self.config.forwarded_proto,
        );
        // In path mode every function answers on the gateway's origin, the console's too: a page a
        // function serves there must not act as that origin (use the wallet the console was granted,
        // script the console), so with a console it runs sandboxed, in an origin of its own.
        let sandbox = prefix.is_some() && self.config.console.is_some();
        let forwarded_prefix = http::HeaderName::from_static("x-forwarded-prefix");
        match prefix.and_then(|p| http::HeaderValue::try_from(p).ok()) {
            Some(prefix) => parts.headers.insert(forwarded_prefix, prefix),
            None => parts.headers.remove(forwarded_prefix),
        };
        let idle = self.config.body_idle_timeout;
        let req = Request::from_parts(parts, idle_limited(boxed(body), idle));
        let result = tokio::time::timeout(
            self.config.response_timeout,
            self.forward(&label, &route, forward_path, req),
        )
        .await;
        let mut response = match result {
            Ok(Ok(response)) => response.map(|body| idle_limited(boxed(body), idle)),
            Ok(Err(e)) => return e.into_response(&label),
            Err(_) => {
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "provider_timeout",
                    &format!(
                        "provider \"{label}\" did not answer within {:?}",
                        self.config.response_timeout
                    ),
                    "the provider is overloaded or the request is slow; retry later or ask the provider",
                );
            }
        };
        strip_hop_by_hop(response.headers_mut());
        if sandbox {
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(console::FUNCTION_SANDBOX),
            );
        }
        response
    }

    pub(crate) async fn forward(
        &self,
        label: &Label,
        route: &Route,
        path_and_query: String,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, ForwardError> {
        match &route.server {
            Server::Url(base) => {
                *req.uri_mut() = join_url(base, &path_and_query)
                    .parse::<Uri>()
                    .map_err(|_| ForwardError::BadUrl)?;
                // Only a failure to connect is surely before sending; a timeout on an open connection
                // (the kernel's, mid-request) is not.
                self.client.request(req).await.map_err(|e| {
                    if !e.is_connect() {
                        ForwardError::Broken(error_chain(&e))
                    } else if is_timeout(&e) {
                        ForwardError::ConnectTimeout
                    } else {
                        ForwardError::Unreachable(error_chain(&e))
                    }
                })
            }
            Server::Tunnel => {
                let (payee, mut sender) = self
                    .tunnels
                    .sender(label)
                    .await
                    .ok_or(ForwardError::NoTunnel)?;
                if route.payee != Some(payee) {
                    // The payee changed on-chain since the handshake: that key no longer speaks for the label.
                    self.tunnels.remove(label);
                    return Err(ForwardError::NoTunnel);
                }
                *req.uri_mut() = format!("http://{label}{path_and_query}")
                    .parse::<Uri>()
                    .map_err(|_| ForwardError::BadUrl)?;
                *req.version_mut() = http::Version::HTTP_2;
                // A tunnel that closed before this request went out: nothing was sent.
                sender.ready().await.map_err(|_| ForwardError::NoTunnel)?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| ForwardError::Broken(e.to_string()))
            }
        }
    }

    fn accept_tunnel(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        let headers = req.headers();
        let is_ws = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_ws) else {
            return error_response(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                "the tunnel endpoint speaks WebSocket only",
                "providers connect here with the khachapuri-gateway tunnel client",
            );
        };
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let gateway = self.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return tracing::info!(error = %e, "tunnel upgrade failed"),
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let config = TunnelServerConfig {
                gateway_id: gateway.config.gateway_id.clone(),
                handshake_timeout: gateway.config.handshake_timeout,
                keepalive: gateway.config.tunnel_keepalive,
                retire_grace: gateway.config.response_timeout,
            };
            let shutdown = gateway.shutdown.clone();
            serve_tunnel(
                ws,
                gateway.directory.clone(),
                gateway.tunnels.clone(),
                config,
                shutdown,
            )
            .await;
        });
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(accept) = HeaderValue::try_from(accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }

    pub(crate) fn no_label(&self) -> Response<Body> {
        let hint = match &self.config.base_domain {
            Some(base) => format!("call http(s)://{{label}}.{base}/{{cid}} or /{{label}}/{{cid}}"),
            None => "call /{label}/{cid}".to_owned(),
        };
        error_response(
            StatusCode::NOT_FOUND,
            "no_label",
            "no provider named in the request",
            &hint,
        )
    }
}

pub(crate) enum ForwardError {
    BadUrl,
    ConnectTimeout,
    Unreachable(String),
    Broken(String),
    NoTunnel,
}

impl ForwardError {
    /// Whether the request surely never reached the provider (so another may be tried): every failure
    /// but a connection that broke once the request was on its way.
    pub(crate) fn before_sending(&self) -> bool {
        !matches!(self, Self::Broken(_))
    }

    /// What went wrong, in a few words.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::BadUrl => "its server URL is unusable".into(),
            Self::ConnectTimeout => "connecting timed out".into(),
            Self::Unreachable(e) => format!("unreachable ({e})"),
            Self::Broken(e) => format!("failed mid-request ({e})"),
            Self::NoTunnel => "its tunnel is down".into(),
        }
    }

    pub(crate) fn into_response(self, label: &Label) -> Response<Body> {
        match self {
            Self::BadUrl => error_response(
                StatusCode::BAD_GATEWAY,
                "bad_server_url",
                &format!("provider \"{label}\" has an unusable server URL"),
                "the provider must fix the server record of its resolver",
            ),
            Self::ConnectTimeout => error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "connect_timeout",
                &format!("connecting to provider \"{label}\" timed out"),
                "the provider may be down or overloaded; retry later",
            ),
            Self::Unreachable(e) => error_response(
                StatusCode::BAD_GATEWAY,
                "provider_unreachable",
                &format!("provider \"{label}\" is unreachable: {e}"),
                "the provider's server is down; retry later or use another provider",
            ),
            Self::Broken(e) => error_response(
                StatusCode::BAD_GATEWAY,
                "provider_failed",
                &format!("provider \"{label}\" failed mid-request: {e}"),
                "retry; if it persists the provider is unhealthy",
            ),
            Self::NoTunnel => error_response(
                StatusCode::BAD_GATEWAY,
                "tunnel_down",
                &format!("provider \"{label}\" is not connected to this gateway"),
                "the provider's agent must open its tunnel; retry later or use another provider",
            ),
        }
    }
}

/// A gateway running on a spawned task (for tests, benches and embedding).
pub struct GatewayHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The gateway itself (its tunnels, shutdown).
    pub gateway: Arc<Gateway>,
    task: JoinHandle<()>,
}

impl GatewayHandle {
    /// Stops the gateway, its connections and tunnels, and waits until the listener is closed.
    pub async fn shutdown(self) {
        self.gateway.shutdown();
        let _ = self.task.await;
    }
}

/// Binds `addr` (port 0 for any) and serves a gateway over `directory` on a spawned task.
pub async fn spawn(
    addr: SocketAddr,
    config: GatewayConfig,
    directory: Arc<dyn Directory>,
) -> std::io::Result<GatewayHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::new(config, directory);
    let task = tokio::spawn(gateway.clone().serve(listener));
    Ok(GatewayHandle {
        addr,
        gateway,
        task,
    })
}
