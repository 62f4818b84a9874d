//! Reconciliation: Stripe's lists against Tally's records, finding each kind
//! of disagreement it claims to find, and nothing on a clean month.

use std::time::Duration;

use chrono::TimeZone;
use serde_json::Value;
use tally_proto::common::TimeRange;
use tally_proto::payments::reconciliation_service_client::ReconciliationServiceClient;
use tally_proto::payments::{
    FindingKind, GetReconciliationReportRequest, ListReconciliationFindingsRequest,
    ReconciliationReport, ReconciliationState, RefundReason, RefundRequest,
    RunReconciliationRequest,
};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer};

use crate::fixtures::{self, balance_transaction, list};
use crate::stripe_mocks::{self, respond};
use crate::support::*;

/// A collected invoice (50.00, `in_1Acme`, `ch_1Acme`) refunded 10.00;
/// returns the Stripe id of the refund.
async fn collected_and_refunded(harness: &Harness) -> String {
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(respond(
            200,
            fixtures::refund("re_1Acme", 1000, "succeeded", CHARGE, None),
        ))
        .mount(&harness.stripe)
        .await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let payment = harness.payment_of("inv_000001").await;
    harness
        .client
        .clone()
        .refund(RefundRequest {
            idempotency_key: "r1".into(),
            payment_id: payment.id,
            amount: Some(tally_proto::common::Money {
                currency: "USD".into(),
                amount: "10.00".into(),
            }),
            reason: RefundReason::RequestedByCustomer.into(),
            memo: String::new(),
        })
        .await
        .unwrap();
    "re_1Acme".into()
}

