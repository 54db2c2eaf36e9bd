//! TLS on the way out: `https://` provider URLs and `wss://` tunnels, verified against the trusted roots,
//! with a real rustls server (a certificate made for the test) in front of a real upstream or gateway.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use alloy::signers::local::PrivateKeySigner;
use common::*;
use http::StatusCode;
use khachapuri_gateway::{
    GatewayConfig, Label, Server, StaticDirectory,
    tunnel::client::{ForwardToUrl, TunnelConfig, TunnelError, connect, run_tunnel},
};
use khachapuri_tls::testing::TlsFront;

#[tokio::test]
async fn forwards_to_an_https_provider_it_can_verify_and_refuses_one_it_cannot() {
    let front = TlsFront::start(spawn_upstream().await).await.unwrap();
    let url = format!("https://localhost:{}/base", front.port);
    let dir = || {
        StaticDirectory::new()
            .with("alice", Server::Url(url.clone()), None)
            .unwrap()
    };

    let gw = gateway_with(
        dir(),
        GatewayConfig {
            tls: front.client_config(),
            ..GatewayConfig::default()
        },
    )
    .await;
    let r = get(&client(), &format!("http://{}/alice/bafy/x?q=1", gw.addr)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["x-echo-uri"], "/base/bafy/x?q=1");
    assert!(r.echoed_headers()["host"].starts_with("localhost:"));

    // The default roots do not include the test's certificate: 502, saying why.
    let gw = gateway(dir()).await;
    let r = get(&client(), &format!("http://{}/alice/bafy", gw.addr)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "provider_unreachable");
    let error = r.json()["message"].as_str().unwrap().to_owned();
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_provider_holds_its_tunnel_over_wss() {
    let key = PrivateKeySigner::random();
    let dir = StaticDirectory::new()
        .with("alice", Server::Tunnel, Some(key.address()))
        .unwrap();
    let gw = gateway(dir).await;
    let front = TlsFront::start(gw.addr).await.unwrap();
    let upstream = spawn_upstream().await;
    let config = |tls| TunnelConfig {
        tls,
        backoff_initial: Duration::from_millis(50),
        ..TunnelConfig::new(
            format!("wss://localhost:{}/_tunnel", front.port),
            Label::new("alice").unwrap(),
        )
    };

    let tunnel = run_tunnel(
        config(front.client_config()),
        Arc::new(key.clone()),
        ForwardToUrl::new(&format!("http://{upstream}")),
    );
    tunnel
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let r = get(&client(), &format!("http://{}/alice/over/tls", gw.addr)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["x-echo-uri"], "/over/tls");

    // A gateway whose certificate is not trusted is never told the label, nor sent a signature.
    let refused = connect(&config(khachapuri_tls::client_config()), &key).await;
    match refused {
        Err(TunnelError::Connect(e)) => assert!(e.contains("certificate"), "{e}"),
        other => panic!("expected a certificate error, got {:?}", other.map(|_| ())),
    }
}
