//! The console `tally dev` serves: the static export of `console/` (Next.js,
//! `npm run build` writes `console/out`) on its own loopback port, plus
//! `/config.json` telling the pages where the gRPC-web services are. The
//! services admit this origin through CORS (`grpc.cors_allowed_origins`).
//! Without a build (no Node.js on the machine) nothing is served and the
//! banner says how to build it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use tally_runtime::Shutdown;
use tokio::net::TcpListener;
use tower_http::services::{ServeDir, ServeFile};

/// Where `tally dev` serves the console by default: the gRPC address with
/// the port two above (the webhook endpoint takes the one above); port 0
/// stays 0.
pub fn default_address(grpc: SocketAddr) -> anyhow::Result<SocketAddr> {
    let port = match grpc.port() {
        0 => 0,
        port => port.checked_add(2).with_context(|| {
            format!("no port two after {grpc} for the console: pass --console-listen")
        })?,
    };
    Ok(SocketAddr::new(grpc.ip(), port))
}

/// Whether `dir` holds a console build (its `index.html`).
pub fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// Binds the console's port, naming the flag that moves it when taken.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot listen for the console on {address}: {error} (is another process using the \
             port? pick another with --console-listen, by default the --listen port + 2)"
        )
    })
}

/// The router: `/config.json`, then the files of `dir` (directories answer
/// their `index.html`, unknown paths the export's `404.html`).
fn router(dir: &Path, api_url: &str) -> axum::Router {
    let config = serde_json::json!({ "apiUrl": api_url }).to_string();
    let files = ServeDir::new(dir).not_found_service(ServeFile::new(dir.join("404.html")));
    axum::Router::new()
        .route(
            "/config.json",
            axum::routing::get(move || async move {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    config.clone(),
                )
            }),
        )
        .fallback_service(files)
}

/// Serves `dir` on `listener` until `shutdown`.
pub fn spawn(
    listener: TcpListener,
    dir: &Path,
    api_url: &str,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    tally_runtime::http::serve_router(router(dir, api_url), listener, shutdown, "console")?;
    Ok(())
}
