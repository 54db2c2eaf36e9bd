//! The embedded node's HTTP server: the trustless gateway (`GET /ipfs/{cid}` with
//! `format=raw|car`) and the Kubo RPC calls `add`, `cat` and `block/get`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cid::Cid;
use khachapuri_protocol::http::Cors;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::block::{BlockError, check_supported, parse_cid};
use crate::car::{DagWalk, header as car_header, section};
use crate::fetch::AddResponse;
use crate::file::{FileChunks, file_size};
use crate::importer::{BlockSink, Importer};
use crate::store::FsBlockstore;

/// Largest upload `/api/v0/add` accepts.
pub const MAX_ADD_BYTES: usize = 4 << 30;

const RAW_TYPE: &str = "application/vnd.ipld.raw";
const CAR_TYPE: &str = "application/vnd.ipld.car";

/// The routes of the embedded node over `store`.
pub fn router(store: FsBlockstore) -> Router {
    Router::new()
        .route("/ipfs/{cid}", get(gateway))
        .route("/api/v0/add", post(add))
        .route("/api/v0/cat", post(cat))
        .route("/api/v0/block/get", post(block_get))
        .layer(DefaultBodyLimit::max(MAX_ADD_BYTES))
        .with_state(store)
}

/// `router` guarded against web pages, as Kubo guards its RPC API: a request to `/api/` that carries an
/// `Origin` other than the one `cors` allows is refused (403) before it runs. A multipart POST is a CORS
/// "simple" request, sent without a preflight, so reading the answer is not all a page could do: it could
/// add blocks. With `cors`, the allowed origin also gets preflights answered and answers it can read.
fn guarded(router: Router, cors: Option<Cors>) -> Router {
    let cors = Arc::new(cors);
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let cors = cors.clone();
            async move {
                let origin = req.headers().get(header::ORIGIN).cloned();
                let allowed = |origin: &HeaderValue| {
                    cors.as_ref()
                        .as_ref()
                        .and_then(|c| c.allow_origin.as_deref())
                        .is_some_and(|a| a == "*" || a.as_bytes() == origin.as_bytes())
                };
                if req.uri().path().starts_with("/api/")
                    && let Some(origin) = origin.filter(|o| !allowed(o))
                {
                    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
                    return ApiError(
                        StatusCode::FORBIDDEN,
                        format!(
                            "this node's RPC API takes no requests from the web page at {origin}; its operator \
                             allows one origin (khachapuri dev: the gateway's, where the console is)"
                        ),
                    )
                    .into_response();
                }
                let Some(cors) = cors.as_ref() else {
                    return next.run(req).await;
                };
                if Cors::is_preflight(req.method(), req.headers()) {
                    return cors.preflight(req.headers()).map(|()| Body::empty());
                }
                let mut response = next.run(req).await;
                cors.decorate(response.headers_mut());
                response
            }
        },
    ))
}

