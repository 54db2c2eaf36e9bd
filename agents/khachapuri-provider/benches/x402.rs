//! `make bench`: x402-paid calls per second through one agent beside escrow-paid calls of the same function
//! and concurrency, and the gas per request of each settlement path, summed from the agent's own
//! transactions on anvil (automine). Figures go to target/bench/x402.json.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use alloy::eips::BlockId;
use alloy::primitives::U256;
use alloy::providers::Provider;
use khachapuri_chain::{Address, Usdc};
use khachapuri_protocol::x402::{
    PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER, PaymentPayload, PaymentRequired,
};
use khachapuri_provider::SettlementMode;
use khachapuri_provider::testing::*;

const CONCURRENCY: usize = 16;
const ESCROW_CALLS: usize = 3_000;
const X402_CALLS: usize = 200;
const PAYER: u32 = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// `calls` requests, `CONCURRENCY` at a time, each made by `request(i)`; the calls per second.
async fn drive<F, Fut>(calls: usize, request: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let request = std::sync::Arc::new(request);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (request, next) = (request.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= calls {
                        return;
                    }
                    request(i).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

/// Gas of the transactions `from` sent to `to` in blocks `first..=last`, and how many.
async fn gas_sent(net: &Net, from: Address, to: Address, first: u64, last: u64) -> (u64, usize) {
    let provider = net.chain(0).provider().clone();
    let (mut gas, mut count) = (0, 0);
    for n in first..=last {
        let receipts = provider
            .get_block_receipts(BlockId::number(n))
            .await
            .unwrap()
            .unwrap_or_default();
        for r in receipts {
            if r.from == from && r.to == Some(to) {
                gas += r.gas_used;
                count += 1;
            }
        }
    }
    (gas, count)
}

async fn run() {
    let net = Net::start().await;
    net.fund(
        OWNER,
        Usdc::from_whole(1_000),
        PRICE,
        Usdc::from_whole(1_000),
    )
    .await;
    net.devnet
        .fund(PAYER, Usdc::from_whole(1_000))
        .await
        .unwrap();
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    let agent = net.agent(SettlementMode::Batch).await;
    let url = std::sync::Arc::new(format!("http://{}/{cid}", agent.addr));
    // Warm the module and the owner's view.
    let res = khachapuri_tls::http()
        .post(url.as_str())
        .body("warm")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let http = khachapuri_tls::http();
    let provider = net.provider_address();
    let chain = net.chain(0);
    let first_block = chain.provider().get_block_number().await.unwrap() + 1;

    // Escrow: the owner pays, claims batched.
    let (h, u) = (http.clone(), url.clone());
    let escrow = drive(ESCROW_CALLS, move |_| {
        let (h, u) = (h.clone(), u.clone());
        async move {
            let res = h.post(u.as_str()).body("b").send().await.unwrap();
            assert_eq!(res.status(), 200);
        }
    })
    .await;
    // Let the last batch land before counting its gas.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let escrow_last = chain.provider().get_block_number().await.unwrap();
    let (escrow_gas, batches) = gas_sent(
        &net,
        provider,
        net.devnet.deployment.escrow,
        first_block,
        escrow_last,
    )
    .await;

    // x402: a fresh authorization per call, settled before each run.
    // The offer, as an x402 client reads it: from the 402 of a caller with no reserve (a stranger's token).
    let token = net.payer_token(7, &cid).await;
    let res = http
        .post(url.as_str())
        .header(
            khachapuri_protocol::http::PAYER_TOKEN_HEADER,
            token.encode(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let offer = PaymentRequired::decode(res.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap())
        .unwrap()
        .accepts[0]
        .clone();
    let domain = net.chain(PAYER).token_domain().await.unwrap();
    let x402_first = chain.provider().get_block_number().await.unwrap() + 1;
    let (h, u) = (http.clone(), url.clone());
    let x402 = drive(X402_CALLS, move |_| {
        let (h, u, offer, domain) = (h.clone(), u.clone(), offer.clone(), domain.clone());
        async move {
            let valid_before = khachapuri_protocol::unix_now() + 600;
            let price = U256::from(PRICE.units());
            let payment = PaymentPayload::pay(&signer(PAYER), &domain, &offer, price, valid_before)
                .await
                .unwrap();
            let res = h
                .post(u.as_str())
                .header(PAYMENT_SIGNATURE_HEADER, payment.encode())
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    })
    .await;
    let x402_last = chain.provider().get_block_number().await.unwrap();
    let (x402_gas, transfers) = gas_sent(
        &net,
        provider,
        net.devnet.deployment.usdc,
        x402_first,
        x402_last,
    )
    .await;

    agent.shutdown().await;
    let escrow_per_request = escrow_gas as f64 / ESCROW_CALLS as f64;
    let x402_per_request = x402_gas as f64 / transfers.max(1) as f64;
    println!(
        "escrow-paid hello: {escrow:.0} calls/s ({CONCURRENCY} at a time), {escrow_per_request:.0} gas per request \
         ({batches} batch transactions for {ESCROW_CALLS} calls)"
    );
    println!(
        "x402-paid hello: {x402:.1} calls/s ({CONCURRENCY} at a time), {x402_per_request:.0} gas per request \
         ({transfers} transfers); x402 / escrow: {:.4} calls/s, {:.0}x the gas",
        x402 / escrow,
        x402_per_request / escrow_per_request
    );
    let json = serde_json::json!({
        "concurrency": CONCURRENCY,
        "escrow": {"calls": ESCROW_CALLS, "calls_per_second": escrow, "gas_per_request": escrow_per_request, "transactions": batches},
        "x402": {"calls": X402_CALLS, "calls_per_second": x402, "gas_per_request": x402_per_request, "transactions": transfers},
        "x402_over_escrow_calls_per_second": x402 / escrow,
        "x402_over_escrow_gas": x402_per_request / escrow_per_request,
        "node": "anvil (automine)",
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("x402.json"),
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )
    .unwrap();
}
