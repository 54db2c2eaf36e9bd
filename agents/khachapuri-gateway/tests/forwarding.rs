//! Direct forwarding: a real gateway on 127.0.0.1 in front of a real upstream server.
#![allow(clippy::unwrap_used)]

mod common;

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Frame;
use khachapuri_gateway::{GatewayConfig, Server, StaticDirectory, proxy::boxed};

async fn dir_to_upstream() -> StaticDirectory {
    let upstream = spawn_upstream().await;
    StaticDirectory::new()
        .with(
            "alice",
            Server::Url(format!("http://{upstream}/base")),
            None,
        )
        .unwrap()
}

#[tokio::test]
async fn forwards_method_path_query_headers_and_body_in_path_mode() {
    let gw = gateway(dir_to_upstream().await).await;
    let req = Request::post(format!("http://{}/alice/bafy/x?a=1&b=two", gw.addr))
        .header("x-custom", "v1")
        .header("authorization", "Bearer t")
        .header("content-type", "text/plain")
        .body(boxed(http_body_util::Full::new(Bytes::from(
            "hello provider",
        ))))
        .unwrap();
    let r = send(&client(), req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers["x-echo-method"], "POST");
    // The `/alice` prefix is gone, the upstream's base path is prefixed, the query is kept.
    assert_eq!(r.headers["x-echo-uri"], "/base/bafy/x?a=1&b=two");
    assert_eq!(r.text(), "hello provider");
    let h = r.echoed_headers();
    assert_eq!(h["x-custom"], "v1");
    assert_eq!(h["authorization"], "Bearer t");
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["forwarded"],
        format!("for=127.0.0.1;host=\"{}\";proto=http", gw.addr)
    );
    // The provider sees its own authority, not the gateway's.
    assert!(h["host"].starts_with("127.0.0.1:"), "{h:?}");
    assert_ne!(h["host"], gw.addr.to_string());
    assert_eq!(r.headers["x-upstream"], "yes");
}

