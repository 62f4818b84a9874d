//! Browsers call the services over gRPC-web on HTTP/1.1 (the console): a
//! preflight from an allowed origin is answered with the CORS headers before
//! authentication, another origin gets none, a gRPC-web call is answered in
//! gRPC-web framing, and the API key is still required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tally_runtime::Shutdown;
use tally_runtime::auth::{ApiKeyRegistry, AuthLayer};
use tally_runtime::server::GrpcServer;

const CONSOLE: &str = "http://127.0.0.1:50053";

/// Sends one HTTP/1.1 request and reads the whole response (the server closes
/// the connection after it: `connection: close`).
async fn http1(address: SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
        .await
        .expect("the response within 60 s")
        .unwrap();
    response
}

fn header_block(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

async fn serve(auth: AuthLayer, shutdown: &Shutdown) -> SocketAddr {
    GrpcServer::new(|routes| routes, vec!["tally.test.v1.Service"])
        .with_browser_origins(vec![CONSOLE.to_owned()])
        .spawn_on_loopback(auth, shutdown)
        .await
        .unwrap()
}

#[tokio::test]
async fn preflights_from_allowed_origins_only() {
    let shutdown = Shutdown::new();
    let address = serve(
        AuthLayer::new(Arc::new(ApiKeyRegistry::default())),
        &shutdown,
    )
    .await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /tally.clock.v1.ClockService/GetTime HTTP/1.1\r\nhost: {address}\r\n\
             origin: {origin}\r\naccess-control-request-method: POST\r\n\
             access-control-request-headers: authorization,content-type,x-grpc-web\r\n\
             connection: close\r\n\r\n"
        )
    };
    let allowed = header_block(&http1(address, &preflight(CONSOLE), b"").await);
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains(&format!("access-control-allow-origin: {CONSOLE}")),
        "{allowed}"
    );
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = header_block(&http1(address, &preflight("https://evil.example"), b"").await);
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    shutdown.trigger();
}

#[tokio::test]
async fn grpc_web_calls_are_answered_in_grpc_web_and_still_need_a_key() {
    let shutdown = Shutdown::new();
    let address = serve(
        AuthLayer::new(Arc::new(ApiKeyRegistry::default())),
        &shutdown,
    )
    .await;
    let call = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\norigin: {CONSOLE}\r\n\
             content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
             content-length: 5\r\nconnection: close\r\n\r\n"
        )
    };
    // An empty HealthCheckRequest in one gRPC-web data frame (open: no key).
    let empty_frame = [0u8, 0, 0, 0, 0];
    let health = http1(address, &call("/grpc.health.v1.Health/Check"), &empty_frame).await;
    let head = header_block(&health);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/grpc-web+proto"),
        "{head}"
    );
    assert!(
        head.contains(&format!("access-control-allow-origin: {CONSOLE}")),
        "{head}"
    );
    let body = String::from_utf8_lossy(&health);
    assert!(
        body.contains("grpc-status:0"),
        "the trailers frame: {body:?}"
    );

    let refused = header_block(
        &http1(
            address,
            &call("/tally.clock.v1.ClockService/GetTime"),
            &empty_frame,
        )
        .await,
    );
    assert!(refused.contains("grpc-status: 16"), "{refused}");
    assert!(
        refused.contains("access-control-expose-headers"),
        "{refused}"
    );
    shutdown.trigger();
}
