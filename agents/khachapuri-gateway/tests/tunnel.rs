//! Tunnels: real WebSockets on 127.0.0.1, real EIP-191 signatures, HTTP/2 inside.
#![allow(clippy::unwrap_used)]

mod common;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use khachapuri_gateway::{
    GatewayConfig, GatewayHandle, Label, Server, StaticDirectory,
    proxy::{Body, boxed, full},
    tunnel::client::{
        ForwardToUrl, TunnelConfig, TunnelError, TunnelHandle, TunnelStatus, connect, run_tunnel,
    },
};

const WAIT: Duration = Duration::from_secs(10);

fn tunnel_config(gw: SocketAddr, label: &str) -> TunnelConfig {
    TunnelConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..TunnelConfig::new(format!("ws://{gw}/_tunnel"), Label::new(label).unwrap())
    }
}

/// A directory where `alice` is tunneled with payee `key`'s address, and `direct` is a URL.
fn directory(key: &PrivateKeySigner) -> StaticDirectory {
    StaticDirectory::new()
        .with("alice", Server::Tunnel, Some(key.address()))
        .unwrap()
        .with(
            "direct",
            Server::Url("http://127.0.0.1:9".into()),
            Some(key.address()),
        )
        .unwrap()
}

async fn tunneled_gateway(key: &PrivateKeySigner) -> GatewayHandle {
    gateway_with(
        directory(key),
        GatewayConfig {
            response_timeout: Duration::from_secs(5),
            ..GatewayConfig::default()
        },
    )
    .await
}

fn in_process_echo() -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(echo)
}

async fn up(handle: &TunnelHandle) {
    handle.wait_connected(WAIT).await.unwrap();
}

#[tokio::test]
async fn tunneled_requests_forward_like_direct_ones() {
    let key = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let upstream = spawn_upstream().await;
    let agent = run_tunnel(
        tunnel_config(gw.addr, "alice"),
        Arc::new(key),
        ForwardToUrl::new(&format!("http://{upstream}/base")),
    );
    up(&agent).await;
    assert_eq!(
        gw.gateway.tunnels().labels(),
        vec![Label::new("alice").unwrap()]
    );

    let req = Request::patch(format!("http://{}/alice/bafy/x?a=1&b=2", gw.addr))
        .header("x-custom", "v1")
        .header("connection", "x-hop")
        .header("x-hop", "no")
        .body(boxed(Full::new(Bytes::from("through the tunnel"))))
        .unwrap();
    let r = send(&client(), req).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["x-echo-method"], "PATCH");
    assert_eq!(r.headers["x-echo-uri"], "/base/bafy/x?a=1&b=2");
    assert_eq!(r.text(), "through the tunnel");
    let h = r.echoed_headers();
    assert_eq!(h["x-custom"], "v1");
    assert!(!h.contains_key("x-hop"), "{h:?}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert!(r.headers.get("x-private").is_none());
    assert_eq!(r.headers["x-upstream"], "yes");
}

#[tokio::test]
async fn several_mib_each_way_through_the_tunnel_and_streaming() {
    let key = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let upstream = spawn_upstream().await;
    let agent = run_tunnel(
        tunnel_config(gw.addr, "alice"),
        Arc::new(key),
        ForwardToUrl::new(&format!("http://{upstream}")),
    );
    up(&agent).await;
    let c = client();

    let data = pattern(8 << 20);
    let req = Request::post(format!("http://{}/alice/echo", gw.addr))
        .body(streamed(data.clone(), 256 * 1024))
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        r.body == data,
        "upload echo differs: {} bytes back",
        r.body.len()
    );

    let r = get(&c, &format!("http://{}/alice/big/{}", gw.addr, 6 << 20)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body == pattern(6 << 20),
        "download differs: {} bytes",
        r.body.len()
    );

    // The request body reaches the provider before it ends (no buffering anywhere on the way).
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
    let body = boxed(StreamBody::new(
        rx.map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ));
    let req = Request::post(format!("http://{}/alice/first-chunk", gw.addr))
        .body(body)
        .unwrap();
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.request(req).await.unwrap() }
    });
    tx.send(Bytes::from(vec![1u8; 1234])).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("not streamed")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_pair_with_their_responses() {
    let key = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let agent = run_tunnel(
        tunnel_config(gw.addr, "alice"),
        Arc::new(key),
        in_process_echo(),
    );
    up(&agent).await;
    let c = client();
    let requests = (0..200).map(|i| {
        let c = c.clone();
        let url = format!("http://{}/alice/req/{i}?i={i}", gw.addr);
        async move {
            // Bodies of different sizes, so that streams interleave and finish out of order.
            let body = format!("body-{i}-").repeat(1 + (i * 37) % 500);
            let r = send(&c, Request::post(url).body(full(body.clone())).unwrap()).await;
            (i, body, r)
        }
    });
    let results = futures::future::join_all(requests).await;
    for (i, body, r) in results {
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["x-echo-uri"], format!("/req/{i}?i={i}"));
        assert_eq!(r.text(), body);
    }
}

