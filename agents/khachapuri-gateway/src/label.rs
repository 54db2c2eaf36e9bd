//! Where the gateway finds a provider's label in a request (the label itself is
//! [`khachapuri_protocol::Label`]).

pub use khachapuri_protocol::label::{InvalidLabel, Label};

/// Where a request names its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// `Host: {label}.{base-domain}`: the whole path goes to the provider.
    Host(String),
    /// `/{label}/rest...` on any other host: the provider gets `/rest...`.
    Path {
        /// The first path segment (not yet validated).
        label: String,
        /// The path without the `/{label}` prefix, always starting with `/`.
        rest: String,
    },
    /// Neither: the request names no provider (e.g. `/` on the base domain).
    None,
}

/// Finds the label in a request: from the Host header (lower-cased, port dropped) when it ends in
/// `.{base_domain}`, else from the first path segment. Validation is left to the caller, so that a bad
/// label can be answered with 400 rather than 404.
pub fn addressing(host: Option<&str>, base_domain: Option<&str>, path: &str) -> Addressing {
    if let (Some(host), Some(base)) = (host, base_domain) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = strip_port(&host);
        let base = base.trim_matches('.').to_ascii_lowercase();
        if let Some(sub) = host
            .strip_suffix(base.as_str())
            .and_then(|s| s.strip_suffix('.'))
        {
            return Addressing::Host(sub.to_owned());
        }
    }
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Addressing::None;
    }
    let (label, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    };
    Addressing::Path {
        label: label.to_owned(),
        rest: rest.to_owned(),
    }
}

fn strip_port(host: &str) -> &str {
    // `[::1]:80` keeps its brackets; `name:80` loses the port.
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_mode_lowercases_and_drops_the_port() {
        let a = addressing(
            Some("Alice.Khachapuri.XYZ:8080"),
            Some("khachapuri.xyz"),
            "/bafy?x=1",
        );
        assert_eq!(a, Addressing::Host("alice".into()));
        // A host that merely ends with the base domain's letters is not a subdomain.
        let a = addressing(Some("evilkhachapuri.xyz"), Some("khachapuri.xyz"), "/bob/x");
        assert_eq!(
            a,
            Addressing::Path {
                label: "bob".into(),
                rest: "/x".into()
            }
        );
    }

    #[test]
    fn path_mode_strips_the_label() {
        assert_eq!(
            addressing(Some("127.0.0.1:9"), Some("localhost"), "/alice/bafy/x"),
            Addressing::Path {
                label: "alice".into(),
                rest: "/bafy/x".into()
            }
        );
        assert_eq!(
            addressing(None, None, "/alice"),
            Addressing::Path {
                label: "alice".into(),
                rest: "/".into()
            }
        );
        assert_eq!(addressing(None, None, "/"), Addressing::None);
    }
}
