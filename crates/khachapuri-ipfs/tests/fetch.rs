//! The fetcher against real loopback servers: the embedded node as gateway and Kubo RPC, a
//! hostile gateway that tampers with blocks, one that streams an endless body, and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use common::prng_bytes;
use futures::StreamExt;
use khachapuri_ipfs::block::{BlockError, sha256_multihash};
use khachapuri_ipfs::{
    CHUNK_SIZE, Cid, FetchError, Fetcher, FsBlockstore, Node, Source, cid_for, parse_cid,
};

/// Serves `router` on an ephemeral loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[derive(Clone)]
struct Shared {
    store: FsBlockstore,
    hits: Arc<AtomicUsize>,
}

/// A gateway that answers every raw block request with the real block, one bit flipped.
async fn tampering(State(s): State<Shared>, Path(cid): Path<String>) -> Vec<u8> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut block = s
        .store
        .get_block(&parse_cid(&cid).unwrap())
        .unwrap()
        .unwrap()
        .to_vec();
    block[0] ^= 1;
    block
}

/// A gateway that serves blocks honestly and counts requests.
async fn counting(
    State(s): State<Shared>,
    Path(cid): Path<String>,
) -> Result<Bytes, axum::http::StatusCode> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    s.store
        .get_block(&parse_cid(&cid).unwrap())
        .unwrap()
        .ok_or(axum::http::StatusCode::NOT_FOUND)
}

fn store_with(data: &[u8]) -> (tempfile::TempDir, FsBlockstore, Cid) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let cid = store.put(data).unwrap().cid;
    (dir, store, cid)
}

