//! One TLS client policy for every Khachapuri client: the chain RPC, IPFS sources, the gateway's
//! forwarding, provider tunnels (`wss://`) and `khachapuri call`: [`client_config`] for hyper and
//! WebSocket clients, [`http_client`] for `reqwest` ones.
//!
//! - rustls with the ring provider, TLS 1.2 and 1.3.
//! - Trusted roots: Mozilla's (the `webpki-roots` bundle, compiled in, so a fresh machine without a CA
//!   bundle still verifies public certificates), plus every PEM certificate in the file named by
//!   `KHACHAPURI_CA_CERT`, for a private CA or a test network.
//!
//! Nothing here accepts an unverified certificate: a server the roots do not vouch for fails the
//! handshake, and the caller reports it.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject};

/// Names a PEM file of extra root certificates to trust.
pub const CA_ENV: &str = "KHACHAPURI_CA_CERT";

/// Why extra roots could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM holds no certificate, or a malformed one.
    #[error(
        "no usable certificate in the PEM ({0}); give a file of `-----BEGIN CERTIFICATE-----` blocks"
    )]
    Pem(String),
    /// rustls refused a certificate as a root.
    #[error("certificate refused as a root: {0}")]
    Root(String),
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The shared client configuration: Mozilla's roots plus the certificates in `$KHACHAPURI_CA_CERT`.
/// Built once. A file that cannot be used is logged (with what to do) and left out: connections to
/// servers only it would vouch for then fail their handshake, which is the safe way to fail.
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let extra = match std::env::var_os(CA_ENV) {
                None => Ok(Vec::new()),
                Some(path) => {
                    let path = path.to_string_lossy().into_owned();
                    std::fs::read(&path)
                        .map_err(|source| TlsError::Read { path, source })
                        .and_then(|pem| certificates(&pem))
                }
            };
            extra.and_then(config).unwrap_or_else(|err| {
                tracing::error!(%err, "{CA_ENV} is not used: fix the file or unset the variable");
                config(Vec::new()).unwrap_or_else(|_| unreachable!("Mozilla's roots are valid"))
            })
        })
        .clone()
}

/// A `reqwest` client builder that verifies with [`client_config`]: every HTTP client of the project
/// starts here (a bare `reqwest::Client::new()` has no TLS provider and panics).
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(ClientConfig::clone(&client_config()))
}

/// [`http_client`], built.
pub fn http() -> reqwest::Client {
    http_client().build().unwrap_or_else(|e| {
        unreachable!("a client with a preconfigured rustls TLS always builds: {e}")
    })
}

/// An error and its causes, `outer: inner: ...`: HTTP clients' own messages ("error sending request")
/// hide a TLS failure's reason.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let next = e.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        cur = e.source();
    }
    text
}

/// Whether `err` failed because the server's certificate was refused, and then what to do.
pub fn certificate_hint(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref())
        });
        if let Some(rustls::Error::InvalidCertificate(why)) = tls {
            let todo = match std::env::var_os(CA_ENV) {
                Some(path) => format!(
                    "{CA_ENV}={} does not vouch for it: check that the file is readable PEM and holds the CA that \
                     signed the server's certificate",
                    path.to_string_lossy()
                ),
                None => format!("if a private CA signed it, set {CA_ENV}=<its PEM file>"),
            };
            return Some(format!(
                "the server's TLS certificate was refused ({why:?}); {todo}"
            ));
        }
        cur = e.source();
    }
    None
}

/// A client configuration trusting Mozilla's roots and the certificates in `pem`.
pub fn client_config_with(pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    config(certificates(pem)?)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn config(extra: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots.add(cert).map_err(|e| TlsError::Root(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Root(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// For tests of TLS clients: a real rustls server with a certificate made on the spot.
#[cfg(feature = "testing")]
pub mod testing {
    use std::{net::SocketAddr, sync::Arc};

    use tokio::net::{TcpListener, TcpStream};

    /// A TLS terminator for `localhost` on 127.0.0.1 that relays every connection to a plain TCP
    /// backend. It serves until the process ends.
    #[derive(Debug, Clone)]
    pub struct TlsFront {
        /// Its port on 127.0.0.1: call `https://localhost:{port}`.
        pub port: u16,
        /// Its certificate, PEM: what a client must trust.
        pub cert_pem: String,
    }

    impl TlsFront {
        /// Starts a terminator in front of `backend`.
        pub async fn start(backend: SocketAddr) -> std::io::Result<Self> {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
                .map_err(std::io::Error::other)?;
            let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                .map_err(std::io::Error::other)?;
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![cert.cert.der().clone()], key)
            })
            .map_err(std::io::Error::other)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // A client that refuses the certificate ends the handshake: nothing to relay.
                        let Ok(mut tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let Ok(mut plain) = TcpStream::connect(backend).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
            Ok(Self {
                port,
                cert_pem: cert.cert.pem(),
            })
        }

        /// A client configuration that trusts this terminator (and Mozilla's roots).
        pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
            super::client_config_with(self.cert_pem.as_bytes())
                .unwrap_or_else(|e| unreachable!("rcgen made a valid certificate: {e}"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_are_added_and_garbage_is_refused() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        assert!(client_config_with(ca.cert.pem().as_bytes()).is_ok());
        assert!(matches!(
            client_config_with(b"not a certificate"),
            Err(TlsError::Pem(_))
        ));
        assert!(matches!(client_config_with(b""), Err(TlsError::Pem(_))));
    }
}
