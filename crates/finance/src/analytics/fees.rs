//! Recurring fees from finalized invoices: finance learns what a
//! subscription costs from what invoicing invoiced, since plan prices are
//! not on the bus.
//!
//! A RECURRING line gives the full-period fee (`RecurringLineDetail.
//! period_amount`, not the prorated line amount) from the start of its
//! period; a PRORATION_CHARGE line (a stub first period, a mid-period plan
//! change, the end of a trial or a pause) gives the full-period fee of its
//! plan version (`ProrationLineDetail.period_amount`, over `full_period`)
//! from the start of the prorated part, so an upgrade counts from the
//! instant it happened, not from the next invoice. Proration credits say
//! nothing new (the version they credit stops where the new one starts).
//!
//! A line finance cannot read for MRR (no detail, a period that is neither
//! whole months nor whole days) is skipped with a warning rather than
//! refused: the invoice's ledger postings in the same transaction must not
//! fail for an analytics input.

use chrono::{DateTime, Datelike, Utc};
use sqlx::PgConnection;
use tally_domain::finance::mrr::{MrrInterval, normalise_to_month};
use tally_domain::money::{Currency, Money};
use tally_proto::convert;
use tally_proto::events::InvoiceEvent;
use tally_proto::invoicing::{InvoiceLine, InvoiceLineKind, invoice_line};

pub use super::model::{InvoicedFee, StoredFee};
use super::store;
use crate::error::FinanceServiceError;

/// The length of a billing period `[start, end)` as an MRR interval: whole
/// months when `end` is `start` plus N months (the same day of the month and
/// time of day, or the earlier day is a month end: 31 January → 28 February
/// and 28 February → 31 March are one month each); whole weeks as weeks (the domain's 52 weeks a year); other whole
/// days as days; `None` otherwise.
///
/// ```
/// use tally_domain::finance::mrr::MrrInterval;
/// use tally_finance::analytics::fees::interval_of;
///
/// let at = |text: &str| text.parse().unwrap();
/// let interval = |start, end| interval_of(at(start), at(end));
/// assert_eq!(interval("2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"), Some(MrrInterval::Months(1)));
/// assert_eq!(interval("2026-02-28T00:00:00Z", "2026-03-30T00:00:00Z"), Some(MrrInterval::Months(1)));
/// assert_eq!(interval("2026-01-15T00:00:00Z", "2027-01-15T00:00:00Z"), Some(MrrInterval::Months(12)));
/// assert_eq!(interval("2026-01-01T00:00:00Z", "2026-01-15T00:00:00Z"), Some(MrrInterval::Weeks(2)));
/// assert_eq!(interval("2026-01-01T00:00:00Z", "2026-01-11T00:00:00Z"), Some(MrrInterval::Days(10)));
/// assert_eq!(interval("2026-01-01T00:00:00Z", "2026-01-01T12:00:00Z"), None);
/// ```
pub fn interval_of(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<MrrInterval> {
    if end <= start {
        return None;
    }
    let months = (end.year() - start.year()) * 12 + i32::try_from(end.month()).ok()?
        - i32::try_from(start.month()).ok()?;
    if let Ok(count) = u32::try_from(months)
        && count > 0
        && days_of_month_agree(start, end)
        && start.time() == end.time()
    {
        return Some(MrrInterval::Months(count));
    }
    let duration = end - start;
    if duration.num_seconds() % 86_400 != 0 || duration.subsec_nanos() != 0 {
        return None;
    }
    let days = u32::try_from(duration.num_days()).ok()?;
    Some(if days % 7 == 0 {
        MrrInterval::Weeks(days / 7)
    } else {
        MrrInterval::Days(days)
    })
}

/// The same day of the month, or the earlier of the two days is its month's
/// end (an anchor on the 29th–31st clamps to a shorter month's end).
fn days_of_month_agree(start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    match start.day().cmp(&end.day()) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => is_month_end(start),
        std::cmp::Ordering::Greater => is_month_end(end),
    }
}

fn is_month_end(instant: DateTime<Utc>) -> bool {
    instant
        .date_naive()
        .succ_opt()
        .is_some_and(|next| next.month() != instant.month())
}

