//! Every INVALID_ARGUMENT carries the `Violations` detail, through the
//! runtime's one error table. (Ingest's API has no `tally.common.v1.Decimal`
//! field: numbers in events are properties, judged per event.)

use prost_types::Timestamp;
use tally_proto::common::TimeRange;
use tally_proto::ingest::*;
use tally_runtime::error::status_violations;
use tonic::Code;

use crate::support::*;

fn rule_of(status: &tonic::Status) -> (String, String) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status_violations(status);
    assert_eq!(violations.len(), 1, "{status:?}");
    assert!(!violations[0].rule.is_empty(), "{status:?}");
    (violations[0].field.clone(), violations[0].rule.clone())
}

#[tokio::test]
async fn invalid_requests_name_field_and_rule() {
    let mut h = harness().await;

    let empty = h
        .client
        .ingest_batch(IngestBatchRequest { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&empty), ("events".into(), "required".into()));

    let foreign_token = h
        .client
        .list_rejected_events(ListRejectedEventsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        rule_of(&foreign_token),
        ("page_token".into(), "invalid_page_token".into())
    );

    let open = |range: Option<TimeRange>| OpenBackfillRequest {
        idempotency_key: "backfill-1".into(),
        customer_id: "cus_a".into(),
        event_time_range: range,
        duration: None,
        reason: "import".into(),
    };
    let no_range = h.client.open_backfill(open(None)).await.unwrap_err();
    assert_eq!(
        rule_of(&no_range),
        ("event_time_range".into(), "required".into())
    );
    let negative_nanos = TimeRange {
        start_time: Some(Timestamp {
            seconds: 0,
            nanos: -1,
        }),
        end_time: Some(Timestamp {
            seconds: 60,
            nanos: 0,
        }),
    };
    let bad_time = h
        .client
        .open_backfill(open(Some(negative_nanos)))
        .await
        .unwrap_err();
    assert_eq!(
        rule_of(&bad_time),
        (
            "event_time_range.start_time".into(),
            "invalid_timestamp".into()
        )
    );
}

#[tokio::test]
async fn ids_of_another_type_are_refused_at_the_edge() {
    let mut h = harness().await;

    let not_a_backfill = h
        .client
        .close_backfill(CloseBackfillRequest {
            backfill_id: "cus_a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        rule_of(&not_a_backfill),
        ("backfill_id".into(), "invalid_prefix".into())
    );
    assert!(
        not_a_backfill.message().contains("bkf_"),
        "{not_a_backfill:?}"
    );

    let external_customer = h
        .client
        .open_backfill(OpenBackfillRequest {
            idempotency_key: "backfill-1".into(),
            customer_id: "acme-corp".into(),
            event_time_range: None,
            duration: None,
            reason: "import".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        rule_of(&external_customer),
        ("customer_id".into(), "invalid_prefix".into())
    );

    let not_a_rejection = h
        .client
        .replay_rejected_events(ReplayRejectedEventsRequest {
            rejection_ids: vec!["rej_1".into(), "bkf_1".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(
        rule_of(&not_a_rejection),
        ("rejection_ids[1]".into(), "invalid_prefix".into())
    );
}
