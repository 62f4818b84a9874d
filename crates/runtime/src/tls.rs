//! TLS for the gRPC server and for every gRPC client Tally makes (peers,
//! the CLI).
//!
//! *Server*: `grpc.tls_cert_file` and `grpc.tls_key_file` (PEM) turn TLS on.
//! The files are checked at every handshake (two `stat` calls) and read
//! again when either changed, so a certificate renewed by cert-manager or a
//! mounted Secret is served without a restart. A half-written or broken pair
//! is refused with a warning and the previous certificate is kept.
//!
//! *Clients*: an `https://` address uses TLS with the system's roots plus,
//! when given, a CA file (a private CA, a mesh's root); `http://` stays
//! plaintext.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A handshake that takes longer than this is dropped (a client that opened
/// a socket and said nothing must not hold a task forever).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or parsed.
    #[error("{setting}: cannot use `{path}`: {reason}")]
    File {
        /// The configuration setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The address is not a valid endpoint.
    #[error("`{url}` is not a valid address: {reason}")]
    InvalidUrl {
        /// The address.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The server's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first (`grpc.tls_cert_file`).
    pub cert_file: PathBuf,
    /// PEM private key (`grpc.tls_key_file`).
    pub key_file: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS acceptor for `files`, whose certificate follows the files.
pub fn acceptor(files: &ServerTlsFiles) -> Result<TlsAcceptor, TlsError> {
    let resolver = ReloadingCertificate::load(files.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate last read from the files, and when they were written.
#[derive(Debug)]
struct ReloadingCertificate {
    files: ServerTlsFiles,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    written: (Option<SystemTime>, Option<SystemTime>),
}

impl ReloadingCertificate {
    fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let written = written(&files);
        let key = Arc::new(read_pair(&files)?);
        Ok(Self {
            files,
            current: Mutex::new(Loaded { key, written }),
        })
    }

    /// The certificate to present, read again first if a file changed.
    fn certificate(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now_written = written(&self.files);
        if now_written != current.written {
            match read_pair(&self.files) {
                Ok(key) => {
                    tracing::info!(cert_file = %self.files.cert_file.display(), "TLS certificate reloaded");
                    current.key = Arc::new(key);
                    current.written = now_written;
                }
                // Maybe half-written: keep serving the previous pair, try
                // again at the next handshake.
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate files changed but cannot be used; keeping the previous certificate");
                }
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificate())
    }
}

fn written(files: &ServerTlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    (modified(&files.cert_file), modified(&files.key_file))
}

fn read_pair(files: &ServerTlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::File {
        setting: "grpc.tls_cert_file",
        path: files.cert_file.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|error| cert_error(error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| cert_error(error.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|error| TlsError::File {
        setting: "grpc.tls_key_file",
        path: files.key_file.clone(),
        reason: error.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|error| TlsError::File {
        setting: "grpc.tls_key_file",
        path: files.key_file.clone(),
        reason: format!("does not match the certificate or cannot be used: {error}"),
    })
}

/// The TLS connections accepted on `listener`. Each handshake runs in its
/// own task, so a slow or silent client never holds up the others; a failed
/// handshake (a plaintext client, a wrong certificate on the other side) is
/// logged and dropped. The accepting task ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            };
            // See `server::without_nagle`: responses are written in pieces.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot turn Nagle's algorithm off");
            }
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// An endpoint for `url`: `https://` with the system's roots plus
/// `ca_file` (PEM) when given; `http://` plaintext.
pub fn endpoint(url: &str, ca_file: Option<&Path>) -> Result<Endpoint, TlsError> {
    let invalid = |reason: String| TlsError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|error| invalid(error.to_string()))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|error| TlsError::File {
            setting: "ca_file",
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    endpoint
        .tls_config(tls)
        .map_err(|error| invalid(error.to_string()))
}
