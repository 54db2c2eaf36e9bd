//! The web console: a static site under `/_console/` (path mode), plus `/_console/config.json`, the
//! settings the console starts from (docs/PROTOCOL.md §10).

use std::path::{Path, PathBuf};

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::proxy::{Body, error_response, full};

/// The console's path prefix (path mode only; on a label's host it belongs to the label).
pub const CONSOLE_PATH: &str = "/_console";

/// The `Content-Security-Policy` of a function's answer in path mode when the gateway serves a console:
/// its page (if it is one) runs in an opaque origin of its own, never as the console's.
pub const FUNCTION_SANDBOX: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals";

/// Largest console file served.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// A built console (a directory holding `index.html`) and the configuration it is given.
#[derive(Debug, Clone)]
pub struct ConsoleSite {
    /// The directory served (flat: only its plain files, never a subdirectory).
    pub dir: PathBuf,
    /// What `/_console/config.json` answers.
    pub config: serde_json::Value,
}

/// Why a console cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The directory has no `index.html`.
    #[error("{} is missing: build the console with `make console`", .0.display())]
    MissingIndex(PathBuf),
    /// The deployment JSON names no chain.
    #[error("the deployment has no numeric \"chainId\": pass a deployments/<chainId>.json file")]
    NoChainId,
}

impl ConsoleSite {
    /// The console in `dir` with its configuration:
    /// `{"chainId", "deployment", "rpcUrl", "ipfsApi", "gateway", "providers"}`, where `deployment` is
    /// a `deployments/<chainId>.json` file's JSON, `rpc_url` the public RPC wallets are told to add,
    /// `ipfs_api` a Kubo RPC API the console uploads to, `gateway` the gateway's URL (`None`: the
    /// console's own origin) and `providers` the labels it suggests.
    pub fn new(
        dir: impl Into<PathBuf>,
        deployment: serde_json::Value,
        rpc_url: Option<String>,
        ipfs_api: Option<String>,
        gateway: Option<String>,
        providers: Vec<String>,
    ) -> Result<Self, ConsoleError> {
        let dir = dir.into();
        let index = dir.join("index.html");
        if !index.is_file() {
            return Err(ConsoleError::MissingIndex(index));
        }
        let chain_id = deployment["chainId"]
            .as_u64()
            .ok_or(ConsoleError::NoChainId)?;
        let config = serde_json::json!({
            "chainId": chain_id,
            "deployment": deployment,
            "rpcUrl": rpc_url,
            "ipfsApi": ipfs_api,
            "gateway": gateway,
            "providers": providers,
        });
        Ok(Self { dir, config })
    }
}

/// Answers a request whose path starts with [`CONSOLE_PATH`]; `site` is `None` when this gateway
/// serves no console.
pub async fn serve(site: Option<&ConsoleSite>, method: &Method, path: &str) -> Response<Body> {
    let Some(site) = site else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no_console",
            "no web console at /_console/",
            "this gateway serves no console (start it with --console DIR)",
        );
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("the console answers GET and HEAD, not {method}"),
            "load the console in a browser",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(name) = path.strip_prefix(CONSOLE_PATH) else {
        return not_found(path);
    };
    let name = match name {
        "" => return redirect(StatusCode::PERMANENT_REDIRECT, "/_console/"),
        "/" => "index.html",
        name => name.strip_prefix('/').unwrap_or(name),
    };
    if name == "config.json" {
        let mut response = Response::new(full(site.config.to_string()));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        protect(h);
        return response;
    }
    if !is_plain_name(name) {
        return not_found(path);
    }
    match read_file(&site.dir.join(name)).await {
        Ok(Some(bytes)) => {
            let mut response = Response::new(full(bytes));
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            protect(h);
            response
        }
        Ok(None) => not_found(path),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "console_unreadable",
            &format!("cannot read the console file {name}: {e}"),
            "the gateway's operator must rebuild the console (`make console`) or fix its permissions",
        ),
    }
}

/// Where a request for `/` goes when the gateway serves a console.
pub fn redirect_to_console() -> Response<Body> {
    redirect(StatusCode::SEE_OTHER, "/_console/")
}

fn redirect(status: StatusCode, location: &'static str) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

/// What every console file carries: its type is never sniffed, and no other page may frame it (a console
/// in a frame could be clicked through by the page around it).
fn protect(h: &mut http::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
}

fn not_found(path: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("the console has no file {path}"),
        "open /_console/",
    )
}

/// A single file name: `[A-Za-z0-9._-]+`, not starting with `.` (no path, no hidden file, no `..`).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The file's bytes; `None` when it is not a regular file (missing, a directory, a symlink).
async fn read_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let meta = match tokio::fs::symlink_metadata(path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    tokio::fs::read(path).await.map(Some)
}

fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
    match extension.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for ok in ["index.html", "app-1.2_x.js", "a"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in [
            "", ".hidden", "..", "../x", "a/b", "a\\b", "%2e%2e", "a b", "é.js",
        ] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.wasm"), "application/wasm");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