#[tokio::test]
async fn host_mode_takes_the_label_from_a_mixed_case_host_and_keeps_the_whole_path() {
    let gw = gateway(dir_to_upstream().await).await;
    let req = Request::put(format!("http://{}/alice/cid?q", gw.addr))
        .header("host", "ALICE.LocalHost:8080")
        .body(boxed(http_body_util::Full::new(Bytes::from("x"))))
        .unwrap();
    let r = send(&client(), req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers["x-echo-method"], "PUT");
    assert_eq!(r.headers["x-echo-uri"], "/base/alice/cid?q");
    assert_eq!(
        r.echoed_headers()["x-forwarded-host"],
        "ALICE.LocalHost:8080"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_both_ways() {
    let gw = gateway(dir_to_upstream().await).await;
    let req = Request::get(format!("http://{}/alice/h", gw.addr))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "foo/1")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-end-to-end", "passes")
        .body(boxed(http_body_util::Empty::<Bytes>::new()))
        .unwrap();
    let r = send(&client(), req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let h = r.echoed_headers();
    for gone in ["x-hop", "keep-alive", "te", "proxy-connection", "upgrade"] {
        assert!(!h.contains_key(gone), "{gone} reached the provider: {h:?}");
    }
    assert_eq!(h["x-end-to-end"], "passes");
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    // The provider's hop-by-hop headers (and the one its Connection names) stop at the gateway.
    assert!(r.headers.get("x-private").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(r.headers["x-upstream"], "yes");
}

#[tokio::test]
async fn errors_are_json_with_a_hint() {
    let dead = {
        let l = std::net::TcpListener::bind(LOCAL).unwrap();
        l.local_addr().unwrap()
    }; // closed: nothing listens there now
    let dir = dir_to_upstream()
        .await
        .with("dead", Server::Url(format!("http://{dead}")), None)
        .unwrap();
    let config = GatewayConfig {
        response_timeout: Duration::from_millis(400),
        ..GatewayConfig::default()
    };
    let gw = gateway_with(dir, config).await;
    let c = client();
    for (path, status, needle) in [
        (
            "/Bad_Label/x",
            StatusCode::BAD_REQUEST,
            "invalid provider label",
        ),
        (
            "/-alice/x",
            StatusCode::BAD_REQUEST,
            "invalid provider label",
        ),
        ("/bob/x", StatusCode::NOT_FOUND, "unknown provider"),
        ("/", StatusCode::NOT_FOUND, "no provider"),
        ("/dead/x", StatusCode::BAD_GATEWAY, "unreachable"),
        ("/alice/slow", StatusCode::GATEWAY_TIMEOUT, "did not answer"),
    ] {
        let started = std::time::Instant::now();
        let r = get(&c, &format!("http://{}{path}", gw.addr)).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/json");
        let j = r.json();
        assert!(
            j["message"].as_str().unwrap().contains(needle),
            "{path}: {j}"
        );
        assert!(
            j["error"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "a code: {j}"
        );
        assert!(!j["hint"].as_str().unwrap().is_empty(), "{path}: {j}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // In host mode too: a bad label in the Host header is a 400.
    let req = Request::get(format!("http://{}/", gw.addr))
        .header("host", "a_b.localhost")
        .body(boxed(http_body_util::Empty::new()))
        .unwrap();
    assert_eq!(send(&c, req).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn streams_several_mib_each_way() {
    let gw = gateway(dir_to_upstream().await).await;
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
}

#[tokio::test]
async fn request_body_streams_before_it_ends() {
    // The upstream answers on the first chunk; the client holds the rest of its body back until the
    // answer arrives. A gateway that buffered the request would hang here.
    let gw = gateway(dir_to_upstream().await).await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
    let body = boxed(StreamBody::new(
        rx.map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ));
    let req = Request::post(format!("http://{}/alice/first-chunk", gw.addr))
        .body(body)
        .unwrap();
    let c = client();
    let pending = tokio::spawn(async move { c.request(req).await.unwrap() });
    tx.send(Bytes::from(vec![7u8; 1000])).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("not streamed")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(tx);
}

#[tokio::test]
async fn provider_dropping_mid_request_is_a_502_and_the_gateway_stays_healthy() {
    let gw = gateway(dir_to_upstream().await).await;
    let c = client();
    let r = get(&c, &format!("http://{}/alice/drop", gw.addr)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["error"], "provider_failed");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("failed mid-request"),
        "{}",
        r.text()
    );
    let r = get(&c, &format!("http://{}/alice/after", gw.addr)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers["x-echo-uri"], "/base/after");
}

#[tokio::test]
async fn health_and_non_websocket_tunnel_requests() {
    let gw = gateway(StaticDirectory::new()).await;
    let c = client();
    let r = get(&c, &format!("http://{}/_health", gw.addr)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["tunnels"], 0);
    let r = get(&c, &format!("http://{}/_tunnel", gw.addr)).await;
    assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED);
}

/// A provider that answers `chunk ` ten times, 100 ms apart (`/trickle`), or once and then nothing for
/// ever (`/stall`).
async fn spawn_slow_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let stall = req.uri().path().ends_with("/stall");
                    let chunks = futures::stream::unfold(0, move |i| async move {
                        if stall && i == 1 {
                            futures::future::pending::<()>().await;
                        }
                        if i == 10 {
                            return None;
                        }
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Some((
                            Ok::<_, Infallible>(Frame::data(Bytes::from("chunk "))),
                            i + 1,
                        ))
                    });
                    Ok::<_, Infallible>(http::Response::new(boxed(StreamBody::new(chunks))))
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::spawn(conn);
        }
    });
    addr
}

#[tokio::test]
async fn a_body_that_stops_flowing_is_cut_and_one_that_trickles_is_not() {
    use http_body_util::BodyExt;
    let slow = spawn_slow_upstream().await;
    let dir = StaticDirectory::new()
        .with("slow", Server::Url(format!("http://{slow}")), None)
        .unwrap()
        .with(
            "echo",
            Server::Url(format!("http://{}", spawn_upstream().await)),
            None,
        )
        .unwrap();
    let idle = Duration::from_millis(300);
    let gw = gateway_with(
        dir,
        GatewayConfig {
            body_idle_timeout: idle,
            ..GatewayConfig::default()
        },
    )
    .await;
    let c = client();

    // Ten chunks over 0.9 s, never 300 ms apart: all of them.
    let r = get(&c, &format!("http://{}/slow/trickle", gw.addr)).await;
    assert_eq!(r.text(), "chunk ".repeat(10));

    // A provider that stops mid-body: the caller gets the head and the first chunk, then a cut body.
    let started = std::time::Instant::now();
    let res = c
        .request(
            Request::get(format!("http://{}/slow/stall", gw.addr))
                .body(boxed(http_body_util::Empty::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "the stalled body is cut, not hung nor complete"
    );
    assert!(started.elapsed() >= idle);

    // A caller that stops mid-upload: the gateway cuts the upload, so the echoed body ends in an error.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tx.send(Ok(Frame::data(Bytes::from("start"))))
        .await
        .unwrap();
    let req = Request::post(format!("http://{}/echo/upload", gw.addr))
        .body(boxed(StreamBody::new(rx)))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect()).await;
    assert!(matches!(body, Ok(Err(_))), "the stalled upload is cut");
    drop(tx);
}

/// A CORS preflight is answered by the gateway itself: 204 with the configured policy, never forwarded
/// (the provider here listens nowhere: forwarding would be a 502), so never run or charged.
#[tokio::test]
async fn cors_preflights_are_answered_here_and_never_forwarded() {
    let dir = StaticDirectory::new()
        .with("alice", Server::Url("http://127.0.0.1:1".into()), None)
        .unwrap();
    let gw = gateway(dir).await;
    let preflight = |origin: &'static str| {
        Request::options(format!("http://{}/alice/bafy", gw.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .body(boxed(http_body_util::Full::new(Bytes::new())))
            .unwrap()
    };
    let r = send(&client(), preflight("https://app.example")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.headers["access-control-allow-methods"], "POST");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "content-type, authorization"
    );
    // A plain OPTIONS is a call like any other: forwarded (and here the provider is down).
    let plain = Request::options(format!("http://{}/alice/bafy", gw.addr))
        .body(boxed(http_body_util::Full::new(Bytes::new())))
        .unwrap();
    assert_eq!(send(&client(), plain).await.status, StatusCode::BAD_GATEWAY);

    // An operator who allows one origin, or none.
    let only = khachapuri_protocol::http::Cors::from_setting("https://app.example");
    let dir = StaticDirectory::new()
        .with("alice", Server::Url("http://127.0.0.1:1".into()), None)
        .unwrap();
    let gw2 = gateway_with(
        dir,
        GatewayConfig {
            cors: only,
            ..GatewayConfig::default()
        },
    )
    .await;
    let r = send(
        &client(),
        Request::options(format!("http://{}/alice/bafy", gw2.addr))
            .header("access-control-request-method", "GET")
            .body(boxed(http_body_util::Full::new(Bytes::new())))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
}
