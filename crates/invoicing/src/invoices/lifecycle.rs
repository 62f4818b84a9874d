//! Reading, finalizing and voiding invoices, and bill runs on demand.

use chrono::DateTime;
use prost::Message as _;
use rust_decimal::Decimal;
use tally_domain::ids::{CustomerId, InvoiceId, SubscriptionId};
use tally_domain::invoice::InvoiceStatus as DomainStatus;
use tally_proto::convert::optional_id;
use tally_proto::events::invoice_event;
use tally_proto::invoicing::{self as proto, InvoiceStatus};

use super::Invoices;
use super::allow;
use super::store as invoice_store;
use crate::billing::model::InvoiceStatus as InvoiceStatusModel;
use crate::billing::store::{self};
use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::wire::{instant, timestamp};
use crate::{audit, credits, paging};
use tally_audit::Origin;

impl Invoices<'_> {
    pub(super) async fn run_billing(
        &self,
        request: proto::RunBillingRequest,
    ) -> Result<proto::RunBillingResponse> {
        let as_of = self.clock.now();
        let mut connection = self.pool.acquire().await?;
        if request.wait {
            invoice_store::lock_bill_runs(&mut connection).await?;
        } else {
            let locked = invoice_store::try_lock_bill_runs(&mut connection).await?;
            if !locked {
                return Err(InvoicingError::Aborted(
                    "another bill run is in progress".into(),
                ));
            }
        }
        let customer = (!request.customer_id.is_empty()).then_some(request.customer_id.as_str());
        let result = self.billing().bill_run(customer).await;
        invoice_store::unlock_bill_runs(&mut connection).await?;
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

    pub(super) async fn get_invoice(&self, id: &str) -> Result<proto::Invoice> {
        let id: InvoiceId = tally_proto::convert::id(id, "invoice_id")?;
        let mut connection = self.pool.acquire().await?;
        let row = store::load(&mut connection, id.as_str(), false).await?;
        store::to_proto(&mut connection, &row, true).await
    }

    pub(super) async fn list_invoices(
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
                Ok(status) => {
                    statuses.extend(store::status_from_wire(status).map(|status| status.name()))
                }
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
        optional_id::<CustomerId>(&request.customer_id, "customer_id")?;
        optional_id::<SubscriptionId>(&request.subscription_id, "subscription_id")?;
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

    pub(super) async fn finalize_invoice(
        &self,
        id: &str,
        origin: &Origin,
    ) -> Result<proto::Invoice> {
        if id.is_empty() {
            return Err(InvoicingError::invalid("invoice_id", "is required"));
        }
        let now = self.clock.now();
        let draft = {
            let mut connection = self.pool.acquire().await?;
            store::load(&mut connection, id, false).await?
        };
        let usage = if draft.status == InvoiceStatusModel::Draft {
            self.billing()
                .prefetch_usage(&draft.subscription_id, now, Some(&draft))
                .await?
        } else {
            Default::default()
        };
        let subscription_id = draft.subscription_id;
        let mut transaction = self.pool.begin().await?;
        // Same lock order as the bill run: subscription, then invoice.
        crate::subscriptions::store::lock(&mut transaction, &subscription_id).await?;
        let row = store::load(&mut transaction, id, true).await?;
        match row.wire_status() {
            InvoiceStatus::Draft => {
                if row.grace_period_ends_at >= crate::customers::billing_mode::held_until() {
                    return Err(InvoicingError::FailedPrecondition(format!(
                        "invoice {id} is held: another billing system bills customer {} \
                         (shadow billing; `tally migrate cutover` moves it to Tally)",
                        row.customer_id
                    )));
                }
                self.billing()
                    .require_published(&mut transaction, &row.customer_id)
                    .await?;
                self.billing()
                    .refresh_draft(&mut transaction, &row, now, usage)
                    .await?;
                let row = store::load(&mut transaction, id, true).await?;
                self.billing()
                    .finalize_locked(&mut transaction, &row, now, origin)
                    .await?;
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

    pub(super) async fn void_invoice(
        &self,
        request: proto::VoidInvoiceRequest,
        origin: &Origin,
    ) -> Result<proto::Invoice> {
        const METHOD: &str = "VoidInvoice";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        violations.id::<InvoiceId>(&request.invoice_id, "invoice_id");
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
            invoice_store::mark_void(&mut transaction, &row.id, now, &request.reason).await?;
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
            let voided = store::load(&mut transaction, &row.id, false).await?;
            let entry = self
                .audit_entry(now, "invoice.voided", ("invoice", &row.id), origin)
                .reason(request.reason.clone())
                .before(audit::invoice_state(&row))
                .after(audit::invoice_state(&voided));
            self.audit(&mut transaction, entry).await?;
        }
        let row = store::load(&mut transaction, &request.invoice_id, false).await?;
        let invoice = store::to_proto(&mut transaction, &row, true).await?;
        transaction.commit().await?;
        Ok(invoice)
    }
}
