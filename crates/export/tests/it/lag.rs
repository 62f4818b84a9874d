//! The export-lag benchmark (`bench/export.sh`; ignored in `cargo test`):
//! the running service (`spawn_background`: batch consumers, exporter
//! loops, the default poll interval) on an in-process bus, fed
//! `usage-accepted` messages at a steady rate; per event, the time from its
//! acceptance (`ingested_at`, stamped when it is published) to its row being
//! in BigQuery (`export.rows.exported_at`: set by the mark, after BigQuery
//! acknowledged the append). Printed as p50, p99 and max.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tally_bus::{InProcessBus, Message, SharedBus, topics};
use tally_export::{Export, ExportDeps};
use tally_runtime::config::ExportConfig;
use tally_runtime::{SharedClock, Shutdown, SystemClock};

use crate::support::{config, ts, usage};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test]
#[ignore = "benchmark: bench/export.sh"]
async fn export_lag() {
    let rate = env_number("EXPORT_LAG_RATE", 200).max(1);
    let seconds = env_number("EXPORT_LAG_SECONDS", 20).max(1);
    let poll_ms = env_number(
        "EXPORT_LAG_POLL_MS",
        ExportConfig::default().poll_interval_ms,
    );
    let total = rate * seconds;
    let _turn = crate::support::emulator_turn().await;
    let db = tally_testkit::postgres::database().await;
    let mut config = config().await;
    config.batch_rows = ExportConfig::default().batch_rows;
    config.poll_interval_ms = poll_ms;
    let bus: SharedBus = Arc::new(InProcessBus::new());
    let clock: SharedClock = Arc::new(SystemClock);
    let export = Export::start(ExportDeps {
        pool: db.pool.clone(),
        bus: Arc::clone(&bus),
        clock: Arc::clone(&clock),
        config,
        max_delivery_attempts: 5,
    })
    .await
    .unwrap();
    export.warehouse().unwrap().set_up().await.unwrap();
    let shutdown = Shutdown::new();
    let tasks = export.spawn_background(&shutdown);

    let mut ticks = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for sequence in 1..=total {
        ticks.tick().await;
        let mut accepted = usage(
            &format!("cus_{}", sequence % 50),
            &format!("e{sequence}"),
            sequence,
            7,
        );
        accepted.ingested_at = Some(ts(clock.now()));
        let message = Message::new("tally.events.v1.UsageAccepted", 1, accepted.encode_to_vec())
            .with_id(format!("uacc_{sequence}"));
        bus.publish(topics::USAGE_ACCEPTED, message).await.unwrap();
    }
    let published = started.elapsed();
    let bound = Duration::from_secs(300);
    loop {
        let exported: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(rows_exported), 0)::bigint FROM export.streams \
             WHERE table_name = 'usage_events'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if exported == i64::try_from(total).unwrap() {
            break;
        }
        assert!(
            started.elapsed() < bound,
            "{exported} of {total} exported within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    for task in tasks {
        task.await.unwrap();
    }
    let mut lags: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM exported_at) * 1000 \
                 - (row_data->>'ingested_at')::bigint / 1000.0)::float8 \
         FROM export.rows WHERE table_name = 'usage_events'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(lags.len(), usize::try_from(total).unwrap());
    lags.sort_by(f64::total_cmp);
    println!(
        "lag: {total} events at {rate}/s (published in {:.1} s), poll interval {poll_ms} ms, \
         batches of {} rows",
        published.as_secs_f64(),
        ExportConfig::default().batch_rows
    );
    println!(
        "lag accepted -> row in BigQuery: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
}
