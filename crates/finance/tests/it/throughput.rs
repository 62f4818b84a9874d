//! Finance benchmarks (`bench/finance.sh` runs them in a release build on a
//! durable private cluster; `#[ignore]`d, so `make test` never times anything):
//!
//! - posting: finalized invoices and their payments applied through the
//!   consumers' handlers — first one fact per transaction, several at once
//!   (the baseline), then in batches of the consumers' size, one transaction
//!   each, several batches at once (the consumers' path) — ledger
//!   transactions per second;
//! - the rebuild of that month from the stored facts;
//! - MRR, movements over twelve months and cohort retention over
//!   `FINANCE_BENCH_SUBSCRIPTIONS` subscriptions with a year of monthly fees.
//!
//! Sizes: `FINANCE_BENCH_CUSTOMERS` (10,000), `FINANCE_BENCH_CONCURRENCY` (8),
//! `FINANCE_BENCH_BATCH` (the consumers' 100), `FINANCE_BENCH_BATCHES_IN_FLIGHT`
//! (6: both consumers' batches at once),
//! `FINANCE_BENCH_SUBSCRIPTIONS` (100,000); `FINANCE_BENCH_POSTING_ONLY` set stops
//! after the two postings (no recognition, no rebuild).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tally_domain::money::Currency;
use tally_finance::consumers::{LEDGER_BATCH_MESSAGES, LEDGER_BATCHES_IN_FLIGHT};
use tally_finance::{AnalyticsApi, InvoiceEventsHandler, PaymentEventsHandler};
use tally_proto::events::{InvoiceEvent, PaymentEvent};
use tally_proto::invoicing::InvoiceLineKind;

use crate::support::{Books, at, finalized, invoice, line, paid, usage_line};

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Customer `n`'s December invoice (November's usage in arrears, December's
/// fee in advance) and its payment.
pub(crate) fn month_of(n: usize) -> (InvoiceEvent, PaymentEvent) {
    let id = format!("inv_{n:06}");
    let customer = format!("cus_{n:06}");
    let usage = format!("{}.{:02}", 10 + n % 90, n % 100);
    let (fee_id, tokens_id) = (format!("il_{n:06}_fee"), format!("il_{n:06}_tokens"));
    let lines = [
        line(
            &fee_id,
            InvoiceLineKind::Recurring,
            "49.00",
            ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ),
        usage_line(
            &tokens_id,
            "tokens",
            &usage,
            ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        ),
    ];
    let total = (rust_decimal::Decimal::from(49) + usage.parse::<rust_decimal::Decimal>().unwrap())
        .to_string();
    (
        finalized(invoice(&id, &customer, &lines), "2026-12-01T00:05:00Z"),
        paid(
            &id,
            &customer,
            &format!("pay_{n:06}"),
            &total,
            "2026-12-01T00:10:00Z",
        ),
    )
}

async fn transactions(books: &Books) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM finance.transactions")
        .fetch_one(&books.database.pool)
        .await
        .unwrap()
}

