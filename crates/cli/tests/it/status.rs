//! `tally status` finds what waits between the services, from the database,
//! and exits 1 when something waited longer than `--stuck-after`.

use std::process::{Command, Output};

use sqlx::PgPool;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn status(database_url: &str, args: &[&str]) -> Output {
    Command::new(TALLY)
        .env("DATABASE_URL", database_url)
        .env_remove("TALLY_CONFIG")
        .env_remove("RUST_LOG")
        .arg("status")
        .args(args)
        .output()
        .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn path<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|path| path["path"] == name)
        .unwrap_or_else(|| panic!("no path {name} in {status:#}"))
}

/// One accepted event in ingest's log, accepted `age` ago.
async fn accepted(pool: &PgPool, seq: i64, event_id: &str, age: &str) {
    sqlx::query("SELECT ingest.ensure_event_partition(now())")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ingest.event_keys (customer_id, event_id, seq, event_time, payload_hash) \
         VALUES ('cus_1', $1, $2, now(), '\\x00')",
    )
    .bind(event_id)
    .bind(seq)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ingest.events (seq, customer_id, event_id, event_type, event_time, payload, intake, ingested_at) \
         VALUES ($1, 'cus_1', $2, 'tokens', now(), '\\x00', 1, now() - $3::interval)",
    )
    .bind(seq)
    .bind(event_id)
    .bind(age)
    .execute(pool)
    .await
    .unwrap();
}

/// A row of `schema`'s outbox on `topic`, written `age` ago and published or not.
async fn outbox(
    pool: &PgPool,
    schema: &str,
    topic: &str,
    message_id: &str,
    age: &str,
    published: bool,
) {
    let sql = format!(
        "INSERT INTO {schema}.outbox (message_id, topic, message_type, type_version, payload, created_at, published_at) \
         VALUES ($1, $2, 't', 1, '\\x00', now() - $3::interval, CASE WHEN $4 THEN now() - $3::interval END)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(message_id)
        .bind(topic)
        .bind(age)
        .bind(published)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn nothing_waits_in_a_fresh_database() {
    let database = tally_testkit::postgres::database().await;
    let output = status(&database.url, &["--output", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json(&output);
    for path in report["paths"].as_array().unwrap() {
        assert_eq!(path["waiting"], 0, "{path}");
        assert_eq!(path["stuck"], false, "{path}");
    }
    let table = status_table(&database.url, &[]);
    assert!(
        table.contains("usage-accepted → rating (accepted, not rated)"),
        "{table}"
    );
}

fn status_table(url: &str, args: &[&str]) -> String {
    let output = status(url, args);
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn every_path_reports_what_waits_and_old_waits_are_stuck() {
    let database = tally_testkit::postgres::database().await;
    let pool = &database.pool;
    // Usage: four events accepted; one rated, one unrated, one still with the
    // relay, and one published an hour ago that rating never applied.
    accepted(pool, 1, "evt_rated", "1 hour").await;
    accepted(pool, 2, "evt_unrated", "1 hour").await;
    accepted(pool, 3, "evt_lost", "1 hour").await;
    accepted(pool, 100_000, "evt_at_relay", "2 seconds").await;
    sqlx::query("INSERT INTO ingest.accepted_batches (first_seq, last_seq, event_count, created_at) VALUES (100000, 100000, 1, now() - interval '2 seconds')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO rating.rated_events (customer_id, event_id, seq) VALUES ('cus_1', 'evt_rated', 1)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO rating.unrated_events (customer_id, event_id, seq, accepted, reason, first_seen_at) \
         VALUES ('cus_1', 'evt_unrated', 2, '\\x00', 1, now())",
    )
    .execute(pool)
    .await
    .unwrap();
    // Subscription snapshots: sub_a's v2 never reached rating (it holds v1);
    // sub_b's v1 was overtaken by v3 (applied, stale), sub_c's v1 never arrived.
    for (id, version) in [("sub_a", 1), ("sub_b", 3)] {
        sqlx::query(
            "INSERT INTO rating.subscriptions (subscription_id, customer_id, version, snapshot, updated_at) \
             VALUES ($1, 'cus_1', $2, '\\x00', now())",
        )
        .bind(id)
        .bind(version)
        .execute(pool)
        .await
        .unwrap();
    }
    outbox(
        pool,
        "invoicing",
        "subscription-events",
        "sub_a.v2",
        "1 hour",
        true,
    )
    .await;
    outbox(
        pool,
        "invoicing",
        "subscription-events",
        "sub_b.v1",
        "1 hour",
        true,
    )
    .await;
    outbox(
        pool,
        "invoicing",
        "subscription-events",
        "sub_c.v1",
        "10 seconds",
        true,
    )
    .await;
    // Invoice events: one applied by payments, one never.
    outbox(
        pool,
        "invoicing",
        "invoice-events",
        "ievt_applied",
        "1 hour",
        true,
    )
    .await;
    outbox(
        pool,
        "invoicing",
        "invoice-events",
        "ievt_lost",
        "1 hour",
        true,
    )
    .await;
    sqlx::query("INSERT INTO payments.inbox (subscription, message_id) VALUES ('payments-invoice-events', 'ievt_applied')")
        .execute(pool)
        .await
        .unwrap();
    // A payment event applied by invoicing, and one still in payments' outbox.
    outbox(
        pool,
        "payments",
        "payment-events",
        "pevt_applied",
        "1 hour",
        true,
    )
    .await;
    outbox(
        pool,
        "payments",
        "payment-events",
        "pevt_waiting",
        "1 hour",
        false,
    )
    .await;
    sqlx::query("INSERT INTO invoicing.inbox (subscription, message_id) VALUES ('invoicing-payment-events', 'pevt_applied')")
        .execute(pool)
        .await
        .unwrap();

    let output = status(&database.url, &["--output", "json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stuck paths fail the command"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stuck"), "{stderr}");
    let report = json(&output);
    assert_eq!(
        report["usage"],
        serde_json::json!({"accepted": 4, "waiting_for_relay": 1, "rated": 1, "unrated": 1, "not_applied": 1})
    );
    let relay = path(&report, "ingest relay → usage-accepted");
    assert_eq!(
        (relay["waiting"].as_i64(), relay["stuck"].as_bool()),
        (Some(1), Some(false))
    );
    let usage = path(&report, "usage-accepted → rating (accepted, not rated)");
    assert_eq!(
        (usage["waiting"].as_i64(), usage["stuck"].as_bool()),
        (Some(1), Some(true))
    );
    assert!(
        usage["oldest_seconds"].as_f64().unwrap() >= 3500.0,
        "{usage}"
    );
    let snapshots = path(&report, "subscription-events → rating");
    assert_eq!(
        (snapshots["waiting"].as_i64(), snapshots["stuck"].as_bool()),
        (Some(2), Some(true))
    );
    let invoices = path(&report, "invoice-events → payments");
    assert_eq!(
        (invoices["waiting"].as_i64(), invoices["stuck"].as_bool()),
        (Some(1), Some(true))
    );
    let payments = path(&report, "payment-events → invoicing");
    assert_eq!(
        (payments["waiting"].as_i64(), payments["stuck"].as_bool()),
        (Some(0), Some(false))
    );
    let outbox = path(&report, "payments outbox → payment-events");
    assert_eq!(
        (outbox["waiting"].as_i64(), outbox["stuck"].as_bool()),
        (Some(1), Some(true))
    );

    // With a threshold above every age, the same waits are only moving.
    let output = status(&database.url, &["--stuck-after", "86400"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("moving") && !table.contains("STUCK"),
        "{table}"
    );
}
