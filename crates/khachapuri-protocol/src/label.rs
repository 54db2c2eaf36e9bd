//! Provider labels (`alice` in `alice.khachapuri.xyz`): the one validator every component shares, the same
//! rules as the Registry contract's `LabelLib` (docs/PROTOCOL.md, "2. Contracts", Registry).

use std::fmt;

use alloy::primitives::{B256, keccak256};

/// A provider label, valid as the Registry contract accepts it: `[a-z0-9-]`, 1..63 bytes, no leading
/// or trailing `-`, no `--` at bytes 3-4 (`xn--` punycode), not a reserved infrastructure label (`www`,
/// `api`, ...). See [`validate_label`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

/// Why a string is not a [`Label`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label `{label}`: {reason}")]
pub struct InvalidLabel {
    /// The string given.
    pub label: String,
    /// What is wrong with it, without the label: e.g. "`www` is reserved for infrastructure; choose
    /// another label".
    pub reason: &'static str,
}

impl Label {
    /// Validates `s` exactly as the Registry does (no case folding: `Alice` is refused).
    pub fn new(s: &str) -> Result<Self, InvalidLabel> {
        validate_label(s).map(|()| Self(s.to_owned()))
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

/// `(label, the sentence refusing it)` for each reserved label.
macro_rules! reserved {
    ($($label:literal),* $(,)?) => {
        [$(($label, concat!("`", $label, "` is reserved for infrastructure; choose another label"))),*]
    };
}

/// Labels the Registry refuses (`ReservedLabel`) because they name the service's own hosts, each with the
/// sentence that says so. `dev` is not one: the local network's provider registers it.
const RESERVED_LABELS: [(&str, &str); 10] = reserved![
    "www", "api", "gateway", "tunnel", "admin", "app", "docs", "mail", "ipfs", "status"
];

/// Checks `label` exactly like the Registry (`LabelLib`): `[a-z0-9-]`, 1..63 bytes, no leading or trailing
/// `-`, not `-` at both the 3rd and 4th bytes (IDNA's reserved labels, RFC 5891 §4.2.3.1: `xn--` punycode
/// shows in a browser as a look-alike of another name), and not one of the reserved infrastructure labels
/// (`www`, `api`, `gateway`, `tunnel`, `admin`, `app`, `docs`, `mail`, `ipfs`, `status`). The vectors in
/// `test/vectors/labels.json` test both sides.
pub fn validate_label(label: &str) -> Result<(), InvalidLabel> {
    let invalid = |reason| {
        Err(InvalidLabel {
            label: label.to_owned(),
            reason,
        })
    };
    if label.is_empty() {
        return invalid("it is empty");
    }
    if label.len() > 63 {
        return invalid("it is longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("only lower-case letters, digits and `-` are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return invalid("it must not start or end with `-`");
    }
    if label.get(2..4) == Some("--") {
        return invalid(
            "`xn--…` labels (punycode) and any label with `--` at positions 3–4 are refused",
        );
    }
    if let Some((_, reason)) = RESERVED_LABELS.iter().find(|(l, _)| *l == label) {
        return invalid(reason);
    }
    Ok(())
}

/// The registry key of a label: `keccak256(label)`.
pub fn label_node(label: &str) -> B256 {
    keccak256(label.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_validated_like_the_contract() {
        for ok in [
            "a",
            "alice",
            "a-b",
            "0",
            "x1-2y",
            "x1-2-3",
            "dev",
            &"a".repeat(63),
        ] {
            assert!(validate_label(ok).is_ok() && Label::new(ok).is_ok(), "{ok}");
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
            "a b",
            "_tunnel",
            "xn--80ak6aa92e",
            "ab--c",
            "www",
            "status",
        ] {
            assert!(
                matches!(validate_label(bad), Err(InvalidLabel { .. })) && Label::new(bad).is_err(),
                "{bad}"
            );
        }
        let www = Label::new("www").unwrap_err();
        assert_eq!(
            www.reason,
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

    /// The vectors `test/Registry.t.sol` runs through `Registry.register`: the contract and this validator
    /// refuse the same labels, and a reserved label is refused for being reserved.
    #[test]
    fn labels_agree_with_the_contracts_vectors() {
        #[derive(serde::Deserialize)]
        struct Vectors {
            valid: Vec<String>,
            invalid: Vec<String>,
            reserved: Vec<String>,
        }
        let vectors: Vectors =
            serde_json::from_str(include_str!("../../../test/vectors/labels.json")).unwrap();
        assert!(vectors.valid.len() > 20 && vectors.invalid.len() > 20);
        for ok in &vectors.valid {
            assert!(validate_label(ok).is_ok(), "{ok:?} should be valid");
        }
        let reserved_reason = |label: &str| match validate_label(label) {
            Err(InvalidLabel { reason, .. }) => Some(reason.contains("is reserved")),
            _ => None,
        };
        for bad in &vectors.invalid {
            assert_eq!(
                reserved_reason(bad),
                Some(false),
                "{bad:?} should be invalid"
            );
        }
        for reserved in &vectors.reserved {
            assert_eq!(
                reserved_reason(reserved),
                Some(true),
                "{reserved:?} should be reserved"
            );
        }
        let ours: Vec<&str> = RESERVED_LABELS.iter().map(|(l, _)| *l).collect();
        assert_eq!(ours, vectors.reserved, "the same reserved list as LabelLib");
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            validate_label("www").unwrap_err().to_string(),
            "invalid label `www`: `www` is reserved for infrastructure; choose another label"
        );
        let err = validate_label("xn--80ak6aa92e").unwrap_err().to_string();
        assert!(
            err.contains("`xn--…` labels (punycode)") && err.contains("positions 3–4"),
            "{err}"
        );
    }
}