/// Applies every event with `concurrency` workers, each taking every
/// `concurrency`-th customer (one customer's invoice before its payment).
async fn post_all(
    invoices: InvoiceEventsHandler,
    payments: PaymentEventsHandler,
    months: Arc<Vec<(InvoiceEvent, PaymentEvent)>>,
    concurrency: usize,
) {
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (invoices, payments, months) = (invoices.clone(), payments.clone(), months.clone());
            tokio::spawn(async move {
                for (invoice, payment) in months.iter().skip(worker).step_by(concurrency) {
                    assert!(invoices.apply(&invoice.event_id, invoice).await.unwrap());
                    assert!(payments.apply(&payment.event_id, payment).await.unwrap());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

/// Applies every event in batches of `batch` messages (what the consumers
/// apply in one transaction), `in_flight` batches at once: each worker takes
/// every `in_flight`-th run of `batch` customers, their invoices' batch
/// before their payments'.
async fn post_batched(
    invoices: InvoiceEventsHandler,
    payments: PaymentEventsHandler,
    months: Arc<Vec<(InvoiceEvent, PaymentEvent)>>,
    batch: usize,
    in_flight: usize,
) {
    let workers: Vec<_> = (0..in_flight)
        .map(|worker| {
            let (invoices, payments, months) = (invoices.clone(), payments.clone(), months.clone());
            tokio::spawn(async move {
                for run in months.chunks(batch).skip(worker).step_by(in_flight) {
                    let invoice_batch: Vec<(&str, &InvoiceEvent)> = run
                        .iter()
                        .map(|(invoice, _)| (invoice.event_id.as_str(), invoice))
                        .collect();
                    let payment_batch: Vec<(&str, &PaymentEvent)> = run
                        .iter()
                        .map(|(_, payment)| (payment.event_id.as_str(), payment))
                        .collect();
                    assert_eq!(invoices.apply_all(&invoice_batch).await.unwrap(), run.len());
                    assert_eq!(payments.apply_all(&payment_batch).await.unwrap(), run.len());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

/// The line the benchmark prints for one way of posting.
fn posting_line(how: &str, customers: usize, posted: i64, elapsed: std::time::Duration) -> String {
    format!(
        "posting ({how}): {customers} invoices + {customers} payments, {posted} ledger transactions \
         in {:.2} s = {:.0} transactions/s",
        elapsed.as_secs_f64(),
        posted as f64 / elapsed.as_secs_f64()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/finance.sh"]
async fn posting_and_rebuilding_a_month() {
    let customers = size("FINANCE_BENCH_CUSTOMERS", 10_000);
    let concurrency = size("FINANCE_BENCH_CONCURRENCY", 8);
    let batch = size("FINANCE_BENCH_BATCH", LEDGER_BATCH_MESSAGES);
    let in_flight = size(
        "FINANCE_BENCH_BATCHES_IN_FLIGHT",
        2 * LEDGER_BATCHES_IN_FLIGHT,
    );
    let months: Arc<Vec<_>> = Arc::new((0..customers).map(month_of).collect());

    // The baseline: one fact per transaction, as a message handled alone.
    let baseline = Books::open("2026-12-01T00:05:00Z").await;
    let started = Instant::now();
    post_all(
        baseline.invoices.clone(),
        baseline.payments.clone(),
        Arc::clone(&months),
        concurrency,
    )
    .await;
    let elapsed = started.elapsed();
    let posted = transactions(&baseline).await;
    let how = format!("one fact per transaction, {concurrency} at once");
    println!("{}", posting_line(&how, customers, posted, elapsed));
    drop(baseline);

    // The consumers' path: a delivered batch in one transaction.
    let books = Books::open("2026-12-01T00:05:00Z").await;
    let started = Instant::now();
    post_batched(
        books.invoices.clone(),
        books.payments.clone(),
        months,
        batch,
        in_flight,
    )
    .await;
    let elapsed = started.elapsed();
    let posted = transactions(&books).await;
    let how = format!("batches of {batch} messages, {in_flight} at once");
    println!("{}", posting_line(&how, customers, posted, elapsed));

    if std::env::var_os("FINANCE_BENCH_POSTING_ONLY").is_some_and(|value| !value.is_empty()) {
        return;
    }
    // December recognised day by day, then the whole month rebuilt from the facts.
    let started = Instant::now();
    let recognised = books.recognise("2027-01-01T00:00:00Z").await;
    println!(
        "recognition: December's {recognised} schedule days in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let before = books.balances(None).await;
    let started = Instant::now();
    let rebuilt = books
        .api
        .rebuild(&tally_audit::Origin::system("test"))
        .await
        .unwrap();
    println!(
        "rebuild: {} facts, {} transactions, a month of {customers} customers in {:.2} s",
        rebuilt.facts,
        rebuilt.transactions,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        books.balances(None).await,
        before,
        "the rebuild gives the same books"
    );
}

/// Subscription `n`'s monthly fee rows for 2026: 49.00, 99.00 or 499.00; every
/// 10th upgrades to 999.00 in July, every 20th ends in October.
const FEES: &str = "
INSERT INTO finance.subscriptions
    (subscription_id, customer_id, currency, status, version, start_at, ends_at)
SELECT 'sub_' || n, 'cus_' || n, 'USD', 'active', 1, '2026-01-01T00:00:00Z',
       CASE WHEN n % 20 = 0 THEN timestamptz '2026-10-01T00:00:00Z' END
FROM generate_series(1, $1) AS n;
";

const FEE_ROWS: &str = "
INSERT INTO finance.subscription_fees
    (subscription_id, plan_version_id, charge_key, effective_from, customer_id, currency,
     period_amount, billing_interval, mrr, invoice_id, line_id)
SELECT 'sub_' || n, plan, 'platform_fee', month, 'cus_' || n, 'USD', fee,
       '{\"unit\":\"months\",\"count\":1}', fee,
       'inv_' || n || '_' || m, 'il_' || n || '_' || m
FROM generate_series(1, $1) AS n,
     generate_series(0, 11) AS m,
     LATERAL (SELECT timestamptz '2026-01-01T00:00:00Z' + make_interval(months => m) AS month) AS t,
     LATERAL (SELECT CASE WHEN n % 10 = 0 AND m >= 6 THEN 'pv_scale' ELSE 'pv_' || (n % 3) END AS plan,
                     CASE WHEN n % 10 = 0 AND m >= 6 THEN 999.00
                          WHEN n % 3 = 0 THEN 49.00 WHEN n % 3 = 1 THEN 99.00 ELSE 499.00 END AS fee) AS f
WHERE NOT (n % 20 = 0 AND m >= 9);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/finance.sh"]
async fn mrr_movements_and_retention_over_a_year_of_subscriptions() {
    let subscriptions = size("FINANCE_BENCH_SUBSCRIPTIONS", 100_000);
    let books = Books::open("2027-01-01T00:00:00Z").await;
    let pool = &books.database.pool;
    let started = Instant::now();
    sqlx::query(FEES)
        .bind(subscriptions as i64)
        .execute(pool)
        .await
        .unwrap();
    let rows = sqlx::query(FEE_ROWS)
        .bind(subscriptions as i64)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
    sqlx::query("ANALYZE finance.subscription_fees, finance.subscriptions")
        .execute(pool)
        .await
        .unwrap();
    println!(
        "setup: {subscriptions} subscriptions, {rows} fee rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let api = AnalyticsApi::new(pool.clone(), books.clock.clone());
    let year: (DateTime<Utc>, DateTime<Utc>) =
        (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));

    let started = Instant::now();
    let snapshot = api
        .mrr_at(Currency::USD, at("2026-12-15T00:00:00Z"))
        .await
        .unwrap();
    println!(
        "GetMrr: {} paying customers, MRR {} in {:.2} s",
        snapshot.paying_customers,
        snapshot.mrr.amount(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let movements = api.movements(Currency::USD, year.0, year.1).await.unwrap();
    println!(
        "ListMrrMovements over 12 months: {} movements in {:.2} s",
        movements.movements.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let cohorts = api
        .retention(Currency::USD, year, at("2027-01-01T00:00:00Z"))
        .await
        .unwrap();
    println!(
        "GetRetention over 12 months: {} cohorts in {:.2} s",
        cohorts.len(),
        started.elapsed().as_secs_f64()
    );
    // The figures are right, not only fast: every 10th upgraded, every 20th churned.
    let expected_new = subscriptions;
    let new = movements
        .movements
        .iter()
        .filter(|(_, movement)| movement.kind == tally_domain::finance::mrr::MovementKind::New)
        .count();
    assert_eq!(new, expected_new);
}
