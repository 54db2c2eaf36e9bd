//! CORS on the embedded node: a browser page on another origin (the web console) may upload with
//! `/api/v0/add` only when the node allows that origin; a page on any other origin is refused before
//! anything is stored (a multipart POST needs no preflight, so CORS alone would not stop the write).
#![allow(clippy::unwrap_used)]

use khachapuri_ipfs::{FsBlockstore, Node};
use khachapuri_protocol::http::Cors;

const ORIGIN: &str = "http://127.0.0.1:4321";

async fn add(node: &Node) -> reqwest::Response {
    add_from(node, Some(ORIGIN)).await
}

async fn add_from(node: &Node, origin: Option<&str>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"from the console".to_vec()).file_name("f.txt"),
    );
    let mut request = khachapuri_tls::http().post(format!("{}/api/v0/add", node.url()));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.multipart(form).send().await.unwrap()
}

/// Whether the node holds the block `add` made (what a refused write must not leave).
async fn holds_the_block(node: &Node) -> bool {
    let hashed = khachapuri_tls::http()
        .post(format!("{}/api/v0/add?only-hash=true", node.url()))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"from the console".to_vec()).file_name("f.txt"),
        ))
        .send()
        .await
        .unwrap();
    let cid: serde_json::Value = serde_json::from_str(&hashed.text().await.unwrap()).unwrap();
    let cid = cid["Hash"].as_str().unwrap().to_owned();
    let got = khachapuri_tls::http()
        .get(format!("{}/ipfs/{cid}?format=raw", node.url()))
        .send()
        .await
        .unwrap();
    got.status() == 200
}

async fn preflight(node: &Node) -> reqwest::Response {
    khachapuri_tls::http()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v0/add", node.url()),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_allowed_origin_gets_preflights_and_readable_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let node = Node::start_with_cors(store, 0, Cors::from_setting(ORIGIN))
        .await
        .unwrap();

    let pre = preflight(&node).await;
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(h["access-control-allow-headers"], "content-type");

    let added = add(&node).await;
    assert_eq!(added.status(), 200);
    assert_eq!(added.headers()["access-control-allow-origin"], ORIGIN);
    let answer: serde_json::Value = serde_json::from_str(&added.text().await.unwrap()).unwrap();
    assert_eq!(answer["Name"], "f.txt");

    // Errors are readable too (the console shows them).
    let missing = khachapuri_tls::http()
        .post(format!("{}/api/v0/cat", node.url()))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(missing.headers()["access-control-allow-origin"], ORIGIN);
    // Another origin is refused there too.
    let hostile = add_from(&node, Some("https://evil.example")).await;
    assert_eq!(hostile.status(), 403);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_started_plainly_allows_no_other_origin() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let node = Node::start(store, 0).await.unwrap();
    // A page on any origin is refused, and nothing is stored; the CLI (no Origin) adds as before.
    let refused = add(&node).await;
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("takes no requests from the web page at")
    );
    assert!(!holds_the_block(&node).await);
    let added = add_from(&node, None).await;
    assert_eq!(added.status(), 200);
    assert!(holds_the_block(&node).await);
    let pre = preflight(&node).await;
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    assert_ne!(pre.status(), 204);
    node.stop().await.unwrap();
}
