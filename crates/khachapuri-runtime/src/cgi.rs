//! The curl interface, CGI/WAGI style: a request becomes stdin + environment, stdout becomes
//! the response (optionally led by CGI headers and a blank line).

use std::time::Duration;

use crate::error::{Error, Result};

/// A request to a program, as the provider received it over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// HTTP method, e.g. `GET` (becomes `REQUEST_METHOD`).
    pub method: String,
    /// Path below the program's route, e.g. `/items/7` (becomes `PATH_INFO`).
    pub path_info: String,
    /// Query string without the `?` (becomes `QUERY_STRING`).
    pub query_string: String,
    /// Request headers in order; `Content-Type` and `Content-Length` become `CONTENT_TYPE` and
    /// `CONTENT_LENGTH`, every other one `HTTP_<NAME>` (upper-cased, `-` turned into `_`).
    pub headers: Vec<(String, String)>,
    /// Request body (the program's stdin).
    pub body: Vec<u8>,
    /// Environment from the program's spec; the CGI variables above take precedence over it.
    pub env: Vec<(String, String)>,
}

/// What a program answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status: from a CGI `Status:` header, 302 with only `Location:`, otherwise 200.
    pub status: u16,
    /// Response headers, `Content-Type` always among them.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Measurements of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Wall time from instantiation to the end of `_start`.
    pub duration: Duration,
    /// Largest linear memory the program reached, in bytes.
    pub peak_memory: usize,
}

/// A finished run: the response for the caller, stderr and stats for the provider only.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The response to send back.
    pub response: Response,
    /// What the program wrote to stderr (truncated at the cap): for the provider's log, never
    /// for the caller.
    pub stderr: Vec<u8>,
    /// Measurements.
    pub stats: Stats,
}

/// The environment a program sees for `req`: the spec's env, then the CGI variables.
pub fn environment(req: &Request) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| {
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    };
    for (k, v) in &req.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(Error::BadRequest(format!(
                "invalid environment variable {k:?}"
            )));
        }
        set(k.clone(), v.clone());
    }
    set("GATEWAY_INTERFACE".into(), "CGI/1.1".into());
    set("SERVER_PROTOCOL".into(), "HTTP/1.1".into());
    set("REQUEST_METHOD".into(), req.method.clone());
    set("PATH_INFO".into(), req.path_info.clone());
    set("QUERY_STRING".into(), req.query_string.clone());
    set("CONTENT_LENGTH".into(), req.body.len().to_string());
    let mut content_type = String::new();
    let mut http: Vec<(String, String)> = Vec::new();
    for (name, value) in &req.headers {
        if value.contains('\0') || !name.bytes().all(is_token_byte) || name.is_empty() {
            return Err(Error::BadRequest(format!("invalid header {name:?}")));
        }
        if name.eq_ignore_ascii_case("content-type") {
            content_type = value.clone();
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            continue; // CONTENT_LENGTH is the body we actually pass.
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match http.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => http.push((key, value.clone())),
        }
    }
    set("CONTENT_TYPE".into(), content_type);
    for (k, v) in http {
        set(k, v);
    }
    Ok(env)
}

/// HTTP token characters (RFC 9110 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Longest header block looked for at the start of stdout.
const MAX_HEADER_BLOCK: usize = 16 * 1024;

/// Turn a program's stdout into a response.
///
/// stdout is led by a header block when it starts with one or more `Name: value` lines (LF or
/// CRLF) followed by an empty line, and `Status:` (if present) holds a code from 100 to 599.
/// Anything else is all body, status 200. Without a `Content-Type`, the default is
/// `text/plain; charset=utf-8` for a UTF-8 body and `application/octet-stream` otherwise.
pub fn parse_output(stdout: Vec<u8>) -> Response {
    match parse_header_block(&stdout) {
        Some(HeaderBlock {
            status,
            headers,
            body_start,
        }) => {
            let body = stdout[body_start..].to_vec();
            finish(status, headers, body)
        }
        None => finish(200, Vec::new(), stdout),
    }
}

