//! Ingest's audit chain: opening and closing a backfill each leave exactly
//! one entry (`backfill.opened`, `backfill.closed`) with the caller's key and
//! the backfill before and after; replays, conflicts, a second close and an
//! unknown backfill leave none; the key appears nowhere; the chain verifies.

use chrono::Duration;
use serde_json::Value;
use tally_audit::{Filter, Schema, StoredEntry};
use tally_proto::common::TimeRange;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::*;
use tally_runtime::auth::{self, Scope};
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_testkit::keys::{REQUEST_ID, serve_with_key};
use tonic::Code;

use crate::support::*;

async fn entries(h: &Harness) -> Vec<StoredEntry> {
    tally_audit::list(&h.db.pool, &[Schema::Ingest], &Filter::default(), None, 100)
        .await
        .unwrap()
        .0
}

fn state(json: Option<&String>) -> Value {
    serde_json::from_str(json.expect("a state")).unwrap()
}

#[tokio::test]
async fn opening_and_closing_a_backfill_leave_one_entry_each_by_the_caller() {
    let h = harness().await;
    let (channel, key) = serve_with_key(
        h.ingest.grpc_server(16 << 20),
        &h.shutdown,
        "key_ops",
        "ops-team",
        &[Scope::Admin],
    )
    .await
    .unwrap();
    let mut client = IngestServiceClient::new(channel);
    let old = start_time() - Duration::days(50);
    let open = OpenBackfillRequest {
        idempotency_key: "migration-1".into(),
        customer_id: "cus_a".into(),
        event_time_range: Some(TimeRange {
            start_time: Some(chrono_to_timestamp(old - Duration::days(1))),
            end_time: Some(chrono_to_timestamp(old + Duration::days(1))),
        }),
        duration: None,
        reason: "import from the old system".into(),
    };
    let backfill = client
        .open_backfill(open.clone())
        .await
        .unwrap()
        .into_inner()
        .backfill
        .unwrap();
    client.open_backfill(open.clone()).await.unwrap(); // a replay
    let conflict = client
        .open_backfill(OpenBackfillRequest {
            reason: "other".into(),
            ..open.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    let all = entries(&h).await;
    assert_eq!(
        all.len(),
        1,
        "the replay and the conflict wrote nothing: {all:?}"
    );
    let opened = &all[0];
    assert_eq!(
        (
            opened.action.as_str(),
            opened.resource_type.as_str(),
            opened.resource_id.as_str()
        ),
        ("backfill.opened", "backfill", backfill.id.as_str())
    );
    assert_eq!(
        (
            opened.actor_kind.as_str(),
            opened.actor_id.as_str(),
            opened.actor_name.as_str()
        ),
        ("api_key", "key_ops", "ops-team")
    );
    assert_eq!(opened.request_id.as_deref(), Some(REQUEST_ID));
    assert_eq!(opened.reason.as_deref(), Some("import from the old system"));
    assert!(opened.before_state.is_none());
    let after = state(opened.after_state.as_ref());
    assert_eq!(
        (after["customer_id"].as_str(), after["closed_at"].as_null()),
        (Some("cus_a"), Some(()))
    );

    let close = CloseBackfillRequest {
        backfill_id: backfill.id.clone(),
    };
    client.close_backfill(close.clone()).await.unwrap();
    client.close_backfill(close).await.unwrap(); // already closed: unchanged
    let unknown = client
        .close_backfill(CloseBackfillRequest {
            backfill_id: "bkf_unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let all = entries(&h).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let closed = &all[1];
    assert_eq!(
        (closed.action.as_str(), closed.resource_id.as_str()),
        ("backfill.closed", backfill.id.as_str())
    );
    assert_eq!(closed.actor_id, "key_ops");
    assert!(state(closed.before_state.as_ref())["closed_at"].is_null());
    assert!(state(closed.after_state.as_ref())["closed_at"].is_string());

    for entry in &all {
        let text = format!("{entry:?}");
        assert!(!text.contains(&key.plaintext), "the key in {}", entry.id);
        assert!(
            !text.contains(&auth::hash_key(&key.plaintext)),
            "the key's hash in {}",
            entry.id
        );
    }
    let verification = tally_audit::verify(&h.db.pool, Schema::Ingest)
        .await
        .unwrap();
    assert_eq!(
        (verification.entries_checked, verification.broken),
        (2, None)
    );
}
