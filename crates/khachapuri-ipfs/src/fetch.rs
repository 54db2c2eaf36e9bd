//! Verified fetching over three kinds of backend — the local store, a Kubo RPC endpoint,
//! trustless gateways — behind one interface. Every block is checked against its CID;
//! size caps are enforced while reading.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::block::{BlockError, RAW, check_supported, verify};
use crate::file::decode_file_node;
use crate::importer::cid_for;
use crate::store::FsBlockstore;

/// Largest dag-pb block accepted (a node of 174 links is ~8 KiB; legacy leaves ~256 KiB).
pub const MAX_NODE_SIZE: u64 = 2 << 20;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Bad CID, unsupported codec or hash.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// No backend has the block.
    #[error("{cid} not found on any backend")]
    NotFound {
        /// The block asked for.
        cid: Cid,
    },
    /// The content is larger than the caller allows.
    #[error("{cid} is larger than the {limit}-byte limit{}", size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    TooLarge {
        /// The block or file.
        cid: Cid,
        /// The cap.
        limit: u64,
        /// The declared size, when known before downloading.
        size: Option<u64>,
    },
    /// Every backend failed for this block (wrong bytes, errors); reasons in backend order.
    #[error("{cid} could not be fetched: {}", reasons.join("; "))]
    Unavailable {
        /// The block asked for.
        cid: Cid,
        /// One line per backend that failed.
        reasons: Vec<String>,
    },
    /// A verified block does not form a UnixFS file the crate can read.
    #[error("{cid} is not a readable UnixFS file: {reason}")]
    BadDag {
        /// The offending block.
        cid: Cid,
        /// What is wrong with it.
        reason: String,
    },
    /// A remote node answered something unexpected.
    #[error("remote node: {0}")]
    Remote(String),
}

/// One place blocks can come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The embedded node's blockstore.
    Local(FsBlockstore),
    /// A Kubo RPC endpoint, e.g. `http://127.0.0.1:5001` (uses `/api/v0/block/get`).
    Kubo(String),
    /// A trustless gateway, e.g. `https://trustless-gateway.link` (uses `?format=raw`).
    Gateway(String),
}

impl Source {
    /// Reads a source as the agents' `--ipfs` flags write it: `local` (the blockstore under `local_root`),
    /// `kubo=URL` or `gateway=URL`.
    pub fn parse(text: &str, local_root: &std::path::Path) -> Result<Self, String> {
        match text.split_once('=') {
            None if text == "local" => FsBlockstore::open(local_root)
                .map(Source::Local)
                .map_err(|e| format!("opening the local IPFS store {}: {e}", local_root.display())),
            Some(("kubo", url)) => Ok(Source::Kubo(url.to_owned())),
            Some(("gateway", url)) => Ok(Source::Gateway(url.to_owned())),
            _ => Err(format!(
                "IPFS source `{text}`: expected `local`, `kubo=URL` or `gateway=URL`"
            )),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Local(store) => write!(f, "local store {}", store.root().display()),
            Source::Kubo(url) => write!(f, "kubo {url}"),
            Source::Gateway(url) => write!(f, "gateway {url}"),
        }
    }
}

enum Answer {
    Found(Bytes),
    NotFound,
    TooLarge,
    Failed(String),
}

/// Fetches content by CID from an ordered list of sources; the first verified answer wins.
#[derive(Debug, Clone)]
pub struct Fetcher {
    sources: Vec<Source>,
    http: reqwest::Client,
    concurrency: usize,
}

/// A piece of the file being assembled: bytes already verified, or a block still to fetch.
enum Piece {
    Done(Bytes),
    Todo { cid: Cid, size: Option<u64> },
}

impl Fetcher {
    /// A fetcher over `sources`, tried in order for every block.
    pub fn new(sources: Vec<Source>) -> Self {
        Fetcher {
            sources,
            http: khachapuri_tls::http(),
            concurrency: 8,
        }
    }

    /// Sets how many blocks are fetched at once (default 8).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The file under `cid`, verified block by block, refused as soon as it is known to exceed
    /// `max_bytes` (from the root's UnixFS filesize, or while a block is being read).
    pub async fn get(&self, cid: &Cid, max_bytes: u64) -> Result<Bytes, FetchError> {
        check_supported(cid)?;
        let bad: Vec<AtomicBool> = self
            .sources
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        let mut pieces = vec![Piece::Todo {
            cid: *cid,
            size: None,
        }];
        while pieces.iter().any(|p| matches!(p, Piece::Todo { .. })) {
            let fetched: Vec<Vec<Piece>> = futures::stream::iter(pieces)
                .map(|piece| self.expand(piece, max_bytes, &bad))
                .buffered(self.concurrency)
                .try_collect()
                .await?;
            pieces = fetched.into_iter().flatten().collect();
            let known: u64 = pieces
                .iter()
                .map(|p| match p {
                    Piece::Done(b) => b.len() as u64,
                    Piece::Todo { size, .. } => size.unwrap_or(0),
                })
                .sum();
            if known > max_bytes {
                return Err(FetchError::TooLarge {
                    cid: *cid,
                    limit: max_bytes,
                    size: Some(known),
                });
            }
        }
        let total = pieces
            .iter()
            .map(|p| if let Piece::Done(b) = p { b.len() } else { 0 })
            .sum();
        if pieces.len() == 1
            && let Some(Piece::Done(b)) = pieces.pop()
        {
            return Ok(b);
        }
        let mut out = BytesMut::with_capacity(total);
        for piece in pieces {
            if let Piece::Done(b) = piece {
                out.extend_from_slice(&b);
            }
        }
        Ok(out.freeze())
    }

