//! What `call` and `run` share: the request flags, spelled like curl's, and the answer, printed the same
//! way whether a provider or the local runtime gave it.

use std::io::{Read, Write};

use anyhow::{Context, anyhow, bail};
use khachapuri_runtime::Response;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The request, like curl: `-d`, `-X`, `-H`, and `-i` for the answer.
#[derive(clap::Args, Debug)]
pub struct RequestArgs {
    /// The request body, like curl's --data-binary: text, `@file`, or `@-` for stdin.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// The method [default: POST with --data, else GET].
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Print the status line and the response headers before the body, like curl -i.
    #[arg(short = 'i', long)]
    pub include: bool,
}

impl RequestArgs {
    /// The body: `-d` as text, a file's bytes (`@file`) or stdin's (`@-`).
    pub fn body(&self) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match self.data.as_deref() {
            None => None,
            Some("@-") => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the body from stdin")?;
                Some(buf)
            }
            Some(d) => match d.strip_prefix('@') {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("--data @{path}: cannot read it"))?,
                ),
                None => Some(d.as_bytes().to_vec()),
            },
        })
    }

    /// `-X`, else POST when there is a body and GET when there is none.
    pub fn method(&self, has_body: bool) -> anyhow::Result<Method> {
        match &self.method {
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| anyhow!("-X `{m}` is not an HTTP method")),
            None if has_body => Ok(Method::POST),
            None => Ok(Method::GET),
        }
    }

    /// The `-H` headers as (name, value).
    pub fn headers(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.headers
            .iter()
            .map(|header| match header.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    Ok((name.trim().to_owned(), value.trim().to_owned()))
                }
                _ => bail!(
                    "-H `{header}`: write `Name: value`, e.g. -H 'content-type: application/json'"
                ),
            })
            .collect()
    }
}

/// An answer, from a provider or from the local runtime (whose response it holds as the runtime made it).
pub struct Answer {
    /// `HTTP/1.1`, ...
    pub version: String,
    /// Status, headers in order, body.
    pub response: Response,
}

impl Answer {
    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.response.status).unwrap_or(StatusCode::OK)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.header(name)
    }

    /// The JSON scripts get, success or not: status, content type, headers, body.
    pub fn to_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .response
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into()))
            .collect();
        json!({
            "status": self.response.status,
            "contentType": self.header("content-type"),
            "headers": headers,
            "body": String::from_utf8_lossy(&self.response.body),
        })
    }

    /// Prints what curl would: with `include`, the status line and headers first; then the body.
    pub fn print(&self, include: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if include {
            writeln!(out, "{} {}", self.version, self.status())?;
            for (name, value) in &self.response.headers {
                writeln!(out, "{name}: {value}")?;
            }
            writeln!(out)?;
        }
        out.write_all(&self.response.body)?;
        out.flush()?;
        Ok(())
    }

    /// Why a non-2xx answer failed ([`failure`]).
    pub fn failure(&self) -> (String, String, Option<String>) {
        failure(&self.response.body)
    }
}

/// Why a non-2xx answer failed, from the protocol's error body `{error, message, hint}` if it is one,
/// else its text: (code, message, hint).
pub fn failure(body: &[u8]) -> (String, String, Option<String>) {
    match serde_json::from_slice::<khachapuri_protocol::http::ErrorBody>(body) {
        Ok(why) => (why.error, why.message, why.hint),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(body).trim().to_owned(),
            None,
        ),
    }
}
