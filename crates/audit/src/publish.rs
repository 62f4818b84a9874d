//! Publishing chain heads outside the database.
//!
//! A hash chain alone catches an edited or deleted entry, but not a database
//! administrator who rewrites history and recomputes every hash after it:
//! the rewritten chain is consistent. What catches that is a head seen
//! earlier, kept where the database cannot reach: `tally audit verify
//! --head chain:sequence:hash` fails when the entry at that sequence no
//! longer has that hash. [`HeadPublisher`] gives those earlier heads: every
//! interval (and when a manual clock moves), each chain this process answers
//! for is read and its head published when it moved — by default as a
//! structured log line (`audit chain head`, with `chain`, `sequence` and
//! `hash`), which the log pipeline ships to storage the database cannot
//! rewrite. Another sink (a warehouse table) implements [`HeadSink`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tally_runtime::clock::Ticker;
use tally_runtime::{SharedClock, Shutdown};

use crate::chain::{Head, head};
use crate::schema::Schema;

/// Where published heads go.
#[tonic::async_trait]
pub trait HeadSink: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps `head` outside the database (an error is logged and the head
    /// published again next round).
    async fn publish(&self, head: &Head) -> Result<(), String>;
}

/// Publishes heads as structured log lines (`target: tally::audit::head`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

#[tonic::async_trait]
impl HeadSink for LogSink {
    async fn publish(&self, head: &Head) -> Result<(), String> {
        tracing::info!(
            target: "tally::audit::head",
            chain = head.schema.chain_name(),
            sequence = head.sequence,
            hash = %head.hash_hex(),
            verify = %format!(
                "tally audit verify --head {}:{}:{}",
                head.schema.chain_name(),
                head.sequence,
                head.hash_hex()
            ),
            "audit chain head"
        );
        Ok(())
    }
}

/// The background job publishing the heads of a process's chains.
#[derive(Debug)]
pub struct HeadPublisher {
    pool: PgPool,
    clock: SharedClock,
    chains: Vec<Schema>,
    interval: Duration,
    sink: Arc<dyn HeadSink>,
}

impl HeadPublisher {
    /// Publishes `chains`' heads to `sink`, looking every `interval`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        chains: &[Schema],
        interval: Duration,
        sink: Arc<dyn HeadSink>,
    ) -> Self {
        Self {
            pool,
            clock,
            chains: chains.to_vec(),
            interval,
            sink,
        }
    }

    /// One round: each chain's head, published when it differs from the
    /// last one published (always on the first round, so every start leaves
    /// a baseline). Returns the heads published.
    pub async fn publish_moved(&self, published: &mut HashMap<Schema, Head>) -> Vec<Head> {
        let mut moved = Vec::new();
        for &chain in &self.chains {
            let current = match head(&self.pool, chain).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::warn!(%error, chain = chain.chain_name(), "reading the audit chain head failed; retrying next round");
                    continue;
                }
            };
            if published.get(&chain) == Some(&current) {
                continue;
            }
            match self.sink.publish(&current).await {
                Ok(()) => {
                    published.insert(chain, current);
                    moved.push(current);
                }
                Err(error) => {
                    tracing::warn!(%error, chain = chain.chain_name(), "publishing the audit chain head failed; retrying next round");
                }
            }
        }
        moved
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut ticker = Ticker::new(&*self.clock, self.interval);
        let mut published = HashMap::new();
        while !shutdown.is_triggered() {
            self.publish_moved(&mut published).await;
            tokio::select! {
                () = shutdown.wait() => break,
                () = ticker.tick() => {}
            }
        }
    }
}
