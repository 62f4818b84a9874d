//! The evidence bundle of a cutover: what was decided, by whom and why, and
//! the parity reports it rested on — as JSON (the whole record) and CSV (one
//! row per amount compared, for a spreadsheet). Built from stored facts only,
//! so the same cutover always gives the same bundle.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::model::{BillingSystem, CutoverPolicy, ParityReport};
use super::{Change, state_json};

/// A cutover's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The bundle as pretty JSON.
    pub json: String,
    /// One row per finding of the reports: period, subject, both amounts,
    /// difference, match.
    pub csv: String,
}

impl Evidence {
    /// The evidence of cutting `after` over from `before` on `reports`.
    pub fn of(
        after: &BillingSystem,
        before: &BillingSystem,
        reports: &[ParityReport],
        change: &Change,
        now: DateTime<Utc>,
        policy: CutoverPolicy,
    ) -> Self {
        let document = json!({
            "customer_id": after.customer_id,
            "biller": after.biller,
            "decided_at": now.to_rfc3339(),
            "cutover_at": after.cutover_at.map(|at| at.to_rfc3339()),
            "actor": {
                "kind": change.origin.actor.kind(),
                "id": change.origin.actor.id(),
                "name": change.origin.actor.name(),
            },
            "reason": change.reason,
            "dry_run": change.dry_run,
            "policy": {
                "matching_periods": policy.matching_periods,
                "boundary_tolerance_seconds": policy.boundary_tolerance.num_seconds(),
            },
            "before": state_json(before),
            "after": state_json(after),
            "reports": reports.iter().map(report_json).collect::<Vec<_>>(),
        });
        let json = serde_json::to_string_pretty(&document).unwrap_or_default();
        let mut csv = String::from(
            "customer_id,period_start,period_end,tally_invoice_id,external_invoice_id,currency,subject,tally_amount,external_amount,difference,matches,note\n",
        );
        for report in reports {
            for finding in &report.findings {
                let cells = [
                    report.customer_id.clone(),
                    report.period.start.to_rfc3339(),
                    report.period.end.to_rfc3339(),
                    report.tally_invoice_id.clone(),
                    report.external_invoice_id.clone(),
                    report.currency.clone(),
                    finding.subject.clone(),
                    amount(finding.tally_amount),
                    amount(finding.external_amount),
                    amount(finding.difference),
                    finding.matches.to_string(),
                    finding.note.clone(),
                ];
                let row: Vec<String> = cells.iter().map(|cell| csv_cell(cell)).collect();
                csv.push_str(&row.join(","));
                csv.push('\n');
            }
        }
        Self { json, csv }
    }
}

/// A report as the JSON bundle and the API show it.
pub fn report_json(report: &ParityReport) -> Value {
    json!({
        "customer_id": report.customer_id,
        "period_start": report.period.start.to_rfc3339(),
        "period_end": report.period.end.to_rfc3339(),
        "biller": report.biller,
        "tally_invoice_id": report.tally_invoice_id,
        "external_invoice_id": report.external_invoice_id,
        "currency": report.currency,
        "matched": report.matched,
        "lines_not_compared": report.lines_not_compared,
        "compared_at": report.compared_at.to_rfc3339(),
        "findings": report.findings.iter().map(|finding| json!({
            "subject": finding.subject,
            "tally_amount": finding.tally_amount.map(|amount| amount.to_string()),
            "external_amount": finding.external_amount.map(|amount| amount.to_string()),
            "difference": finding.difference.map(|amount| amount.to_string()),
            "matches": finding.matches,
            "note": finding.note,
        })).collect::<Vec<_>>(),
    })
}

fn amount(value: Option<Decimal>) -> String {
    value.map(|amount| amount.to_string()).unwrap_or_default()
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break.
fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}