    /// Fetches one block and replaces it by its content and children.
    async fn expand(
        &self,
        piece: Piece,
        max_bytes: u64,
        bad: &[AtomicBool],
    ) -> Result<Vec<Piece>, FetchError> {
        let (cid, size) = match piece {
            Piece::Done(_) => return Ok(vec![piece]),
            Piece::Todo { cid, size } => (cid, size),
        };
        check_supported(&cid)?;
        if cid.codec() == RAW {
            let limit = size.unwrap_or(max_bytes);
            let block = self.block(&cid, limit, bad).await?;
            if size.is_some_and(|s| s != block.len() as u64) {
                return Err(FetchError::BadDag {
                    cid,
                    reason: "leaf size differs from its parent's blocksizes".into(),
                });
            }
            return Ok(vec![Piece::Done(block)]);
        }
        let block = self.block(&cid, MAX_NODE_SIZE, bad).await?;
        let node = decode_file_node(&block).map_err(|reason| FetchError::BadDag { cid, reason })?;
        if node.filesize > max_bytes {
            return Err(FetchError::TooLarge {
                cid,
                limit: max_bytes,
                size: Some(node.filesize),
            });
        }
        if size.is_some_and(|s| s != node.filesize) {
            return Err(FetchError::BadDag {
                cid,
                reason: "filesize differs from its parent's blocksizes".into(),
            });
        }
        let sized = node.blocksizes.len() == node.links.len();
        let mut out = Vec::with_capacity(node.links.len() + 1);
        if let Some(data) = node.data.filter(|d| !d.is_empty()) {
            out.push(Piece::Done(Bytes::from(data)));
        }
        for (i, link) in node.links.into_iter().enumerate() {
            out.push(Piece::Todo {
                cid: link,
                size: sized.then(|| node.blocksizes[i]),
            });
        }
        Ok(out)
    }

    /// One verified block of at most `limit` bytes, trying each source in order.
    pub async fn get_block(&self, cid: &Cid, limit: u64) -> Result<Bytes, FetchError> {
        let bad: Vec<AtomicBool> = self
            .sources
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        self.block(cid, limit, &bad).await
    }

    async fn block(&self, cid: &Cid, limit: u64, bad: &[AtomicBool]) -> Result<Bytes, FetchError> {
        check_supported(cid)?;
        let (mut reasons, mut too_large, mut missing) = (Vec::new(), false, 0);
        for (source, bad) in self.sources.iter().zip(bad) {
            if bad.load(Ordering::Relaxed) {
                reasons.push(format!("{source}: skipped after serving wrong bytes"));
                continue;
            }
            match self.ask(source, cid, limit).await {
                Answer::Found(bytes) => match verify_off_task(cid, bytes).await {
                    Ok(Ok(bytes)) => return Ok(bytes),
                    Ok(Err(e)) => {
                        bad.store(true, Ordering::Relaxed);
                        reasons.push(format!("{source}: {e}"));
                    }
                    Err(stopped) => {
                        reasons.push(format!("{source}: verification stopped: {stopped}"))
                    }
                },
                Answer::NotFound => {
                    missing += 1;
                    reasons.push(format!("{source}: not found"));
                }
                Answer::TooLarge => {
                    too_large = true;
                    reasons.push(format!("{source}: over {limit} bytes"));
                }
                Answer::Failed(why) => reasons.push(format!("{source}: {why}")),
            }
        }
        if missing == self.sources.len() {
            Err(FetchError::NotFound { cid: *cid })
        } else if too_large && missing + 1 == self.sources.len() {
            Err(FetchError::TooLarge {
                cid: *cid,
                limit,
                size: None,
            })
        } else {
            Err(FetchError::Unavailable { cid: *cid, reasons })
        }
    }

