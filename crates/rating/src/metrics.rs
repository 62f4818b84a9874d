//! Rating's gauges counted from its own tables (its counters live next to
//! what they count, e.g. `tally.rating.events` in [`crate::usage`]).
//!
//! `tally.rating.applied_events` is the number of accepted events rating has
//! applied, all time: rated (`rating.rated_events`) or kept as unrated with a
//! reason (`rating.unrated_events`; an event is in exactly one of the two).
//! Ingest reports the events it published on `usage-accepted` the same way
//! (`tally.ingest.published_events`), so the difference is what was accepted
//! but never reached rating — in flight, or stuck (docs/operations.md).
//!
//! `tally.rating.unrated_events` is the usage rating holds as unrated now, by
//! reason: accepted, and not billed as it stands. It falls when the cause is
//! fixed and the events are rated; the alert on it is in docs/operations.md.

use std::time::Duration;

use opentelemetry::KeyValue;
use sqlx::PgPool;
use tally_proto::rating::UnratedReason;
use tally_runtime::Shutdown;

use crate::usage::store;

/// How often the applied events are counted (two index-only counts).
const COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// Accepted events rating has applied (rated or unrated), all time.
pub async fn applied_events(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let count = store::applied_event_count(pool).await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Unrated events held now, per reason: every reason, zero included, so a
/// series falls back to 0 when its events are rated.
pub async fn unrated_events(pool: &PgPool) -> Result<Vec<(UnratedReason, u64)>, sqlx::Error> {
    let rows = store::unrated_counts_by_reason(pool).await?;
    let reasons = (1..)
        .map_while(|code| UnratedReason::try_from(code).ok())
        .map(|reason| {
            let count = rows
                .iter()
                .find(|(code, _)| i32::from(*code) == reason as i32)
                .map_or(0, |(_, count)| u64::try_from(*count).unwrap_or(0));
            (reason, count)
        })
        .collect();
    Ok(reasons)
}

/// The reason as a metric label: `UNRATED_REASON_NO_SUBSCRIPTION` → `no_subscription`.
fn reason_label(reason: UnratedReason) -> String {
    reason
        .as_str_name()
        .trim_start_matches("UNRATED_REASON_")
        .to_ascii_lowercase()
}

/// Records `tally.rating.applied_events` and `tally.rating.unrated_events`
/// every minute until `shutdown`.
pub async fn run(pool: PgPool, shutdown: Shutdown) {
    let meter = tally_runtime::telemetry::meter();
    let gauge = meter
        .u64_gauge("tally.rating.applied_events")
        .with_description(
            "Accepted events rating applied (rated or unrated with a reason), all time (counted from the database; compare with tally.ingest.published_events)",
        )
        .build();
    let unrated_gauge = meter
        .u64_gauge("tally.rating.unrated_events")
        .with_description(
            "Accepted usage rating holds as unrated now (not billed as it stands), by reason; `tally usage unrated` lists it",
        )
        .build();
    while !shutdown.is_triggered() {
        match applied_events(&pool).await {
            Ok(count) => gauge.record(count, &[]),
            Err(error) => tracing::warn!(%error, "counting applied events failed"),
        }
        match unrated_events(&pool).await {
            Ok(counts) => {
                for (reason, count) in counts {
                    unrated_gauge.record(count, &[KeyValue::new("reason", reason_label(reason))]);
                }
            }
            Err(error) => tracing::warn!(%error, "counting unrated events failed"),
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(COUNT_INTERVAL) => {}
        }
    }
}
