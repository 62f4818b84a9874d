//! Clock moves in the audit log: `tally clock advance|set` against a process
//! on a manual clock (dev, tests, the end-to-end month) records
//! `clock.advanced` / `clock.set` with the caller and the instants before
//! and after, in the chain of the service it moves.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sqlx::PgPool;
use tally_runtime::clock_service::{ClockMove, ClockMoves};
use tally_runtime::ids::SharedIdGenerator;
use tonic::Status;

use crate::entry::{Entry, Origin};
use crate::error::AuditError;
use crate::schema::Schema;

/// Records each move of a process's clock in `schema`'s chain, resource
/// `clock` `<process>` (the service's name, `dev` for `tally dev`).
#[derive(Debug, Clone)]
pub struct ClockRecorder {
    pool: PgPool,
    ids: SharedIdGenerator,
    schema: Schema,
    process: String,
}

impl ClockRecorder {
    /// Records the moves of `process`'s clock in `schema`'s chain.
    pub fn new(pool: PgPool, ids: SharedIdGenerator, schema: Schema, process: &str) -> Self {
        Self {
            pool,
            ids,
            schema,
            process: process.to_owned(),
        }
    }
}

fn instant(at: DateTime<Utc>) -> serde_json::Value {
    json!({ "now": at.to_rfc3339_opts(SecondsFormat::Micros, true) })
}

#[tonic::async_trait]
impl ClockMoves for ClockRecorder {
    async fn record(
        &self,
        change: ClockMove<'_>,
        apply: &(dyn Fn() -> Result<DateTime<Utc>, Status> + Send + Sync),
    ) -> Result<DateTime<Utc>, Status> {
        let mut transaction = self.pool.begin().await.map_err(AuditError::from)?;
        let entry = Entry::minted(
            &*self.ids,
            change.before,
            change.action,
            ("clock", &self.process),
            &Origin::from_request(change.caller),
        )
        .before(instant(change.before))
        .after(instant(change.after));
        crate::chain::record(&mut transaction, self.schema, entry).await?;
        // The clock moves with the entry in the transaction: a refused move
        // rolls the entry back (dropping the transaction).
        let now = apply()?;
        transaction.commit().await.map_err(AuditError::from)?;
        Ok(now)
    }
}
