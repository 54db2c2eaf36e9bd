//! `make bench`: paid hello calls per second and latency over loopback, with wrk as the load generator,
//! beside a bare hyper hello-world server in the same run. Figures go to target/bench/provider.json.
//!
//! Two more baselines say where the time goes: `hello_unpaid` is a bare hyper server running the same
//! hello module through the same runtime (no spec, no claim, no receipt), so `paid / unpaid` is what
//! payment costs; `paid_hello_token` is paid by a caller's payer token instead of the owner.
//!
//! The peer: `wasmtime serve` (the wasmtime CLI, pinned in the Makefile, which `make bench` installs on
//! first use) serving the same hello as a wasi:http component (examples/wasi-http-hello), measured in the
//! same run; `*_over_wasmtime_serve` are our figures over its.
//!
//! Each figure carries the machine's busy cores during its run (from /proc/stat) and so its CPU time per
//! request; `paid_extra_cpu_us_per_call` is what payment adds. A paid and an unpaid call alone (one
//! connection) give what payment adds to latency.
//!
//! The same paid call also goes through the gateway (issue 8: "beside calling the provider directly"),
//! forwarded over HTTP and through a tunnel the agent holds open; `gateway_*_over_direct` are the
//! ratios. The gateway's own bench (`khachapuri-gateway`) measures it against a no-op upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{convert::Infallible, time::Duration};

use alloy::primitives::{B256, U256};
use khachapuri_chain::{PayerToken, Usdc, eip712};
use khachapuri_provider::SettlementMode;
use khachapuri_provider::testing::*;

mod common;
use common::{CONNECTIONS, DURATION, Figures, which_wrk, write_figures, wrk, wrk_for, wrk_with};