/// A running embedded node; it stops when dropped or on [`Node::stop`].
#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// Serves `store` on `127.0.0.1:port` (`0` picks a free port), to its own origin only (no CORS, as
    /// Kubo by default).
    pub async fn start(store: FsBlockstore, port: u16) -> std::io::Result<Node> {
        Self::bind(store, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Like [`Node::start`], also to the browser origins `cors` allows (e.g. a web console uploading
    /// with `/api/v0/add`): preflights are answered, answers carry `Access-Control-Allow-Origin`.
    pub async fn start_with_cors(
        store: FsBlockstore,
        port: u16,
        cors: Cors,
    ) -> std::io::Result<Node> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self::serve(guarded(router(store), Some(cors)), addr).await
    }

    /// Serves `store` on `addr`.
    pub async fn bind(store: FsBlockstore, addr: SocketAddr) -> std::io::Result<Node> {
        Self::serve(guarded(router(store), None), addr).await
    }

    async fn serve(app: Router, addr: SocketAddr) -> std::io::Result<Node> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(Node {
            addr,
            shutdown: Some(tx),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, usable as a gateway or Kubo RPC base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Errors as Kubo shapes them: `{"Message", "Code", "Type"}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "Message": self.1, "Code": 0, "Type": "error" });
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<BlockError> for ApiError {
    fn from(e: BlockError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        std::io::ErrorKind::InvalidData => ApiError(StatusCode::NOT_IMPLEMENTED, e.to_string()),
        _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn parse_supported(s: &str) -> Result<Cid, ApiError> {
    let cid = parse_cid(s)?;
    check_supported(&cid)?;
    Ok(cid)
}

#[derive(Deserialize)]
struct GatewayQuery {
    format: Option<String>,
}

enum Format {
    Raw,
    Car,
    File,
}

fn pick_format(query: &GatewayQuery, headers: &HeaderMap) -> Result<Format, ApiError> {
    match query.format.as_deref() {
        Some("raw") => return Ok(Format::Raw),
        Some("car") => return Ok(Format::Car),
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unsupported format {other:?}"),
            ));
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(if accept.contains(RAW_TYPE) {
        Format::Raw
    } else if accept.contains(CAR_TYPE) {
        Format::Car
    } else {
        Format::File
    })
}

fn immutable(
    cid: &Cid,
    content_type: &'static str,
    suffix: &str,
) -> [(header::HeaderName, HeaderValue); 4] {
    let etag = HeaderValue::from_str(&format!("\"{cid}{suffix}\""))
        .unwrap_or(HeaderValue::from_static("\"\""));
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=29030400, immutable"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::ETAG, etag),
    ]
}

/// `GET|HEAD /ipfs/{cid}` (HEAD is answered by axum from the GET route, without a body).
async fn gateway(
    State(store): State<FsBlockstore>,
    Path(cid): Path<String>,
    Query(query): Query<GatewayQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = pick_format(&query, &headers)?;
    let cid = parse_supported(&cid)?;
    match format {
        Format::Raw => {
            let block = store.get_block(&cid).map_err(io_error)?;
            let block = block
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("block {cid} not found")))?;
            Ok((immutable(&cid, RAW_TYPE, ".raw"), block).into_response())
        }
        Format::Car => {
            if !store.has(&cid) {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("block {cid} not found"),
                ));
            }
            let head = futures::stream::once(async move {
                Ok::<_, std::io::Error>(Bytes::from(car_header(&cid)))
            });
            let blocks = futures::stream::iter(DagWalk::new(store, cid).map(|b| {
                b.map(|(c, data)| Bytes::from(section(&c, &data)))
                    .map_err(std::io::Error::other)
            }));
            let body = Body::from_stream(futures::StreamExt::chain(head, blocks));
            let content_type = "application/vnd.ipld.car; version=1; order=dfs; dups=y";
            let mut response = (immutable(&cid, CAR_TYPE, ".car"), body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            Ok(response)
        }
        Format::File => file_response(store, cid, "application/octet-stream"),
    }
}

fn file_response(
    store: FsBlockstore,
    cid: Cid,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let size = file_size(&store, &cid).map_err(io_error)?;
    let body = Body::from_stream(futures::stream::iter(FileChunks::new(store, cid)));
    let mut response = (immutable(&cid, content_type, ""), body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

#[derive(Deserialize)]
struct ArgQuery {
    arg: Option<String>,
}

fn arg_cid(query: &ArgQuery) -> Result<Cid, ApiError> {
    let arg = query.arg.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "argument \"arg\" is required".into(),
        )
    })?;
    parse_supported(arg)
}

/// `POST /api/v0/cat?arg=CID`: the file's bytes.
async fn cat(
    State(store): State<FsBlockstore>,
    Query(query): Query<ArgQuery>,
) -> Result<Response, ApiError> {
    let cid = arg_cid(&query)?;
    file_response(store, cid, "text/plain")
}

/// `POST /api/v0/block/get?arg=CID`: one raw block.
async fn block_get(
    State(store): State<FsBlockstore>,
    Query(query): Query<ArgQuery>,
) -> Result<Response, ApiError> {
    let cid = arg_cid(&query)?;
    match store.get_block(&cid).map_err(io_error)? {
        Some(block) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], block).into_response())
        }
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("block {cid} not found"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct AddQuery {
    cid_version: Option<u8>,
    raw_leaves: Option<bool>,
    chunker: Option<String>,
    hash: Option<String>,
    only_hash: Option<bool>,
}

/// Stores blocks unless `only-hash` was asked for.
struct AddSink<'a> {
    store: &'a FsBlockstore,
    write: bool,
}

impl BlockSink for AddSink<'_> {
    fn put_block(&mut self, cid: &Cid, data: Bytes) -> std::io::Result<()> {
        if self.write {
            self.store.put_block(cid, &data)
        } else {
            Ok(())
        }
    }
}

/// `POST /api/v0/add`: imports each multipart file (Kubo layout, CIDv1) and answers one JSON
/// line per file, as Kubo does.
async fn add(
    State(store): State<FsBlockstore>,
    Query(query): Query<AddQuery>,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    let unsupported = |what: &str| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported {what}: this node only adds CIDv1, raw leaves, size-262144, sha2-256"
            ),
        )
    };
    if query.cid_version.is_some_and(|v| v != 1) {
        return Err(unsupported("cid-version"));
    }
    if query.raw_leaves == Some(false) {
        return Err(unsupported("raw-leaves=false"));
    }
    if query.chunker.as_deref().is_some_and(|c| c != "size-262144") {
        return Err(unsupported("chunker"));
    }
    if query.hash.as_deref().is_some_and(|h| h != "sha2-256") {
        return Err(unsupported("hash"));
    }
    let write = !query.only_hash.unwrap_or(false);
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    };
    let mut lines = String::new();
    while let Some(mut field) = form.next_field().await.map_err(bad_form)? {
        let name = field
            .file_name()
            .or(field.name())
            .unwrap_or_default()
            .to_string();
        let mut importer = Importer::new(AddSink {
            store: &store,
            write,
        });
        while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
            importer.write(&chunk).map_err(io_error)?;
        }
        let (imported, _) = importer.finish().map_err(io_error)?;
        let name = if name.is_empty() {
            imported.cid.to_string()
        } else {
            name
        };
        let answer = AddResponse {
            name,
            hash: imported.cid.to_string(),
            size: imported.dag_size.to_string(),
        };
        lines.push_str(
            &serde_json::to_string(&answer)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        );
        lines.push('\n');
    }
    if lines.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "no file in the multipart form".into(),
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-chunked-output"), "1"),
        ],
        lines,
    )
        .into_response())
}
