//! CORS on the embedded node: a browser page on another origin (the web console) may upload with
//! `/api/v0/add` only when the node allows that origin.
#![allow(clippy::unwrap_used)]

use khachapuri_ipfs::{FsBlockstore, Node};
use khachapuri_protocol::http::Cors;

const ORIGIN: &str = "http://127.0.0.1:4321";

async fn add(node: &Node) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"from the console".to_vec()).file_name("f.txt"),
    );
    khachapuri_tls::http()
        .post(format!("{}/api/v0/add", node.url()))
        .header("origin", ORIGIN)
        .multipart(form)
        .send()
        .await
        .unwrap()
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
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_started_plainly_allows_no_other_origin() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let node = Node::start(store, 0).await.unwrap();
    let added = add(&node).await;
    assert_eq!(added.status(), 200);
    assert!(added.headers().get("access-control-allow-origin").is_none());
    let pre = preflight(&node).await;
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    assert_ne!(pre.status(), 204);
    node.stop().await.unwrap();
}