/// The caller paying with a token (an anvil account other than the provider and the owner).
const PAYER: u32 = 3;
/// Rounds of the compared figures (bare, unpaid, paid), and how long each of their wrk runs lasts.
const ROUNDS: usize = 3;
const ROUND: &str = "5s";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    which_wrk();
    let net = Net::start().await;
    let spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hi")],
            OWNER,
        )
        .await;
    let cid = net.publish(&spec);
    net.fund(
        OWNER,
        Usdc::from_whole(100_000),
        PRICE,
        Usdc::from_whole(100_000),
    )
    .await;
    // The agent serves directly and, as `provider up --tunnel` does, through a tunnel to one gateway;
    // another gateway forwards to its URL.
    let tunnel_gateway = gateway(&net, khachapuri_gateway::Server::Tunnel).await;
    let mut config = net.config(SettlementMode::Batch);
    config.batch_linger = Duration::from_millis(200);
    config.tunnel = Some(format!("ws://{}/_tunnel", tunnel_gateway.addr));
    let agent = khachapuri_provider::start(config, signer(PROVIDER))
        .await
        .expect("agent");
    agent
        .tunnel
        .as_ref()
        .unwrap()
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let direct_gateway = gateway(
        &net,
        khachapuri_gateway::Server::Url(format!("http://{}", agent.addr)),
    )
    .await;

    let bare = bare_server().await;
    let unpaid = unpaid_server(&spec).await;
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "wrk.method = \"POST\"\nwrk.body = \"bench\"\n",
    )
    .unwrap();

    // A caller who pays with a payer token, as `khachapuri call` and curl users do.
    net.fund(
        PAYER,
        Usdc::from_whole(100_000),
        PRICE,
        Usdc::from_whole(100_000),
    )
    .await;
    let d = net.devnet.deployment.clone();
    let token = PayerToken {
        provider: net.provider_address(),
        spec: cid.clone(),
        maxPrice: U256::from(PRICE.units()),
        expiry: 4_000_000_000,
        session: B256::random(),
    }
    .sign(&signer(PAYER), &eip712::domain(d.chain_id, d.escrow))
    .await
    .unwrap()
    .encode();
    let token_script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        token_script.path(),
        format!("wrk.method = \"POST\"\nwrk.body = \"bench\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"),
    )
    .unwrap();

    // Warm up the module cache and the payer's view.
    let paid_url = format!("http://{}/{cid}", agent.addr);
    let res = khachapuri_tls::http()
        .post(&paid_url)
        .body("warm")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The figures the targets compare, in alternating rounds (the peer's process runs alone, before them):
    // a shared host whose speed drifts during the run moves the three alike, and each is the median of
    // its rounds.
    let peer = WasmtimeServe::start(&[("GREETING", "Hi")]).await;
    let peer_figures = wrk(&peer.url, script.path());
    drop(peer);
    let before = receipt_counts(&agent).await;
    let mut rounds: [Vec<Figures>; 3] = Default::default();
    for _ in 0..ROUNDS {
        let urls = [
            format!("http://{bare}/"),
            format!("http://{unpaid}/"),
            paid_url.clone(),
        ];
        for (figures, url) in rounds.iter_mut().zip(&urls) {
            figures.push(wrk_for(url, script.path(), ROUND));
        }
    }
    let group = receipts_per_signature(before, receipt_counts(&agent).await);
    let [bare_figures, unpaid_figures, paid] = rounds.map(Figures::median);
    let paid_token = wrk(&paid_url, token_script.path());
    let via_gateway = wrk(
        &format!("http://{}/{LABEL}/{cid}", direct_gateway.addr),
        script.path(),
    );
    let via_tunnel = wrk(
        &format!("http://{}/{LABEL}/{cid}", tunnel_gateway.addr),
        script.path(),
    );
    // One connection: the latency of a paid call when the machine is not saturated.
    let before = receipt_counts(&agent).await;
    let paid_one = wrk_with(&paid_url, script.path(), "1", "1");
    let group_one = receipts_per_signature(before, receipt_counts(&agent).await);
    // The same unpaid: what a lone call's payment adds to its latency.
    let unpaid_one = wrk_with(&format!("http://{unpaid}/"), script.path(), "1", "1");
    direct_gateway.shutdown().await;
    let before = std::time::Instant::now();
    agent.shutdown().await;
    let settle_ms = before.elapsed().as_secs_f64() * 1e3;
    tunnel_gateway.shutdown().await;
    let earned = net.chain(0).earnings(net.provider_address()).await.unwrap();

    let ratio = paid.requests_per_second / bare_figures.requests_per_second;
    let over_unpaid = paid.requests_per_second / unpaid_figures.requests_per_second;
    let show = |name: &str, f: &Figures| {
        println!(
            "{name:<22} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
            f.requests_per_second, f.p50_ms, f.p99_ms
        )
    };
    show("bare hyper hello:", &bare_figures);
    show("wasmtime serve hello:", &peer_figures);
    show("hello, no payment:", &unpaid_figures);
    show("paid hello (batch):", &paid);
    show("paid with a token:", &paid_token);
    show("paid, 1 connection:", &paid_one);
    show("unpaid, 1 connection:", &unpaid_one);
    show("paid, via gateway:", &via_gateway);
    show("paid, via tunnel:", &via_tunnel);
    let gw_direct = via_gateway.requests_per_second / paid.requests_per_second;
    let gw_tunnel = via_tunnel.requests_per_second / paid.requests_per_second;
    println!(
        "gateway / direct: {gw_direct:.2} (target >= 0.7); tunneled / direct: {gw_tunnel:.2} (target >= 0.5)"
    );
    println!(
        "paid / bare: {ratio:.2} (target >= 0.5); paid / unpaid hello: {over_unpaid:.2}; p50 target <= 1 ms"
    );
    let unpaid_over_peer = unpaid_figures.requests_per_second / peer_figures.requests_per_second;
    let paid_over_peer = paid.requests_per_second / peer_figures.requests_per_second;
    println!(
        "unpaid / wasmtime serve: {unpaid_over_peer:.2}; paid / wasmtime serve: {paid_over_peer:.2}; unpaid / bare: {:.2}",
        unpaid_figures.requests_per_second / bare_figures.requests_per_second
    );
    // What payment adds to a call in the machine's CPU time (the agent's, wrk's and the kernel's alike).
    let cpu_us = |f: &Figures| f.cpu_us_per_request;
    let paid_extra_us = cpu_us(&paid) - cpu_us(&unpaid_figures);
    println!(
        "CPU per call: bare {:.1} µs, unpaid {:.1} µs, paid {:.1} µs ({paid_extra_us:.1} µs for the payment; {:.2} and {:.2} cores busy)",
        cpu_us(&bare_figures),
        cpu_us(&unpaid_figures),
        cpu_us(&paid),
        unpaid_figures.busy_cores,
        paid.busy_cores,
    );
    println!("receipts per signature: {group:.1} (16 connections), {group_one:.2} (1 connection)");
    println!("settled on shutdown in {settle_ms:.0} ms; provider earned {earned}");
    let json = serde_json::json!({
        "bare_hyper_hello": bare_figures,
        "hello_unpaid": unpaid_figures,
        "wasmtime_serve_hello": peer_figures,
        "wasmtime_serve": WasmtimeServe::describe(),
        "unpaid_over_bare": unpaid_figures.requests_per_second / bare_figures.requests_per_second,
        "unpaid_over_wasmtime_serve": unpaid_over_peer,
        "paid_over_wasmtime_serve": paid_over_peer,
        "paid_hello_batch": paid,
        "paid_hello_token": paid_token,
        "paid_hello_batch_one_connection": paid_one,
        "hello_unpaid_one_connection": unpaid_one,
        "paid_over_bare": ratio,
        "paid_over_unpaid": over_unpaid,
        "bare_cpu_us_per_call": cpu_us(&bare_figures),
        "unpaid_cpu_us_per_call": cpu_us(&unpaid_figures),
        "paid_cpu_us_per_call": cpu_us(&paid),
        "paid_extra_cpu_us_per_call": paid_extra_us,
        "receipts_per_signature": group,
        "receipts_per_signature_one_connection": group_one,
        "paid_via_gateway": via_gateway,
        "paid_via_tunnel": via_tunnel,
        "gateway_direct_over_direct": gw_direct,
        "gateway_tunneled_over_direct": gw_tunnel,
        "connections": CONNECTIONS,
        "duration": DURATION,
        "rounds_of_bare_unpaid_paid": format!("{ROUNDS} x {ROUND}, medians"),
        "earned_usdc": earned.to_string(),
        "final_settlement_ms": settle_ms,
    });
    write_figures("provider", &json);
}

