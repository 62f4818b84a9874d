//! The month's books: once finance has applied every invoice and payment
//! event the cluster published, its trial balance balances per currency and
//! ties out with what invoicing and payments hold, to the cent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::types::Decimal;

use crate::cluster::Cluster;

/// The bound on finance catching up with the other services.
const CATCH_UP: Duration = Duration::from_secs(120);

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until every invoice and payment event published so far is in
/// finance's inbox.
async fn wait_until_booked(pool: &PgPool) {
    let started = Instant::now();
    loop {
        let waiting = scalar(
            pool,
            "SELECT (SELECT count(*) FROM invoicing.outbox WHERE topic = 'invoice-events') \
                  - (SELECT count(*) FROM finance.inbox WHERE subscription = 'finance-invoice-events') \
                  + (SELECT count(*) FROM payments.outbox WHERE topic = 'payment-events') \
                  - (SELECT count(*) FROM finance.inbox WHERE subscription = 'finance-payment-events')",
        )
        .await;
        if waiting == 0 {
            return;
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "finance has not applied {waiting} invoice or payment events after {CATCH_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Account code → balance per currency, from `tally finance trial-balance`,
/// checking that debits equal credits in each.
fn trial_balance(cluster: &Cluster) -> BTreeMap<String, BTreeMap<String, Decimal>> {
    let output = cluster.cli(
        &[
            "finance",
            "trial-balance",
            "--address",
            cluster.address("finance"),
            "--output",
            "json",
        ],
        None,
    );
    let response: serde_json::Value = serde_json::from_str(&output).unwrap();
    let amount =
        |value: &serde_json::Value| -> Decimal { value.as_str().unwrap().parse().unwrap() };
    response["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trial| {
            assert_eq!(
                amount(&trial["totalDebits"]["amount"]),
                amount(&trial["totalCredits"]["amount"]),
                "the trial balance balances: {trial}"
            );
            let accounts = trial["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|account| {
                    (
                        account["code"].as_str().unwrap().to_owned(),
                        amount(&account["balance"]["amount"]),
                    )
                })
                .collect();
            (trial["currency"].as_str().unwrap().to_owned(), accounts)
        })
        .collect()
}

/// The books tie out with invoicing's invoices and payments' payments.
pub async fn check_books(cluster: &Cluster, pool: &PgPool) {
    wait_until_booked(pool).await;
    let books = trial_balance(cluster);
    let zero = Decimal::ZERO;
    for (currency, accounts) in &books {
        let balance = |code: &str| accounts.get(code).copied().unwrap_or(zero);
        // Cash: every succeeded charge, less the refunds paid out.
        let collected: Decimal = sqlx::query_scalar(
            "SELECT COALESCE(sum(amount), 0) FROM payments.payments WHERE currency = $1 AND status IN ('succeeded', 'refunded', 'partially_refunded')",
        )
        .bind(currency)
        .fetch_one(pool)
        .await
        .unwrap();
        let refunded: Decimal = sqlx::query_scalar(
            "SELECT COALESCE(sum(amount_refunded), 0) FROM payments.payments WHERE currency = $1",
        )
        .bind(currency)
        .fetch_one(pool)
        .await
        .unwrap();
        // Receivable: what open invoices still ask for (a negative invoice
        // is a customer credit, not a receivable).
        let receivable: Decimal = sqlx::query_scalar(
            "SELECT COALESCE(sum(total - amount_paid - amount_credited), 0) FROM invoicing.invoices \
             WHERE currency = $1 AND status IN ('finalized', 'uncollectible') AND total > 0",
        )
        .bind(currency)
        .fetch_one(pool)
        .await
        .unwrap();
        eprintln!(
            "books {currency}: {accounts:?}; collected {collected}, refunded {refunded}, receivable {receivable}"
        );
        if balance("1100") != receivable {
            let invoices: Vec<(String, String, Decimal, Decimal, Decimal)> = sqlx::query_as(
                "SELECT id, status, total, amount_paid, amount_credited FROM invoicing.invoices WHERE status <> 'draft' ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let per_source: Vec<(String, String, i16, Decimal)> = sqlx::query_as(
                "SELECT t.source_id, t.description, e.side, e.amount FROM finance.entries e \
                 JOIN finance.transactions t ON t.id = e.transaction_id \
                 WHERE e.account_id LIKE '%1100' ORDER BY t.seq",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            eprintln!("invoices: {invoices:#?}\nreceivable entries: {per_source:#?}");
        }
        assert_eq!(
            balance("1100"),
            receivable,
            "{currency}: receivables = what open invoices ask for: {accounts:?}"
        );
        assert_eq!(
            balance("1000"),
            collected - refunded,
            "{currency}: cash = collected − refunded: {accounts:?}"
        );
        // Nothing is unbilled (usage is recognised when invoiced) and every
        // refund owed by a credit note was paid out.
        assert_eq!(
            balance("1150"),
            zero,
            "{currency}: unbilled receivables: {accounts:?}"
        );
        assert_eq!(
            balance("2400"),
            zero,
            "{currency}: refunds clearing: {accounts:?}"
        );
        // Revenue recognised + still deferred = what was billed, net of
        // credit notes: the books' equation, assets = liabilities + revenue.
        let assets = balance("1000") + balance("1100") + balance("1150");
        let liabilities = balance("2100") + balance("2200") + balance("2300") + balance("2400");
        let revenue: Decimal = accounts
            .iter()
            .filter(|(code, _)| code.starts_with('4'))
            .map(|(_, amount)| *amount)
            .sum();
        assert_eq!(assets, liabilities + revenue, "{currency}: {accounts:?}");
    }
    assert!(books.contains_key("USD"), "{books:?}");
}
