//! Finalizing invoices: a draft's lines are settled (a negative subtotal
//! carried to a credit grant, credits burned), then numbered and marked
//! finalized together just before the commit ([`Billing::seal`]), and its
//! `invoice-events` message written to the outbox.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::credit::CreditApplication;
use tally_domain::ids::{CreditGrantId, CustomerId, InvoiceEventId, InvoiceId};
use tally_domain::invoice::Invoice as DomainInvoice;
use tally_domain::money::{LINE_ROUNDING, Money};
use tally_domain::period::Period;
use tally_proto::events::invoice_event;
use tally_proto::invoicing::{self as proto, InvoiceLine};

use super::Billing;
use super::compose::{Composer, UsageCache};
use super::lines::Line;
use super::model::{Explanation, LineKind};
use super::store::billed;
use super::store::{self, InvoiceRow};
use crate::customers::mapping::collection_mode_from_wire;
use crate::customers::model::CollectionMode;
use crate::error::{InvoicingError, Result};
use crate::subscriptions::store as subscription_store;
use crate::wire::money;
use crate::{audit, credits, customers, events};
use tally_audit::Origin;

/// What the caller of [`Billing::prepare_finalization`] already read, so
/// it is not read again.
#[derive(Default)]
pub(crate) struct Known<'a> {
    /// The draft's lines, when the caller just wrote them.
    pub(crate) lines: Option<Vec<InvoiceLine>>,
    /// The invoice's customer.
    pub(crate) customer: Option<&'a tally_proto::invoicing::Customer>,
    /// The customer had no grant to burn when the batch began.
    pub(crate) without_credits: bool,
}

/// A draft whose lines and credits are final, waiting for its number
/// ([`Billing::seal`]).
pub(crate) struct Sealing {
    pub(crate) invoice_id: String,
    /// Its lines as stored, when the caller had them at hand.
    pub(crate) lines: Option<Vec<InvoiceLine>>,
    pub(crate) customer: tally_proto::invoicing::Customer,
    /// The customer's, copied onto the invoice.
    pub(crate) collection_mode: CollectionMode,
    pub(crate) currency: tally_domain::money::Currency,
    pub(crate) subtotal: Decimal,
    pub(crate) credits_total: Decimal,
    pub(crate) total: Decimal,
    pub(crate) due_at: DateTime<Utc>,
}