fn finish(status: u16, mut headers: Vec<(String, String)>, body: Vec<u8>) -> Response {
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        let default = if std::str::from_utf8(&body).is_ok() {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        headers.push(("Content-Type".into(), default.into()));
    }
    Response {
        status,
        headers,
        body,
    }
}

/// A header block that leads stdout.
struct HeaderBlock {
    status: u16,
    headers: Vec<(String, String)>,
    /// Where the body starts.
    body_start: usize,
}

/// The header block stdout starts with, if it starts with a valid one.
fn parse_header_block(out: &[u8]) -> Option<HeaderBlock> {
    let window = &out[..out.len().min(MAX_HEADER_BLOCK)];
    let mut headers = Vec::new();
    let mut status = None;
    let mut pos = 0;
    loop {
        let rel_end = window[pos..].iter().position(|&b| b == b'\n')?;
        let line_end = pos + rel_end;
        let line = window[pos..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&window[pos..line_end]);
        pos = line_end + 1;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return None;
        }
        let value = value.trim();
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return None;
        }
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?;
            let code: u16 = code.parse().ok().filter(|c| (100..=599).contains(c))?;
            status = Some(code);
        } else {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    if headers.is_empty() && status.is_none() {
        return None; // A leading blank line is body, not an empty header block.
    }
    let located = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("location"));
    let status = status.unwrap_or(if located { 302 } else { 200 });
    Some(HeaderBlock {
        status,
        headers,
        body_start: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_with_status() {
        let r = parse_output(
            b"Status: 201 Created\r\nContent-Type: application/json\r\nX-A: 1\r\n\r\n{}".to_vec(),
        );
        assert_eq!(r.status, 201);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn plain_output_is_body() {
        for out in [
            &b"hello world\n"[..],
            b"hello: world",
            b"not a header\n\nbody",
            b"\nbody",
            b"Status: abc\n\n",
        ] {
            let r = parse_output(out.to_vec());
            assert_eq!(r.status, 200, "{out:?}");
            assert_eq!(r.body, out, "{out:?}");
            assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
        }
        assert_eq!(
            parse_output(vec![0xff, 0]).header("content-type"),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn location_means_redirect() {
        let r = parse_output(b"Location: /x\n\n".to_vec());
        assert_eq!(r.status, 302);
        assert!(r.body.is_empty());
    }

    #[test]
    fn cgi_environment() {
        let req = Request {
            method: "POST".into(),
            path_info: "/a/b".into(),
            query_string: "n=3".into(),
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-Trace-Id".into(), "7".into()),
                ("Accept".into(), "a".into()),
                ("accept".into(), "b".into()),
            ],
            body: b"abc".to_vec(),
            env: vec![
                ("GREETING".into(), "Hi".into()),
                ("REQUEST_METHOD".into(), "spoof".into()),
            ],
        };
        let env = environment(&req).expect("valid request");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GREETING"), Some("Hi"));
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("PATH_INFO"), Some("/a/b"));
        assert_eq!(get("QUERY_STRING"), Some("n=3"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(get("HTTP_X_TRACE_ID"), Some("7"));
        assert_eq!(get("HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);

        let bad = Request {
            env: vec![("A=B".into(), "c".into())],
            ..Request::default()
        };
        assert!(matches!(environment(&bad), Err(Error::BadRequest(_))));
    }
}

/// A program's stdout or stderr in memory, shared by the engines' pipe types (wasmtime's here, wasmer's in
/// khachapuri-runtime-wasmer): keeps at most `cap` bytes
/// and remembers whether more were written. What happens past the cap (trap or drop) is the engine's.
#[derive(Debug, Clone)]
pub struct BoundedBuffer {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    cap: usize,
    overflow: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BoundedBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Default::default(),
            cap,
            overflow: Default::default(),
        }
    }

    /// The cap, bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a write went past the cap.
    pub fn overflowed(&self) -> bool {
        self.overflow.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes what was written.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Appends what fits; `false` if some bytes did not fit.
    pub fn append(&self, bytes: &[u8]) -> bool {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap - buf.len();
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            self.overflow
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        true
    }
}
