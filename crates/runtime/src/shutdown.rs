//! Graceful shutdown through one shared signal.
//!
//! The composition root owns a [`Shutdown`], triggers it on SIGTERM or
//! ctrl-c, and hands clones to the gRPC server and every background loop.
//! Loops check [`Shutdown::is_triggered`] between units of work (one message,
//! one batch) so in-flight work finishes; the server stops accepting calls and
//! drains the ones already running.

use std::time::Duration;

use tokio::sync::watch;

/// A cloneable "please stop" signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that has not fired yet.
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self { sender, receiver }
    }

    /// Fires the signal for every clone. Idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once the signal has fired (immediately if it already has).
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        // An error means every sender is gone, which also means "stop".
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    /// Fires the signal when the process receives SIGTERM or ctrl-c.
    pub fn trigger_on_os_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_os_signal().await;
            tracing::info!("shutdown signal received; draining in-flight work");
            shutdown.trigger();
        });
    }
}

async fn wait_for_os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops the process");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            () = terminate => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Waits for `task` but gives up after `grace`; returns whether it finished in time.
pub async fn drain_within<F: Future>(grace: Duration, task: F) -> bool {
    tokio::time::timeout(grace, task).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_observe_the_trigger() {
        let shutdown = Shutdown::new();
        let observer = shutdown.clone();
        let waiter = tokio::spawn(async move { observer.wait().await });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
    }
}