#[tokio::test]
async fn a_stranger_cannot_take_a_label() {
    let key = PrivateKeySigner::random();
    let stranger = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let agent = run_tunnel(
        tunnel_config(gw.addr, "alice"),
        Arc::new(key.clone()),
        in_process_echo(),
    );
    up(&agent).await;

    let err = connect(&tunnel_config(gw.addr, "alice"), &stranger)
        .await
        .unwrap_err();
    match err {
        TunnelError::Refused { error, hint } => {
            assert!(error.contains("not the label's payee"), "{error}");
            assert!(hint.contains(&key.address().to_string()), "{hint}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    // Labels that are unknown or not tunneled are refused too, even to the right key.
    for (label, needle) in [
        ("bob", "unknown label"),
        ("direct", "not served through the tunnel"),
    ] {
        match connect(&tunnel_config(gw.addr, label), &key)
            .await
            .unwrap_err()
        {
            TunnelError::Refused { error, .. } => {
                assert!(error.contains(needle), "{label}: {error}")
            }
            other => panic!("{label}: expected a refusal, got {other}"),
        }
    }
    // The rightful tunnel is untouched.
    let r = get(&client(), &format!("http://{}/alice/still-mine", gw.addr)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(agent.status().borrow().clone(), TunnelStatus::Connected);
}

#[tokio::test]
async fn a_newer_valid_tunnel_replaces_the_older_which_closes() {
    let key = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let tagged = |tag: &'static str| {
        hyper::service::service_fn(move |_req: Request<Incoming>| async move {
            Ok::<_, Infallible>(Response::new(full(tag)))
        })
    };
    let first = connect(&tunnel_config(gw.addr, "alice"), &key)
        .await
        .unwrap();
    let first = tokio::spawn(first.serve(tagged("first")));
    let c = client();
    let url = format!("http://{}/alice/who", gw.addr);
    assert_eq!(get(&c, &url).await.text(), "first");

    let second = connect(&tunnel_config(gw.addr, "alice"), &key)
        .await
        .unwrap();
    let _second = tokio::spawn(second.serve(tagged("second")));
    assert_eq!(get(&c, &url).await.text(), "second");
    // The replaced tunnel is closed by the gateway.
    tokio::time::timeout(WAIT, first)
        .await
        .expect("old tunnel still open")
        .unwrap()
        .ok();
    assert_eq!(get(&c, &url).await.text(), "second");
}

#[tokio::test]
async fn no_tunnel_is_a_502_and_an_agent_dying_mid_request_too() {
    let key = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let c = client();
    let r = get(&c, &format!("http://{}/alice/x", gw.addr)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "tunnel_down");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("not connected"),
        "{}",
        r.text()
    );

    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<()>(1);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let seen = seen_tx.clone();
        async move {
            if req.uri().path() == "/drop" {
                let _ = seen.send(()).await;
            }
            echo(req).await
        }
    });
    let agent = run_tunnel(
        tunnel_config(gw.addr, "alice"),
        Arc::new(key.clone()),
        service,
    );
    up(&agent).await;
    let pending = tokio::spawn({
        let c = c.clone();
        let url = format!("http://{}/alice/drop", gw.addr);
        async move { get(&c, &url).await }
    });
    seen_rx.recv().await.unwrap();
    agent.stop(); // the agent dies with the request in flight
    let r = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert!(!r.json()["hint"].as_str().unwrap().is_empty());

    // The gateway stays healthy: a new agent takes over and is served.
    let agent = run_tunnel(
        tunnel_config(gw.addr, "alice"),
        Arc::new(key),
        in_process_echo(),
    );
    up(&agent).await;
    let r = get(&c, &format!("http://{}/alice/back", gw.addr)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = get(&c, &format!("http://{}/_health", gw.addr)).await;
    assert_eq!(r.json()["tunnels"], 1);
}

#[tokio::test]
async fn the_agent_reconnects_after_the_gateway_restarts() {
    let key = PrivateKeySigner::random();
    let gw = tunneled_gateway(&key).await;
    let addr = gw.addr;
    let agent = run_tunnel(
        tunnel_config(addr, "alice"),
        Arc::new(key.clone()),
        in_process_echo(),
    );
    up(&agent).await;
    let mut status = agent.status();

    gw.shutdown().await;
    tokio::time::timeout(
        WAIT,
        status.wait_for(|s| matches!(s, TunnelStatus::Down { .. })),
    )
    .await
    .unwrap()
    .unwrap();

    // Same address, fresh gateway: the agent finds it again on its own.
    let gw = khachapuri_gateway::spawn(addr, GatewayConfig::default(), Arc::new(directory(&key)))
        .await
        .unwrap();
    up(&agent).await;
    let r = get(&client(), &format!("http://{}/alice/again", gw.addr)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers["x-echo-uri"], "/again");
}
