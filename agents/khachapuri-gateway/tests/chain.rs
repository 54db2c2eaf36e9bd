//! The on-chain directory against a real anvil with the contracts deployed: routes come from the
//! Registry and Resolver, and follow their events.
#![cfg(feature = "chain")]
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use alloy::primitives::Bytes;
use common::*;
use http::StatusCode;
use khachapuri_bindings::Resolver;
use khachapuri_chain::{
    Server as ChainServer,
    testing::{Devnet, anvil_signer},
};
use khachapuri_gateway::{
    GatewayConfig, Label,
    chain_directory::{ChainDirectory, ChainDirectoryConfig},
    tunnel::client::{TunnelConfig, TunnelError, connect, run_tunnel},
};

/// Polls `url` until its status is `want` (the directory follows events within a few polls).
async fn until_status(url: &str, want: StatusCode) -> Reply {
    let c = client();
    let mut last = get(&c, url).await;
    for _ in 0..100 {
        if last.status == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = get(&c, url).await;
    }
    panic!(
        "{url}: still {} ({}), wanted {want}",
        last.status,
        last.text()
    );
}

#[tokio::test]
async fn labels_resolve_on_chain_and_follow_resolver_events() {
    let net = Devnet::start().await.unwrap();
    let owner = net.chain(3);
    let payee = anvil_signer(7);
    let upstream = spawn_upstream().await;
    let resolver = owner
        .deploy_resolver(
            payee.address(),
            &ChainServer::Url(format!("http://{upstream}")),
            Bytes::from_static(&[0x30, 1, 2]),
        )
        .await
        .unwrap();
    owner
        .register_label("alice", resolver, |_| {})
        .await
        .unwrap();

    let config = ChainDirectoryConfig {
        poll_interval: Duration::from_millis(100),
        ..ChainDirectoryConfig::default()
    };
    let dir = ChainDirectory::start(net.chain(0), config);
    let gw = khachapuri_gateway::spawn(LOCAL.parse().unwrap(), GatewayConfig::default(), dir)
        .await
        .unwrap();
    let url = format!("http://{}/alice/x?y=1", gw.addr);

    let r = get(&client(), &url).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["x-echo-uri"], "/x?y=1");
    assert_eq!(
        get(&client(), &format!("http://{}/nobody/x", gw.addr))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The provider moves behind the tunnel: ServerChanged reaches the gateway long before the cache TTL.
    let resolver_contract = Resolver::new(resolver, owner.provider());
    resolver_contract
        .setServer("tunnel:".into())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let r = until_status(&url, StatusCode::BAD_GATEWAY).await;
    assert_eq!(r.json()["error"], "tunnel_down");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("not connected"),
        "{}",
        r.text()
    );

    // Only the payee's key opens the tunnel.
    let tunnel = TunnelConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        ..TunnelConfig::new(
            format!("ws://{}/_tunnel", gw.addr),
            Label::new("alice").unwrap(),
        )
    };
    assert!(matches!(
        connect(&tunnel, &anvil_signer(8)).await,
        Err(TunnelError::Refused { .. })
    ));
    let agent = run_tunnel(tunnel, Arc::new(payee), hyper::service::service_fn(echo));
    agent.wait_connected(Duration::from_secs(10)).await.unwrap();
    let r = get(&client(), &url).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // The payee changes on-chain: the old key no longer speaks for the label.
    resolver_contract
        .setPayee(net.address(8))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    until_status(&url, StatusCode::BAD_GATEWAY).await;
}