/// The recurring fees an invoice event's invoice bills (none for an invoice
/// without a subscription).
pub fn invoiced_fees(event: &InvoiceEvent) -> Vec<InvoicedFee> {
    let Some(invoice) = event.invoice.as_ref() else {
        return Vec::new();
    };
    if invoice.subscription_id.is_empty() {
        return Vec::new();
    }
    let Ok(currency) = Currency::from_code(&invoice.currency) else {
        return Vec::new();
    };
    invoice
        .lines
        .iter()
        .filter_map(|line| match fee_of_line(line, currency) {
            Ok(fee) => fee.map(
                |(plan_version_id, charge_key, effective_from, amount, interval, mrr)| {
                    InvoicedFee {
                        subscription_id: invoice.subscription_id.clone(),
                        customer_id: invoice.customer_id.clone(),
                        plan_version_id,
                        charge_key,
                        effective_from,
                        period_amount: amount,
                        interval,
                        mrr,
                        invoice_id: invoice.id.clone(),
                        line_id: line.id.clone(),
                    }
                },
            ),
            Err(reason) => {
                tracing::warn!(
                    invoice = %invoice.id,
                    line = %line.id,
                    %reason,
                    "a recurring line is left out of MRR"
                );
                None
            }
        })
        .collect()
}

type LineFee = (String, String, DateTime<Utc>, Money, MrrInterval, Money);

/// The fee a line bills, `None` for a line that bills no recurring fee.
fn fee_of_line(line: &InvoiceLine, currency: Currency) -> Result<Option<LineFee>, String> {
    let (plan_version_id, charge_key, amount, full_period, starts) =
        match (InvoiceLineKind::try_from(line.kind), &line.detail) {
            (Ok(InvoiceLineKind::Recurring), Some(invoice_line::Detail::Recurring(detail))) => (
                &detail.plan_version_id,
                &detail.charge_key,
                detail.period_amount.as_ref(),
                line.period.as_ref(),
                line.period.as_ref(),
            ),
            (
                Ok(InvoiceLineKind::ProrationCharge),
                Some(invoice_line::Detail::Proration(detail)),
            ) => (
                &detail.plan_version_id,
                &detail.charge_key,
                detail.period_amount.as_ref(),
                detail.full_period.as_ref(),
                line.period.as_ref(),
            ),
            (Ok(InvoiceLineKind::Recurring | InvoiceLineKind::ProrationCharge), _) => {
                return Err("no recurring or proration detail".to_owned());
            }
            _ => return Ok(None),
        };
    let amount = convert::money_in(amount, currency, "period_amount")
        .map_err(|violation| violation.description)?;
    let full = convert::required_period(full_period, "full_period")
        .map_err(|violation| violation.description)?;
    let starts =
        convert::required_period(starts, "period").map_err(|violation| violation.description)?;
    let interval = interval_of(full.start(), full.end())
        .ok_or_else(|| format!("the period {full} is neither whole months nor whole days"))?;
    let mrr = normalise_to_month(amount, interval).map_err(|error| error.to_string())?;
    if mrr.is_negative() {
        return Err(format!("a negative period amount {amount}"));
    }
    Ok(Some((
        plan_version_id.clone(),
        charge_key.clone(),
        starts.start(),
        amount,
        interval,
        mrr,
    )))
}

/// Stores the recurring fees of finalized invoices, in the order given, in
/// one statement (in the consumer's transaction); a fee stored before under
/// the same key is replaced.
pub async fn record_finalized(
    connection: &mut PgConnection,
    events: &[&InvoiceEvent],
) -> Result<(), FinanceServiceError> {
    let mut fees = Vec::new();
    for fee in events.iter().flat_map(|event| invoiced_fees(event)) {
        let interval = serde_json::to_value(fee.interval).map_err(|error| {
            FinanceServiceError::Internal(format!("serialising an interval: {error}"))
        })?;
        fees.push((fee, interval));
    }
    store::upsert_fees(connection, &fees).await
}

/// Forgets the fees a voided invoice billed.
pub async fn forget_voided(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<(), FinanceServiceError> {
    store::delete_fees_of_invoice(connection, invoice_id).await
}
