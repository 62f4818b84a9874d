//! `tally export backfill` against BigQuery's REST shapes (wiremock: the
//! emulator models neither job-id conflicts nor partition decorators): a day
//! is one load job under a deterministic id, a repeat is refused with 409
//! ALREADY_EXISTS and counts as done, a job id spent by a failed load moves
//! to the next generation, and a load that fails is an error.

use std::time::Duration;

use chrono::NaiveDate;
use serde_json::{Value, json};
use tally_export::backfill::{Backfill, BackfillError};
use tally_export::bigquery::rest::Rest;
use tally_export::tables::INVOICES;
use tally_export::{Auth, Target};
use tally_testkit::postgres::TestDatabase;
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const PROJECT: &str = "tally-prod";
const UPLOAD: &str = "/upload/bigquery/v2/projects/tally-prod/jobs";
const JOBS: &str = "^/bigquery/v2/projects/tally-prod/jobs/tally_backfill_invoices_";

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

/// A job resource as `jobs.insert` and `jobs.get` return it.
fn job(job_id: &str, state: &str, error: Option<Value>) -> Value {
    let mut status = json!({"state": state});
    if let Some(error) = error {
        status["errorResult"] = error.clone();
        status["errors"] = json!([error]);
    }
    json!({
        "kind": "bigquery#job",
        "etag": "AbCdEf0123==",
        "id": format!("{PROJECT}:US.{job_id}"),
        "selfLink": format!("https://bigquery.googleapis.com/bigquery/v2/projects/{PROJECT}/jobs/{job_id}?location=US"),
        "user_email": "export@tally-prod.iam.gserviceaccount.com",
        "configuration": {
            "load": {
                "destinationTable": {"projectId": PROJECT, "datasetId": "tally", "tableId": "invoices"},
                "sourceFormat": "NEWLINE_DELIMITED_JSON",
                "writeDisposition": "WRITE_TRUNCATE",
                "createDisposition": "CREATE_NEVER",
            },
            "jobType": "LOAD",
        },
        "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
        "statistics": {"creationTime": "1765065600000", "startTime": "1765065600120"},
        "status": status,
    })
}

/// BigQuery's answer to a job id it has seen: 409 ALREADY_EXISTS.
fn already_exists() -> ResponseTemplate {
    let message = format!("Already Exists: Job {PROJECT}:US.tally_backfill_invoices");
    ResponseTemplate::new(409).set_body_json(json!({
        "error": {
            "code": 409,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "duplicate"}],
            "status": "ALREADY_EXISTS",
        }
    }))
}

fn inserted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(job("tally_backfill_invoices_x", "RUNNING", None))
}

fn done(error: Option<Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(job("tally_backfill_invoices_x", "DONE", error))
}

fn load_error() -> Value {
    json!({
        "reason": "invalid",
        "location": "gs://upload/part-0",
        "message": "Error while reading data, error message: JSON table encountered too many errors",
    })
}

/// Invoices finalized on 2026-12-01 (two, exported), on 2026-12-02 (one,
/// exported) and one more on 2026-12-01 not exported yet; the backfill
/// against `server`.
async fn setup(server: &MockServer) -> (TestDatabase, Backfill) {
    let db = tally_testkit::postgres::database().await;
    let clock: tally_runtime::SharedClock =
        std::sync::Arc::new(tally_runtime::ManualClock::new(at("2026-12-07T00:00:00Z")));
    let stager = tally_export::Stager::new(db.pool.clone(), clock, "backfill-test");
    let mut late = invoice("inv_3", "cus_b", &["1.00"], "1.00");
    late.finalized_at = Some(ts(at("2026-12-02T05:00:00Z")));
    for (message, event) in [
        (
            "m1",
            finalized("ievt_1", &invoice("inv_1", "cus_a", &["10.00"], "10.00")),
        ),
        (
            "m2",
            finalized("ievt_2", &invoice("inv_2", "cus_a", &["5.00"], "5.00")),
        ),
        ("m3", finalized("ievt_3", &late)),
        (
            "m4",
            finalized("ievt_4", &invoice("inv_4", "cus_c", &["7.00"], "7.00")),
        ),
    ] {
        let rows = tally_export::staging::invoice_rows(&event, at("2026-12-07T00:00:00Z")).unwrap();
        assert!(stager.stage_once(message, &rows).await.unwrap());
    }
    sqlx::query(
        "UPDATE export.rows SET stream_name = 's', stream_offset = seq, exported_at = now() \
         WHERE row_key <> 'ievt_4' AND row_key NOT LIKE 'inv_4/%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let target = Target {
        project: PROJECT.to_owned(),
        dataset: "tally".to_owned(),
        location: "US".to_owned(),
        rest_endpoint: server.uri(),
        grpc_endpoint: server.uri(),
        anonymous: true,
    };
    let rest = Rest::new(target, Auth::new(true).unwrap()).unwrap();
    let backfill = Backfill::new(db.pool.clone(), rest).with_poll(Duration::from_millis(10));
    (db, backfill)
}

