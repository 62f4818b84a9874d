//! `PreviewUpcomingInvoice`: the invoice the next boundary would produce with
//! what is known now, composed like a bill run but never stored.

use rust_decimal::Decimal;
use tally_domain::ids::SubscriptionId;
use tally_proto::invoicing::{self as proto, InvoiceStatus};

use super::Invoices;
use super::store as invoice_store;
use crate::billing::compose::Composer;
use crate::billing::lines::Line;
use crate::billing::mapping::line_to_wire;
use crate::credits;
use crate::error::{InvoicingError, Result};
use crate::subscriptions::store as subscription_store;
use crate::wire::{money, timestamp};

/// Most passed boundaries a preview composes before the upcoming one (each
/// may ask rating); beyond, the bill run is far behind and the preview waits
/// for it.
const MAX_UNBILLED_BOUNDARIES: usize = 64;

impl Invoices<'_> {
    /// The subscription's upcoming invoice: the one at the first boundary
    /// after now (the end of the current period, or the end of the
    /// subscription), with the usage known so far, composed like a bill run
    /// but not stored. Boundaries already passed that the bill run has not
    /// invoiced yet (a brand-new subscription's start, a run still to come)
    /// are composed first and count as billed, so the preview is the
    /// period's invoice, not the creation invoice. Credits are applied as
    /// finalization would burn them — after the customer's drafts and those
    /// earlier invoices take their share — without burning anything.
    // Longer than the 150-line gate; split it when next changed (issue 15).
    #[allow(clippy::too_many_lines)]
    pub(super) async fn preview_upcoming_invoice(
        &self,
        subscription_id: &str,
    ) -> Result<proto::Invoice> {
        tally_proto::convert::id::<SubscriptionId>(subscription_id, "subscription_id")?;
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let subscription =
            subscription_store::load(&mut transaction, subscription_id, false).await?;
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
        let drafts =
            invoice_store::customer_drafts(&mut transaction, &subscription.customer_id).await?;
        let mut dues: Vec<credits::preview::Due> = drafts
            .into_iter()
            .map(|draft| credits::preview::Due {
                subtotal: draft.subtotal,
                period_end: draft.period_end,
                finalized_at: draft.grace_period_ends_at.max(now),
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
            lines.push(Line::credits_applied(&burned, period, currency)?);
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
                .map(|line| line_to_wire(&line.stored(String::new()), currency))
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
}
