//! Counts calls in flight, so a stopping server waits for calls — not for
//! idle client connections, which HTTP/2 clients may keep open indefinitely.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::Notify;

/// The shared counter.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    inner: Arc<Counter>,
}

#[derive(Debug, Default)]
struct Counter {
    calls: AtomicUsize,
    idle: Notify,
}

/// Decrements the counter when the call finishes (or is dropped).
struct CallGuard(Arc<Counter>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Calls running now.
    pub fn count(&self) -> usize {
        self.inner.calls.load(Ordering::Acquire)
    }

    /// Resolves once no call is running.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }

    fn start_call(&self) -> CallGuard {
        self.inner.calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(&self.inner))
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            in_flight: self.clone(),
        }
    }
}

/// The service [`InFlight`] wraps around the router.
#[derive(Debug, Clone)]
pub struct InFlightService<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, Request> tower::Service<Request> for InFlightService<S>
where
    S: tower::Service<Request>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let guard = self.in_flight.start_call();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(guard);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_running_calls_only() {
        let in_flight = InFlight::default();
        in_flight.wait_idle().await;
        let first = in_flight.start_call();
        let second = in_flight.start_call();
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.wait_idle().await })
        };
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(in_flight.count(), 1);
        drop(second);
        waiter.await.unwrap();
        assert_eq!(in_flight.count(), 0);
    }
}
