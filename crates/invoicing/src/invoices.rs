//! `InvoiceService`: reading invoices, finalizing now, voiding, credit notes
//! and on-demand bill runs.

use chrono::{DateTime, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::invoice::InvoiceStatus as DomainStatus;
use tally_domain::money::Money;
use tally_proto::events::invoice_event;
use tally_proto::invoicing::invoice_service_server::InvoiceService;
use tally_proto::invoicing::{
    self as proto, CreditNoteReason, InvoiceLineKind, InvoiceStatus, create_credit_note_request,
    invoice_line,
};
use tonic::{Request, Response, Status};

use crate::billing::compose::Composer;
use crate::billing::lines::Line;
use crate::billing::store::{self, InvoiceRow};
use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::refunds::{self, Balance};
use crate::subscriptions::model;
use crate::wire::{instant, money, parse_money, timestamp};
use crate::{Context, credits, paging};

/// Most passed boundaries a preview composes before the upcoming one (each
/// may ask rating); beyond, the bill run is far behind and the preview waits
/// for it.
const MAX_UNBILLED_BOUNDARIES: usize = 64;

fn domain_status(status: InvoiceStatus) -> DomainStatus {
    match status {
        InvoiceStatus::Draft | InvoiceStatus::Unspecified => DomainStatus::Draft,
        InvoiceStatus::Finalized => DomainStatus::Finalized,
        InvoiceStatus::Paid => DomainStatus::Paid,
        InvoiceStatus::Void => DomainStatus::Void,
        InvoiceStatus::Uncollectible => DomainStatus::Uncollectible,
    }
}

/// Checks the domain status machine allows `row → to`.
pub fn allow(row: &InvoiceRow, to: DomainStatus) -> Result<()> {
    let from = domain_status(row.wire_status());
    if from.can_transition_to(to) {
        Ok(())
    } else {
        Err(InvoicingError::FailedPrecondition(format!(
            "invoice {} is {from:?}; it cannot become {to:?}",
            row.id
        )))
    }
}

/// One credit note to issue.
#[derive(Debug)]
pub struct NoteRequest {
    pub reason: CreditNoteReason,
    pub memo: String,
    /// `None`: everything creditable.
    pub lines: Option<Vec<proto::CreditNoteLine>>,
    pub credit_to_balance: bool,
    pub refund_id: Option<String>,
}

impl Context {
    async fn run_billing(
        &self,
        request: proto::RunBillingRequest,
    ) -> Result<proto::RunBillingResponse> {
        let as_of = self.clock.now();
        let mut connection = self.pool.acquire().await?;
        let key = 0x7461_6c6c_7962_696c_i64; // "tallybil"
        if request.wait {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut *connection)
                .await?;
        } else {
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *connection)
                .await?;
            if !locked {
                return Err(InvoicingError::Aborted(
                    "another bill run is in progress".into(),
                ));
            }
        }
        let customer = (!request.customer_id.is_empty()).then_some(request.customer_id.as_str());
        let result = self.bill_run(customer).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *connection)
            .await?;
        let summary = result?;
        Ok(proto::RunBillingResponse {
            as_of: Some(timestamp(as_of)),
            periods_examined: summary.periods_examined,
            invoices_created: summary.invoices_created,
            invoices_updated: summary.invoices_updated,
            invoices_finalized: summary.invoices_finalized,
            failures: summary.failures,
            finished_at: Some(timestamp(self.clock.now())),
            failed: summary
                .failed
                .into_iter()
                .map(|failure| proto::BillingFailure {
                    subscription_id: failure.subscription_id,
                    customer_id: failure.customer_id,
                    invoice_id: failure.invoice_id.unwrap_or_default(),
                    reason: failure.reason,
                })
                .collect(),
        })
    }

    /// The subscription's upcoming invoice: the one at the first boundary
    /// after now (the end of the current period, or the end of the
    /// subscription), with the usage known so far, composed like a bill run
    /// but not stored. Boundaries already passed that the bill run has not
    /// invoiced yet (a brand-new subscription's start, a run still to come)
    /// are composed first and count as billed, so the preview is the
    /// period's invoice, not the creation invoice. Credits are applied as
    /// finalization would burn them — after the customer's drafts and those
    /// earlier invoices take their share — without burning anything.
    async fn preview_upcoming_invoice(&self, subscription_id: &str) -> Result<proto::Invoice> {
        if subscription_id.is_empty() {
            return Err(InvoicingError::invalid("subscription_id", "is required"));
        }
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let subscription = model::load(&mut transaction, subscription_id, false).await?;
        let status = subscription.wire_status(now);
        let no_upcoming = || {
            InvoicingError::FailedPrecondition(format!(
                "subscription {subscription_id} is {status:?}: it has no upcoming invoice"
            ))
        };
        if matches!(
            status,
            proto::SubscriptionStatus::Pending | proto::SubscriptionStatus::Canceled
        ) {
            return Err(no_upcoming());
        }
        let grace = chrono::Duration::hours(i64::from(self.config.grace_period_hours));
        let mut billed_before = Vec::new();
        let mut earlier = Vec::new();
        let mut after = subscription.billed_through;
        let (boundary, composition) = loop {
            let Some(boundary) = subscription.next_boundary(after)? else {
                return Err(no_upcoming());
            };
            let composition = Composer::new(
                &mut transaction,
                &self.rating,
                &self.plans,
                &subscription,
                None,
            )
            .with_lookback(self.config.late_usage_lookback_days)
            .with_billed_before(billed_before.clone())
            .compose(after, boundary)
            .await?;
            if boundary > now {
                break (boundary, composition);
            }
            if earlier.len() >= MAX_UNBILLED_BOUNDARIES {
                return Err(InvoicingError::Unavailable(format!(
                    "subscription {subscription_id} has more than {MAX_UNBILLED_BOUNDARIES} boundaries \
                     the bill run has not invoiced yet; preview it after the next bill run"
                )));
            }
            if let Some(composition) = composition {
                let grace = if composition.waits_for_late_usage() {
                    grace
                } else {
                    chrono::Duration::zero()
                };
                earlier.push(credits::preview::Due {
                    subtotal: composition.lines.iter().map(|line| line.amount).sum(),
                    period_end: composition.period.end(),
                    finalized_at: (boundary + grace).max(now),
                });
                billed_before.extend(composition.lines);
            }
            after = Some(boundary);
        };
        let currency = subscription.currency;
        let finalized_at = match &composition {
            Some(composition) if !composition.waits_for_late_usage() => boundary,
            _ => boundary + grace,
        };
        let (period, reason, mut lines) = match composition {
            Some(composition) => (composition.period, composition.reason, composition.lines),
            None => (
                subscription.current_period(now)?,
                proto::BillingReason::SubscriptionCycle,
                Vec::new(),
            ),
        };
        let subtotal: Decimal = lines.iter().map(|line| line.amount).sum();
        // The customer's drafts are finalized (and burn credits) first.
        let drafts: Vec<(Decimal, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT subtotal, period_end, grace_period_ends_at FROM invoicing.invoices \
             WHERE customer_id = $1 AND status = 'draft' ORDER BY grace_period_ends_at, id",
        )
        .bind(&subscription.customer_id)
        .fetch_all(&mut *transaction)
        .await?;
        let mut dues: Vec<credits::preview::Due> = drafts
            .into_iter()
            .map(|(subtotal, period_end, grace_ends)| credits::preview::Due {
                subtotal,
                period_end,
                finalized_at: grace_ends.max(now),
            })
            .collect();
        dues.extend(earlier);
        dues.push(credits::preview::Due {
            subtotal,
            period_end: period.end(),
            finalized_at,
        });
        let burned = credits::preview::preview_burns(
            &mut transaction,
            &subscription.customer_id,
            currency,
            &dues,
        )
        .await?
        .pop()
        .unwrap_or_default();
        transaction.rollback().await?;
        let credits_total: Decimal = burned.iter().map(|(_, amount)| amount.amount()).sum();
        if !burned.is_empty() {
            let mut line = Line::new(
                InvoiceLineKind::CreditsApplied,
                "Credits applied",
                period,
                Money::new(-credits_total, currency),
            )?;
            line.detail = Some(invoice_line::Detail::CreditsApplied(
                proto::CreditsAppliedLineDetail {
                    applications: burned
                        .iter()
                        .map(|(grant, amount)| proto::CreditApplication {
                            credit_grant_id: grant.clone(),
                            amount: Some(money(amount.amount(), currency)),
                        })
                        .collect(),
                },
            ));
            lines.push(line);
        }
        let total = subtotal - credits_total;
        let zero = money(Decimal::ZERO, currency);
        Ok(proto::Invoice {
            customer_id: subscription.customer_id.clone(),
            subscription_id: subscription.id.clone(),
            status: InvoiceStatus::Draft as i32,
            billing_reason: reason as i32,
            currency: currency.code().to_owned(),
            period: Some(crate::wire::period_range(&period)),
            lines: lines
                .iter()
                .map(|line| line.to_proto(String::new(), currency))
                .collect(),
            subtotal: Some(money(subtotal, currency)),
            credits_applied: Some(money(-credits_total, currency)),
            total: Some(money(total, currency)),
            amount_paid: Some(zero.clone()),
            amount_credited: Some(zero),
            amount_due: Some(money(total.max(Decimal::ZERO), currency)),
            grace_period_ends_at: Some(timestamp(finalized_at)),
            created_at: Some(timestamp(now)),
            updated_at: Some(timestamp(now)),
            ..Default::default()
        })
    }

    async fn get_invoice(&self, id: &str) -> Result<proto::Invoice> {
        if id.is_empty() {
            return Err(InvoicingError::invalid("invoice_id", "is required"));
        }
        let mut connection = self.pool.acquire().await?;
        let row = store::load(&mut connection, id, false).await?;
        store::to_proto(&mut connection, &row, true).await
    }

    async fn list_invoices(
        &self,
        request: proto::ListInvoicesRequest,
    ) -> Result<proto::ListInvoicesResponse> {
        let mut statuses = Vec::new();
        for (index, value) in request.statuses.iter().enumerate() {
            match InvoiceStatus::try_from(*value) {
                Ok(InvoiceStatus::Unspecified) | Err(_) => {
                    return Err(InvoicingError::invalid(
                        format!("statuses[{index}]"),
                        format!("{value} is not an invoice status"),
                    ));
                }
                Ok(status) => statuses.push(store::status_name(status)),
            }
        }
        let range = match &request.period_start_range {
            None => None,
            Some(range) => Some((
                instant(range.start_time.as_ref()).ok_or_else(|| {
                    InvoicingError::invalid("period_start_range.start_time", "is required")
                })?,
                instant(range.end_time.as_ref()),
            )),
        };
        let limit = paging::page_size(request.page_size);
        // Newest period first: the token is the last (period start, id).
        let before = paging::after(&request.page_token, "invoices")?
            .map(|token| {
                token
                    .split_once('~')
                    .and_then(|(micros, id)| {
                        let start = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
                        Some((start, id.to_owned()))
                    })
                    .ok_or_else(|| {
                        InvoicingError::invalid("page_token", "is not a token of this listing")
                    })
            })
            .transpose()?;
        let mut connection = self.pool.acquire().await?;
        let rows = store::list(
            &mut connection,
            (!request.customer_id.is_empty()).then_some(request.customer_id.as_str()),
            (!request.subscription_id.is_empty()).then_some(request.subscription_id.as_str()),
            &statuses,
            range,
            before.as_ref().map(|(start, id)| (*start, id.as_str())),
            limit + 1,
        )
        .await?;
        let (rows, more) = paging::finish(rows, limit, "invoices", |row| &row.id);
        let next_page_token = match rows.last() {
            Some(last) if !more.is_empty() => {
                format!(
                    "invoices.{}~{}",
                    last.period_start.timestamp_micros(),
                    last.id
                )
            }
            _ => String::new(),
        };
        let mut invoices = Vec::with_capacity(rows.len());
        for row in &rows {
            invoices.push(store::to_proto(&mut connection, row, request.include_lines).await?);
        }
        Ok(proto::ListInvoicesResponse {
            invoices,
            next_page_token,
        })
    }

    async fn finalize_invoice(&self, id: &str) -> Result<proto::Invoice> {
        if id.is_empty() {
            return Err(InvoicingError::invalid("invoice_id", "is required"));
        }
        let now = self.clock.now();
        let draft = {
            let mut connection = self.pool.acquire().await?;
            store::load(&mut connection, id, false).await?
        };
        let usage = if draft.status == "draft" {
            self.prefetch_usage(&draft.subscription_id, now, Some(&draft))
                .await?
        } else {
            Default::default()
        };
        let subscription_id = draft.subscription_id;
        let mut transaction = self.pool.begin().await?;
        // Same lock order as the bill run: subscription, then invoice.
        sqlx::query("SELECT id FROM invoicing.subscriptions WHERE id = $1 FOR UPDATE")
            .bind(&subscription_id)
            .execute(&mut *transaction)
            .await?;
        let row = store::load(&mut transaction, id, true).await?;
        match row.wire_status() {
            InvoiceStatus::Draft => {
                self.require_published(&mut transaction, &row.customer_id)
                    .await?;
                self.refresh_draft(&mut transaction, &row, now, usage)
                    .await?;
                let row = store::load(&mut transaction, id, true).await?;
                self.finalize_locked(&mut transaction, &row, now).await?;
            }
            InvoiceStatus::Void => {
                return Err(InvoicingError::FailedPrecondition(format!(
                    "invoice {id} is void"
                )));
            }
            InvoiceStatus::Finalized
            | InvoiceStatus::Paid
            | InvoiceStatus::Uncollectible
            | InvoiceStatus::Unspecified => {}
        }
        let row = store::load(&mut transaction, id, false).await?;
        let invoice = store::to_proto(&mut transaction, &row, true).await?;
        transaction.commit().await?;
        Ok(invoice)
    }

    async fn void_invoice(&self, request: proto::VoidInvoiceRequest) -> Result<proto::Invoice> {
        const METHOD: &str = "VoidInvoice";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        if request.invoice_id.is_empty() {
            violations.add("invoice_id", "is required");
        }
        if request.reason.trim().is_empty() {
            violations.add("reason", "is required");
        }
        violations.into_result()?;
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        if idem.claim(&mut transaction).await?.is_none() {
            let row = store::load(&mut transaction, &request.invoice_id, true).await?;
            if row.amount_paid > Decimal::ZERO && row.wire_status() != InvoiceStatus::Void {
                return Err(InvoicingError::FailedPrecondition(format!(
                    "invoice {} is partially paid; issue a credit note instead",
                    row.id
                )));
            }
            allow(&row, DomainStatus::Void)?;
            credits::return_burns(
                &mut transaction,
                &*self.ids,
                &row.id,
                None,
                "voided, credits returned",
                now,
            )
            .await?;
            sqlx::query(
                "UPDATE invoicing.invoices SET status = 'void', voided_at = $2, void_reason = $3, version = version + 1, \
                   updated_at = $2 WHERE id = $1",
            )
            .bind(&row.id)
            .bind(now)
            .bind(&request.reason)
            .execute(&mut *transaction)
            .await?;
            self.publish_invoice(
                &mut transaction,
                &row.id,
                now,
                invoice_event::Kind::Voided(invoice_event::Voided {
                    reason: request.reason.clone(),
                }),
            )
            .await?;
            idem.record(&mut transaction, &row.id, now).await?;
        }
        let row = store::load(&mut transaction, &request.invoice_id, false).await?;
        let invoice = store::to_proto(&mut transaction, &row, true).await?;
        transaction.commit().await?;
        Ok(invoice)
    }

    /// Issues a credit note against a locked invoice row.
    pub(crate) async fn issue_credit_note(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        note: NoteRequest,
        now: DateTime<Utc>,
    ) -> Result<proto::CreditNote> {
        self.issue_credit_note_refunding(connection, row, note, None, now)
            .await
    }

    /// Issues a credit note against a locked invoice row, part of which
    /// (`refund_amount`) payments refunds to the customer's payment method.
    /// The note takes its total from the invoice's one balance (what credit
    /// notes and held refunds leave: `refunds::Balance`).
    pub(crate) async fn issue_credit_note_refunding(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        note: NoteRequest,
        refund_amount: Option<&tally_proto::common::Money>,
        now: DateTime<Utc>,
    ) -> Result<proto::CreditNote> {
        if !matches!(
            row.wire_status(),
            InvoiceStatus::Finalized | InvoiceStatus::Paid | InvoiceStatus::Uncollectible
        ) {
            return Err(InvoicingError::FailedPrecondition(format!(
                "invoice {} is {:?}; credit notes need a finalized, paid or uncollectible invoice",
                row.id,
                row.wire_status()
            )));
        }
        let currency = row.currency()?;
        let balance = Balance::load(&mut *connection, row).await?;
        let creditable = balance.creditable();
        let earlier: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT snapshot FROM invoicing.credit_notes WHERE invoice_id = $1")
                .bind(&row.id)
                .fetch_all(&mut *connection)
                .await?;
        let earlier: Vec<proto::CreditNote> = earlier
            .into_iter()
            .map(|(bytes,)| {
                proto::CreditNote::decode(bytes.as_slice()).map_err(InvoicingError::internal)
            })
            .collect::<Result<_>>()?;
        let lines = match note.lines {
            None => {
                if creditable <= Decimal::ZERO {
                    return Err(InvoicingError::FailedPrecondition(format!(
                        "nothing remains creditable on invoice {}",
                        row.id
                    )));
                }
                vec![proto::CreditNoteLine {
                    invoice_line_id: String::new(),
                    description: "Credit of the remaining invoice amount".into(),
                    amount: Some(money(creditable, currency)),
                }]
            }
            Some(lines) => {
                if lines.is_empty() {
                    return Err(InvoicingError::invalid(
                        "partial.lines",
                        "must name at least one line",
                    ));
                }
                let invoice_lines = store::lines(&mut *connection, &row.id).await?;
                for (index, line) in lines.iter().enumerate() {
                    let field = format!("partial.lines[{index}]");
                    let amount =
                        parse_money(line.amount.as_ref(), currency, &format!("{field}.amount"))?;
                    if !amount.is_positive() || !amount.is_rounded() {
                        return Err(InvoicingError::invalid(
                            format!("{field}.amount"),
                            "must be positive, in whole minor units",
                        ));
                    }
                    if line.invoice_line_id.is_empty() {
                        continue;
                    }
                    let Some(billed) = invoice_lines
                        .iter()
                        .find(|billed| billed.id == line.invoice_line_id)
                    else {
                        return Err(InvoicingError::invalid(
                            format!("{field}.invoice_line_id"),
                            format!(
                                "{:?} is not a line of invoice {}",
                                line.invoice_line_id, row.id
                            ),
                        ));
                    };
                    let billed_amount = billed
                        .amount
                        .as_ref()
                        .and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
                        .unwrap_or(Decimal::ZERO);
                    let credited: Decimal = earlier
                        .iter()
                        .flat_map(|note| &note.lines)
                        .chain(lines[..index].iter())
                        .filter(|earlier| earlier.invoice_line_id == line.invoice_line_id)
                        .filter_map(|earlier| {
                            earlier
                                .amount
                                .as_ref()
                                .and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
                        })
                        .sum();
                    if amount.amount() > billed_amount - credited {
                        return Err(InvoicingError::FailedPrecondition(format!(
                            "{field}: {} is more than the {} still creditable on line {}",
                            amount.amount(),
                            billed_amount - credited,
                            line.invoice_line_id
                        )));
                    }
                }
                lines
            }
        };
        let total: Decimal = lines
            .iter()
            .filter_map(|line| {
                line.amount
                    .as_ref()
                    .and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
            })
            .sum();
        balance.check_credit(total)?;
        let refund = match refund_amount {
            None => Decimal::ZERO,
            Some(value) => {
                let refund = parse_money(Some(value), currency, "refund_amount")?;
                if !refund.is_positive() || !refund.is_rounded() {
                    return Err(InvoicingError::invalid(
                        "refund_amount",
                        "must be positive, in whole minor units",
                    ));
                }
                if refund.amount() > total {
                    return Err(InvoicingError::invalid(
                        "refund_amount",
                        format!(
                            "{refund} is more than the note's total {}",
                            Money::new(total, currency)
                        ),
                    ));
                }
                balance.check_note_refund(refund.amount())?;
                refund.amount()
            }
        };
        let id = self.ids.new_id("cn");
        let number =
            store::next_number(&mut *connection, &self.config.credit_note_number_prefix).await?;
        let credited_to_balance =
            note.credit_to_balance && row.wire_status() == InvoiceStatus::Paid && total > refund;
        let grant = if credited_to_balance {
            Some(
                credits::insert_grant(
                    &mut *connection,
                    &*self.ids,
                    &row.customer_id,
                    false,
                    Money::new(total - refund, currency),
                    0,
                    now,
                    None,
                    &format!("credit note {number}"),
                    &id,
                    now,
                )
                .await?,
            )
        } else {
            None
        };
        let credit_note = proto::CreditNote {
            id: id.clone(),
            number,
            invoice_id: row.id.clone(),
            customer_id: row.customer_id.clone(),
            reason: note.reason as i32,
            memo: note.memo,
            lines,
            total: Some(money(total, currency)),
            credited_to_balance,
            refund_id: note.refund_id.clone().unwrap_or_default(),
            created_at: Some(timestamp(now)),
            refund_amount: (refund > Decimal::ZERO).then(|| money(refund, currency)),
        };
        sqlx::query(
            "INSERT INTO invoicing.credit_notes (id, number, invoice_id, customer_id, total, refund_id, snapshot, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&credit_note.number)
        .bind(&row.id)
        .bind(&row.customer_id)
        .bind(total)
        .bind(&note.refund_id)
        .bind(credit_note.encode_to_vec())
        .bind(now)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "UPDATE invoicing.invoices SET amount_credited = amount_credited + $2, version = version + 1, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(&row.id)
        .bind(total)
        .bind(now)
        .execute(&mut *connection)
        .await?;
        if refund > Decimal::ZERO {
            refunds::hold_note_refund(&mut *connection, row, &id, refund, now).await?;
        }
        let grant = match grant {
            Some(grant) => Some(grant.to_proto(now)?),
            None => None,
        };
        self.publish_invoice(
            &mut *connection,
            &row.id,
            now,
            invoice_event::Kind::CreditNoteIssued(invoice_event::CreditNoteIssued {
                credit_note: Some(credit_note.clone()),
                credit_grant: grant,
            }),
        )
        .await?;
        Ok(credit_note)
    }

    async fn create_credit_note(
        &self,
        request: proto::CreateCreditNoteRequest,
    ) -> Result<proto::CreateCreditNoteResponse> {
        const METHOD: &str = "CreateCreditNote";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        if request.invoice_id.is_empty() {
            violations.add("invoice_id", "is required");
        }
        let reason = match CreditNoteReason::try_from(request.reason) {
            Ok(CreditNoteReason::Unspecified) | Err(_) => {
                violations.add("reason", "is required");
                CreditNoteReason::Unspecified
            }
            Ok(reason) => reason,
        };
        let lines = match &request.amount {
            Some(create_credit_note_request::Amount::Full(true)) => None,
            Some(create_credit_note_request::Amount::Partial(partial)) => {
                Some(partial.lines.clone())
            }
            _ => {
                violations.add("amount", "full (true) or partial is required");
                None
            }
        };
        violations.into_result()?;
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let note_id = match idem.claim(&mut transaction).await? {
            Some(id) => id,
            None => {
                let row = store::load(&mut transaction, &request.invoice_id, true).await?;
                let note = self
                    .issue_credit_note_refunding(
                        &mut transaction,
                        &row,
                        NoteRequest {
                            reason,
                            memo: request.memo.clone(),
                            lines,
                            credit_to_balance: request.credit_to_balance,
                            refund_id: None,
                        },
                        request.refund_amount.as_ref(),
                        now,
                    )
                    .await?;
                idem.record(&mut transaction, &note.id, now).await?;
                note.id
            }
        };
        let (bytes, invoice_id): (Vec<u8>, String) =
            sqlx::query_as("SELECT snapshot, invoice_id FROM invoicing.credit_notes WHERE id = $1")
                .bind(&note_id)
                .fetch_one(&mut *transaction)
                .await?;
        let row = store::load(&mut transaction, &invoice_id, false).await?;
        let invoice = store::to_proto(&mut transaction, &row, true).await?;
        transaction.commit().await?;
        Ok(proto::CreateCreditNoteResponse {
            credit_note: Some(
                proto::CreditNote::decode(bytes.as_slice()).map_err(InvoicingError::internal)?,
            ),
            invoice: Some(invoice),
        })
    }

    async fn list_credit_notes(
        &self,
        request: proto::ListCreditNotesRequest,
    ) -> Result<proto::ListCreditNotesResponse> {
        let limit = paging::page_size(request.page_size);
        let before = paging::after(&request.page_token, "credit_notes")?;
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, snapshot FROM invoicing.credit_notes WHERE ($1 = '' OR invoice_id = $1) \
               AND ($2 = '' OR customer_id = $2) AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(&request.invoice_id)
        .bind(&request.customer_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let (rows, next_page_token) = paging::finish(rows, limit, "credit_notes", |(id, _)| id);
        Ok(proto::ListCreditNotesResponse {
            credit_notes: rows
                .into_iter()
                .map(|(_, bytes)| {
                    proto::CreditNote::decode(bytes.as_slice()).map_err(InvoicingError::internal)
                })
                .collect::<Result<_>>()?,
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl InvoiceService for crate::InvoicingApi {
    async fn get_invoice(
        &self,
        request: Request<proto::GetInvoiceRequest>,
    ) -> Result<Response<proto::GetInvoiceResponse>, Status> {
        let invoice = self
            .ctx
            .get_invoice(&request.into_inner().invoice_id)
            .await?;
        Ok(Response::new(proto::GetInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn list_invoices(
        &self,
        request: Request<proto::ListInvoicesRequest>,
    ) -> Result<Response<proto::ListInvoicesResponse>, Status> {
        Ok(Response::new(
            self.ctx.list_invoices(request.into_inner()).await?,
        ))
    }

    async fn preview_upcoming_invoice(
        &self,
        request: Request<proto::PreviewUpcomingInvoiceRequest>,
    ) -> Result<Response<proto::PreviewUpcomingInvoiceResponse>, Status> {
        let invoice = self
            .ctx
            .preview_upcoming_invoice(&request.into_inner().subscription_id)
            .await?;
        Ok(Response::new(proto::PreviewUpcomingInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn finalize_invoice(
        &self,
        request: Request<proto::FinalizeInvoiceRequest>,
    ) -> Result<Response<proto::FinalizeInvoiceResponse>, Status> {
        let invoice = self
            .ctx
            .finalize_invoice(&request.into_inner().invoice_id)
            .await?;
        Ok(Response::new(proto::FinalizeInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn void_invoice(
        &self,
        request: Request<proto::VoidInvoiceRequest>,
    ) -> Result<Response<proto::VoidInvoiceResponse>, Status> {
        let invoice = self.ctx.void_invoice(request.into_inner()).await?;
        Ok(Response::new(proto::VoidInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn create_credit_note(
        &self,
        request: Request<proto::CreateCreditNoteRequest>,
    ) -> Result<Response<proto::CreateCreditNoteResponse>, Status> {
        Ok(Response::new(
            self.ctx.create_credit_note(request.into_inner()).await?,
        ))
    }

    async fn reserve_refund(
        &self,
        request: Request<proto::ReserveRefundRequest>,
    ) -> Result<Response<proto::ReserveRefundResponse>, Status> {
        Ok(Response::new(
            self.ctx.reserve_refund(request.into_inner()).await?,
        ))
    }

    async fn list_credit_notes(
        &self,
        request: Request<proto::ListCreditNotesRequest>,
    ) -> Result<Response<proto::ListCreditNotesResponse>, Status> {
        Ok(Response::new(
            self.ctx.list_credit_notes(request.into_inner()).await?,
        ))
    }

    async fn run_billing(
        &self,
        request: Request<proto::RunBillingRequest>,
    ) -> Result<Response<proto::RunBillingResponse>, Status> {
        Ok(Response::new(
            self.ctx.run_billing(request.into_inner()).await?,
        ))
    }
}
