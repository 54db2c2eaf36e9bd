//! SIGKILL between claim and settlement: after a restart no claim is lost and none is charged twice,
//! even when a settlement landed on chain but the dying agent never logged it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use khachapuri_chain::{Charge, Usdc};
use khachapuri_provider::testing::*;

fn spawn(net: &Net, linger_ms: u64) -> ProcessAgent {
    let bin = env!("CARGO_BIN_EXE_khachapuri-provider");
    ProcessAgent::spawn(
        net,
        bin,
        LABEL,
        PROVIDER,
        &net.dir.path().join("data"),
        linger_ms,
    )
}

async fn call(agent: &ProcessAgent, cid: &str) {
    let res = khachapuri_tls::http()
        .post(format!("{}/{cid}", agent.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
}

async fn wait_earnings(net: &Net, want: Usdc) -> Usdc {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = net.chain(0).earnings(net.provider_address()).await.unwrap();
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_claim_and_charges_none_twice() {
    let net = Net::start().await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let price = PRICE.units();

    // Five paid calls; the batch waits ten minutes, so nothing is settled when the agent is killed.
    let mut agent = spawn(&net, 600_000);
    for _ in 0..5 {
        call(&agent, &cid).await;
    }
    agent.kill();
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        Usdc::ZERO
    );

    // Two of the five landed on chain, but the agent died before logging it.
    net.chain(PROVIDER)
        .consume_batch(&[Charge {
            payer: net.devnet.address(OWNER),
            price: PRICE,
            count: 2,
        }])
        .await
        .unwrap();

    // Restart: the log is reconciled with the chain, the three others settle, nothing twice.
    let mut agent = spawn(&net, 0);
    assert_eq!(
        wait_earnings(&net, Usdc::from_units(5 * price)).await,
        Usdc::from_units(5 * price)
    );
    for _ in 0..2 {
        call(&agent, &cid).await;
    }
    // SIGTERM: graceful shutdown settles what was claimed.
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(7 * price)
    );
    assert_eq!(
        net.escrowed(OWNER).await,
        Usdc::from_units(1_000_000 - 7 * price)
    );

    // A third start finds nothing open and charges nothing.
    let mut agent = spawn(&net, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.kill();
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(7 * price)
    );
}
