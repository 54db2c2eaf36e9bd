//! Where a provider answers: its Resolver's `server` record (docs/PROTOCOL.md, "2. Contracts", Resolver).

/// The `server` record of a provider reachable only through a gateway's tunnel: `TUNNEL_MARKER` in
/// `contracts/interfaces/IResolver.sol` (a file-level constant, so in no ABI; test/Vectors.t.sol checks
/// the two agree).
pub const TUNNEL_MARKER: &str = "tunnel:";

/// Where a provider's agent answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// A base URL (`https://host:port`, or with a path prefix) a gateway forwards to.
    Url(String),
    /// Reachable only through a gateway's WebSocket tunnel.
    Tunnel,
}

/// A `server` record a gateway cannot forward to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server {record:?} is neither http(s)://host nor {TUNNEL_MARKER:?}")]
pub struct InvalidServer {
    /// The record.
    pub record: String,
}

impl Server {
    /// The on-chain `server` record: the URL, or [`TUNNEL_MARKER`].
    pub fn record(&self) -> &str {
        match self {
            Self::Url(url) => url,
            Self::Tunnel => TUNNEL_MARKER,
        }
    }

    /// Reads an on-chain `server` record as it is (any text that is not the marker is a URL).
    pub fn from_record(record: &str) -> Self {
        if record == TUNNEL_MARKER {
            Self::Tunnel
        } else {
            Self::Url(record.to_owned())
        }
    }

    /// Reads a record a gateway can forward to: [`TUNNEL_MARKER`], or an `http(s)://host` base URL (its
    /// trailing `/` dropped).
    pub fn parse(record: &str) -> Result<Self, InvalidServer> {
        if record == TUNNEL_MARKER {
            return Ok(Self::Tunnel);
        }
        let invalid = || InvalidServer {
            record: record.to_owned(),
        };
        let uri: http::Uri = record.parse().map_err(|_| invalid())?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => {
                Ok(Self::Url(record.trim_end_matches('/').to_owned()))
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_gateways_take_only_urls_and_the_marker() {
        assert_eq!(Server::from_record("tunnel:"), Server::Tunnel);
        assert_eq!(Server::Tunnel.record(), "tunnel:");
        let url = Server::Url("https://alice.example:8443".into());
        assert_eq!(Server::from_record(url.record()), url);
        assert_eq!(
            Server::parse("http://127.0.0.1:9/").unwrap(),
            Server::Url("http://127.0.0.1:9".into())
        );
        assert_eq!(Server::parse("tunnel:").unwrap(), Server::Tunnel);
        for bad in ["", "ftp://x", "alice.example", "tunnel", "http://"] {
            assert!(Server::parse(bad).is_err(), "{bad:?}");
        }
    }
}
