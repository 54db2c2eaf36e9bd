//! `make bench`: a routed call (`{gateway}/{cid}`: the gateway picks the provider) against the same paid
//! call by label (`{gateway}/{label}/{cid}`) through the same gateway, with wrk; then the failover time
//! when one of two providers dies under a steady client. Figures go to target/bench/routing.json.
//!
//! The gateway reads the chain as a deployed one does (on-chain directory, payers' terms, receipts checked,
//! reputation), on its own runtime and threads. The "death" is a TCP proxy in front of the second provider
//! that is torn down at once: its connections reset, its port refuses, as a host that died.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use khachapuri_chain::{Server, Usdc};
use khachapuri_gateway::{
    GatewayConfig, RoutingConfig,
    chain_directory::{ChainDirectory, ChainDirectoryConfig},
    routing::ChainReads,
};
use khachapuri_ipfs::Source;
use khachapuri_provider::{SettlementMode, testing::*};

mod common;
use common::{CONNECTIONS, DURATION, which_wrk, write_figures, wrk};

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
    let bob = net.register_other("bob", 3).await;
    let mut spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hi")],
            OWNER,
        )
        .await;
    spec.provider = None;
    spec.sign(&signer(OWNER)).await.unwrap();
    let open = net.publish_open(&spec);
    net.fund(
        OWNER,
        Usdc::from_whole(200_000),
        PRICE,
        Usdc::from_whole(100_000),
    )
    .await;
    net.chain(OWNER)
        .reserve(net.devnet.address(3), PRICE, Usdc::from_whole(100_000))
        .await
        .unwrap();

    let mut config = net.config(SettlementMode::Batch);
    config.batch_linger = Duration::from_millis(200);
    let alice = khachapuri_provider::start(config, signer(PROVIDER))
        .await
        .unwrap();
    net.point(
        LABEL,
        PROVIDER,
        Server::Url(format!("http://{}", alice.addr)),
    )
    .await;
    let gw = routed_gateway(&net).await;
    until_reachable(&gw, 1).await;

    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "wrk.method = \"POST\"\nwrk.body = \"bench\"\n",
    )
    .unwrap();
    let warm = khachapuri_tls::http()
        .post(format!("http://{gw}/{open}"))
        .body("warm")
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    // alice alone runs it: the two runs differ only in how the gateway finds her.
    let by_label = wrk(&format!("http://{gw}/{LABEL}/{open}"), script.path());
    let routed = wrk(&format!("http://{gw}/{open}"), script.path());
    let ratio = routed.requests_per_second / by_label.requests_per_second;
    let p50_added_ms = routed.p50_ms - by_label.p50_ms;

    // bob joins behind a proxy that will die; a client calls steadily; the proxy is torn down.
    let bob_agent = net
        .start_other(&bob, |c| c.batch_linger = Duration::from_millis(200))
        .await;
    let proxy = Proxy::start(bob_agent.addr).await;
    net.point("bob", 3, Server::Url(format!("http://{}", proxy.addr)))
        .await;
    until_reachable(&gw, 2).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (gw, open, stop) = (gw.clone(), open.clone(), stop.clone());
        tokio::spawn(async move {
            let http = khachapuri_tls::http();
            let mut calls = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = std::time::Instant::now();
                let res = http
                    .post(format!("http://{gw}/{open}"))
                    .body("x")
                    .send()
                    .await
                    .unwrap();
                let provider = res
                    .headers()
                    .get("x-khachapuri-provider")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let status = res.status().as_u16();
                let _ = res.bytes().await;
                calls.push((sent, sent.elapsed(), status, provider));
            }
            calls
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = std::time::Instant::now();
    proxy.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = client.await.unwrap();
    let before: Vec<_> = calls.iter().filter(|c| c.0 < killed).collect();
    let after: Vec<_> = calls.iter().filter(|c| c.0 >= killed).collect();
    let at_bob_before = before.iter().filter(|c| c.3 == "bob").count();
    let failed = calls.iter().filter(|c| c.2 != 200).count();
    let first_ok_ms = after
        .iter()
        .find(|c| c.2 == 200)
        .map(|c| (c.0 + c.1 - killed).as_secs_f64() * 1e3);
    let slowest_after_ms = after
        .iter()
        .take(20)
        .map(|c| c.1.as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    let typical_ms = {
        let mut v: Vec<f64> = before.iter().map(|c| c.1.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };

    println!(
        "paid hello by label:   {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
        by_label.requests_per_second, by_label.p50_ms, by_label.p99_ms
    );
    println!(
        "paid hello routed:     {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
        routed.requests_per_second, routed.p50_ms, routed.p99_ms
    );
    println!("routed / by label: {ratio:.2}; p50 added {p50_added_ms:.3} ms");
    println!(
        "failover: {} calls before the kill ({at_bob_before} at bob), {} after, {failed} not 200; first success \
         {:.1} ms after the kill; slowest of the next 20 calls {slowest_after_ms:.1} ms (typical {typical_ms:.2} ms)",
        before.len(),
        after.len(),
        first_ok_ms.unwrap_or(f64::NAN)
    );
    let json = serde_json::json!({
        "paid_by_label": by_label,
        "paid_routed": routed,
        "routed_over_by_label": ratio,
        "routed_p50_added_ms": p50_added_ms,
        "failover": {
            "calls_before_kill": before.len(),
            "calls_at_the_dying_provider_before_kill": at_bob_before,
            "calls_after_kill": after.len(),
            "calls_not_200": failed,
            "first_success_after_kill_ms": first_ok_ms,
            "slowest_of_next_20_calls_ms": slowest_after_ms,
            "typical_call_ms": typical_ms,
        },
        "connections": CONNECTIONS,
        "duration": DURATION,
    });
    write_figures("routing", &json);
    alice.shutdown().await;
    bob_agent.shutdown().await;
}

/// Waits until the gateway at `gw` has `n` reachable providers.
async fn until_reachable(gw: &str, n: usize) {
    for _ in 0..200 {
        let table: serde_json::Value = khachapuri_tls::http()
            .get(format!("http://{gw}/_providers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reachable = table["providers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["reachable"] == true)
            .count();
        if reachable == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway never saw {n} reachable providers");
}

/// A routing gateway over `net`'s chain, on its own runtime and threads (the process it is in production).
async fn routed_gateway(net: &Net) -> String {
    let chain = net.chain(0);
    let store = net.store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = GatewayConfig {
                routing: Some(RoutingConfig {
                    ipfs: vec![Source::Local(store)],
                    refresh: Duration::from_millis(300),
                    chain: Some(ChainReads::new(chain.clone())),
                    ..RoutingConfig::default()
                }),
                ..GatewayConfig::default()
            };
            let directory = ChainDirectory::start(
                chain,
                ChainDirectoryConfig {
                    poll_interval: Duration::from_millis(200),
                    ..ChainDirectoryConfig::default()
                },
            );
            let handle =
                khachapuri_gateway::spawn("127.0.0.1:0".parse().unwrap(), config, directory)
                    .await
                    .unwrap();
            let _ = tx.send(handle.addr.to_string());
            std::future::pending::<()>().await;
        });
    });
    rx.await.unwrap()
}

/// A TCP proxy that can die at once.
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let inner = tasks.clone();
        tasks.lock().unwrap().spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                inner.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { addr, tasks }
    }

    /// Drops the listener and every connection.
    fn kill(self) {
        self.tasks.lock().unwrap().abort_all();
    }
}