/// `wasmtime serve` running examples/wasi-http-hello on a free loopback port; stopped when dropped.
struct WasmtimeServe {
    child: std::process::Child,
    url: String,
}

impl WasmtimeServe {
    /// The CLI: `$KHACHAPURI_WASMTIME_CLI` (what `make bench` sets), or where `make bench` installs it.
    fn cli() -> std::path::PathBuf {
        std::env::var_os("KHACHAPURI_WASMTIME_CLI")
            .map(Into::into)
            .unwrap_or_else(|| workspace().join("target/tools/wasmtime-48.0.8/bin/wasmtime"))
    }

    fn component() -> std::path::PathBuf {
        workspace().join("examples/target/wasm32-wasip2/release/wasi_http_hello.wasm")
    }

    /// The command line, for the figures.
    fn describe() -> String {
        let version = std::process::Command::new(Self::cli())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        format!("{version}: wasmtime serve -S cli --addr 127.0.0.1:<port> wasi_http_hello.wasm")
    }

    async fn start(env: &[(&str, &str)]) -> Self {
        let (cli, component) = (Self::cli(), Self::component());
        for (path, what) in [
            (&cli, "the wasmtime CLI"),
            (&component, "the wasi:http hello"),
        ] {
            assert!(
                path.exists(),
                "{} is missing ({what}): run `make bench`, which installs and builds it",
                path.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(&cli);
        command.args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")]);
        for (name, value) in env {
            command.args(["--env", &format!("{name}={value}")]);
        }
        let child = command
            .arg(&component)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cli.display()));
        let peer = Self {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        };
        // It compiles the component first: wait for an answer, and check it is the same greeting.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match khachapuri_tls::http()
                .post(&peer.url)
                .body("bench")
                .send()
                .await
            {
                Ok(res) => {
                    assert_eq!(res.status(), 200);
                    assert_eq!(res.text().await.unwrap(), "Hi, bench!\n");
                    return peer;
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("wasmtime serve did not answer within 60 s: {e}"),
            }
        }
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's `khachapuri_receipts_total` and `khachapuri_receipt_signatures_total`.
async fn receipt_counts(agent: &khachapuri_provider::RunningAgent) -> (u64, u64) {
    let text = metrics(agent).await;
    (
        metric(&text, "khachapuri_receipts_total"),
        metric(&text, "khachapuri_receipt_signatures_total"),
    )
}

/// The mean group a signature covered between two [`receipt_counts`].
fn receipts_per_signature(before: (u64, u64), after: (u64, u64)) -> f64 {
    (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64
}

/// Serves `service` over HTTP/1.1 on a free loopback port.
async fn serve<S, B>(service: S) -> std::net::SocketAddr
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
            tokio::spawn(connection);
        }
    });
    addr
}

