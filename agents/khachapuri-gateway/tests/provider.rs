//! A real provider agent behind this gateway: curl → gateway → WebSocket tunnel → agent → wasm, paid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use khachapuri_chain::Usdc;
use khachapuri_provider::testing::*;
use khachapuri_provider::{PRICE_HEADER, SettlementMode};

/// curl → gateway (`/{label}/{cid}`) → WebSocket tunnel → agent → wasm, paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_behind_nat_serves_through_the_gateway_tunnel() {
    use khachapuri_gateway::{GatewayConfig, Server, StaticDirectory};
    let net = Net::start().await;
    let spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Tunnel")],
            OWNER,
        )
        .await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let directory = StaticDirectory::new()
        .with(LABEL, Server::Tunnel, Some(net.provider_address()))
        .unwrap();
    let gateway = khachapuri_gateway::spawn(
        "127.0.0.1:0".parse().unwrap(),
        GatewayConfig::default(),
        std::sync::Arc::new(directory),
    )
    .await
    .unwrap();
    let mut config = net.config(SettlementMode::Batch);
    config.tunnel = Some(format!("ws://{}/_tunnel", gateway.addr));
    let agent = khachapuri_provider::start(config, signer(PROVIDER))
        .await
        .unwrap();
    agent
        .tunnel
        .as_ref()
        .unwrap()
        .wait_connected(std::time::Duration::from_secs(10))
        .await
        .unwrap();

    let res = khachapuri_tls::http()
        .post(format!("http://{}/{LABEL}/{cid}", gateway.addr))
        .body("NAT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[PRICE_HEADER], "0.01 USDC");
    assert_eq!(res.text().await.unwrap(), "Tunnel, NAT!\n");
    agent.shutdown().await;
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        PRICE
    );
}
