//! The audit chain against real PostgreSQL (testkit): recording in the
//! caller's transaction, the lock that keeps the chain from forking, the
//! append-only triggers, tamper detection, and the gRPC service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod chain;
mod clock;
mod publish;
mod tamper;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tally_audit::{Actor, AuditEntryId, Entry, Origin, Schema};
use tally_domain::ids::{IdBody, PrefixedId};

/// A fixed instant plus `seconds`.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

/// An `invoice.voided` entry for `invoice` by the key `key_test`.
pub fn void_entry(number: u32, invoice: &str) -> Entry {
    Entry::new(
        AuditEntryId::with_body(&IdBody::hex(u128::from(number))),
        at(i64::from(number)),
        "invoice.voided",
        ("invoice", invoice),
        Origin {
            actor: Actor::ApiKey {
                id: "key_test".into(),
                name: "finance-team".into(),
            },
            request_id: Some(format!("req-{number}")),
            trace_id: None,
        },
    )
    .reason("duplicate")
    .before(json!({"status": "finalized", "total": "10.00", "id": invoice}))
    .after(json!({"status": "void", "total": "10.00", "id": invoice}))
}

/// Records entries `numbers` (ids and instants follow the number) in
/// `schema`, one transaction each.
pub async fn record_many(
    pool: &sqlx::PgPool,
    schema: Schema,
    numbers: std::ops::RangeInclusive<u32>,
) {
    for number in numbers {
        let mut transaction = pool.begin().await.unwrap();
        tally_audit::record(
            &mut transaction,
            schema,
            void_entry(number, &format!("inv_{number}")),
        )
        .await
        .unwrap();
        transaction.commit().await.unwrap();
    }
}
