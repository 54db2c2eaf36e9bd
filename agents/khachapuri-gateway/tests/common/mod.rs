//! Test support: a real upstream HTTP server, a real HTTP client, and gateway helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use khachapuri_gateway::{
    GatewayConfig, GatewayHandle, StaticDirectory,
    proxy::{Body, boxed, full},
};
use tokio::net::TcpListener;

pub const LOCAL: &str = "127.0.0.1:0";

/// The upstream provider: echoes requests; some paths behave badly on purpose.
///
/// - default: status 200, body = request body (streamed back), `x-echo-method`, `x-echo-uri` and
///   `x-echo-headers` (JSON of the request headers), plus hop-by-hop headers that must not pass.
/// - (any path may carry a `/base` prefix)
/// - `/slow`: answers after 30 s.
/// - `/big/{n}`: streams n pseudo-random bytes (see [`pattern`]).
/// - `/drop`: closes the connection without answering.
/// - `/first-chunk`: answers as soon as the first request body chunk arrives, with its length.
pub async fn echo(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Upstreams may be mounted under `/base`: the special paths work either way.
    let full_path = req.uri().path().to_owned();
    let path = full_path.strip_prefix("/base").unwrap_or(&full_path);
    if path == "/drop" {
        // Never answers; `spawn_upstream` (or the tunnel test) drops the connection meanwhile.
        std::future::pending::<()>().await;
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        return Ok(Response::new(streamed(pattern(n), 64 * 1024)));
    }
    if path == "/first-chunk" {
        let mut body = req.into_body();
        let first = loop {
            match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) if !d.is_empty() => break d.len(),
                    _ => continue,
                },
                _ => break 0,
            }
        };
        return Ok(Response::new(full(first.to_string())));
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header("x-echo-method", req.method().as_str())
        .header(
            "x-echo-uri",
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
        )
        .header("x-echo-headers", serde_json::to_string(&headers).unwrap())
        .header("x-upstream", "yes")
        .header("keep-alive", "timeout=99")
        .header("x-private", "secret")
        .header("connection", "x-private")
        .body(boxed(req.into_body()))
        .unwrap();
    response
        .headers_mut()
        .insert("x-echo-body-hint", "streamed".parse().unwrap());
    Ok(response)
}

/// Serves `echo` on 127.0.0.1, HTTP/1.1; `/drop` closes the connection.
pub async fn spawn_upstream() -> SocketAddr {
    let listener = TcpListener::bind(LOCAL).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let tx = std::sync::Mutex::new(Some(tx));
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    if req.uri().path().ends_with("/drop")
                        && let Some(tx) = tx.lock().unwrap().take()
                    {
                        let _ = tx.send(());
                    }
                    echo(req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! { _ = conn => {}, _ = rx => {} }
            });
        }
    });
    addr
}

/// `n` deterministic pseudo-random bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A body sent in `chunk`-sized frames, so that nothing relies on one big buffer.
pub fn streamed(data: Vec<u8>, chunk: usize) -> Body {
    let data = Bytes::from(data);
    let chunks: Vec<Bytes> = (0..data.len())
        .step_by(chunk)
        .map(|i| data.slice(i..(i + chunk).min(data.len())))
        .collect();
    boxed(StreamBody::new(
        futures::stream::iter(chunks).map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ))
}

pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn echoed_headers(&self) -> BTreeMap<String, String> {
        serde_json::from_str(self.headers["x-echo-headers"].to_str().unwrap()).unwrap()
    }
}

/// Sends `req` and collects the response.
pub async fn send(client: &Client<HttpConnector, Body>, req: Request<Body>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(client: &Client<HttpConnector, Body>, url: &str) -> Reply {
    send(
        client,
        Request::get(url)
            .body(boxed(Full::new(Bytes::new())))
            .unwrap(),
    )
    .await
}

/// A gateway on 127.0.0.1 over `dir`, base domain `localhost`, short timeouts.
pub async fn gateway(dir: StaticDirectory) -> GatewayHandle {
    gateway_with(
        dir,
        GatewayConfig {
            response_timeout: Duration::from_secs(2),
            ..GatewayConfig::default()
        },
    )
    .await
}

pub async fn gateway_with(dir: StaticDirectory, config: GatewayConfig) -> GatewayHandle {
    khachapuri_gateway::spawn(LOCAL.parse().unwrap(), config, Arc::new(dir))
        .await
        .unwrap()
}
