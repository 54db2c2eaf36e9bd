//! echo: reflects the request as JSON, with CGI `Status:` and `Content-Type:` headers.
//! A POST answers `201 Created`, anything else `200 OK`.

use std::io::{Read, Write};

use serde_json::{Map, Value, json};

fn main() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let mut body = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut body);
    let headers: Map<String, Value> = std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("HTTP_")
                .map(|h| (h.to_ascii_lowercase().replace('_', "-"), Value::String(v)))
        })
        .collect();
    let method = var("REQUEST_METHOD");
    let reply = json!({
        "method": method,
        "path": var("PATH_INFO"),
        "query": var("QUERY_STRING"),
        "content_type": var("CONTENT_TYPE"),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "args": std::env::args().collect::<Vec<_>>(),
    });
    let status = if method == "POST" {
        "201 Created"
    } else {
        "200 OK"
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "Status: {status}\r\nContent-Type: application/json\r\nX-Echo: 1\r\n\r\n{reply}\n"
    );
}
