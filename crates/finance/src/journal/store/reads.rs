//! Reading the journal: the trial balance, transaction pages and schedules
//! (`LedgerService`'s queries).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::error::FinanceServiceError;

/// One account's totals at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTotals {
    /// ISO 4217 currency.
    pub currency: String,
    /// `acct_…`.
    pub account_id: String,
    /// The chart number.
    pub code: String,
    /// Display name.
    pub name: String,
    /// `finance.accounts.kind` (1 asset … 5 expense).
    pub kind: i16,
    /// Sum of debits.
    pub debits: Decimal,
    /// Sum of credits.
    pub credits: Decimal,
}

impl AccountTotals {
    /// Debits − credits on debit-normal accounts (assets, expenses), credits
    /// − debits otherwise.
    pub fn balance(&self) -> Decimal {
        if matches!(self.kind, 1 | 5) {
            self.debits - self.credits
        } else {
            self.credits - self.debits
        }
    }
}

/// Every account with a posting effective before `as_of` (all when `None`),
/// of `currency` (all when empty), ordered by currency and code.
pub async fn trial_balance(
    pool: &PgPool,
    currency: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<Vec<AccountTotals>, FinanceServiceError> {
    let rows: Vec<(String, String, String, String, i16, Decimal, Decimal)> = sqlx::query_as(
        "SELECT e.currency, e.account_id, a.code, a.name, a.kind, \
                COALESCE(sum(e.amount) FILTER (WHERE e.side = 1), 0), \
                COALESCE(sum(e.amount) FILTER (WHERE e.side = 2), 0) \
         FROM finance.entries e JOIN finance.accounts a ON a.id = e.account_id \
         WHERE ($1 = '' OR e.currency = $1) AND ($2::timestamptz IS NULL OR e.effective_at < $2) \
         GROUP BY e.currency, e.account_id, a.code, a.name, a.kind \
         ORDER BY e.currency, a.code, e.account_id",
    )
    .bind(currency)
    .bind(as_of)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(currency, account_id, code, name, kind, debits, credits)| AccountTotals {
                currency,
                account_id,
                code,
                name,
                kind,
                debits,
                credits,
            },
        )
        .collect())
}

/// Filters of a journal page.
#[derive(Debug, Clone, Default)]
pub struct JournalFilter {
    /// Only transactions with an entry in this currency (empty: all).
    pub currency: String,
    /// Only transactions with an entry on this account (empty: all).
    pub account_id: String,
    /// Only this source (empty: all).
    pub source_id: String,
    /// Effective at or after.
    pub from: Option<DateTime<Utc>>,
    /// Effective before.
    pub to: Option<DateTime<Utc>>,
}

/// A stored transaction and its entries.
#[derive(Debug, Clone)]
pub struct StoredTransaction {
    /// Posting order (the page token).
    pub seq: i64,
    /// `txn_…`.
    pub id: String,
    /// In the books.
    pub effective_at: DateTime<Utc>,
    /// Before a close moved it.
    pub original_effective_at: Option<DateTime<Utc>>,
    /// When stored.
    pub posted_at: DateTime<Utc>,
    /// `rule key=value …`.
    pub description: String,
    /// What it reverses.
    pub reverses: Option<String>,
    /// `invoice`, `payment`, …
    pub source_kind: String,
    /// `inv_…`, …
    pub source_id: String,
    /// `(account, currency, side code, amount)` in line order.
    pub entries: Vec<(String, String, i16, Decimal)>,
}

type TransactionRow = (
    i64,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    String,
    Option<String>,
    String,
    String,
);

/// Up to `limit` transactions after `after_seq`, oldest first.
pub async fn journal_page(
    pool: &PgPool,
    filter: &JournalFilter,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<StoredTransaction>, FinanceServiceError> {
    let rows: Vec<TransactionRow> = sqlx::query_as(
        "SELECT t.seq, t.id, t.effective_at, t.original_effective_at, t.posted_at, t.description, \
                t.reverses, t.source_kind, t.source_id \
         FROM finance.transactions t \
         WHERE t.seq > $1 \
           AND ($2 = '' OR t.source_id = $2) \
           AND ($3::timestamptz IS NULL OR t.effective_at >= $3) \
           AND ($4::timestamptz IS NULL OR t.effective_at < $4) \
           AND ($5 = '' AND $6 = '' OR EXISTS ( \
                 SELECT 1 FROM finance.entries e WHERE e.transaction_id = t.id \
                   AND ($5 = '' OR e.currency = $5) AND ($6 = '' OR e.account_id = $6))) \
         ORDER BY t.seq LIMIT $7",
    )
    .bind(after_seq)
    .bind(&filter.source_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(&filter.currency)
    .bind(&filter.account_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<String> = rows.iter().map(|row| row.1.clone()).collect();
    let entries: Vec<(String, String, String, i16, Decimal)> = sqlx::query_as(
        "SELECT transaction_id, account_id, currency, side, amount FROM finance.entries \
         WHERE transaction_id = ANY($1) ORDER BY transaction_id, line",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                seq,
                id,
                effective_at,
                original_effective_at,
                posted_at,
                description,
                reverses,
                source_kind,
                source_id,
            )| {
                let entries = entries
                    .iter()
                    .filter(|entry| entry.0 == id)
                    .map(|(_, account, currency, side, amount)| {
                        (account.clone(), currency.clone(), *side, *amount)
                    })
                    .collect();
                StoredTransaction {
                    seq,
                    id,
                    effective_at,
                    original_effective_at,
                    posted_at,
                    description,
                    reverses,
                    source_kind,
                    source_id,
                    entries,
                }
            },
        )
        .collect())
}

/// One stored schedule day: `(line, day, amount, currency, recognised)`.
pub type ScheduleDay = (String, NaiveDate, Decimal, String, bool);

/// The stored invoice fact (JSON) and its schedule days, line by line and
/// day by day; `None` when finance has no such invoice.
pub async fn schedule(
    pool: &PgPool,
    invoice_id: &str,
) -> Result<Option<(serde_json::Value, Vec<ScheduleDay>)>, FinanceServiceError> {
    let fact: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT fact FROM finance.invoices WHERE invoice_id = $1")
            .bind(invoice_id)
            .fetch_optional(pool)
            .await?;
    let Some(fact) = fact else {
        return Ok(None);
    };
    let days: Vec<ScheduleDay> = sqlx::query_as(
        "SELECT line_id, day, amount, currency, recognised FROM finance.schedule_days \
         WHERE invoice_id = $1 ORDER BY line_id, day",
    )
    .bind(invoice_id)
    .fetch_all(pool)
    .await?;
    Ok(Some((fact, days)))
}