/// `jobs.insert` answers `first` `times` times, then `then`.
async fn inserts(server: &MockServer, first: ResponseTemplate, times: u64, then: ResponseTemplate) {
    for (priority, response, limit) in [(1, first, Some(times)), (2, then, None)] {
        let mock = Mock::given(method("POST"))
            .and(path(UPLOAD))
            .and(query_param("uploadType", "multipart"))
            .respond_with(response)
            .with_priority(priority);
        match limit {
            Some(times) => mock.up_to_n_times(times).mount(server).await,
            None => mock.mount(server).await,
        }
    }
}

/// `jobs.get` of the jobs whose id ends as `suffix` (a regex) answers `response`.
async fn gets(server: &MockServer, suffix: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path_regex(format!("{JOBS}{suffix}")))
        .and(query_param("location", "US"))
        .respond_with(response)
        .mount(server)
        .await;
}

/// The bodies of the uploads `server` received (each a multipart/related
/// request: the job, then the rows).
async fn uploads(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.url.path() == UPLOAD)
        .map(|request| {
            let content_type = request
                .headers
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(
                content_type.starts_with("multipart/related; boundary="),
                "{content_type}"
            );
            String::from_utf8(request.body).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_day_is_one_load_job_and_asking_again_is_already_exists_and_done() {
    let server = MockServer::start().await;
    let (_db, backfill) = setup(&server).await;
    inserts(&server, inserted(), 2, already_exists()).await;
    gets(&server, "", done(None)).await;

    let first = backfill
        .run(INVOICES, day("2026-12-01"), day("2026-12-02"), 0)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].rows, first[0].already_loaded), (2, false));
    assert_eq!((first[1].rows, first[1].already_loaded), (1, false));
    assert!(
        first[0]
            .job_id
            .starts_with("tally_backfill_invoices_20261201_")
    );
    assert!(first[0].job_id.ends_with("_g0"), "{}", first[0].job_id);

    let sent = uploads(&server).await;
    assert_eq!(sent.len(), 2);
    assert!(
        sent[0].contains("\"tableId\":\"invoices$20261201\""),
        "{}",
        sent[0]
    );
    assert!(sent[0].contains("\"writeDisposition\":\"WRITE_TRUNCATE\""));
    assert!(sent[0].contains(&format!("\"jobId\":\"{}\"", first[0].job_id)));
    assert!(
        sent[0].contains("\"invoice_id\":\"inv_1\"")
            && sent[0].contains("\"invoice_id\":\"inv_2\"")
    );
    // Not the row of another day, nor one the stream has not exported.
    assert!(!sent[0].contains("inv_3") && !sent[0].contains("inv_4"));
    assert!(sent[0].contains("\"finalized_at\":\"2026-12-01 00:00:00.000000\""));
    assert!(sent[1].contains("\"tableId\":\"invoices$20261202\"") && sent[1].contains("inv_3"));

    // The same content again: the same job ids, refused, done.
    let again = backfill
        .run(INVOICES, day("2026-12-01"), day("2026-12-02"), 0)
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .map(|p| (p.job_id.clone(), p.already_loaded))
            .collect::<Vec<_>>(),
        first
            .iter()
            .map(|p| (p.job_id.clone(), true))
            .collect::<Vec<_>>()
    );
    let sent = uploads(&server).await;
    assert_eq!(sent.len(), 4);
    assert!(sent[2].contains(&format!("\"jobId\":\"{}\"", first[0].job_id)));
}

#[tokio::test]
async fn a_job_id_spent_by_a_failed_load_moves_to_the_next_generation() {
    let server = MockServer::start().await;
    let (_db, backfill) = setup(&server).await;
    inserts(&server, already_exists(), 1, inserted()).await;
    gets(&server, ".*_g0$", done(Some(load_error()))).await;
    gets(&server, ".*_g1$", done(None)).await;

    let done = backfill
        .run(INVOICES, day("2026-12-01"), day("2026-12-01"), 0)
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert!(done[0].job_id.ends_with("_g1"), "{}", done[0].job_id);
    assert_eq!((done[0].rows, done[0].already_loaded), (2, false));
}

