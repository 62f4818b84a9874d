//! `tally export backfill` as the real binary against `tally serve export`,
//! BigQuery's REST played by wiremock in its real shapes (the emulator
//! models neither load-job ids nor partition decorators): each day is one
//! load job into `table$YYYYMMDD`, asking again for the same content is
//! refused by BigQuery (409 ALREADY_EXISTS) and printed as already loaded,
//! and a wrong table is refused naming it.

use std::sync::Arc;

use serde_json::{Value, json};
use tally_export::Stager;
use tally_proto::events::{UsageAccepted, UsageEvent};
use tally_runtime::{ManualClock, SharedClock};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::{Service, create_key, once_the_key_is_known, run};

const PROJECT: &str = "tally-prod";
const UPLOAD: &str = "/upload/bigquery/v2/projects/tally-prod/jobs";

/// A job resource as `jobs.insert` and `jobs.get` return it.
fn job(state: &str) -> Value {
    let job_id = "tally_backfill_usage_events_x";
    json!({
        "kind": "bigquery#job",
        "id": format!("{PROJECT}:US.{job_id}"),
        "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
        "configuration": {"jobType": "LOAD"},
        "status": {"state": state},
    })
}

fn already_exists() -> ResponseTemplate {
    let message = format!("Already Exists: Job {PROJECT}:US.tally_backfill_usage_events");
    ResponseTemplate::new(409).set_body_json(json!({
        "error": {
            "code": 409,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "duplicate"}],
            "status": "ALREADY_EXISTS",
        }
    }))
}

/// Usage on 2026-11-10 (three events) and 2026-11-11 (one), staged and
/// recorded as exported by the stream.
async fn exported_usage(pool: &sqlx::PgPool) {
    let now = "2026-11-20T00:00:00Z".parse().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(now));
    let stager = Stager::new(pool.clone(), clock, "backfill-cli-test");
    for (n, seconds) in [(1, 0), (2, 60), (3, 120), (4, 86_400)] {
        let accepted = UsageAccepted {
            event: Some(UsageEvent {
                id: format!("e{n}"),
                customer_id: "cus_a".to_owned(),
                event_type: "llm_tokens".to_owned(),
                timestamp: Some(prost_types::Timestamp {
                    // 2026-11-10T12:00:00Z
                    seconds: 1_794_312_000 + seconds,
                    nanos: 0,
                }),
                properties: [("tokens".to_owned(), n.to_string())].into(),
                source: String::new(),
            }),
            sequence_number: n,
            ingested_at: None,
            intake: 1,
        };
        let row = tally_export::staging::usage_row(&accepted, now).unwrap();
        assert!(stager.stage_once(&format!("m{n}"), &[row]).await.unwrap());
    }
    sqlx::query(
        "UPDATE export.rows SET stream_name = 's', stream_offset = seq, exported_at = now()",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn backfill_loads_each_day_once_and_a_repeat_is_already_loaded() {
    let db = tally_testkit::postgres::database().await;
    exported_usage(&db.pool).await;
    let bigquery = MockServer::start().await;
    // Two loads accepted, then every job id is one BigQuery has seen.
    Mock::given(method("POST"))
        .and(path(UPLOAD))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("RUNNING")))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&bigquery)
        .await;
    Mock::given(method("POST"))
        .and(path(UPLOAD))
        .respond_with(already_exists())
        .with_priority(2)
        .mount(&bigquery)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            "^/bigquery/v2/projects/tally-prod/jobs/tally_backfill_usage_events_",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("DONE")))
        .mount(&bigquery)
        .await;
    let service = Service::start(
        &db.url,
        "export",
        &[
            ("TALLY_EXPORT__PROJECT_ID", PROJECT),
            ("TALLY_EXPORT__REST_ENDPOINT", &bigquery.uri()),
            ("TALLY_EXPORT__GRPC_ENDPOINT", &bigquery.uri()),
        ],
    )
    .await;
    let key = create_key(&db.url, "write");
    let backfill = |table: &str| {
        run(
            &key,
            &[
                "export",
                "backfill",
                "--table",
                table,
                "--from",
                "2026-11-10",
                "--to",
                "2026-11-11",
                "--address",
                &service.address,
            ],
        )
    };

    let first = once_the_key_is_known(|| backfill("usage_events")).expect(0);
    let rows = first.rows();
    assert_eq!(rows.len(), 2, "{}", first.stdout);
    assert_eq!(rows[0][..2], ["2026-11-10", "3"]);
    assert_eq!(rows[1][..2], ["2026-11-11", "1"]);
    assert!(rows[0][2].starts_with("tally_backfill_usage_events_20261110_"));
    assert!(rows[1][2].starts_with("tally_backfill_usage_events_20261111_"));
    assert_eq!(rows[0][3..], ["loaded"]);
    let uploads: Vec<String> = bigquery
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.url.path() == UPLOAD)
        .map(|request| String::from_utf8(request.body).unwrap())
        .collect();
    assert_eq!(uploads.len(), 2);
    assert!(uploads[0].contains("\"tableId\":\"usage_events$20261110\""));
    assert!(uploads[0].contains(&format!("\"jobId\":\"{}\"", rows[0][2])));

    // The same content again: the same job ids, refused by BigQuery, done.
    let again = backfill("usage_events").expect(0);
    let repeated = again.rows();
    assert_eq!(repeated.len(), 2, "{}", again.stdout);
    for (day, before) in repeated.iter().zip(&rows) {
        assert_eq!(day[..3], before[..3]);
        assert_eq!(day[3..], ["already", "loaded"]);
    }

    let refused = backfill("no_such_table");
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("table"), "{}", refused.stderr);
}
