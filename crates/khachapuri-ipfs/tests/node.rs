//! The embedded node over real loopback HTTP: raw HTTP/1.1 requests written by hand, the Kubo
//! RPC client, and Helia's `@helia/verified-fetch` as an independent trustless-gateway client.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{prng_bytes, repo_root};
use khachapuri_ipfs::{CHUNK_SIZE, FsBlockstore, KuboClient, Node, block, car, cid_for};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection, as curl would send it (body read to close).
async fn http(node: &Node, method: &str, target: &str, extra: &[(&str, &str)]) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        node.addr()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = buf.windows(2).position(|w| w == b"\r\n").unwrap();
        let len =
            usize::from_str_radix(std::str::from_utf8(&buf[..eol]).unwrap().trim(), 16).unwrap();
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&buf[eol + 2..eol + 2 + len]);
        buf = &buf[eol + 4 + len..];
    }
}

async fn started(data: &[u8]) -> (tempfile::TempDir, FsBlockstore, Node, khachapuri_ipfs::Cid) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let cid = store.put(data).unwrap().cid;
    let node = Node::start(store.clone(), 0).await.unwrap();
    (dir, store, node, cid)
}

#[tokio::test]
async fn trustless_gateway_over_raw_http() {
    let data = prng_bytes(1, 3 * CHUNK_SIZE + 5000);
    let (_dir, _store, node, cid) = started(&data).await;
    assert_ne!(node.addr().port(), 0, "ephemeral port resolved");

    for (target, accept) in [
        (format!("/ipfs/{cid}?format=raw"), "*/*"),
        (format!("/ipfs/{cid}"), "application/vnd.ipld.raw"),
    ] {
        let r = http(&node, "GET", &target, &[("Accept", accept)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/vnd.ipld.raw");
        block::verify(&cid, &r.body).unwrap();
    }

    for (target, accept) in [
        (format!("/ipfs/{cid}?format=car"), "*/*"),
        (format!("/ipfs/{cid}"), "application/vnd.ipld.car"),
    ] {
        let r = http(&node, "GET", &target, &[("Accept", accept)]).await;
        assert_eq!(r.status, 200);
        assert!(r.headers["content-type"].starts_with("application/vnd.ipld.car"));
        let (roots, blocks) = car::read(&r.body[..]).unwrap();
        assert_eq!(roots, vec![cid]);
        assert_eq!(blocks.len(), 5, "root and four leaves");
        assert_eq!(blocks[0].0, cid);
    }

    let plain = http(&node, "GET", &format!("/ipfs/{cid}"), &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.headers["content-length"], data.len().to_string());
    assert!(plain.body == data, "plain GET returns the file");

    let head = http(&node, "HEAD", &format!("/ipfs/{cid}"), &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], data.len().to_string());
    assert!(head.body.is_empty());

    let missing = cid_for(b"never added");
    assert_eq!(
        http(&node, "GET", &format!("/ipfs/{missing}?format=raw"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        http(&node, "GET", &format!("/ipfs/{missing}?format=car"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        http(&node, "GET", &format!("/ipfs/{missing}"), &[])
            .await
            .status,
        404
    );
    let bad = http(&node, "GET", "/ipfs/bafy-not-a-cid?format=raw", &[]).await;
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("malformed CID"));
    let cbor = khachapuri_ipfs::Cid::new_v1(0x71, block::sha256_multihash(b"{}"));
    let unsupported = http(&node, "GET", &format!("/ipfs/{cbor}?format=raw"), &[]).await;
    assert_eq!(unsupported.status, 400);
    assert!(String::from_utf8_lossy(&unsupported.body).contains("unsupported codec"));
    node.stop().await.unwrap();
}

#[tokio::test]
async fn kubo_rpc_add_cat_block_get() {
    let (_dir, store, node, _) = started(b"seed").await;
    let data = prng_bytes(2, 2 * CHUNK_SIZE + 1);

    // the client checks the node's answer against the CID computed locally
    let cid = KuboClient::new(node.url())
        .add("two-chunks.bin", data.clone().into())
        .await
        .unwrap();
    assert_eq!(cid, cid_for(&data));
    assert!(store.has(&cid));

    // a hand-written multipart upload, answered like Kubo
    let http_client = khachapuri_tls::http();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello world".to_vec()).file_name("hello.txt"),
    );
    let answer = http_client
        .post(format!("{}/api/v0/add", node.url()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(answer["Name"], "hello.txt");
    assert_eq!(
        answer["Hash"],
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    );
    assert_eq!(answer["Size"], "11");

    let v0 = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let refused = http_client
        .post(format!("{}/api/v0/add?cid-version=0", node.url()))
        .multipart(v0)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let cat = http(&node, "POST", &format!("/api/v0/cat?arg={cid}"), &[]).await;
    assert_eq!(cat.status, 200);
    assert!(cat.body == data);
    let cat_path = http(&node, "POST", &format!("/api/v0/cat?arg=/ipfs/{cid}"), &[]).await;
    assert_eq!(cat_path.body.len(), data.len());

    let block = http(&node, "POST", &format!("/api/v0/block/get?arg={cid}"), &[]).await;
    assert_eq!(block.status, 200);
    block::verify(&cid, &block.body).unwrap();
    assert_eq!(
        http(&node, "GET", &format!("/api/v0/block/get?arg={cid}"), &[])
            .await
            .status,
        405
    );
    let missing = http(
        &node,
        "POST",
        &format!("/api/v0/block/get?arg={}", cid_for(b"nope")),
        &[],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(String::from_utf8_lossy(&missing.body).contains("not found"));
    assert_eq!(http(&node, "POST", "/api/v0/cat", &[]).await.status, 400);
}

/// `node tests/js/verified_fetch.mjs GATEWAY CID [car]` → (status, length, sha256 hex).
async fn helia(gateway: &str, cid: &str, format: &str) -> (u16, usize, String) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/verified_fetch.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .args([gateway, cid, format])
        .current_dir(repo_root())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "verified-fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut parts = stdout.split_whitespace();
    let status = parts.next().unwrap().parse().unwrap();
    let len = parts.next().unwrap().parse().unwrap();
    (status, len, parts.next().unwrap().to_string())
}

#[tokio::test]
async fn helia_verified_fetch_reads_the_node() {
    let data = prng_bytes(3, 2 * CHUNK_SIZE + 777);
    let (_dir, store, node, cid) = started(&data).await;
    let small = store.put(b"a single raw leaf").unwrap().cid;

    let (status, len, sha) = helia(&node.url(), &cid.to_string(), "file").await;
    assert_eq!((status, len), (200, data.len()));
    assert_eq!(sha, hex(&Sha256::digest(&data)));

    let (status, len, sha) = helia(&node.url(), &small.to_string(), "file").await;
    assert_eq!((status, len), (200, 17));
    assert_eq!(sha, hex(&Sha256::digest(b"a single raw leaf")));

    // verified-fetch rebuilds a CAR from the blocks it fetched and verified
    let (status, len, _) = helia(&node.url(), &cid.to_string(), "car").await;
    assert_eq!(status, 200);
    assert!(len > data.len(), "the CAR holds every block");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
