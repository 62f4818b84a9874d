//! Writing the journal: transactions built by the domain's posting rules,
//! stored append-only in `finance.transactions` and `finance.entries`, in
//! the caller's database transaction (with the inbox record of the fact).
//!
//! Idempotency: a transaction's id is derived from its fact, so storing it
//! again inserts nothing; the stored body must equal the one built now, or
//! the fact changed under the same id, which is refused rather than hidden.
//!
//! Period close: nothing is posted before the latest close. A transaction
//! whose effective time falls in a closed period is stored at the close
//! instant, its own time kept in `original_effective_at`. Posting holds a
//! shared advisory lock and a close an exclusive one, so a close cannot
//! commit between a posting's read of the close and its insert.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_domain::finance::LedgerAccount;
use tally_domain::ids::MeterCode;
use tally_domain::ledger::{Account, AccountKind, Side, Transaction};
use tally_domain::money::Currency;

use crate::error::FinanceServiceError;

pub mod closes;
pub mod facts;
pub mod reads;
pub mod schedules;

/// The advisory lock key that orders postings and closes (`finance` in ASCII).
pub const CLOSE_LOCK: i64 = 0x0066_696e_616e_6365;

/// What a transaction came from, kept with it for the journal's filters.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// `invoice`, `payment`, `refund`, `credit_note` or `recognition`.
    pub kind: &'static str,
    /// The fact's object id (`inv_…`, `pay_…`, `ref_…`, `cn_…`).
    pub id: &'a str,
}

/// The accounts a fact may post to in `currency`: the fixed chart and the
/// usage revenue account of each meter named.
pub fn chart<'a>(
    currency: Currency,
    meters: impl IntoIterator<Item = &'a MeterCode>,
) -> Result<Vec<(LedgerAccount, Account)>, FinanceServiceError> {
    LedgerAccount::fixed()
        .into_iter()
        .chain(meters.into_iter().map(LedgerAccount::usage_revenue))
        .map(|ledger_account| {
            let account = ledger_account.account(currency)?;
            Ok((ledger_account, account))
        })
        .collect()
}

