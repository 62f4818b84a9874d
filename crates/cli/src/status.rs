//! `tally status`: is anything stuck between the services?
//!
//! Every path a message takes is checked against the records at both of its
//! ends, read from the database (`DATABASE_URL`, like `tally migrate`) in one
//! read-only snapshot, so a message the bus never delivered is seen as well
//! as one that failed:
//!
//! - each service's **outbox**: rows not yet on the bus (and ingest's relay:
//!   accepted batches not yet on `usage-accepted`);
//! - **usage-accepted → rating**: accepted events published but neither rated
//!   nor kept as unrated (ingest's log against rating's two tables; the same
//!   comparison as the gauges `tally.ingest.published_events` and
//!   `tally.rating.applied_events`), aged by acceptance time;
//! - **subscription-events → rating**: snapshot versions invoicing published
//!   that rating's replica has not reached;
//! - **invoice-events → payments** and **payment-events → invoicing**: messages
//!   published that the consumer's inbox has not recorded.
//!
//! A path whose oldest waiting item is older than `--stuck-after` is stuck and
//! the command exits with 1 (for cron jobs and CI). `usage-events` is written
//! by your own publishers, so only Pub/Sub knows its backlog (see
//! docs/operations.md, "Alerts to set").
//!
//! Reading another service's schema is fine here: this is the operator's
//! view, not a service (services never do it).

use std::time::Duration;

use clap::Args;
use sqlx::{PgConnection, Row};
use tally_bus::topics;
use tally_runtime::Config;

use crate::admin::Output;
use crate::admin::table::Table;

/// `tally status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A path whose oldest waiting message is older than this many seconds is
    /// stuck; any stuck path makes the command exit with 1.
    #[arg(long, default_value_t = 300)]
    pub stuck_after: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What waits on one path.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathStatus {
    /// From where to where, e.g. `invoice-events → payments`.
    pub path: String,
    /// Messages (or events) published or written but not yet through.
    pub waiting: i64,
    /// Age of the oldest of them, in seconds (`None` when none waits).
    pub oldest_seconds: Option<f64>,
    /// Whether the oldest is older than `--stuck-after`.
    pub stuck: bool,
}

/// The usage counts behind the `usage-accepted → rating` path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageCounts {
    /// Events in ingest's log.
    pub accepted: i64,
    /// Of those, in batches the relay has not published yet.
    pub waiting_for_relay: i64,
    /// Rated by rating.
    pub rated: i64,
    /// Kept by rating as unrated, with a reason (`tally usage unbilled`).
    pub unrated: i64,
    /// Published but neither rated nor unrated: in flight, or stuck.
    pub not_applied: i64,
}

/// Everything `tally status` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// The threshold used.
    pub stuck_after_seconds: u64,
    /// Usage counts.
    pub usage: UsageCounts,
    /// Every path, in flow order.
    pub paths: Vec<PathStatus>,
}

impl Status {
    /// The stuck paths.
    pub fn stuck(&self) -> Vec<&PathStatus> {
        self.paths.iter().filter(|path| path.stuck).collect()
    }
}

/// Runs `tally status`.
#[allow(clippy::print_stdout)]
pub async fn run(config: Config, args: StatusArgs) -> anyhow::Result<()> {
    let pool = tally_runtime::db::connect(&config.database).await?;
    let mut connection = pool.acquire().await?;
    let status = collect(&mut connection, Duration::from_secs(args.stuck_after)).await?;
    match args.output {
        Output::Json => crate::admin::print_json(&serde_json::to_value(&status)?)?,
        Output::Table => print!("{}", render(&status)),
    }
    let stuck = status.stuck();
    if !stuck.is_empty() {
        let names: Vec<&str> = stuck.iter().map(|path| path.path.as_str()).collect();
        anyhow::bail!(
            "stuck for more than {} s: {}; see docs/operations.md, \"Stuck messages\"",
            args.stuck_after,
            names.join(", ")
        );
    }
    Ok(())
}

/// Reads every path in one read-only snapshot.
pub async fn collect(
    connection: &mut PgConnection,
    stuck_after: Duration,
) -> anyhow::Result<Status> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *connection)
        .await?;
    let result = collect_in_snapshot(&mut *connection, stuck_after).await;
    sqlx::query("ROLLBACK").execute(&mut *connection).await?;
    result
}