#[tokio::test]
async fn a_load_that_fails_is_an_error_and_nothing_is_counted_done() {
    let server = MockServer::start().await;
    let (_db, backfill) = setup(&server).await;
    inserts(&server, inserted(), 1, inserted()).await;
    gets(&server, "", done(Some(load_error()))).await;
    let error = backfill
        .run(INVOICES, day("2026-12-01"), day("2026-12-01"), 0)
        .await
        .unwrap_err();
    match error {
        BackfillError::JobFailed { job_id, message } => {
            assert!(job_id.ends_with("_g0"));
            assert!(
                message.contains("invalid: Error while reading data"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
    let refused = backfill
        .run(INVOICES, day("2026-12-02"), day("2026-12-01"), 0)
        .await
        .unwrap_err();
    assert!(matches!(refused, BackfillError::Invalid(_)), "{refused}");
}

#[tokio::test]
async fn the_rpc_refuses_an_unknown_table_a_bad_day_and_answers_each_day() {
    use tally_export::ExportApi;
    use tally_proto::export::BackfillPartitionsRequest;
    use tally_proto::export::export_service_server::ExportService;
    let server = MockServer::start().await;
    let (db, backfill) = setup(&server).await;
    inserts(&server, inserted(), 1, inserted()).await;
    gets(&server, "", done(None)).await;
    let clock: tally_runtime::SharedClock =
        std::sync::Arc::new(tally_runtime::ManualClock::new(at("2026-12-07T00:00:00Z")));
    let off = ExportApi::new(db.pool.clone(), clock.clone(), None);
    let api = ExportApi::new(db.pool.clone(), clock, Some(format!("{PROJECT}.tally")))
        .with_backfill(backfill);
    let request = |table: &str, from: &str, to: &str| {
        tonic::Request::new(BackfillPartitionsRequest {
            table: table.to_owned(),
            from_day: from.to_owned(),
            to_day: to.to_owned(),
            generation: 0,
        })
    };
    let status = off
        .backfill_partitions(request("invoices", "2026-12-01", "2026-12-01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let status = api
        .backfill_partitions(request("invoice", "2026-12-01", "2026-12-01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("invoices"),
        "{}",
        status.message()
    );
    let status = api
        .backfill_partitions(request("invoices", "2026-12-01", "12/02/2026"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("to_day"), "{}", status.message());
    let status = api
        .backfill_partitions(request("invoices", "2026-01-01", "2026-12-01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let response = api
        .backfill_partitions(request("invoices", "2026-12-01", "2026-12-02"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response
            .partitions
            .iter()
            .map(|p| (p.day.as_str(), p.rows, p.already_loaded))
            .collect::<Vec<_>>(),
        [("2026-12-01", 2, false), ("2026-12-02", 1, false)]
    );
}

/// `jobs.get` answering DONE; the first time, the stream exports the day's
/// last row meanwhile (as if its append had landed while the load ran).
struct ExportsARowWhileLoading {
    url: String,
    once: std::sync::atomic::AtomicBool,
}

impl wiremock::Respond for ExportsARowWhileLoading {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        if !self.once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let url = self.url.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let pool = sqlx::PgPool::connect(&url).await.unwrap();
                        sqlx::query(
                            "UPDATE export.rows SET stream_name = 's', stream_offset = seq, \
                             exported_at = now() WHERE row_key = 'ievt_4'",
                        )
                        .execute(&pool)
                        .await
                        .unwrap();
                        pool.close().await;
                    });
            })
            .join()
            .unwrap();
        }
        done(None)
    }
}

#[tokio::test]
async fn a_row_exported_while_the_day_loads_makes_it_load_again() {
    let server = MockServer::start().await;
    let (db, backfill) = setup(&server).await;
    inserts(&server, inserted(), 1, inserted()).await;
    Mock::given(method("GET"))
        .and(path_regex(JOBS))
        .respond_with(ExportsARowWhileLoading {
            url: db.url.clone(),
            once: std::sync::atomic::AtomicBool::new(false),
        })
        .mount(&server)
        .await;
    let done = backfill
        .run(INVOICES, day("2026-12-01"), day("2026-12-01"), 0)
        .await
        .unwrap();
    assert_eq!(done[0].rows, 3);
    let sent = uploads(&server).await;
    assert_eq!(sent.len(), 2);
    assert!(!sent[0].contains("inv_4") && sent[1].contains("inv_4"));
    assert!(sent[1].contains(&format!("\"jobId\":\"{}\"", done[0].job_id)));
    assert!(!sent[0].contains(&format!("\"jobId\":\"{}\"", done[0].job_id)));
}
