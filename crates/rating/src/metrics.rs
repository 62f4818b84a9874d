//! Rating's gauges counted from its own tables (its counters live next to
//! what they count, e.g. `tally.rating.events` in [`crate::usage`]).
//!
//! `tally.rating.applied_events` is the number of accepted events rating has
//! applied, all time: rated (`rating.rated_events`) or kept as unrated with a
//! reason (`rating.unrated_events`; an event is in exactly one of the two).
//! Ingest reports the events it published on `usage-accepted` the same way
//! (`tally.ingest.published_events`), so the difference is what was accepted
//! but never reached rating — in flight, or stuck (docs/operations.md).

use std::time::Duration;

use sqlx::PgPool;
use tally_runtime::Shutdown;

/// How often the applied events are counted (two index-only counts).
const COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// Accepted events rating has applied (rated or unrated), all time.
pub async fn applied_events(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM rating.rated_events) + (SELECT count(*) FROM rating.unrated_events)",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Records `tally.rating.applied_events` every minute until `shutdown`.
pub async fn run(pool: PgPool, shutdown: Shutdown) {
    let gauge = tally_runtime::telemetry::meter()
        .u64_gauge("tally.rating.applied_events")
        .with_description(
            "Accepted events rating applied (rated or unrated with a reason), all time (counted from the database; compare with tally.ingest.published_events)",
        )
        .build();
    while !shutdown.is_triggered() {
        match applied_events(&pool).await {
            Ok(count) => gauge.record(count, &[]),
            Err(error) => tracing::warn!(%error, "counting applied events failed"),
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(COUNT_INTERVAL) => {}
        }
    }
}
