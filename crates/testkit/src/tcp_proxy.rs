//! A TCP forwarder a test can take down and bring back, so a dependency
//! (PostgreSQL) "goes away" for the process under test without stopping the
//! server other tests share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards connections from a local port to `target` while up; while down,
/// new connections are closed at once and none stays open.
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    state: Arc<State>,
    accepting: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    down: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl State {
    /// Aborts every open connection; with `down`, refuses new ones too.
    fn cut_all(&self, down: bool) {
        let connections = {
            let mut connections = self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if down {
                self.down.store(true, Ordering::SeqCst);
            }
            std::mem::take(&mut *connections)
        };
        for connection in connections {
            connection.abort();
        }
    }
}

impl TcpProxy {
    /// A proxy on a free 127.0.0.1 port to `target` (`host:port`), up.
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State::default());
        let target = target.to_owned();
        let accepting = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    // Checked and registered under the lock `take_down` takes,
                    // so no connection slips past it.
                    let mut connections = state
                        .connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if state.down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    connections.push(tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            })
        };
        Ok(Self {
            address,
            state,
            accepting,
        })
    }

    /// The proxy's own address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `url` (`scheme://[user@]host:port/…`) with the host and port replaced
    /// by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (user, rest) = match rest.split_once('@') {
            Some((user, rest)) => (format!("{user}@"), rest),
            None => (String::new(), rest),
        };
        let path = rest.find('/').map_or("", |slash| &rest[slash..]);
        format!("{scheme}://{user}{}{path}", self.address)
    }

    /// The target's `host:port` in `url`.
    pub fn target_of(url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.split_once('@').map_or(rest, |(_, rest)| rest);
        rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
    }

    /// Closes every open connection and every new one until
    /// [`TcpProxy::bring_back`].
    pub fn take_down(&self) {
        self.state.cut_all(true);
    }

    /// Forwards new connections again.
    pub fn bring_back(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.state.cut_all(true);
    }
}