/// A bare hyper server answering "Hi, bench!" to everything.
async fn bare_server() -> std::net::SocketAddr {
    use hyper::{Response, body::Bytes};
    serve(hyper::service::service_fn(|_req| async {
        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
            Bytes::from_static(b"Hi, bench!\n"),
        )))
    }))
    .await
}

/// A bare hyper server running `spec`'s program through the same runtime on every request (on its
/// task, as the agent does), with nothing paid: the baseline of what payment adds.
async fn unpaid_server(spec: &khachapuri_spec::Spec) -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    use hyper::{Response, body::Bytes};
    use khachapuri_runtime::{Request, Runtime, RuntimeConfig};
    let runtime = std::sync::Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let program = runtime
        .load("hello", &example("hello"), Some(&spec.entry))
        .unwrap();
    runtime.wait_background();
    let env: Vec<_> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serve(hyper::service::service_fn(
        move |req: hyper::Request<hyper::body::Incoming>| {
            let (runtime, program, env) = (runtime.clone(), program.clone(), env.clone());
            async move {
                let method = req.method().to_string();
                let body = req.into_body().collect().await?.to_bytes().to_vec();
                let request = Request {
                    method,
                    body,
                    env,
                    ..Request::default()
                };
                let out = program
                    .run_async(request, runtime.limits().run_limits())
                    .await
                    .unwrap();
                Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(Bytes::from(
                    out.response.body,
                ))))
            }
        },
    ))
    .await
}

/// A gateway that routes the agent's label to `server`.
async fn gateway(
    net: &Net,
    server: khachapuri_gateway::Server,
) -> khachapuri_gateway::GatewayHandle {
    let directory = khachapuri_gateway::StaticDirectory::new()
        .with(LABEL, server, Some(net.provider_address()))
        .unwrap();
    let config = khachapuri_gateway::GatewayConfig::default();
    // Its own runtime on its own threads, as the separate process it is in production.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let handle = khachapuri_gateway::spawn(
                "127.0.0.1:0".parse().unwrap(),
                config,
                std::sync::Arc::new(directory),
            )
            .await
            .unwrap();
            let _ = tx.send(handle);
            std::future::pending::<()>().await;
        });
    });
    rx.await.unwrap()
}