/// Serves `GET /v1/<resource>` with `pages` (each page after the previous
/// one's last id).
async fn lists(server: &MockServer, resource: &str, pages: Vec<Vec<Value>>) {
    let url = format!("/v1/{resource}");
    let count = pages.len();
    let mut after: Option<String> = None;
    for (index, page) in pages.into_iter().enumerate() {
        let last = page
            .last()
            .and_then(|item| item.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = list(&url, page, index + 1 < count);
        let mock = Mock::given(method("GET"))
            .and(path(url.clone()))
            .and(query_param("created[gte]", "1793491200"))
            .and(query_param("created[lt]", "1796083200"));
        let mock = match &after {
            Some(after) => mock
                .and(query_param("starting_after", after.clone()))
                .respond_with(respond(200, body)),
            // The first page answers only what no later page claims.
            None => mock.respond_with(respond(200, body)).with_priority(10),
        };
        mock.mount(server).await;
        after = last;
    }
}

/// November 2026.
fn november() -> TimeRange {
    let start = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let end = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    TimeRange {
        start_time: Some(tally_runtime::clock_service::chrono_to_timestamp(start)),
        end_time: Some(tally_runtime::clock_service::chrono_to_timestamp(end)),
    }
}

async fn client(harness: &Harness) -> ReconciliationServiceClient<tonic::transport::Channel> {
    ReconciliationServiceClient::connect(harness.grpc_url.clone())
        .await
        .unwrap()
}

async fn run_november(harness: &Harness, key: &str) -> ReconciliationReport {
    harness
        .clock
        .set(chrono::Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
        .unwrap();
    let mut client = client(harness).await;
    let report = client
        .run_reconciliation(RunReconciliationRequest {
            idempotency_key: key.into(),
            window: Some(november()),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let current = client
            .get_reconciliation_report(GetReconciliationReportRequest {
                report_id: report.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .report
            .unwrap();
        if matches!(
            current.state(),
            ReconciliationState::Completed | ReconciliationState::Failed
        ) {
            return current;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The report completed with `matched` agreements and no finding.
fn assert_clean(report: &ReconciliationReport, matched: u64) {
    assert_eq!(
        report.state(),
        ReconciliationState::Completed,
        "{}",
        report.error
    );
    let summary = report.summary.unwrap();
    assert_eq!(
        (
            summary.matched,
            summary.missing_in_tally,
            summary.missing_in_stripe,
            summary.amount_mismatch,
            summary.status_mismatch
        ),
        (matched, 0, 0, 0, 0)
    );
}

#[tokio::test]
async fn a_clean_month_has_no_findings() {
    let harness = harness().await;
    let refund = collected_and_refunded(&harness).await;
    lists(
        &harness.stripe,
        "invoices",
        vec![
            vec![stripe_mocks::paid_invoice("inv_000001", "usd", 5000, 1)],
            vec![],
        ],
    )
    .await;
    lists(
        &harness.stripe,
        "charges",
        vec![vec![fixtures::charge(
            CHARGE,
            5000,
            1000,
            STRIPE_INVOICE,
            vec![],
        )]],
    )
    .await;
    lists(
        &harness.stripe,
        "refunds",
        vec![vec![fixtures::refund(
            &refund,
            1000,
            "succeeded",
            CHARGE,
            None,
        )]],
    )
    .await;
    lists(
        &harness.stripe,
        "balance_transactions",
        vec![vec![
            balance_transaction("txn_1Charge", "charge", Some(CHARGE), 5000),
            balance_transaction("txn_1Refund", "refund", Some(&refund), -1000),
            balance_transaction("txn_1Payout", "payout", Some("po_1"), -4000),
        ]],
    )
    .await;

    let report = run_november(&harness, "november").await;
    assert_clean(&report, 5);
    assert_eq!(
        harness.stripe_requests("GET", "/v1/invoices").await.len(),
        2,
        "both pages read"
    );
    // A replay is the same report; the key with another window is refused.
    let mut client = client(&harness).await;
    let replay = client
        .run_reconciliation(RunReconciliationRequest {
            idempotency_key: "november".into(),
            window: Some(november()),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(replay.id, report.id);
    let mut other = november();
    other.start_time.as_mut().unwrap().seconds += 1;
    let conflict = client
        .run_reconciliation(RunReconciliationRequest {
            idempotency_key: "november".into(),
            window: Some(other),
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
}

#[tokio::test]
async fn every_kind_of_disagreement_is_found() {
    let harness = harness().await;
    let refund = collected_and_refunded(&harness).await;
    lists(
        &harness.stripe,
        "invoices",
        vec![vec![
            fixtures::invoice(
                STRIPE_INVOICE,
                "inv_000001",
                "open",
                "usd",
                5001,
                0,
                1,
                None,
                None,
            ),
            fixtures::invoice("in_2Stray", "", "open", "usd", 700, 0, 0, None, None),
        ]],
    )
    .await;
    lists(
        &harness.stripe,
        "charges",
        vec![vec![
            fixtures::charge(CHARGE, 5000, 1000, STRIPE_INVOICE, vec![]),
            fixtures::charge("ch_2Stray", 700, 0, "in_2Stray", vec![]),
        ]],
    )
    .await;
    lists(&harness.stripe, "refunds", vec![vec![]]).await;
    lists(
        &harness.stripe,
        "balance_transactions",
        vec![vec![
            balance_transaction("txn_1Charge", "charge", Some(CHARGE), 4900),
            balance_transaction("txn_2Refund", "refund", Some("re_unknown"), -300),
        ]],
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/refunds/{refund}")))
        .respond_with(respond(
            404,
            serde_json::json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such refund", "param": "id"}}),
        ))
        .mount(&harness.stripe)
        .await;

    let report = run_november(&harness, "november").await;
    assert_eq!(
        report.state(),
        ReconciliationState::Completed,
        "{}",
        report.error
    );
    let summary = report.summary.unwrap();
    assert_eq!(summary.matched, 1, "the charge itself agrees");
    assert_eq!(summary.missing_in_tally, 3);
    assert_eq!(summary.missing_in_stripe, 1);
    assert_eq!(summary.amount_mismatch, 2);
    assert_eq!(summary.status_mismatch, 1);

    let findings = client(&harness)
        .await
        .list_reconciliation_findings(ListReconciliationFindingsRequest {
            report_id: report.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .findings;
    let described: Vec<(FindingKind, String, String)> = findings
        .iter()
        .map(|finding| {
            (
                finding.kind(),
                finding.tally_id.clone(),
                finding.stripe_id.clone(),
            )
        })
        .collect();
    let payment_id = harness.payment_of("inv_000001").await.id;
    let refund_id = harness.payment_of("inv_000001").await.refunds[0].id.clone();
    assert_eq!(
        described,
        vec![
            (
                FindingKind::AmountMismatch,
                "inv_000001".into(),
                STRIPE_INVOICE.into()
            ),
            (
                FindingKind::StatusMismatch,
                "inv_000001".into(),
                STRIPE_INVOICE.into()
            ),
            (
                FindingKind::MissingInTally,
                String::new(),
                "in_2Stray".into()
            ),
            (
                FindingKind::MissingInTally,
                String::new(),
                "ch_2Stray".into()
            ),
            (
                FindingKind::AmountMismatch,
                payment_id,
                "txn_1Charge".into()
            ),
            (
                FindingKind::MissingInTally,
                String::new(),
                "txn_2Refund".into()
            ),
            (FindingKind::MissingInStripe, refund_id, String::new()),
        ]
    );
    assert_eq!(findings[0].tally_amount.as_ref().unwrap().amount, "50.00");
    assert_eq!(findings[0].stripe_amount.as_ref().unwrap().amount, "50.01");
    assert_eq!(findings[1].tally_status, "paid");
    assert_eq!(findings[1].stripe_status, "open");

    // Pages of three.
    let mut client_pages = client(&harness).await;
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = client_pages
            .list_reconciliation_findings(ListReconciliationFindingsRequest {
                report_id: report.id.clone(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.findings.len());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, vec![3, 3, 1]);

    let only_missing = client(&harness)
        .await
        .list_reconciliation_findings(ListReconciliationFindingsRequest {
            report_id: report.id,
            kind: FindingKind::MissingInStripe.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .findings;
    assert_eq!(only_missing.len(), 1);
}

#[tokio::test]
async fn windows_must_be_whole_and_in_the_past() {
    let harness = harness().await;
    let mut client = client(&harness).await;
    let future = client
        .run_reconciliation(RunReconciliationRequest {
            idempotency_key: "k".into(),
            window: Some(november()),
        })
        .await
        .unwrap_err();
    assert_eq!(future.code(), tonic::Code::InvalidArgument);
    assert!(
        future.message().contains("window.end_time"),
        "{}",
        future.message()
    );
    let mut inverted = november();
    std::mem::swap(&mut inverted.start_time, &mut inverted.end_time);
    let status = client
        .run_reconciliation(RunReconciliationRequest {
            idempotency_key: "k".into(),
            window: Some(inverted),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let missing = client
        .run_reconciliation(RunReconciliationRequest {
            idempotency_key: "k".into(),
            window: None,
        })
        .await
        .unwrap_err();
    assert!(missing.message().contains("window.start_time: required"));
}

#[tokio::test]
async fn the_schedule_reconciles_each_finished_day_once() {
    let harness = harness().await;
    // Stripe is down for the first run's four tries.
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    for resource in ["invoices", "charges", "refunds", "balance_transactions"] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/{resource}")))
            .respond_with(respond(
                200,
                list(&format!("/v1/{resource}"), vec![], false),
            ))
            .mount(&harness.stripe)
            .await;
    }
    let reconciler = harness.payments.reconciler();
    let failed = reconciler.run_scheduled().await.unwrap().unwrap();
    let state: String =
        sqlx::query_scalar("SELECT state FROM payments.reconciliation_reports WHERE id = $1")
            .bind(&failed)
            .fetch_one(&harness.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(
        reconciler.run_scheduled().await.unwrap(),
        Some(failed),
        "a failed window is tried again"
    );
    assert_eq!(
        reconciler.run_scheduled().await.unwrap(),
        None,
        "once per window"
    );
    harness.clock.advance(chrono::Duration::days(1)).unwrap();
    assert!(
        reconciler.run_scheduled().await.unwrap().is_some(),
        "the next day"
    );
    let listed: Vec<(bool, String)> =
        sqlx::query_as("SELECT scheduled, state FROM payments.reconciliation_reports ORDER BY id")
            .fetch_all(&harness.db.pool)
            .await
            .unwrap();
    assert_eq!(
        listed,
        vec![(true, "completed".into()), (true, "completed".into())]
    );
}

#[tokio::test]
async fn an_open_invoice_lowered_by_a_credit_note_agrees_with_stripe() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 5_000).await;
    stripe_mocks::send_succeeds(&harness.stripe, "inv_000001", 5_000).await;
    Mock::given(method("POST"))
        .and(path("/v1/credit_notes"))
        .respond_with(respond(
            200,
            fixtures::credit_note("cn_1StripeNote", STRIPE_INVOICE, 1_250, false, "cn_000001"),
        ))
        .mount(&harness.stripe)
        .await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    spec.mode = tally_proto::invoicing::CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.unwrap();
    harness
        .deliver(&spec.credit_note(
            "cn_000001",
            "12.50",
            tally_proto::invoicing::CreditNoteReason::BillingError,
            "",
        ))
        .await
        .unwrap();
    // Stripe lowered its amount due by the pre-payment credit note.
    let open = fixtures::invoice(
        STRIPE_INVOICE,
        "inv_000001",
        "open",
        "usd",
        3_750,
        0,
        0,
        Some(PAYMENT_INTENT),
        None,
    );
    lists(&harness.stripe, "invoices", vec![vec![open]]).await;
    for resource in ["charges", "refunds", "balance_transactions"] {
        lists(&harness.stripe, resource, vec![vec![]]).await;
    }

    let report = run_november(&harness, "november").await;
    assert_clean(&report, 1);
    // A billing error has no Stripe reason: none is sent.
    let created = harness.stripe_requests("POST", "/v1/credit_notes").await;
    assert_eq!(field(&created[0], "reason"), None);
    assert_eq!(
        field(&created[0], "metadata[tally_reason]").as_deref(),
        Some("CREDIT_NOTE_REASON_BILLING_ERROR")
    );
}
