//! `GetUsage` over a real ingest's event log.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};
use tally_proto::rating::*;
use tonic::Code;

use crate::usage::*;

fn gpu(id: &str, time: DateTime<Utc>, gpu: &str, region: &str, seconds: &str) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        customer_id: "cus_acme".into(),
        event_type: "gpu.seconds".into(),
        timestamp: Some(ts(time)),
        properties: HashMap::from([
            ("gpu".to_owned(), gpu.to_owned()),
            ("region".to_owned(), region.to_owned()),
            ("seconds".to_owned(), seconds.to_owned()),
        ]),
        source: String::new(),
    }
}

fn request(start: DateTime<Utc>, end: DateTime<Utc>) -> GetUsageRequest {
    GetUsageRequest {
        customer_id: "cus_acme".into(),
        time_range: Some(range(start, end)),
        meter_code: "gpu.seconds".into(),
        group_by: Vec::new(),
        bucket_size: None,
    }
}

/// `(bucket start, group, quantity, events)` of a row.
type Row = (DateTime<Utc>, Vec<(String, String)>, String, u64);

fn rows(response: &GetUsageResponse) -> Vec<Row> {
    response
        .values
        .iter()
        .map(|value| {
            let start = value.time_range.as_ref().unwrap().start_time.unwrap();
            let mut group: Vec<(String, String)> = value.group.clone().into_iter().collect();
            group.sort();
            (
                Utc.timestamp_opt(start.seconds, 0).unwrap(),
                group,
                value.quantity.as_ref().unwrap().value.clone(),
                value.event_count,
            )
        })
        .collect()
}

fn h100() -> Vec<(String, String)> {
    vec![("gpu".into(), "h100".into())]
}

#[tokio::test]
async fn usage_is_aggregated_by_group_and_bucket_from_the_event_log() {
    let (mut h, mut ingest) = harness_with_ingest().await;
    meters(&mut h).await;
    h.meter(CreateMeterRequest {
        group_by: vec!["gpu".into(), "region".into()],
        ..meter_request("gpu.seconds", Aggregation::Sum, "seconds")
    })
    .await;
    // No subscription: GetUsage reports accepted usage whether or not it is rated.
    let results = ingest
        .ingest_batch(IngestBatchRequest {
            events: vec![
                gpu("g1", at(2, 10, 0, 0), "h100", "us", "30"),
                gpu("g2", at(2, 10, 30, 0), "h100", "eu", "15.5"),
                gpu("g3", at(3, 8, 0, 0), "a100", "us", "20"),
                gpu("g4", at(5, 23, 59, 59), "h100", "us", "5"),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        results
            .iter()
            .all(|result| result.outcome == EventOutcome::Accepted as i32)
    );

    let whole = h
        .usage
        .get_usage(request(at(1, 0, 0, 0), at(30, 0, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(whole.aggregation, Aggregation::Sum as i32);
    assert_eq!(
        rows(&whole),
        vec![(at(1, 0, 0, 0), vec![], "70.5".into(), 4)]
    );
    assert!(whole.as_of_sequence_number > 0);

    let daily = h
        .usage
        .get_usage(GetUsageRequest {
            group_by: vec!["gpu".into()],
            bucket_size: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            ..request(at(2, 0, 0, 0), at(6, 0, 0, 0))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rows(&daily),
        vec![
            (at(2, 0, 0, 0), h100(), "45.5".into(), 2),
            (
                at(3, 0, 0, 0),
                vec![("gpu".into(), "a100".into())],
                "20".into(),
                1
            ),
            (at(5, 0, 0, 0), h100(), "5".into(), 1),
        ]
    );

    let refused = [
        (
            GetUsageRequest {
                group_by: vec!["color".into()],
                ..request(at(1, 0, 0, 0), at(2, 0, 0, 0))
            },
            Code::InvalidArgument,
            "group_by[0]",
        ),
        (
            GetUsageRequest {
                meter_code: "storage".into(),
                ..request(at(1, 0, 0, 0), at(2, 0, 0, 0))
            },
            Code::NotFound,
            "meter_code",
        ),
        (
            request(at(2, 0, 0, 0), at(1, 0, 0, 0)),
            Code::InvalidArgument,
            "time_range",
        ),
        (
            GetUsageRequest {
                bucket_size: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                ..request(at(1, 0, 0, 0), at(2, 0, 0, 0))
            },
            Code::InvalidArgument,
            "bucket_size",
        ),
        (
            GetUsageRequest {
                bucket_size: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..request(at(1, 0, 0, 0), at(2, 0, 0, 0))
            },
            Code::InvalidArgument,
            "bucket_size",
        ),
        (
            GetUsageRequest {
                customer_id: String::new(),
                ..request(at(1, 0, 0, 0), at(2, 0, 0, 0))
            },
            Code::InvalidArgument,
            "customer_id",
        ),
    ];
    for (bad, code, field) in refused {
        let status = h.usage.get_usage(bad.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{bad:?}: {status:?}");
        assert!(status.message().starts_with(field), "{bad:?}: {status:?}");
    }
}

#[tokio::test]
async fn a_portal_token_reads_its_customers_usage_and_no_one_elses() {
    let (mut h, _ingest) = harness_with_ingest().await;
    meters(&mut h).await;
    h.meter(meter_request("gpu.seconds", Aggregation::Sum, "seconds"))
        .await;
    let channel = tally_testkit::keys::serve_with_portal_token(
        h.rating.grpc_server(16 << 20),
        &h.shutdown,
        "cus_acme",
    )
    .await
    .unwrap();
    let mut portal = rating_service_client::RatingServiceClient::new(channel);
    let start = at(1, 0, 0, 0);
    portal
        .get_usage(request(start, at(8, 0, 0, 0)))
        .await
        .expect("its own customer's usage");
    for customer in ["cus_other", ""] {
        let refused = portal
            .get_usage(GetUsageRequest {
                customer_id: customer.into(),
                ..request(start, at(8, 0, 0, 0))
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{customer:?}: {refused:?}"
        );
    }
}
