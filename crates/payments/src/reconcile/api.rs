//! `tally.payments.v1.ReconciliationService`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;
use tally_proto::common::{Money, TimeRange};
use tally_proto::payments as proto;
use tally_proto::payments::reconciliation_service_server::ReconciliationService;
use tonic::{Request, Response, Status};

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

const REPORT_COLUMNS: &str = "id, window_start, window_end, state, scheduled, matched, missing_in_tally, \
     missing_in_stripe, amount_mismatch, status_mismatch, error, started_at, finished_at";

fn report_from_row(
    row: &sqlx::postgres::PgRow,
) -> Result<proto::ReconciliationReport, sqlx::Error> {
    let count = |column: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
    };
    let state = match row.try_get::<&str, _>("state")? {
        "pending" => proto::ReconciliationState::Pending,
        "running" => proto::ReconciliationState::Running,
        "completed" => proto::ReconciliationState::Completed,
        _ => proto::ReconciliationState::Failed,
    };
    Ok(proto::ReconciliationReport {
        id: row.try_get("id")?,
        window: Some(TimeRange {
            start_time: Some(timestamp(row.try_get("window_start")?)),
            end_time: Some(timestamp(row.try_get("window_end")?)),
        }),
        state: state.into(),
        summary: Some(proto::ReconciliationSummary {
            matched: count("matched")?,
            missing_in_tally: count("missing_in_tally")?,
            missing_in_stripe: count("missing_in_stripe")?,
            amount_mismatch: count("amount_mismatch")?,
            status_mismatch: count("status_mismatch")?,
        }),
        error: row.try_get("error")?,
        scheduled: row.try_get("scheduled")?,
        started_at: Some(timestamp(row.try_get("started_at")?)),
        finished_at: row
            .try_get::<Option<DateTime<Utc>>, _>("finished_at")?
            .map(timestamp),
    })
}

fn finding_from_row(
    row: &sqlx::postgres::PgRow,
) -> Result<proto::ReconciliationFinding, sqlx::Error> {
    let amount = |amount: &str, currency: &str| -> Result<Option<Money>, sqlx::Error> {
        Ok(row
            .try_get::<Option<Decimal>, _>(amount)?
            .map(|value| Money {
                currency: row.try_get::<String, _>(currency).unwrap_or_default(),
                amount: value.to_string(),
            }))
    };
    let kind = match row.try_get::<&str, _>("kind")? {
        "missing_in_tally" => proto::FindingKind::MissingInTally,
        "missing_in_stripe" => proto::FindingKind::MissingInStripe,
        "amount_mismatch" => proto::FindingKind::AmountMismatch,
        _ => proto::FindingKind::StatusMismatch,
    };
    let object = match row.try_get::<&str, _>("object")? {
        "invoice" => proto::ReconciledObject::Invoice,
        "payment" => proto::ReconciledObject::Payment,
        "refund" => proto::ReconciledObject::Refund,
        _ => proto::ReconciledObject::BalanceTransaction,
    };
    Ok(proto::ReconciliationFinding {
        id: row.try_get("id")?,
        kind: kind.into(),
        object: object.into(),
        tally_id: row.try_get("tally_id")?,
        stripe_id: row.try_get("stripe_id")?,
        tally_amount: amount("tally_amount", "tally_currency")?,
        stripe_amount: amount("stripe_amount", "stripe_currency")?,
        tally_status: row.try_get("tally_status")?,
        stripe_status: row.try_get("stripe_status")?,
        description: row.try_get("description")?,
    })
}

impl ReconciliationApi {
    async fn report(&self, report_id: &str) -> Result<proto::ReconciliationReport, PaymentsError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM payments.reconciliation_reports WHERE id = $1"
        )))
        .bind(report_id)
        .fetch_optional(&self.reconciler.core.pool)
        .await?;
        match row {
            Some(row) => Ok(report_from_row(&row)?),
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM payments.reconciliation_reports WHERE ($1 = '' OR id < $1) \
             ORDER BY id DESC LIMIT $2"
        )))
        .bind(&request.page_token)
        .bind(size + 1)
        .fetch_all(&self.reconciler.core.pool)
        .await
        .map_err(PaymentsError::from)?;
        let mut reports = rows
            .iter()
            .map(report_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(PaymentsError::from)?;
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
        let rows = sqlx::query(
            "SELECT id, kind, object, tally_id, stripe_id, tally_amount, tally_currency, stripe_amount, \
             stripe_currency, tally_status, stripe_status, description, position \
             FROM payments.reconciliation_findings WHERE report_id = $1 AND position > $2 \
             AND ($4 = '' OR kind = $4) ORDER BY position LIMIT $3",
        )
        .bind(&request.report_id)
        .bind(after)
        .bind(size + 1)
        .bind(kind)
        .fetch_all(&self.reconciler.core.pool)
        .await
        .map_err(PaymentsError::from)?;
        let more = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
        let kept = &rows[..rows.len().min(usize::try_from(size).unwrap_or(usize::MAX))];
        let findings = kept
            .iter()
            .map(finding_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(PaymentsError::from)?;
        let next_page_token = match (more, kept.last()) {
            (true, Some(row)) => row
                .try_get::<i32, _>("position")
                .map_err(PaymentsError::from)?
                .to_string(),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListReconciliationFindingsResponse {
            findings,
            next_page_token,
        }))
    }
}
