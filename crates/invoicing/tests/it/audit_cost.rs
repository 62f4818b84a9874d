//! What the bill run's audit entries cost (issue #21: under 10 %), measured
//! in one run (ignored by default: it prints figures; `bench/bill-run-audit.sh`
//! runs it in release mode, docs/benchmarks.md records the results).
//!
//! Two databases are set up alike with `INVOICING_AUDIT_BENCH_SUBSCRIPTIONS`
//! (default 10,000) subscriptions each — the workload of `throughput.rs` —
//! and billed by the same build in the same process: one with the bill
//! run's audit entries (`invoice.created` and `invoice.finalized` per
//! invoice), one with them turned off through the switch only this benchmark
//! uses (`Invoicing::audit_bill_runs_for_benchmark(false)`: the entries are
//! neither built nor appended, the invoices' states before finalization not
//! read). The start-of-month runs go audited first, the period-end runs
//! unaudited first, so that neither side always runs on a warmer machine.

use std::time::Duration;

use crate::support::*;
use crate::throughput::{benchmark_plan, rate_january_usage, subscribe_all, sync, timed_run};

/// A database with `count` subscriptions, synced to rating.
async fn prepared(count: usize) -> (Harness, Vec<(String, String)>) {
    let mut db = tally_testkit::postgres::database().await;
    db.pool = tally_runtime::db::connect_url(&db.url, 20).await.unwrap();
    let mut h = harness_with(
        db,
        at(2025, 1, 1),
        config(0),
        std::sync::Arc::new(tally_bus::InProcessBus::new()),
    )
    .await;
    let plan = benchmark_plan(&mut h).await;
    let created = subscribe_all(&h, &plan, count).await;
    sync(&h).await;
    (h, created)
}

/// Entries of invoicing's chain by the bill run.
async fn bill_run_entries(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM invoicing.audit_log WHERE actor_id = 'bill_run'")
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

/// One timed bill run, checked to have finalized `count` invoices.
async fn run(h: &Harness, count: usize) -> Duration {
    let (elapsed, summary) = timed_run(h).await;
    assert_eq!(summary.invoices_finalized, count as u64, "{summary:?}");
    assert_eq!(summary.failures, 0, "{summary:?}");
    elapsed
}

#[allow(clippy::print_stdout)] // a benchmark prints its figures
fn report(name: &str, audited: Duration, unaudited: Duration) {
    let slower = (audited.as_secs_f64() / unaudited.as_secs_f64() - 1.0) * 100.0;
    println!(
        "bill run audit cost, {name}: with audit {:.2} s, without {:.2} s: {slower:+.1} %",
        audited.as_secs_f64(),
        unaudited.as_secs_f64(),
    );
}

#[allow(clippy::print_stdout)]
#[tokio::test]
#[ignore = "a benchmark: bench/bill-run-audit.sh, or cargo test --release -p tally-invoicing --test it audit_cost -- --ignored --nocapture"]
async fn bill_run_audit_cost() {
    let count: usize = std::env::var("INVOICING_AUDIT_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    let (audited, audited_subscriptions) = prepared(count).await;
    let (unaudited, unaudited_subscriptions) = prepared(count).await;
    unaudited.invoicing.audit_bill_runs_for_benchmark(false);

    let start_audited = run(&audited, count).await;
    let start_unaudited = run(&unaudited, count).await;

    for (h, created) in [
        (&audited, &audited_subscriptions),
        (&unaudited, &unaudited_subscriptions),
    ] {
        rate_january_usage(h, created).await;
        h.clock.set(at(2025, 2, 1)).unwrap();
        sync(h).await;
    }
    let end_unaudited = run(&unaudited, count).await;
    let end_audited = run(&audited, count).await;

    // Two invoices per subscription, each created and finalized by the run.
    assert_eq!(bill_run_entries(&audited).await, 4 * count as i64);
    assert_eq!(bill_run_entries(&unaudited).await, 0);
    let verified = tally_audit::verify(&audited.db.pool, tally_audit::Schema::Invoicing)
        .await
        .unwrap();
    assert_eq!(verified.broken, None);

    println!("bill run audit cost: {count} subscriptions per database");
    report(
        "start of the month (1 line each)",
        start_audited,
        start_unaudited,
    );
    report(
        "period end (3 usage lines + fee)",
        end_audited,
        end_unaudited,
    );
    report(
        "both runs",
        start_audited + end_audited,
        start_unaudited + end_unaudited,
    );
}