#[tokio::test]
async fn tampering_gateway_is_rejected_and_the_next_one_used() {
    let data = prng_bytes(11, 3 * CHUNK_SIZE + 10);
    let (_dir, store, cid) = store_with(&data);
    let hits = Arc::new(AtomicUsize::new(0));
    let shared = Shared {
        store: store.clone(),
        hits: hits.clone(),
    };
    let hostile = serve(
        Router::new()
            .route("/ipfs/{cid}", get(tampering))
            .with_state(shared),
    )
    .await;
    let good = Node::start(store, 0).await.unwrap();

    let fetcher = Fetcher::new(vec![
        Source::Gateway(hostile.clone()),
        Source::Gateway(good.url()),
    ]);
    let got = fetcher.get(&cid, 10 << 20).await.unwrap();
    assert!(got == data, "the good gateway's bytes come back");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the hostile gateway is dropped after its first lie"
    );

    let only_hostile = Fetcher::new(vec![Source::Gateway(hostile)]);
    match only_hostile.get(&cid, 10 << 20).await {
        Err(FetchError::Unavailable { reasons, .. }) => {
            assert!(reasons[0].contains("does not match CID"), "{reasons:?}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn every_backend_kind_serves_the_same_bytes() {
    let data = prng_bytes(12, 2 * CHUNK_SIZE + 99);
    let (_dir, store, cid) = store_with(&data);
    let node = Node::start(store.clone(), 0).await.unwrap();
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = FsBlockstore::open(empty_dir.path()).unwrap();
    for sources in [
        vec![Source::Local(store.clone())],
        vec![Source::Kubo(node.url())],
        vec![Source::Gateway(node.url())],
        vec![Source::Local(empty), Source::Gateway(node.url())],
    ] {
        let label = sources
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let got = Fetcher::new(sources)
            .get(&cid, data.len() as u64)
            .await
            .unwrap();
        assert!(got == data, "bytes via {label}");
    }
    // single raw-leaf files too
    let small = store.put(b"tiny").unwrap().cid;
    assert_eq!(
        Fetcher::new(vec![Source::Kubo(node.url())])
            .get(&small, 4)
            .await
            .unwrap(),
        &b"tiny"[..]
    );
}

#[tokio::test]
async fn missing_content_is_not_found_everywhere() {
    let (_dir, store, _) = store_with(b"something else");
    let node = Node::start(store.clone(), 0).await.unwrap();
    let missing = cid_for(b"never stored anywhere");
    let fetcher = Fetcher::new(vec![
        Source::Local(store),
        Source::Kubo(node.url()),
        Source::Gateway(node.url()),
    ]);
    let err = fetcher.get(&missing, 1 << 20).await.unwrap_err();
    assert!(
        matches!(err, FetchError::NotFound { cid } if cid == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("not found on any backend"));
}

#[tokio::test]
async fn malformed_and_unsupported_cids_are_clear_errors() {
    let err = parse_cid("bafy-this-is-not-base32!").unwrap_err();
    assert!(matches!(err, BlockError::MalformedCid { .. }));
    assert!(err.to_string().starts_with("malformed CID"));
    assert!(parse_cid("").is_err());

    let (_dir, store, _) = store_with(b"x");
    let fetcher = Fetcher::new(vec![Source::Local(store)]);
    let dag_cbor = Cid::new_v1(0x71, sha256_multihash(b"\xa0"));
    let err = fetcher.get(&dag_cbor, 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Block(BlockError::UnsupportedCodec { codec: 0x71, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("unsupported codec 0x71"));

    let blake3 = Cid::new_v1(
        0x55,
        cid::multihash::Multihash::wrap(0x1e, &[0; 32]).unwrap(),
    );
    let err = fetcher.get(&blake3, 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Block(BlockError::UnsupportedHash { code: 0x1e, .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversize_is_refused_from_the_root_before_downloading_leaves() {
    let data = prng_bytes(13, 10 * CHUNK_SIZE);
    let (_dir, store, cid) = store_with(&data);
    let hits = Arc::new(AtomicUsize::new(0));
    let shared = Shared {
        store: store.clone(),
        hits: hits.clone(),
    };
    let gateway = serve(
        Router::new()
            .route("/ipfs/{cid}", get(counting))
            .with_state(shared),
    )
    .await;

    let fetcher = Fetcher::new(vec![Source::Gateway(gateway)]);
    let err = fetcher.get(&cid, 5 * CHUNK_SIZE as u64).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { size: Some(s), .. } if s == data.len() as u64),
        "{err:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the root block was requested"
    );

    // exactly at the cap is fine
    assert_eq!(
        fetcher.get(&cid, data.len() as u64).await.unwrap().len(),
        data.len()
    );

    // a single raw block over the cap
    let leaf = store.put(&[5u8; 1000]).unwrap().cid;
    let err = fetcher.get(&leaf, 999).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 999, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_endless_body_is_cut_off_at_the_cap() {
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let endless = Router::new().route(
        "/ipfs/{cid}",
        get(move || {
            let counter = counter.clone();
            async move {
                let chunks = futures::stream::iter(0..16_384).map(move |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 65_536]))
                });
                Body::from_stream(chunks) // 1 GiB, no Content-Length
            }
        }),
    );
    let gateway = serve(endless).await;
    let cid = cid_for(b"whatever");
    let fetcher = Fetcher::new(vec![Source::Gateway(gateway)]);
    let err = tokio::time::timeout(Duration::from_secs(20), fetcher.get(&cid, 1 << 20))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::TooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = produced.load(Ordering::SeqCst) * 65_536;
    assert!(
        sent < 64 << 20,
        "the client stopped reading early (server produced {sent} bytes)"
    );
}

#[tokio::test]
async fn kubo_client_add_then_fetch_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(FsBlockstore::open(dir.path()).unwrap(), 0)
        .await
        .unwrap();
    let data = prng_bytes(14, CHUNK_SIZE * 2 + 3);
    let cid = khachapuri_ipfs::KuboClient::new(node.url())
        .add("f", Bytes::from(data.clone()))
        .await
        .unwrap();
    let got = Fetcher::new(vec![Source::Gateway(node.url())])
        .get(&cid, 1 << 20)
        .await
        .unwrap();
    assert!(got == data);
}
