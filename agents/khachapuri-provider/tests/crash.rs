//! SIGKILL between claim and settlement: after a restart no claim is lost and none is charged twice,
//! even when a settlement landed on chain but the dying agent never logged it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use khachapuri_chain::{Charge, Usdc};
use khachapuri_provider::testing::*;

struct Agent {
    child: Child,
    url: String,
}

fn spawn(net: &Net, linger_ms: u64) -> Agent {
    let key = signer(PROVIDER).to_bytes();
    let mut child = Command::new(env!("CARGO_BIN_EXE_khachapuri-provider"))
        .env("KHACHAPURI_PRIVATE_KEY", key.to_string())
        .env("RUST_LOG", "warn")
        .args([
            "--label",
            LABEL,
            "--listen",
            "127.0.0.1:0",
            "--price",
            "0.01",
            "--ipfs",
            "local",
        ])
        .args(["--rpc-url", &net.devnet.anvil.url()])
        .arg("--deployments")
        .arg(net.dir.path().join("deployments"))
        .arg("--data-dir")
        .arg(net.dir.path().join("data"))
        .args(["--batch-linger-ms", &linger_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("provider agent listening on ")
        .expect(&line)
        .to_owned();
    Agent { child, url }
}

async fn call(agent: &Agent, cid: &str) {
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
    agent.child.kill().unwrap(); // SIGKILL
    agent.child.wait().unwrap();
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
    Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    let status = agent.child.wait().unwrap();
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
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(7 * price)
    );
}