/// Opens the accounts (re-opening is a no-op), in one statement.
pub async fn open_accounts(
    connection: &mut PgConnection,
    accounts: &[(LedgerAccount, Account)],
) -> Result<(), FinanceServiceError> {
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (ledger_account, account) in accounts {
        columns.0.push(account.id.as_str().to_owned());
        columns.1.push(ledger_account.code().to_owned());
        columns.2.push(ledger_account.name().to_owned());
        columns.3.push(kind_code(account.kind));
        columns.4.push(account.currency.code().to_owned());
    }
    sqlx::query(
        "INSERT INTO finance.accounts (id, code, name, kind, currency) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[]) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .bind(&columns.3)
    .bind(&columns.4)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The stored code of an account kind (`finance.accounts.kind`; the proto's
/// `AccountKind` numbers).
pub fn kind_code(kind: AccountKind) -> i16 {
    match kind {
        AccountKind::Asset => 1,
        AccountKind::Liability => 2,
        AccountKind::Equity => 3,
        AccountKind::Revenue => 4,
        AccountKind::Expense => 5,
    }
}

/// The stored code of a side (`finance.entries.side`; the proto's `Side`).
pub fn side_code(side: Side) -> i16 {
    match side {
        Side::Debit => 1,
        Side::Credit => 2,
    }
}

/// The latest close: nothing may be posted before it. Takes the shared
/// close lock for the rest of the caller's transaction.
pub async fn closed_through(
    connection: &mut PgConnection,
) -> Result<Option<DateTime<Utc>>, FinanceServiceError> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(CLOSE_LOCK)
        .execute(&mut *connection)
        .await?;
    let latest: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(close_through) FROM finance.closes")
            .fetch_one(&mut *connection)
            .await?;
    Ok(latest)
}

/// Stores `transactions` (all from `source`) unless already stored; returns
/// how many were new. The accounts they name must be open.
pub async fn post(
    connection: &mut PgConnection,
    transactions: &[Transaction],
    source: Source<'_>,
    now: DateTime<Utc>,
) -> Result<usize, FinanceServiceError> {
    let sourced: Vec<(&Transaction, Source<'_>)> = transactions
        .iter()
        .map(|transaction| (transaction, source))
        .collect();
    post_sourced(connection, &sourced, now).await
}

/// [`post`] for transactions of several sources, in three statements
/// whatever their number: the transactions (in the given order, so `seq`
/// follows it), the bodies of those stored before (each must equal the one
/// built now), and the entries of the new ones.
pub async fn post_sourced(
    connection: &mut PgConnection,
    transactions: &[(&Transaction, Source<'_>)],
    now: DateTime<Utc>,
) -> Result<usize, FinanceServiceError> {
    if transactions.is_empty() {
        return Ok(0);
    }
    let close = closed_through(connection).await?;
    let rows = transactions
        .iter()
        .map(|(transaction, source)| TransactionRow::of(transaction, *source, close))
        .collect::<Result<Vec<_>, _>>()?;
    let (transactions, rows) = first_of_each_id(transactions, rows)?;
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO finance.transactions \
           (id, effective_at, original_effective_at, posted_at, description, reverses, source_kind, source_id, body) \
         SELECT id, effective_at, original_effective_at, $4, description, reverses, source_kind, source_id, body \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $5::text[], $6::text[], $7::text[], \
                     $8::text[], $9::jsonb[]) WITH ORDINALITY \
              AS t (id, effective_at, original_effective_at, description, reverses, source_kind, source_id, body, ord) \
         ORDER BY ord \
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(rows.iter().map(|row| row.id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.effective_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.original).collect::<Vec<_>>())
    .bind(now)
    .bind(rows.iter().map(|row| row.description.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.reverses.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.source_kind).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.source_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.body.clone()).collect::<Vec<_>>())
    .fetch_all(&mut *connection)
    .await?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    refuse_changed_bodies(connection, &rows, &inserted).await?;
    insert_entries(connection, &transactions, &rows, &inserted).await?;
    Ok(inserted.len())
}

/// The transactions without repeats of an id (a batch may carry one fact
/// twice, under two message ids), the first of each kept; a repeat must
/// have the first one's body, as a replay must have the stored one.
fn first_of_each_id<'t, 's>(
    transactions: &[(&'t Transaction, Source<'s>)],
    rows: Vec<TransactionRow>,
) -> Result<(TransactionsOf<'t, 's>, Vec<TransactionRow>), FinanceServiceError> {
    let mut seen: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(rows.len());
    let mut kept: (Vec<_>, Vec<TransactionRow>) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for (transaction, row) in transactions.iter().zip(rows) {
        if let Some(first) = seen.get(&row.id) {
            if kept.1[*first].body != row.body {
                return Err(FinanceServiceError::Conflict(format!(
                    "transaction {} is built twice with other content (from {} {}): the fact changed under the same id",
                    row.id, row.source_kind, row.source_id
                )));
            }
            continue;
        }
        seen.insert(row.id.clone(), kept.1.len());
        kept.0.push(*transaction);
        kept.1.push(row);
    }
    Ok(kept)
}

type TransactionsOf<'t, 's> = Vec<(&'t Transaction, Source<'s>)>;

/// A transaction as `finance.transactions` stores it.
struct TransactionRow {
    id: String,
    effective_at: DateTime<Utc>,
    original: Option<DateTime<Utc>>,
    description: String,
    reverses: Option<String>,
    source_kind: &'static str,
    source_id: String,
    body: serde_json::Value,
}

impl TransactionRow {
    /// A transaction effective before the latest close is stored at the
    /// close, its own time kept as `original`.
    fn of(
        transaction: &Transaction,
        source: Source<'_>,
        close: Option<DateTime<Utc>>,
    ) -> Result<Self, FinanceServiceError> {
        let body = serde_json::to_value(transaction).map_err(|error| {
            FinanceServiceError::Internal(format!("serialising a transaction: {error}"))
        })?;
        let (effective_at, original) = match close {
            Some(close) if transaction.effective_at() < close => {
                (close, Some(transaction.effective_at()))
            }
            _ => (transaction.effective_at(), None),
        };
        Ok(Self {
            id: transaction.id().as_str().to_owned(),
            effective_at,
            original,
            description: transaction.description().to_owned(),
            reverses: transaction.reverses().map(|id| id.as_str().to_owned()),
            source_kind: source.kind,
            source_id: source.id.to_owned(),
            body,
        })
    }
}

/// A transaction stored before must have the body built now: otherwise its
/// fact changed under the same id, which is refused rather than hidden.
async fn refuse_changed_bodies(
    connection: &mut PgConnection,
    rows: &[TransactionRow],
    inserted: &std::collections::HashSet<String>,
) -> Result<(), FinanceServiceError> {
    let before: Vec<&TransactionRow> = rows
        .iter()
        .filter(|row| !inserted.contains(&row.id))
        .collect();
    if before.is_empty() {
        return Ok(());
    }
    let stored: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT id, body FROM finance.transactions WHERE id = ANY($1)")
            .bind(before.iter().map(|row| row.id.clone()).collect::<Vec<_>>())
            .fetch_all(&mut *connection)
            .await?;
    let stored: std::collections::HashMap<String, serde_json::Value> = stored.into_iter().collect();
    for row in before {
        if stored.get(&row.id) != Some(&row.body) {
            return Err(FinanceServiceError::Conflict(format!(
                "transaction {} was posted before with other content (from {} {}): the fact changed under the same id",
                row.id, row.source_kind, row.source_id
            )));
        }
    }
    Ok(())
}

/// The entries of the newly stored transactions, in one statement.
async fn insert_entries(
    connection: &mut PgConnection,
    transactions: &[(&Transaction, Source<'_>)],
    rows: &[TransactionRow],
    inserted: &std::collections::HashSet<String>,
) -> Result<(), FinanceServiceError> {
    let mut columns = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for ((transaction, _), row) in transactions.iter().zip(rows) {
        if !inserted.contains(&row.id) {
            continue;
        }
        for (line, entry) in transaction.entries().iter().enumerate() {
            columns.0.push(row.id.clone());
            columns.1.push(i16::try_from(line).unwrap_or(i16::MAX));
            columns.2.push(entry.account.as_str().to_owned());
            columns.3.push(entry.amount.currency().code().to_owned());
            columns.4.push(side_code(entry.side));
            columns.5.push(entry.amount.amount());
            columns.6.push(row.effective_at);
        }
    }
    if columns.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO finance.entries (transaction_id, line, account_id, currency, side, amount, effective_at) \
         SELECT * FROM UNNEST($1::text[], $2::int2[], $3::text[], $4::text[], $5::int2[], $6::numeric[], \
                              $7::timestamptz[])",
    )
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .bind(&columns.3)
    .bind(&columns.4)
    .bind(&columns.5)
    .bind(&columns.6)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Every transaction posted for `source_id` that is not itself a reversal,
/// in posting order (a void reverses them; its reversals' ids are derived
/// from theirs, so a replayed void finds the same ones).
pub async fn posted_for(
    connection: &mut PgConnection,
    source_id: &str,
) -> Result<Vec<Transaction>, FinanceServiceError> {
    let bodies: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT body FROM finance.transactions WHERE source_id = $1 AND reverses IS NULL ORDER BY seq",
    )
    .bind(source_id)
    .fetch_all(&mut *connection)
    .await?;
    bodies
        .into_iter()
        .map(|body| {
            serde_json::from_value(body).map_err(|error| {
                FinanceServiceError::Internal(format!(
                    "a stored transaction of {source_id} is unreadable: {error}"
                ))
            })
        })
        .collect()
}

/// Empties what a rebuild books again: the journal, the schedules, the
/// invoices and the closes. TRUNCATE is not an UPDATE or DELETE: the
/// append-only triggers allow it, and only the rebuild uses it.
pub async fn truncate_books(connection: &mut PgConnection) -> Result<(), FinanceServiceError> {
    sqlx::query(
        "TRUNCATE finance.entries, finance.transactions, finance.schedule_days, finance.invoices, finance.closes",
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// How many transactions the journal holds.
pub async fn transaction_count(connection: &mut PgConnection) -> Result<i64, FinanceServiceError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM finance.transactions")
            .fetch_one(&mut *connection)
            .await?,
    )
}
