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

/// Opens the accounts (re-opening is a no-op).
pub async fn open_accounts(
    connection: &mut PgConnection,
    accounts: &[(LedgerAccount, Account)],
) -> Result<(), FinanceServiceError> {
    for (ledger_account, account) in accounts {
        sqlx::query(
            "INSERT INTO finance.accounts (id, code, name, kind, currency) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(account.id.as_str())
        .bind(ledger_account.code())
        .bind(ledger_account.name())
        .bind(kind_code(account.kind))
        .bind(account.currency.code())
        .execute(&mut *connection)
        .await?;
    }
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
    if transactions.is_empty() {
        return Ok(0);
    }
    let close = closed_through(connection).await?;
    let mut stored = 0;
    for transaction in transactions {
        let body = serde_json::to_value(transaction).map_err(|error| {
            FinanceServiceError::Internal(format!("serialising a transaction: {error}"))
        })?;
        let (effective_at, original) = match close {
            Some(close) if transaction.effective_at() < close => {
                (close, Some(transaction.effective_at()))
            }
            _ => (transaction.effective_at(), None),
        };
        let inserted = sqlx::query(
            "INSERT INTO finance.transactions \
               (id, effective_at, original_effective_at, posted_at, description, reverses, source_kind, source_id, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(transaction.id().as_str())
        .bind(effective_at)
        .bind(original)
        .bind(now)
        .bind(transaction.description())
        .bind(transaction.reverses().map(|id| id.as_str().to_owned()))
        .bind(source.kind)
        .bind(source.id)
        .bind(&body)
        .execute(&mut *connection)
        .await?
        .rows_affected();
        if inserted == 0 {
            let existing: serde_json::Value =
                sqlx::query_scalar("SELECT body FROM finance.transactions WHERE id = $1")
                    .bind(transaction.id().as_str())
                    .fetch_one(&mut *connection)
                    .await?;
            if existing != body {
                return Err(FinanceServiceError::Conflict(format!(
                    "transaction {} was posted before with other content (from {} {}): the fact changed under the same id",
                    transaction.id(),
                    source.kind,
                    source.id
                )));
            }
            continue;
        }
        for (line, entry) in transaction.entries().iter().enumerate() {
            sqlx::query(
                "INSERT INTO finance.entries (transaction_id, line, account_id, currency, side, amount, effective_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(transaction.id().as_str())
            .bind(i16::try_from(line).unwrap_or(i16::MAX))
            .bind(entry.account.as_str())
            .bind(entry.amount.currency().code())
            .bind(side_code(entry.side))
            .bind(entry.amount.amount())
            .bind(effective_at)
            .execute(&mut *connection)
            .await?;
        }
        stored += 1;
    }
    Ok(stored)
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