async fn collect_in_snapshot(
    connection: &mut PgConnection,
    stuck_after: Duration,
) -> anyhow::Result<Status> {
    let limit = stuck_after.as_secs_f64();
    let path = |path: String, waiting: i64, oldest_seconds: Option<f64>| PathStatus {
        stuck: waiting > 0 && oldest_seconds.is_some_and(|oldest| oldest > limit),
        path,
        waiting,
        oldest_seconds: oldest_seconds
            .filter(|_| waiting > 0)
            .map(|age| age.max(0.0)),
    };
    let mut paths = Vec::new();

    // Ingest's relay, then usage into rating.
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM ingest.event_keys) AS accepted, \
                (SELECT coalesce(sum(event_count), 0)::bigint FROM ingest.accepted_batches) AS waiting, \
                (SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM ingest.accepted_batches) AS relay_age, \
                (SELECT count(*) FROM rating.rated_events) AS rated, \
                (SELECT count(*) FROM rating.unrated_events) AS unrated",
    )
    .fetch_one(&mut *connection)
    .await?;
    let accepted: i64 = row.try_get("accepted")?;
    let waiting_for_relay: i64 = row.try_get("waiting")?;
    let rated: i64 = row.try_get("rated")?;
    let unrated: i64 = row.try_get("unrated")?;
    // Rating only holds events it was sent, each once by key: the difference
    // is exactly the published events it has not applied.
    let not_applied = (accepted - waiting_for_relay - rated - unrated).max(0);
    paths.push(path(
        format!("ingest relay → {}", topics::USAGE_ACCEPTED),
        waiting_for_relay,
        row.try_get("relay_age")?,
    ));
    // Only when something is missing: finding its age reads the whole log.
    let not_applied_age: Option<f64> = if not_applied > 0 {
        sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM now() - min(e.ingested_at))::float8 FROM ingest.events e \
             WHERE NOT EXISTS (SELECT 1 FROM ingest.accepted_batches b WHERE e.seq BETWEEN b.first_seq AND b.last_seq) \
               AND NOT EXISTS (SELECT 1 FROM rating.rated_events r \
                               WHERE r.customer_id = e.customer_id AND r.event_id = e.event_id) \
               AND NOT EXISTS (SELECT 1 FROM rating.unrated_events u \
                               WHERE u.customer_id = e.customer_id AND u.event_id = e.event_id)",
        )
        .fetch_one(&mut *connection)
        .await?
    } else {
        None
    };
    paths.push(path(
        format!("{} → rating (accepted, not rated)", topics::USAGE_ACCEPTED),
        not_applied,
        not_applied_age,
    ));

    // Snapshots rating's replica has not reached. Message ids are
    // `<subscription>.v<version>` (invoicing's events.rs).
    let (waiting, oldest): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(o.published_at))::float8 \
         FROM invoicing.outbox o \
         LEFT JOIN rating.subscriptions s \
           ON s.subscription_id = regexp_replace(o.message_id, '\\.v[0-9]+$', '') \
         WHERE o.topic = $1 AND o.published_at IS NOT NULL \
           AND (s.version IS NULL OR s.version < \
                CASE WHEN o.message_id ~ '\\.v[0-9]{1,18}$' \
                     THEN substring(o.message_id FROM '\\.v([0-9]{1,18})$')::bigint END)",
    )
    .bind(topics::SUBSCRIPTION_EVENTS)
    .fetch_one(&mut *connection)
    .await?;
    paths.push(path(
        format!("{} → rating", topics::SUBSCRIPTION_EVENTS),
        waiting,
        oldest,
    ));

    // Messages the consumer's inbox has not recorded.
    for (producer, topic, consumer, subscription, name) in [
        (
            "invoicing",
            topics::INVOICE_EVENTS,
            "payments",
            tally_payments::INVOICE_EVENTS_SUBSCRIPTION,
            "payments",
        ),
        (
            "payments",
            topics::PAYMENT_EVENTS,
            "invoicing",
            tally_invoicing::PAYMENT_EVENTS_SUBSCRIPTION,
            "invoicing",
        ),
        (
            "invoicing",
            topics::INVOICE_EVENTS,
            "finance",
            tally_finance::INVOICE_EVENTS_SUBSCRIPTION,
            "finance",
        ),
        (
            "payments",
            topics::PAYMENT_EVENTS,
            "finance",
            tally_finance::PAYMENT_EVENTS_SUBSCRIPTION,
            "finance",
        ),
        (
            "invoicing",
            topics::SUBSCRIPTION_EVENTS,
            "finance",
            tally_finance::SUBSCRIPTION_EVENTS_SUBSCRIPTION,
            "finance",
        ),
    ] {
        // Schema names are our own constants above, never input.
        let sql = format!(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(o.published_at))::float8 \
             FROM {producer}.outbox o \
             WHERE o.topic = $1 AND o.published_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM {consumer}.inbox i \
                               WHERE i.subscription = $2 AND i.message_id = o.message_id)"
        );
        let (waiting, oldest): (i64, Option<f64>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(topic)
            .bind(subscription)
            .fetch_one(&mut *connection)
            .await?;
        paths.push(path(format!("{topic} → {name}"), waiting, oldest));
    }

    // Each service's outbox (ingest's relay is above).
    for schema in ["ingest", "rating", "invoicing", "payments"] {
        let sql = format!(
            "SELECT topic, count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 \
             FROM {schema}.outbox WHERE published_at IS NULL GROUP BY topic ORDER BY topic"
        );
        let rows: Vec<(String, i64, Option<f64>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *connection)
            .await?;
        if rows.is_empty() {
            paths.push(path(format!("{schema} outbox → bus"), 0, None));
        }
        for (topic, waiting, oldest) in rows {
            paths.push(path(format!("{schema} outbox → {topic}"), waiting, oldest));
        }
    }

    Ok(Status {
        stuck_after_seconds: stuck_after.as_secs(),
        usage: UsageCounts {
            accepted,
            waiting_for_relay,
            rated,
            unrated,
            not_applied,
        },
        paths,
    })
}

/// The table view.
fn render(status: &Status) -> String {
    let usage = &status.usage;
    let mut text = format!(
        "usage: {} accepted, {} waiting for the relay, {} rated, {} unrated (with a reason), {} not applied by rating\n\n",
        usage.accepted, usage.waiting_for_relay, usage.rated, usage.unrated, usage.not_applied
    );
    let mut table = Table::new(&["path", "waiting", "oldest", "state"]);
    for path in &status.paths {
        table.row(vec![
            path.path.clone(),
            path.waiting.to_string(),
            path.oldest_seconds
                .map_or_else(|| "-".to_owned(), |seconds| format!("{seconds:.0} s")),
            if path.stuck {
                "STUCK".to_owned()
            } else if path.waiting > 0 {
                "moving".to_owned()
            } else {
                "ok".to_owned()
            },
        ]);
    }
    text.push_str(&table.render());
    text.push_str(
        "\nusage-events (your publishers → ingest) is not in the database: watch Pub/Sub's \
         oldest_unacked_message_age and tally.bus.delivery_age.\n",
    );
    text
}
