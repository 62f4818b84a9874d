//! `tally.payments.v1.ReconciliationService`.

use rust_decimal::Decimal;
use tally_domain::ids::ReconciliationReportId;
use tally_proto::common::{Money, TimeRange};
use tally_proto::payments as proto;
use tally_proto::payments::reconciliation_service_server::ReconciliationService;
use tonic::{Request, Response, Status};

use super::store::{self, FindingRow, ReportRow};
use super::{Reconciler, Window};
use crate::error::PaymentsError;
use crate::wire::{instant, timestamp};

/// The `ReconciliationService` implementation.
#[derive(Debug, Clone)]
pub struct ReconciliationApi {
    reconciler: Reconciler,
}

impl ReconciliationApi {
    /// The API over `reconciler`.
    pub fn new(reconciler: Reconciler) -> Self {
        Self { reconciler }
    }
}

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 1000;

fn page_size(requested: i32) -> Result<i64, PaymentsError> {
    match i64::from(requested) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if (1..=MAX_PAGE_SIZE).contains(&size) => Ok(size),
        _ => Err(PaymentsError::InvalidArgument {
            field: "page_size",
            reason: format!("must be between 0 and {MAX_PAGE_SIZE}"),
        }),
    }
}

fn invalid(field: &'static str, reason: &str) -> PaymentsError {
    PaymentsError::InvalidArgument {
        field,
        reason: reason.to_owned(),
    }
}

fn report_from_row(row: ReportRow) -> proto::ReconciliationReport {
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    let state = match row.state.as_str() {
        "pending" => proto::ReconciliationState::Pending,
        "running" => proto::ReconciliationState::Running,
        "completed" => proto::ReconciliationState::Completed,
        _ => proto::ReconciliationState::Failed,
    };
    proto::ReconciliationReport {
        id: row.id,
        window: Some(TimeRange {
            start_time: Some(timestamp(row.window_start)),
            end_time: Some(timestamp(row.window_end)),
        }),
        state: state.into(),
        summary: Some(proto::ReconciliationSummary {
            matched: count(row.matched),
            missing_in_tally: count(row.missing_in_tally),
            missing_in_stripe: count(row.missing_in_stripe),
            amount_mismatch: count(row.amount_mismatch),
            status_mismatch: count(row.status_mismatch),
        }),
        error: row.error,
        scheduled: row.scheduled,
        started_at: Some(timestamp(row.started_at)),
        finished_at: row.finished_at.map(timestamp),
    }
}

fn finding_from_row(row: FindingRow) -> proto::ReconciliationFinding {
    let amount = |amount: Option<Decimal>, currency: String| {
        amount.map(|value| Money {
            currency,
            amount: value.to_string(),
        })
    };
    let kind = match row.kind.as_str() {
        "missing_in_tally" => proto::FindingKind::MissingInTally,
        "missing_in_stripe" => proto::FindingKind::MissingInStripe,
        "amount_mismatch" => proto::FindingKind::AmountMismatch,
        _ => proto::FindingKind::StatusMismatch,
    };
    let object = match row.object.as_str() {
        "invoice" => proto::ReconciledObject::Invoice,
        "payment" => proto::ReconciledObject::Payment,
        "refund" => proto::ReconciledObject::Refund,
        _ => proto::ReconciledObject::BalanceTransaction,
    };
    proto::ReconciliationFinding {
        id: row.id,
        kind: kind.into(),
        object: object.into(),
        tally_id: row.tally_id,
        stripe_id: row.stripe_id,
        tally_amount: amount(row.tally_amount, row.tally_currency),
        stripe_amount: amount(row.stripe_amount, row.stripe_currency),
        tally_status: row.tally_status,
        stripe_status: row.stripe_status,
        description: row.description,
    }
}

impl ReconciliationApi {
    async fn report(&self, report_id: &str) -> Result<proto::ReconciliationReport, PaymentsError> {
        tally_proto::convert::id::<ReconciliationReportId>(report_id, "report_id")?;
        match store::report(&self.reconciler.core.pool, report_id).await? {
            Some(row) => Ok(report_from_row(row)),
            None => Err(PaymentsError::NotFound(format!(
                "reconciliation report {report_id} does not exist"
            ))),
        }
    }
}

