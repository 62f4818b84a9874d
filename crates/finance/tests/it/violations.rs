//! Every INVALID_ARGUMENT from finance carries the `Violations` detail
//! (field, rule, description) through the runtime's one error table.

use tally_proto::common::TimeRange;
use tally_proto::convert::timestamp;
use tally_proto::finance::analytics_service_server::AnalyticsService;
use tally_proto::finance::ledger_service_server::LedgerService;
use tally_proto::finance::{
    ClosePeriodRequest, GetMrrRequest, GetRevenueScheduleRequest, GetTrialBalanceRequest,
    ListJournalTransactionsRequest,
};
use tally_runtime::error::status_violations;
use tonic::{Code, Request, Status};

use crate::mrr_support::Analytics;
use crate::support::at;

/// The status is INVALID_ARGUMENT and its first violation is `field`/`rule`
/// with a description.
fn assert_violation(status: &Status, field: &str, rule: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status_violations(status);
    assert!(!violations.is_empty(), "no Violations detail: {status:?}");
    assert!(
        violations
            .iter()
            .all(|violation| !violation.rule.is_empty() && !violation.description.is_empty()),
        "{violations:?}"
    );
    assert_eq!(
        (violations[0].field.as_str(), violations[0].rule.as_str()),
        (field, rule),
        "{violations:?}"
    );
}

#[tokio::test]
async fn invalid_requests_name_the_field_and_the_rule() {
    let h = Analytics::open().await;
    let ledger = &h.books.api;

    let mrr = |currency: &str| GetMrrRequest {
        currency: currency.into(),
        as_of: None,
    };
    let status = h.api.get_mrr(Request::new(mrr(""))).await.unwrap_err();
    assert_violation(&status, "currency", "required");
    let status = h.api.get_mrr(Request::new(mrr("XYZ"))).await.unwrap_err();
    assert_violation(&status, "currency", "unknown_currency");

    let status = ledger
        .get_trial_balance(Request::new(GetTrialBalanceRequest {
            currency: "dollars".into(),
            as_of: None,
        }))
        .await
        .unwrap_err();
    assert_violation(&status, "currency", "unknown_currency");

    let backwards = TimeRange {
        start_time: Some(timestamp(at("2026-02-01T00:00:00Z"))),
        end_time: Some(timestamp(at("2026-01-01T00:00:00Z"))),
    };
    let status = ledger
        .list_journal_transactions(Request::new(ListJournalTransactionsRequest {
            effective: Some(backwards),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_violation(&status, "effective.end_time", "invalid_range");
    let status = ledger
        .list_journal_transactions(Request::new(ListJournalTransactionsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_violation(&status, "page_token", "invalid_page_token");

    for (invoice_id, rule) in [("", "required"), ("cus_42", "invalid_prefix")] {
        let status = ledger
            .get_revenue_schedule(Request::new(GetRevenueScheduleRequest {
                invoice_id: invoice_id.into(),
            }))
            .await
            .unwrap_err();
        assert_violation(&status, "invoice_id", rule);
    }

    // The books' clock is 2026-01-01: a close in the future is refused.
    let status = LedgerService::close_period(
        ledger,
        Request::new(ClosePeriodRequest {
            close_through: Some(timestamp(at("2026-03-01T00:00:00Z"))),
            memo: "too early".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status_violations(&status)[0].field, "close_through");
}