    async fn ask(&self, source: &Source, cid: &Cid, limit: u64) -> Answer {
        let request = match source {
            Source::Local(store) => {
                return match store.get_block_limited(cid, limit) {
                    Ok(None) => Answer::NotFound,
                    Ok(Some((_, true))) => Answer::TooLarge,
                    Ok(Some((bytes, false))) => Answer::Found(bytes),
                    Err(e) => Answer::Failed(e.to_string()),
                };
            }
            Source::Kubo(base) => self.http.post(format!(
                "{}/api/v0/block/get?arg={cid}",
                base.trim_end_matches('/')
            )),
            Source::Gateway(base) => self
                .http
                .get(format!(
                    "{}/ipfs/{cid}?format=raw",
                    base.trim_end_matches('/')
                ))
                .header(reqwest::header::ACCEPT, "application/vnd.ipld.raw"),
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(e.to_string()),
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Answer::NotFound;
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            // Kubo answers a missing block with 500 and a "not found" message.
            if matches!(source, Source::Kubo(_)) && body.to_lowercase().contains("not found") {
                return Answer::NotFound;
            }
            return Answer::Failed(format!("HTTP {status}"));
        }
        read_limited(response, limit).await
    }
}

/// Blocks at least this large are hashed on the blocking pool, so that several blocks are verified at
/// once (on every core) while the fetch task keeps downloading.
const VERIFY_OFF_TASK_BYTES: usize = 64 << 10;

async fn verify_off_task(
    cid: &Cid,
    bytes: Bytes,
) -> Result<Result<Bytes, BlockError>, tokio::task::JoinError> {
    if bytes.len() < VERIFY_OFF_TASK_BYTES {
        return Ok(verify(cid, &bytes).map(|()| bytes));
    }
    let cid = *cid;
    tokio::task::spawn_blocking(move || verify(&cid, &bytes).map(|()| bytes)).await
}

/// Reads a body, giving up as soon as it passes `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Answer {
    match response.content_length() {
        Some(len) if len > limit => return Answer::TooLarge,
        // the length is known and allowed: let hyper collect the body (hyper stops at the length)
        Some(_) => {
            return response
                .bytes()
                .await
                .map_or_else(|e| Answer::Failed(e.to_string()), Answer::Found);
        }
        None => {}
    }
    let mut buf = BytesMut::with_capacity(response.content_length().unwrap_or(0) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (buf.len() + chunk.len()) as u64 > limit {
                    return Answer::TooLarge;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Answer::Found(buf.freeze()),
            Err(e) => return Answer::Failed(e.to_string()),
        }
    }
}

/// Kubo's answer to `/api/v0/add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResponse {
    /// File name as given.
    #[serde(rename = "Name")]
    pub name: String,
    /// Root CID.
    #[serde(rename = "Hash")]
    pub hash: String,
    /// Cumulative DAG size, as a decimal string.
    #[serde(rename = "Size")]
    pub size: String,
}

/// A client for a remote node's Kubo RPC (`/api/v0/add`); works with Kubo and the embedded node.
#[derive(Debug, Clone)]
pub struct KuboClient {
    base: String,
    http: reqwest::Client,
}

impl KuboClient {
    /// A client for the RPC at `base`, e.g. `http://127.0.0.1:5001`.
    pub fn new(base: impl Into<String>) -> Self {
        KuboClient {
            base: base.into().trim_end_matches('/').to_string(),
            http: khachapuri_tls::http(),
        }
    }

    /// Adds `data` as a file (`cid-version=1`, Kubo layout) and checks that the node reports the
    /// CID computed locally for the same bytes.
    pub async fn add(&self, name: &str, data: Bytes) -> Result<Cid, FetchError> {
        self.add_with_progress(name, data, |_| {}).await
    }

    /// [`KuboClient::add`], calling `sent` with the bytes handed to the connection so far (for a
    /// progress bar) as the upload goes.
    pub async fn add_with_progress(
        &self,
        name: &str,
        data: Bytes,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Cid, FetchError> {
        const CHUNK: usize = 64 << 10;
        let expected = cid_for(&data);
        let total = data.len() as u64;
        let chunks: Vec<Bytes> = (0..data.len())
            .step_by(CHUNK)
            .map(|at| data.slice(at..(at + CHUNK).min(data.len())))
            .collect();
        let mut done = 0u64;
        let body = futures::stream::iter(chunks).map(move |chunk| {
            done += chunk.len() as u64;
            sent(done);
            Ok::<_, std::io::Error>(chunk)
        });
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), total)
                .file_name(name.to_string())
                .mime_str("application/octet-stream")
                .map_err(|e| FetchError::Remote(e.to_string()))?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let url = format!(
            "{}/api/v0/add?cid-version=1&raw-leaves=true&pin=true",
            self.base
        );
        let response = self
            .http
            .post(url)
            .multipart(form)
            .send()
            .await
            .map_err(|e| FetchError::Remote(e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| FetchError::Remote(e.to_string()))?;
        if !status.is_success() {
            return Err(FetchError::Remote(format!(
                "add answered HTTP {status}: {body}"
            )));
        }
        let last = body
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let answer: AddResponse = serde_json::from_str(last)
            .map_err(|e| FetchError::Remote(format!("bad add answer {last:?}: {e}")))?;
        let cid = crate::block::parse_cid(&answer.hash)?;
        if cid != expected {
            return Err(FetchError::Remote(format!(
                "node stored {cid}, expected {expected}"
            )));
        }
        Ok(cid)
    }
}
