//! The web console in a real browser: `khachapuri dev` serves it (and its config.json) through the gateway,
//! and `console/test/browser.mjs` drives it in headless Chromium with an injected wallet backed by anvil:
//! connect on the wrong chain, deposit with a permit, reserve, a paid call whose receipt the page verifies,
//! declined signatures, a withdrawal, a release, a deploy from the browser, and the provider's view. Then
//! the URL the browser deployed answers a plain HTTP call here, paid by its owner.
//!
//! Needs `make console` (console/dist) and Chromium (`make test` installs Debian's
//! chromium-headless-shell); a screenshot of the console after the paid call lands in
//! `target/console/paid-call.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{get_json, repo, start_dev};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_user_deposits_reserves_calls_and_deploys_from_the_console() {
    let root = repo();
    assert!(
        root.join("console/dist/index.html").exists(),
        "the console is not built: run `make console` (make test does)"
    );
    let (dev, info) = start_dev();
    let gateway = info["gateway"].as_str().unwrap();
    let console = info["console"]
        .as_str()
        .expect("dev.json names the console");
    assert_eq!(console, format!("{gateway}/_console/"));

    // What the console reads first: where it is, and where to upload.
    let config = get_json(&format!("{console}config.json")).await;
    assert_eq!(config["chainId"], 31337);
    assert_eq!(config["deployment"]["escrow"], info["contracts"]["escrow"]);
    assert_eq!(config["ipfsApi"], info["ipfs"]);
    assert_eq!(config["providers"], serde_json::json!(["dev"]));

    let screenshots = root.join("target/console");
    let out = Command::new("node")
        .arg(root.join("console/test/browser.mjs"))
        .current_dir(&root)
        .env("CONSOLE_URL", console)
        .env("DEV_JSON", dev.dir.path().join(".khachapuri/dev.json"))
        .env(
            "MODULE",
            root.join("examples/target/wasm32-wasip1/release/hello.wasm"),
        )
        .env("SCREENSHOTS", &screenshots)
        .output()
        .expect("run node (the console's browser test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert!(
        std::fs::metadata(screenshots.join("paid-call.png"))
            .unwrap()
            .len()
            > 10_000,
        "a screenshot of the console after the paid call"
    );

    // The URL the browser deployed answers a caller with no wallet at all: its owner pays.
    let url = seen["deployedUrl"].as_str().unwrap();
    let response = khachapuri_tls::http()
        .post(url)
        .body("curl")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let receipt = response.headers().get("x-khachapuri-receipt").cloned();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "Hello from the browser, curl!\n");
    assert!(receipt.is_some(), "an owner-paid call carries a receipt");
    drop(dev);
}
