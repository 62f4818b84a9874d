//! Finance's audit chain: a period close and a ledger rebuild each record
//! exactly one entry with the caller and the states before and after; a
//! close that changes nothing records none, and a close whose transaction
//! rolls back leaves neither the close nor an entry.

use serde_json::{Value, json};
use tally_audit::{Filter, Schema, StoredEntry};
use tally_proto::finance::ledger_service_server::LedgerService;
use tally_proto::finance::{ClosePeriodRequest, RebuildLedgerRequest};
use tally_proto::invoicing::InvoiceLineKind::Recurring;
use tally_runtime::auth::{ApiKey, Scope};
use tonic::Request;

use crate::support::*;

/// A request by key `key_fin` (`controller`) with request id `request_id`.
fn by_key<T>(message: T, request_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ApiKey {
        id: "key_fin".into(),
        name: "controller".into(),
        scopes: [Scope::Admin].into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

async fn close(books: &Books, through: &str, memo: &str) -> Result<(), tonic::Status> {
    let request = ClosePeriodRequest {
        close_through: Some(tally_proto::convert::timestamp(at(through))),
        memo: memo.into(),
    };
    LedgerService::close_period(&books.api, by_key(request, &format!("req-{memo}")))
        .await
        .map(drop)
}

async fn entries(books: &Books) -> Vec<StoredEntry> {
    let (entries, _) = tally_audit::list(
        &books.database.pool,
        &[Schema::Finance],
        &Filter::default(),
        None,
        100,
    )
    .await
    .unwrap();
    entries
}

fn state(text: Option<&String>) -> Value {
    text.map_or(Value::Null, |text| serde_json::from_str(text).unwrap())
}

#[tokio::test]
async fn a_close_and_a_rebuild_each_record_one_entry_in_finances_chain() {
    let books = Books::open("2026-03-15T00:00:00Z").await;
    let january = invoice(
        "inv_jan",
        "cus_1",
        &[line(
            "il_fee_jan",
            Recurring,
            "31.00",
            ("2026-01-15T00:00:00Z", "2026-02-15T00:00:00Z"),
        )],
    );
    let event = finalized(january, "2026-01-15T00:00:00Z");
    assert!(books.invoices.apply(&event.event_id, &event).await.unwrap());

    close(&books, "2026-02-01T00:00:00Z", "January")
        .await
        .unwrap();
    // Not later than the close in force: nothing changes, nothing recorded.
    close(&books, "2026-01-15T00:00:00Z", "again")
        .await
        .unwrap();
    close(&books, "2026-03-01T00:00:00Z", "February")
        .await
        .unwrap();
    let rebuilt = LedgerService::rebuild_ledger(
        &books.api,
        by_key(RebuildLedgerRequest::default(), "req-rebuild"),
    )
    .await
    .unwrap()
    .into_inner();

    let entries = entries(&books).await;
    let listed: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry.action.as_str(),
                entry.resource_id.as_str(),
                entry.request_id.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "ledger.period_closed",
                "2026-02-01T00:00:00.000000Z",
                "req-January"
            ),
            (
                "ledger.period_closed",
                "2026-03-01T00:00:00.000000Z",
                "req-February"
            ),
            ("ledger.rebuilt", "finance", "req-rebuild"),
        ]
    );
    for entry in &entries {
        assert_eq!(
            (
                entry.actor_kind.as_str(),
                entry.actor_id.as_str(),
                entry.actor_name.as_str()
            ),
            ("api_key", "key_fin", "controller")
        );
    }
    let january_close = json!({
        "close_through": "2026-02-01T00:00:00.000000Z",
        "closed_at": "2026-03-15T00:00:00.000000Z",
        "memo": "January",
    });
    assert_eq!(state(entries[0].before_state.as_ref()), Value::Null);
    assert_eq!(state(entries[0].after_state.as_ref()), january_close);
    assert_eq!(entries[0].comment.as_deref(), Some("January"));
    assert_eq!(state(entries[1].before_state.as_ref()), january_close);
    assert_eq!(
        state(entries[1].after_state.as_ref())["close_through"],
        "2026-03-01T00:00:00.000000Z"
    );
    let transactions = i64::try_from(rebuilt.transactions).unwrap();
    assert!(transactions > 0);
    assert_eq!(
        state(entries[2].after_state.as_ref()),
        json!({ "facts": rebuilt.facts, "transactions": transactions })
    );
    assert_eq!(state(entries[2].before_state.as_ref())["facts"], 1);

    let verification = tally_audit::verify(&books.database.pool, Schema::Finance)
        .await
        .unwrap();
    assert_eq!(verification.broken, None);
    assert_eq!(verification.entries_checked, 3);
}

#[tokio::test]
async fn a_close_whose_transaction_rolls_back_leaves_no_entry() {
    let books = Books::open("2026-03-15T00:00:00Z").await;
    // The entry is the transaction's last statement: make it fail, so the
    // close made before it rolls back with it.
    sqlx::raw_sql(
        "CREATE FUNCTION finance.refuse_entries() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse_entries BEFORE INSERT ON finance.audit_log \
         FOR EACH ROW EXECUTE FUNCTION finance.refuse_entries();",
    )
    .execute(&books.database.pool)
    .await
    .unwrap();
    close(&books, "2026-02-01T00:00:00Z", "January")
        .await
        .unwrap_err();
    let closes: i64 = sqlx::query_scalar("SELECT count(*) FROM finance.closes")
        .fetch_one(&books.database.pool)
        .await
        .unwrap();
    assert_eq!(closes, 0, "the close rolled back with its entry");
    assert!(entries(&books).await.is_empty());
}
