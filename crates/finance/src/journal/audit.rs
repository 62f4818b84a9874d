//! Finance's audit entries (its own chain, `finance.audit_log`;
//! docs/architecture.md, "Audit log"): a period close and a ledger rebuild
//! each record one entry as the last statement of their transaction — the
//! books' other changes are postings derived from facts, recorded where the
//! facts are made.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tally_audit::{Entry, Origin, Schema};
use tally_runtime::ids::IdGenerator;

use super::store::closes::Close;
use crate::error::FinanceServiceError;

/// `ledger.period_closed`: the resource is the close (`period_close`, its
/// `close_through` in RFC 3339), the memo the comment.
pub(super) const PERIOD_CLOSED: &str = "ledger.period_closed";
/// `ledger.rebuilt`: the resource is the ledger (`ledger`, `finance`).
pub(super) const REBUILT: &str = "ledger.rebuilt";

/// Appends `entry` to finance's chain on `connection`, the change's
/// transaction (call it last: the chain's lock after every other).
async fn record(connection: &mut PgConnection, entry: Entry) -> Result<(), FinanceServiceError> {
    tally_audit::record(connection, Schema::Finance, entry).await?;
    Ok(())
}

/// What the audit log keeps of a close.
fn close_state(close: &Close) -> Value {
    json!({
        "close_through": instant(close.close_through),
        "closed_at": instant(close.closed_at),
        "memo": close.memo,
    })
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Records the close `made` (the close in force before it: `previous`).
pub(super) async fn period_closed(
    connection: &mut PgConnection,
    (ids, origin): (&dyn IdGenerator, &Origin),
    previous: Option<&Close>,
    made: &Close,
) -> Result<(), FinanceServiceError> {
    let resource_id = instant(made.close_through);
    let mut entry = Entry::minted(
        ids,
        made.closed_at,
        PERIOD_CLOSED,
        ("period_close", &resource_id),
        origin,
    )
    .comment(made.memo.clone())
    .after(close_state(made));
    entry.before = previous.map(close_state);
    record(connection, entry).await
}

/// The books' size before and after a rebuild.
pub(super) struct BooksSize {
    /// Journal transactions.
    pub transactions: i64,
    /// Facts booked (after) or kept (before).
    pub facts: usize,
}

/// Records a rebuild at `now` that turned the books of size `before` into `after`.
pub(super) async fn rebuilt(
    connection: &mut PgConnection,
    (ids, origin, now): (&dyn IdGenerator, &Origin, DateTime<Utc>),
    before: &BooksSize,
    after: &BooksSize,
) -> Result<(), FinanceServiceError> {
    let state =
        |size: &BooksSize| json!({ "transactions": size.transactions, "facts": size.facts });
    let entry = Entry::minted(ids, now, REBUILT, ("ledger", "finance"), origin)
        .before(state(before))
        .after(state(after));
    record(connection, entry).await
}
