//! Every catalog change records exactly one entry in rating's audit chain
//! (meters and plans created, drafts created, updated and deleted, plans
//! deleted; publication is in `catalog.rs`), with the caller and the states
//! before and after; replays and refusals record nothing, and a change whose
//! transaction rolls back leaves neither the change nor an entry.

use serde_json::Value;
use tally_audit::{Filter, Schema, StoredEntry};
use tally_proto::rating::price::Model;
use tally_proto::rating::*;

use crate::support::*;

fn spec(unit_price: &str) -> PlanVersionSpec {
    monthly(vec![usage(
        "calls",
        "api_calls",
        Model::PerUnit(PerUnitPrice {
            unit_price: decimal(unit_price),
        }),
    )])
}

/// Every entry of rating's chain, oldest first.
async fn entries(h: &Harness) -> Vec<StoredEntry> {
    let (entries, _) =
        tally_audit::list(&h.db.pool, &[Schema::Rating], &Filter::default(), None, 100)
            .await
            .unwrap();
    entries
}

fn state(json: Option<&String>) -> Value {
    json.map_or(Value::Null, |text| serde_json::from_str(text).unwrap())
}

/// `(action, resource id)` of each entry.
fn actions(entries: &[StoredEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|entry| (entry.action.clone(), entry.resource_id.clone()))
        .collect()
}

fn with_request_id<T>(message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

#[tokio::test]
async fn each_catalog_change_records_one_entry_with_its_states() {
    let mut h = harness().await;
    let meter = h
        .client
        .create_meter(with_request_id(
            meter_request("api_calls", Aggregation::Count, ""),
            "req-meter",
        ))
        .await
        .unwrap()
        .into_inner()
        .meter
        .unwrap();
    // A replay of the same definition changes nothing.
    h.meter(meter_request("api_calls", Aggregation::Count, ""))
        .await;
    let plan_id = h.plan("team").await;
    h.plan("team").await;
    let draft = h.draft(&plan_id, "team-v1", spec("0.01")).await;
    h.draft(&plan_id, "team-v1", spec("0.01")).await; // replayed by key
    let updated = h
        .client
        .update_draft_plan_version(UpdateDraftPlanVersionRequest {
            plan_version_id: draft.id.clone(),
            spec: Some(spec("0.02")),
            expected_revision: draft.revision,
        })
        .await
        .unwrap()
        .into_inner()
        .plan_version
        .unwrap();
    // A stale revision is refused and records nothing.
    h.client
        .update_draft_plan_version(UpdateDraftPlanVersionRequest {
            plan_version_id: draft.id.clone(),
            spec: Some(spec("0.03")),
            expected_revision: draft.revision,
        })
        .await
        .unwrap_err();
    h.client
        .delete_draft_plan_version(DeleteDraftPlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .unwrap();
    h.client
        .delete_plan(DeletePlanRequest {
            plan_id: plan_id.clone(),
        })
        .await
        .unwrap();

    let entries = entries(&h).await;
    let expected = [
        ("catalog.meter.created", meter.id.as_str()),
        ("catalog.plan.created", plan_id.as_str()),
        ("catalog.plan_version.drafted", draft.id.as_str()),
        ("catalog.plan_version.draft_updated", draft.id.as_str()),
        ("catalog.plan_version.draft_deleted", draft.id.as_str()),
        ("catalog.plan.deleted", plan_id.as_str()),
    ]
    .map(|(action, id)| (action.to_owned(), id.to_owned()));
    assert_eq!(actions(&entries), expected);
    for entry in &entries {
        assert_eq!(
            entry.actor_kind, "anonymous",
            "the harness serves without keys"
        );
    }
    assert_eq!(entries[0].request_id.as_deref(), Some("req-meter"));

    let [
        meter_entry,
        plan_created,
        drafted,
        draft_updated,
        draft_deleted,
        plan_deleted,
    ] = &entries[..]
    else {
        unreachable!()
    };
    assert_eq!(state(meter_entry.before_state.as_ref()), Value::Null);
    let meter_after = state(meter_entry.after_state.as_ref());
    assert_eq!(meter_after["code"], "api_calls");
    assert_eq!(meter_after["id"], meter.id.as_str());
    assert_eq!(state(plan_created.before_state.as_ref()), Value::Null);
    assert_eq!(state(plan_created.after_state.as_ref())["code"], "team");
    assert_eq!(state(drafted.before_state.as_ref()), Value::Null);
    assert_eq!(state(drafted.after_state.as_ref())["status"], "draft");
    let (before, after) = (
        state(draft_updated.before_state.as_ref()),
        state(draft_updated.after_state.as_ref()),
    );
    assert_eq!(before, state(drafted.after_state.as_ref()));
    assert_eq!(after["revision"], serde_json::json!(updated.revision));
    assert_ne!(before["spec_sha256"], after["spec_sha256"]);
    assert_eq!(state(draft_deleted.before_state.as_ref()), after);
    assert_eq!(state(draft_deleted.after_state.as_ref()), Value::Null);
    assert_eq!(
        state(plan_deleted.before_state.as_ref()),
        state(plan_created.after_state.as_ref())
    );
    assert_eq!(state(plan_deleted.after_state.as_ref()), Value::Null);

    let verification = tally_audit::verify(&h.db.pool, Schema::Rating)
        .await
        .unwrap();
    assert_eq!(verification.broken, None);
    assert_eq!(verification.entries_checked, 6);
}

#[tokio::test]
async fn a_change_whose_transaction_rolls_back_leaves_no_entry() {
    let mut h = harness().await;
    // The entry is the transaction's last statement: make it fail, so the
    // plan's insert before it rolls back with it.
    sqlx::raw_sql(
        "CREATE FUNCTION rating.refuse_plan_entries() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.action = 'catalog.plan.created' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_plan_entries BEFORE INSERT ON rating.audit_log \
         FOR EACH ROW EXECUTE FUNCTION rating.refuse_plan_entries();",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    h.meter(meter_request("api_calls", Aggregation::Count, ""))
        .await;
    h.client
        .create_plan(CreatePlanRequest {
            code: "team".into(),
            name: "Team".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    let plans: i64 = sqlx::query_scalar("SELECT count(*) FROM rating.plans")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(plans, 0, "the plan rolled back with its entry");
    let entries = entries(&h).await;
    assert_eq!(
        actions(&entries)
            .iter()
            .map(|(action, _)| action.as_str())
            .collect::<Vec<_>>(),
        ["catalog.meter.created"]
    );
    let verification = tally_audit::verify(&h.db.pool, Schema::Rating)
        .await
        .unwrap();
    assert_eq!(verification.broken, None);
}