#[tonic::async_trait]
impl ReconciliationService for ReconciliationApi {
    async fn run_reconciliation(
        &self,
        request: Request<proto::RunReconciliationRequest>,
    ) -> Result<Response<proto::RunReconciliationResponse>, Status> {
        let request = request.into_inner();
        if request.idempotency_key.is_empty() {
            return Err(invalid("idempotency_key", "required").into());
        }
        let window = request.window.as_ref();
        let start = instant(window.and_then(|window| window.start_time.as_ref()))
            .ok_or_else(|| invalid("window.start_time", "required"))?;
        let end = instant(window.and_then(|window| window.end_time.as_ref()))
            .ok_or_else(|| invalid("window.end_time", "required"))?;
        if end <= start {
            return Err(invalid("window", "end_time must be after start_time").into());
        }
        if end > self.reconciler.core.clock.now() {
            return Err(invalid("window.end_time", "must not be in the future").into());
        }
        let (report_id, created) = self
            .reconciler
            .create_report(&request.idempotency_key, Window { start, end }, false)
            .await?;
        if created {
            let reconciler = self.reconciler.clone();
            let id = report_id.clone();
            tokio::spawn(async move {
                if let Err(error) = reconciler.run(&id).await {
                    tracing::error!(report_id = %id, %error, "reconciliation could not be recorded");
                }
            });
        }
        Ok(Response::new(proto::RunReconciliationResponse {
            report: Some(self.report(&report_id).await?),
        }))
    }

    async fn get_reconciliation_report(
        &self,
        request: Request<proto::GetReconciliationReportRequest>,
    ) -> Result<Response<proto::GetReconciliationReportResponse>, Status> {
        let report = self.report(&request.into_inner().report_id).await?;
        Ok(Response::new(proto::GetReconciliationReportResponse {
            report: Some(report),
        }))
    }

    async fn list_reconciliation_reports(
        &self,
        request: Request<proto::ListReconciliationReportsRequest>,
    ) -> Result<Response<proto::ListReconciliationReportsResponse>, Status> {
        let request = request.into_inner();
        let size = page_size(request.page_size)?;
        let rows =
            store::reports_page(&self.reconciler.core.pool, &request.page_token, size + 1).await?;
        let mut reports: Vec<_> = rows.into_iter().map(report_from_row).collect();
        let next_page_token = if reports.len() > usize::try_from(size).unwrap_or(usize::MAX) {
            reports.pop();
            reports
                .last()
                .map(|report| report.id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListReconciliationReportsResponse {
            reports,
            next_page_token,
        }))
    }

    async fn list_reconciliation_findings(
        &self,
        request: Request<proto::ListReconciliationFindingsRequest>,
    ) -> Result<Response<proto::ListReconciliationFindingsResponse>, Status> {
        let request = request.into_inner();
        let size = page_size(request.page_size)?;
        self.report(&request.report_id).await?;
        let kind = match proto::FindingKind::try_from(request.kind) {
            Ok(proto::FindingKind::Unspecified) => "",
            Ok(proto::FindingKind::MissingInTally) => "missing_in_tally",
            Ok(proto::FindingKind::MissingInStripe) => "missing_in_stripe",
            Ok(proto::FindingKind::AmountMismatch) => "amount_mismatch",
            Ok(proto::FindingKind::StatusMismatch) => "status_mismatch",
            Err(_) => return Err(invalid("kind", "unknown value").into()),
        };
        let after: i32 = if request.page_token.is_empty() {
            -1
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| invalid("page_token", "not a token from a previous response"))?
        };
        let mut rows = store::findings_page(
            &self.reconciler.core.pool,
            &request.report_id,
            after,
            size + 1,
            kind,
        )
        .await?;
        let more = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_page_token = match (more, rows.last()) {
            (true, Some(row)) => row.position.to_string(),
            _ => String::new(),
        };
        let findings = rows.into_iter().map(finding_from_row).collect();
        Ok(Response::new(proto::ListReconciliationFindingsResponse {
            findings,
            next_page_token,
        }))
    }
}
