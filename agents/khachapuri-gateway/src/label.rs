//! Provider labels (`alice` in `alice.khachapuri.xyz`) and where the gateway finds them in a request.

use std::fmt;

/// A provider label, valid as the Registry contract accepts it: `[a-z0-9-]`, 1..63 bytes, no leading
/// or trailing `-`, no `--` at bytes 3-4 (`xn--` punycode), not a reserved infrastructure label (`www`,
/// `api`, ...). See [`khachapuri_chain::validate_label`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

/// Why a string is not a [`Label`]: the shared validator's sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", refusal(.0))]
pub struct InvalidLabel(pub String);

impl InvalidLabel {
    /// What is wrong with the label, without the label: e.g. "`www` is reserved for infrastructure; choose
    /// another label".
    pub fn reason(&self) -> &'static str {
        match khachapuri_chain::validate_label(&self.0) {
            Err(khachapuri_chain::ChainError::InvalidLabel { reason, .. }) => reason,
            _ => "not a provider label",
        }
    }
}

fn refusal(label: &str) -> String {
    match khachapuri_chain::validate_label(label) {
        Err(e) => e.to_string(),
        Ok(()) => format!("invalid label `{label}`"),
    }
}

impl Label {
    /// Validates `s` exactly as the Registry does (no case folding: `Alice` is refused), with the one
    /// validator every component shares, [`khachapuri_chain::validate_label`].
    pub fn new(s: &str) -> Result<Self, InvalidLabel> {
        if khachapuri_chain::validate_label(s).is_ok() {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidLabel(s.to_owned()))
        }
    }

    /// The label as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Label {
    type Err = InvalidLabel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

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
    fn labels_follow_the_contract() {
        for ok in ["a", "alice", "a-b", "0", "x1-2y", &"a".repeat(63)] {
            assert!(Label::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Alice",
            "a.b",
            "a_b",
            "ä",
            &"a".repeat(64),
            "_tunnel",
            "xn--80ak6aa92e",
            "ab--c",
            "www",
            "status",
        ] {
            assert!(Label::new(bad).is_err(), "{bad}");
        }
        assert!(Label::new("dev").is_ok());
        let www = Label::new("www").unwrap_err();
        assert_eq!(
            www.reason(),
            "`www` is reserved for infrastructure; choose another label"
        );
        assert!(www.to_string().contains("`www` is reserved"), "{www}");
        assert!(
            Label::new("xn--a")
                .unwrap_err()
                .to_string()
                .contains("punycode")
        );
    }

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
