//! `make bench`: paid hello calls per second and latency over loopback, with wrk as the load generator,
//! beside a bare hyper hello-world server in the same run. Figures go to target/bench/provider.json.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{convert::Infallible, process::Command, time::Duration};

use common::*;
use khachapuri_chain::Usdc;
use khachapuri_provider::SettlementMode;

const DURATION: &str = "8s";
const CONNECTIONS: &str = "16";

#[derive(Debug, serde::Serialize)]
struct Figures {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    which_wrk();
    let net = Net::start().await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[("GREETING", "Hi")], OWNER).await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(100_000), PRICE, Usdc::from_whole(100_000)).await;
    let mut config = net.config(SettlementMode::Batch);
    config.batch_linger = Duration::from_millis(200);
    let agent = khachapuri_provider::start(config, signer(PROVIDER)).await.expect("agent");

    let bare = bare_server().await;
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "wrk.method = \"POST\"\nwrk.body = \"bench\"\n").unwrap();

    // Warm up the module cache and the payer's view.
    let paid_url = format!("http://{}/{cid}", agent.addr);
    let res = reqwest::Client::new().post(&paid_url).body("warm").send().await.unwrap();
    assert_eq!(res.status(), 200);

    let bare_figures = wrk(&format!("http://{bare}/"), script.path());
    let paid = wrk(&paid_url, script.path());
    // One connection: the latency of a paid call when the machine is not saturated.
    let paid_one = wrk_with(&paid_url, script.path(), "1", "1");
    let before = std::time::Instant::now();
    agent.shutdown().await;
    let settle_ms = before.elapsed().as_secs_f64() * 1e3;
    let earned = net.chain(0).earnings(net.provider_address()).await.unwrap();

    let ratio = paid.requests_per_second / bare_figures.requests_per_second;
    println!("bare hyper hello:    {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms", bare_figures.requests_per_second, bare_figures.p50_ms, bare_figures.p99_ms);
    println!("paid hello (batch):  {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms", paid.requests_per_second, paid.p50_ms, paid.p99_ms);
    println!("paid, 1 connection:  {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms", paid_one.requests_per_second, paid_one.p50_ms, paid_one.p99_ms);
    println!("paid / bare: {ratio:.2} (target >= 0.5); p50 target <= 1 ms");
    println!("settled on shutdown in {settle_ms:.0} ms; provider earned {earned}");
    let json = serde_json::json!({
        "bare_hyper_hello": bare_figures,
        "paid_hello_batch": paid,
        "paid_hello_batch_one_connection": paid_one,
        "paid_over_bare": ratio,
        "connections": CONNECTIONS,
        "duration": DURATION,
        "earned_usdc": earned.to_string(),
        "final_settlement_ms": settle_ms,
    });
    let dir = workspace().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("provider.json"), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

fn which_wrk() {
    if Command::new("wrk").arg("--version").output().is_err() {
        panic!("wrk is not installed: `make bench` installs it (apt-get install wrk)");
    }
}

/// Runs wrk against `url` and parses its summary.
fn wrk(url: &str, script: &std::path::Path) -> Figures {
    wrk_with(url, script, "2", CONNECTIONS)
}

/// Runs wrk with `threads` threads and `connections` connections.
fn wrk_with(url: &str, script: &std::path::Path, threads: &str, connections: &str) -> Figures {
    let out = Command::new("wrk")
        .args(["-t", threads, "-c", connections, "-d", DURATION, "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw failed requests:\n{text}");
    let field = |prefix: &str| -> f64 {
        let line = text.lines().map(str::trim).find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
        let value = line.split_whitespace().nth(1).unwrap();
        parse_duration_ms(value).unwrap_or_else(|| value.parse().unwrap())
    };
    Figures { requests_per_second: field("Requests/sec:"), p50_ms: field("50%"), p99_ms: field("99%") }
}

/// `123.45us` / `1.20ms` / `2.00s` → milliseconds.
fn parse_duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// A bare hyper server answering "Hello, bench!" to everything.
async fn bare_server() -> std::net::SocketAddr {
    use hyper::{Response, body::Bytes, server::conn::http1, service::service_fn};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from_static(b"Hi, bench!\n"))))
                });
                let _ = http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}
