//! Plain HTTP endpoints beside the gRPC server (the Stripe webhook endpoint,
//! the console `tally dev` serves): an axum router on a bound listener,
//! HTTP/1.1 and HTTP/2, until the shutdown signal.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::Shutdown;

/// Serves `router` on `listener` (bound before anything else starts, so a
/// taken port is found early) until `shutdown`; `what` names the endpoint in
/// logs. Returns the bound address and the accept loop's task.
pub fn serve_router(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
    what: &'static str,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "{what} listening");
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.wait() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "{what}: accept failed");
                        continue;
                    }
                },
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                if let Err(error) = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "{what}: connection ended with an error");
                }
            });
        }
    });
    Ok((local, task))
}