impl Billing<'_> {
    /// Composes a draft again; `true` when its lines changed.
    pub(crate) async fn refresh_draft(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        now: DateTime<Utc>,
        usage: UsageCache,
    ) -> Result<bool> {
        let subscription =
            subscription_store::load(&mut *connection, &row.subscription_id, false).await?;
        let composition = Composer::new(
            &mut *connection,
            &self.rating,
            &self.plans,
            &subscription,
            Some(&row.id),
        )
        .with_usage(usage)
        .with_lookback(self.config.late_usage_lookback_days)
        .compose(row.previous_boundary(), row.boundary_at)
        .await?;
        let composition = match composition {
            Some(composition) => composition,
            None => super::compose::Composition {
                boundary: row.boundary_at,
                period: Period::new(row.period_start, row.period_end)
                    .map_err(InvoicingError::internal)?,
                reason: proto::BillingReason::SubscriptionCreate,
                lines: Vec::new(),
            },
        };
        store::replace_draft_lines(connection, &*self.ids, row, &composition, now).await
    }

    /// Finalizes a locked draft now: [`Self::prepare_finalization`], then
    /// [`Self::seal`].
    pub(crate) async fn finalize_locked(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        now: DateTime<Utc>,
        origin: &Origin,
    ) -> Result<()> {
        let sealing = self
            .prepare_finalization(&mut *connection, row, now, Known::default())
            .await?;
        self.seal(connection, vec![sealing], now, Some(origin), Vec::new())
            .await
    }

    /// The first half of finalizing a locked draft: a negative subtotal is
    /// carried to a credit grant, credits are burned in burn-down order and
    /// their lines added. The invoice stays a draft until [`Self::seal`].
    pub(crate) async fn prepare_finalization(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        now: DateTime<Utc>,
        known: Known<'_>,
    ) -> Result<Sealing> {
        let currency = row.currency()?;
        let customer = match known.customer {
            Some(customer) => customer.clone(),
            None => customers::load(&mut *connection, &row.customer_id, false).await?,
        };
        let line_count = match &known.lines {
            Some(lines) => i64::try_from(lines.len()).map_err(InvoicingError::internal)?,
            None => billed::line_count(&mut *connection, &row.id).await?,
        };
        let service =
            Period::new(row.period_start, row.period_end).map_err(InvoicingError::internal)?;
        let mut extra: Vec<Line> = Vec::new();
        let mut subtotal = row.subtotal;
        if subtotal < Decimal::ZERO {
            let carried = Money::new(-subtotal, currency);
            let grant = credits::insert_grant(
                &mut *connection,
                &*self.ids,
                &row.customer_id,
                false,
                carried,
                0,
                now,
                None,
                &format!("credit carried from invoice {}", row.id),
                "",
                now,
            )
            .await?;
            let mut line = Line::new(
                LineKind::Adjustment,
                format!("Credit balance carried to {}", grant.id),
                service,
                carried,
            )?;
            line.explanation = Some(Explanation::Adjustment {
                original_invoice_id: row.id.clone(),
                original_line_id: String::new(),
                reason: "negative total carried to the customer's credit balance".into(),
                repriced_charge: None,
            });
            extra.push(line);
            subtotal = Decimal::ZERO;
        }
        let due = Money::new(subtotal, currency);
        let burned = if known.without_credits {
            Vec::new()
        } else {
            credits::burn(
                &mut *connection,
                &*self.ids,
                &row.customer_id,
                due,
                &row.id,
                row.period_end,
                now,
            )
            .await?
        };
        let credits_total: Decimal = burned.iter().map(|(_, amount)| amount.amount()).sum();
        // The domain invoice checks the result: credits never exceed what is
        // due and the total is never negative.
        let mut domain = DomainInvoice::draft(
            InvoiceId::parse(&row.id).map_err(InvoicingError::internal)?,
            CustomerId::parse(&row.customer_id).map_err(InvoicingError::internal)?,
            currency,
            LINE_ROUNDING,
        );
        domain
            .add_line(Line::new(LineKind::Adjustment, "subtotal", service, due)?.domain(currency)?)
            .map_err(InvoicingError::internal)?;
        let application = CreditApplication {
            applied: burned
                .iter()
                .map(|(grant, amount)| {
                    Ok((
                        CreditGrantId::parse(grant).map_err(InvoicingError::internal)?,
                        *amount,
                    ))
                })
                .collect::<Result<_>>()?,
            total: Money::new(credits_total, currency),
            remaining_due: Money::new(subtotal - credits_total, currency),
        };
        domain
            .apply_credits(&application)
            .map_err(InvoicingError::internal)?;
        domain.finalize().map_err(InvoicingError::internal)?;
        let total = domain.total().map_err(InvoicingError::internal)?.amount();
        if !burned.is_empty() {
            extra.push(Line::credits_applied(&burned, service, currency)?);
        }
        let extra = store::lines::insert(
            &mut *connection,
            &*self.ids,
            &row.id,
            currency,
            i32::try_from(line_count).unwrap_or(i32::MAX),
            &extra,
        )
        .await?;
        let lines = known.lines.map(|mut lines| {
            lines.extend(extra);
            lines
        });
        let collection_mode = collection_mode_from_wire(customer.collection_mode)?;
        let due_at = if collection_mode == CollectionMode::SendInvoice {
            now + Duration::days(i64::from(customer.net_terms_days))
        } else {
            now
        };
        Ok(Sealing {
            invoice_id: row.id.clone(),
            lines,
            currency,
            subtotal,
            credits_total,
            total,
            due_at,
            customer,
            collection_mode,
        })
    }

    /// The second half of finalizing: the prepared invoices get the next
    /// numbers of their prefix (one counter update for all of them, so the
    /// counter row is locked from here to the commit only), become
    /// `finalized`, and `invoice-events` gets `finalized` (and `paid` when
    /// nothing is due) for each; last, the audit entries `created` (the bill
    /// run's `invoice.created`, in one append with them) and each invoice's
    /// `invoice.finalized` by `origin` (`None` only in the benchmark that
    /// measures the audit's cost: no entry at all).
    pub(crate) async fn seal(
        &self,
        connection: &mut PgConnection,
        mut sealings: Vec<Sealing>,
        now: DateTime<Utc>,
        origin: Option<&Origin>,
        created: Vec<tally_audit::Entry>,
    ) -> Result<()> {
        if sealings.is_empty() {
            return self.audit_all(connection, created).await;
        }
        // Everything the events need that numbering does not change is read
        // before the counter is locked: other batches wait on that lock.
        let mut snapshots = Vec::with_capacity(sealings.len());
        for sealing in &mut sealings {
            snapshots.push(match sealing.lines.take() {
                Some(lines) => lines,
                None => {
                    store::lines::wire_lines(
                        &mut *connection,
                        &sealing.invoice_id,
                        sealing.currency,
                    )
                    .await?
                }
            });
        }
        let ids: Vec<&str> = sealings.iter().map(|s| s.invoice_id.as_str()).collect();
        let before = match origin {
            Some(_) => audit::invoice_states(&mut *connection, &ids).await?,
            None => std::collections::HashMap::new(),
        };
        let numbers = store::next_numbers(
            &mut *connection,
            &self.config.invoice_number_prefix,
            sealings.len(),
        )
        .await?;
        let finalized: Vec<store::Finalized<'_>> = sealings
            .iter()
            .map(|sealing| store::Finalized {
                invoice_id: &sealing.invoice_id,
                subtotal: sealing.subtotal,
                credits_total: sealing.credits_total,
                total: sealing.total,
                due_at: sealing.due_at,
                collection_mode: sealing.collection_mode,
            })
            .collect();
        let rows = store::finalize_all(&mut *connection, &finalized, &numbers, now).await?;
        let mut paid_at_once = Vec::new();
        let mut messages = Vec::with_capacity(rows.len());
        for ((row, lines), sealing) in rows.iter().cloned().zip(snapshots).zip(&sealings) {
            let mut invoice = store::to_proto(&mut *connection, &row, false).await?;
            invoice.lines = lines;
            messages.push(events::invoice_message(
                self.ids.mint::<InvoiceEventId>().into(),
                invoice,
                sealing.customer.clone(),
                now,
                invoice_event::Kind::Finalized(invoice_event::Finalized {
                    amount_due: Some(money(sealing.total, sealing.currency)),
                }),
            ));
            if sealing.total.is_zero() {
                paid_at_once.push(sealing);
            }
        }
        tally_bus::outbox::enqueue_many(
            &mut *connection,
            tally_bus::inbox::ServiceSchema::Invoicing,
            tally_bus::topics::INVOICE_EVENTS,
            &messages,
        )
        .await?;
        for sealing in paid_at_once {
            // Nothing to collect: paid at once, as its own (newer) snapshot.
            billed::mark_paid(&mut *connection, &sealing.invoice_id, now).await?;
            self.publish_invoice(
                &mut *connection,
                &sealing.invoice_id,
                now,
                invoice_event::Kind::Paid(invoice_event::Paid {
                    payment_id: String::new(),
                    amount: Some(money(Decimal::ZERO, sealing.currency)),
                }),
            )
            .await?;
        }
        match origin {
            Some(origin) => {
                self.audit_finalized(connection, created, (&before, &rows), now, origin)
                    .await
            }
            None => Ok(()),
        }
    }
}
