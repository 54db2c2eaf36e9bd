//! Requests/s through the gateway, direct and tunneled, beside calling the provider directly, in one
//! run on one machine (everything on 127.0.0.1, one tokio runtime).
//!
//! The load generator holds `BENCH_CONNS` (default 32) keep-alive HTTP/1.1 connections, each sending
//! GET requests back to back for `BENCH_SECONDS` (default 3) after a short warm-up, and reports req/s,
//! p50 and p99. Results are printed and written to `<workspace>/target/bench/gateway.json`.
//! The upstream here answers without doing any work, so the ratios are the gateway's cost against
//! the cheapest possible provider: a worst case. Issue 8's targets (direct >= 70% and tunneled >= 50%
//! of calling the provider directly) are measured against the real provider agent serving paid hello
//! in the provider bench (`target/bench/provider.json`, `gateway_*_over_direct`).
#![allow(clippy::unwrap_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use khachapuri_gateway::{
    GatewayConfig, Label, Server, StaticDirectory,
    tunnel::client::{ForwardToUrl, TunnelConfig, run_tunnel},
};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// The provider: a small hyper server answering every request with a short body.
async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true,\"from\":\"provider\"}",
    ))))
}

async fn spawn_provider() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer)),
            );
        }
    });
    addr
}

struct Stats {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests, "errors": self.errors, "seconds": self.elapsed.as_secs_f64(),
            "rps": self.rps().round(), "p50_us": self.p50_us, "p99_us": self.p99_us,
        })
    }
}

/// One keep-alive connection sending `uri` back to back until `deadline`; latencies in µs.
async fn connection(
    addr: SocketAddr,
    uri: String,
    warmup: Instant,
    deadline: Instant,
) -> (Vec<u32>, usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (mut latencies, mut errors) = (Vec::with_capacity(1 << 16), 0);
    loop {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let req = Request::get(uri.as_str())
            .header("host", "bench")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let ok = match sender.send_request(req).await {
            Ok(res) => {
                let ok = res.status().is_success();
                ok & res.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        };
        if started >= warmup {
            if ok {
                latencies.push(started.elapsed().as_micros() as u32);
            } else {
                errors += 1;
            }
        }
        if !ok {
            sender.ready().await.ok();
        }
    }
    (latencies, errors)
}

async fn load(addr: SocketAddr, uri: &str, conns: usize, seconds: f64) -> Stats {
    let warmup = Instant::now() + Duration::from_millis(500);
    let deadline = warmup + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(connection(addr, uri.to_owned(), warmup, deadline)))
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as u64
    };
    Stats {
        requests: all.len(),
        errors,
        elapsed: deadline - warmup,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn main() {
    let conns: usize = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let provider = spawn_provider().await;
        let key = PrivateKeySigner::random();
        let dir = StaticDirectory::new()
            .with("direct", Server::Url(format!("http://{provider}")), None)
            .unwrap()
            .with("tunneled", Server::Tunnel, Some(key.address()))
            .unwrap()
            .with("inproc", Server::Tunnel, Some(key.address()))
            .unwrap();
        let gw = khachapuri_gateway::spawn(
            "127.0.0.1:0".parse().unwrap(),
            GatewayConfig::default(),
            Arc::new(dir),
        )
        .await
        .unwrap();
        let tunnel = |label: &str| {
            TunnelConfig::new(
                format!("ws://{}/_tunnel", gw.addr),
                Label::new(label).unwrap(),
            )
        };
        let key = Arc::new(key);
        let forwarded = run_tunnel(
            tunnel("tunneled"),
            key.clone(),
            ForwardToUrl::new(&format!("http://{provider}")),
        );
        let inproc = run_tunnel(tunnel("inproc"), key, hyper::service::service_fn(answer));
        forwarded
            .wait_connected(Duration::from_secs(10))
            .await
            .unwrap();
        inproc
            .wait_connected(Duration::from_secs(10))
            .await
            .unwrap();

        let runs = [
            ("direct_to_provider", provider, "/bafybench"),
            ("gateway_direct", gw.addr, "/direct/bafybench"),
            ("gateway_tunneled", gw.addr, "/tunneled/bafybench"),
            ("gateway_tunneled_in_process", gw.addr, "/inproc/bafybench"),
        ];
        let mut results = serde_json::Map::new();
        let mut rps = std::collections::HashMap::new();
        for (name, addr, uri) in runs {
            let s = load(addr, uri, conns, seconds).await;
            println!(
                "{name:<30} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  ({} requests, {} errors)",
                s.rps(),
                s.p50_us,
                s.p99_us,
                s.requests,
                s.errors
            );
            rps.insert(name, s.rps());
            results.insert(name.to_owned(), s.json());
        }
        let base = rps["direct_to_provider"];
        let ratio = |n: &str| (rps[n] / base * 1000.0).round() / 1000.0;
        let ratios = json!({
            "gateway_direct": ratio("gateway_direct"),
            "gateway_tunneled": ratio("gateway_tunneled"),
            "gateway_tunneled_in_process": ratio("gateway_tunneled_in_process"),
        });
        println!(
            "ratios to a no-op upstream: {ratios} (issue 8's targets apply to the real agent: see the provider bench)"
        );
        let report = json!({
            "bench": "gateway",
            "connections": conns,
            "seconds": seconds,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "results": results,
            "ratios": ratios,
            "upstream": "no-op hyper server (worst case); issue 8's targets are checked against the real agent in provider.json",
        });
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let path = dir.join("gateway.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("wrote {}", path.display());
        gw.shutdown().await;
    });
}
