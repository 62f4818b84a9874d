//! The gRPC server over TLS: a client that trusts the server's CA is served,
//! a plaintext client is not, and a certificate replaced on disk is served
//! from the next handshake on, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tally_runtime::auth::AuthLayer;
use tally_runtime::server::{self, GrpcServer};
use tally_runtime::shutdown::Shutdown;
use tally_runtime::tls::{self, ServerTlsFiles};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Copies server certificate `n` (signed by CA `n`) to where the server reads it.
fn install_certificate(files: &ServerTlsFiles, n: u32) {
    // Key first, then the certificate, each by rename: the server never sees
    // a half-written file (a mismatched pair in between is refused and retried).
    for (from, to) in [
        (format!("server{n}.key"), &files.key_file),
        (format!("server{n}.pem"), &files.cert_file),
    ] {
        let staging = to.with_extension("new");
        std::fs::copy(fixture(&from), &staging).unwrap();
        std::fs::rename(&staging, to).unwrap();
    }
}

async fn health_over_tls(port: u16, ca: &str) -> Result<(), String> {
    let endpoint = tls::endpoint(&format!("https://localhost:{port}"), Some(&fixture(ca)))
        .map_err(|error| error.to_string())?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| status.to_string())
}

#[tokio::test]
async fn the_server_speaks_tls_and_follows_its_certificate_files() {
    let directory = std::env::temp_dir().join(format!("tally-tls-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let files = ServerTlsFiles {
        cert_file: directory.join("tls.crt"),
        key_file: directory.join("tls.key"),
    };
    install_certificate(&files, 1);

    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.local_addr.port();
    let shutdown = Shutdown::new();
    let grpc = GrpcServer::new(|routes| routes, vec![]).with_tls(tls::acceptor(&files).unwrap());
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            grpc.serve(
                listener,
                AuthLayer::disabled(),
                shutdown,
                Duration::from_secs(5),
            )
            .await
        }
    });

    // A client trusting CA 1 is served; one trusting only CA 2 is refused.
    health_over_tls(port, "ca1.pem").await.unwrap();
    assert!(health_over_tls(port, "ca2.pem").await.is_err());
    // Plaintext HTTP/2 against the TLS port gets nowhere.
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_err()
        );
    }

    // Renewed on disk (now signed by CA 2): served from the next handshake on.
    install_certificate(&files, 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = health_over_tls(port, "ca2.pem").await {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served: {error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health_over_tls(port, "ca1.pem").await.is_err());

    shutdown.trigger();
    serving.await.unwrap().unwrap();
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn unusable_certificate_files_are_named_at_start() {
    let missing = ServerTlsFiles {
        cert_file: PathBuf::from("/nonexistent/tls.crt"),
        key_file: fixture("server1.key"),
    };
    let Err(error) = tls::acceptor(&missing) else {
        panic!("a missing certificate file is refused");
    };
    let error = error.to_string();
    assert!(error.contains("grpc.tls_cert_file"), "{error}");
    let mismatched = ServerTlsFiles {
        cert_file: fixture("server1.pem"),
        key_file: fixture("server2.key"),
    };
    let Err(error) = tls::acceptor(&mismatched) else {
        panic!("a key of another certificate is refused");
    };
    let error = error.to_string();
    assert!(error.contains("grpc.tls_key_file"), "{error}");
}
