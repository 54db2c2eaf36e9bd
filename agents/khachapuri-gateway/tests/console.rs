//! The web console at `/_console/`: a real gateway on 127.0.0.1 serving a directory of files.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Empty;
use khachapuri_gateway::{
    ConsoleSite, GatewayConfig, GatewayHandle, StaticDirectory, proxy::boxed,
};

const SECRET: &str = "never-served-secret";

/// `root/dist` is the console; `root/secret` and `root/Cargo.toml` sit beside it.
fn site() -> (tempfile::TempDir, ConsoleSite) {
    let root = tempfile::tempdir().unwrap();
    let dist = root.path().join("dist");
    std::fs::create_dir_all(dist.join("sub")).unwrap();
    std::fs::write(
        dist.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    std::fs::write(dist.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(dist.join(".hidden"), SECRET).unwrap();
    std::fs::write(dist.join("sub/x.js"), SECRET).unwrap();
    std::fs::write(root.path().join("secret"), SECRET).unwrap();
    std::fs::write(root.path().join("Cargo.toml"), SECRET).unwrap();
    let deployment = serde_json::json!({ "chainId": 31337, "escrow": "0x00000000000000000000000000000000000000e5" });
    let site = ConsoleSite::new(
        &dist,
        deployment,
        Some("http://127.0.0.1:8545".into()),
        None,
        None,
        vec!["dev".into()],
    )
    .unwrap();
    (root, site)
}

async fn gateway_with_console(site: Option<ConsoleSite>) -> GatewayHandle {
    let config = GatewayConfig {
        console: site,
        ..GatewayConfig::default()
    };
    gateway_with(StaticDirectory::new(), config).await
}

async fn request(gw: &GatewayHandle, method: &str, path: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.addr))
        .body(boxed(Empty::<Bytes>::new()))
        .unwrap();
    send(&client(), req).await
}

#[tokio::test]
async fn serves_the_index_the_config_and_files_by_type() {
    let (_root, site) = site();
    let config = site.config.clone();
    let gw = gateway_with_console(Some(site)).await;

    let index = request(&gw, "GET", "/_console/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers["x-content-type-options"], "nosniff");
    assert_eq!(
        index.headers["x-frame-options"], "DENY",
        "no page may frame the console"
    );
    assert_eq!(
        index.headers["content-security-policy"],
        "frame-ancestors 'none'"
    );
    assert_eq!(index.headers["cache-control"], "no-cache");
    assert!(index.text().contains("<title>console</title>"));

    let named = request(&gw, "GET", "/_console/index.html").await;
    assert_eq!(named.body, index.body);

    let head = request(&gw, "HEAD", "/_console/app.js").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], "14");

    let js = request(&gw, "GET", "/_console/app.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(js.text(), "console.log(1)");

    let c = request(&gw, "GET", "/_console/config.json").await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.headers["content-type"], "application/json");
    assert_eq!(c.headers["cache-control"], "no-store");
    assert_eq!(c.json(), config);
    assert_eq!(
        c.json(),
        serde_json::json!({
            "chainId": 31337,
            "deployment": { "chainId": 31337, "escrow": "0x00000000000000000000000000000000000000e5" },
            "rpcUrl": "http://127.0.0.1:8545",
            "ipfsApi": null,
            "gateway": null,
            "providers": ["dev"],
        })
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_root_and_the_bare_prefix_redirect_to_the_console() {
    let (_root, site) = site();
    let gw = gateway_with_console(Some(site)).await;
    let bare = request(&gw, "GET", "/_console").await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers["location"], "/_console/");
    let root = request(&gw, "GET", "/").await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.headers["location"], "/_console/");
    // Only a page load is redirected; a POST to `/` names no label, as without a console.
    let post = request(&gw, "POST", "/").await;
    assert_ne!(post.status, StatusCode::SEE_OTHER);
    assert!(post.headers.get("location").is_none());
    // Labels route as before: an unknown one is still the directory's 404.
    let label = request(&gw, "GET", "/alice/bafy").await;
    assert_eq!(label.status, StatusCode::NOT_FOUND);
    assert_eq!(label.json()["error"], "unknown_provider");
    gw.shutdown().await;
}

#[tokio::test]
async fn nothing_outside_the_directory_or_hidden_is_served() {
    let (_root, site) = site();
    let gw = gateway_with_console(Some(site)).await;
    for path in [
        "/_console/../Cargo.toml",
        "/_console/..%2fsecret",
        "/_console/%2e%2e%2fsecret",
        "/_console/%2e%2e/secret",
        "/_console/.hidden",
        "/_console/sub/x.js",
        "/_console/sub",
        "/_console/..",
        "/_console//secret",
        "/_console/..\\secret",
        "/_console/missing.js",
    ] {
        let r = request(&gw, "GET", path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!r.text().contains(SECRET), "{path} leaked: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/json", "{path}");
        assert!(r.json()["hint"].is_string(), "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn other_methods_are_refused() {
    let (_root, site) = site();
    let gw = gateway_with_console(Some(site)).await;
    for path in ["/_console/", "/_console/app.js", "/_console/config.json"] {
        let r = request(&gw, "POST", path).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.headers["allow"], "GET, HEAD");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_console_there_is_none_and_the_root_names_no_label() {
    let gw = gateway_with_console(None).await;
    let r = request(&gw, "GET", "/_console/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "no_console");
    assert!(r.json()["hint"].as_str().unwrap().contains("--console DIR"));
    let root = request(&gw, "GET", "/").await;
    assert_eq!(root.status, StatusCode::NOT_FOUND);
    assert_eq!(root.json()["error"], "no_label");
    gw.shutdown().await;
}

#[test]
fn a_directory_without_an_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = serde_json::json!({ "chainId": 1 });
    let e = ConsoleSite::new(dir.path(), deployment, None, None, None, vec![]).unwrap_err();
    assert!(e.to_string().contains("make console"), "{e}");
    std::fs::write(dir.path().join("index.html"), "x").unwrap();
    let e = ConsoleSite::new(dir.path(), serde_json::json!({}), None, None, None, vec![]);
    assert!(e.is_err(), "no chainId");
}

/// In path mode a function answers on the console's origin: with a console, its answer runs sandboxed (an
/// opaque origin), so a page it serves cannot use the wallet the console was granted or script the console.
#[tokio::test]
async fn a_function_answer_beside_the_console_is_sandboxed() {
    let upstream = spawn_upstream().await;
    let mut directory = StaticDirectory::new();
    directory
        .parse_entry(&format!("alice=http://{upstream}"))
        .unwrap();
    let (_root, site) = site();
    let with_console = gateway_with(
        directory.clone(),
        GatewayConfig {
            console: Some(site),
            ..GatewayConfig::default()
        },
    )
    .await;
    let answer = request(&with_console, "GET", "/alice/bafy").await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "the echo upstream's answer"
    );
    assert_eq!(
        answer.headers["content-security-policy"],
        khachapuri_gateway::console::FUNCTION_SANDBOX
    );
    with_console.shutdown().await;

    let without = gateway_with(directory, GatewayConfig::default()).await;
    let answer = request(&without, "GET", "/alice/bafy").await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "the echo upstream's answer"
    );
    assert!(answer.headers.get("content-security-policy").is_none());
    without.shutdown().await;
}
