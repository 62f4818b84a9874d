//! [`TallyBilling`] over invoicing's gRPC API (`peers.invoicing_url`): the
//! customer's subscription period (`ListSubscriptions`), its invoice of a
//! boundary with lines (`ListInvoices`), and its billing mode
//! (`CustomerService.SetBillingMode`). Invoicing's shapes stop here.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use tally_proto::convert;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    BillingReason, Invoice, InvoiceLineKind, InvoiceStatus, ListInvoicesRequest,
    ListSubscriptionsRequest, SetBillingModeRequest, SubscriptionStatus, invoice_line,
};
use tally_runtime::peer::Peer;

use super::model::{BillingPeriod, TallyInvoice, TallyInvoiceLine};
use super::tally::{BillingModeChange, TallyBilling, TallyUnavailable};

/// Invoicing, called as a peer.
#[derive(Debug, Clone)]
pub struct InvoicingClient {
    peer: Peer,
}

impl InvoicingClient {
    /// A client of the invoicing peer.
    pub fn new(peer: Peer) -> Self {
        Self { peer }
    }
}

fn unavailable(call: &str, status: &tonic::Status) -> TallyUnavailable {
    TallyUnavailable(format!("{call}: {} {}", status.code(), status.message()))
}

fn amount(money: Option<&tally_proto::common::Money>) -> Decimal {
    money
        .and_then(|money| convert::decimal(&money.amount).ok())
        .unwrap_or_default()
}

/// Tally's invoice in the terms parity compares: charges (recurring, usage,
/// proration, adjustments) are the subtotal, minimum true-ups the minimums;
/// credits applied are in the amount due only.
pub(crate) fn tally_invoice(invoice: &Invoice) -> Option<TallyInvoice> {
    let period = invoice.period.as_ref()?;
    let mut subtotal = Decimal::ZERO;
    let mut minimums = Decimal::ZERO;
    let mut lines = Vec::new();
    for line in &invoice.lines {
        let value = amount(line.amount.as_ref());
        let charge_key = match &line.detail {
            Some(invoice_line::Detail::Recurring(detail)) => detail.charge_key.clone(),
            Some(invoice_line::Detail::Usage(detail)) => detail
                .charge
                .as_ref()
                .map(|charge| charge.charge_key.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        match line.kind() {
            InvoiceLineKind::MinimumTrueUp => minimums += value,
            InvoiceLineKind::CreditsApplied => continue,
            InvoiceLineKind::Recurring
            | InvoiceLineKind::Usage
            | InvoiceLineKind::ProrationCredit
            | InvoiceLineKind::ProrationCharge
            | InvoiceLineKind::Adjustment
            | InvoiceLineKind::Unspecified => subtotal += value,
        }
        lines.push(TallyInvoiceLine {
            charge_key,
            description: line.description.clone(),
            amount: value,
        });
    }
    Some(TallyInvoice {
        id: invoice.id.clone(),
        status: invoice.status().as_str_name().to_owned(),
        currency: invoice.currency.clone(),
        period_start: convert::instant(period.start_time.as_ref())?,
        period_end: convert::instant(period.end_time.as_ref())?,
        subtotal,
        discounts: Decimal::ZERO,
        minimums,
        total: subtotal + minimums,
        amount_due: amount(invoice.amount_due.as_ref()),
        lines,
    })
}

#[async_trait]
impl TallyBilling for InvoicingClient {
    async fn current_period(
        &self,
        customer_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<BillingPeriod>, TallyUnavailable> {
        let mut client = SubscriptionServiceClient::with_interceptor(
            self.peer.channel(),
            self.peer.interceptor(),
        );
        let response = client
            .list_subscriptions(ListSubscriptionsRequest {
                customer_id: customer_id.to_owned(),
                statuses: vec![
                    SubscriptionStatus::Active as i32,
                    SubscriptionStatus::Trialing as i32,
                    SubscriptionStatus::PastDue as i32,
                ],
                page_size: 100,
                ..Default::default()
            })
            .await
            .map_err(|status| unavailable("ListSubscriptions", &status))?
            .into_inner();
        Ok(response
            .subscriptions
            .iter()
            .filter_map(|subscription| {
                let range = subscription.current_period.as_ref()?;
                Some(BillingPeriod {
                    start: convert::instant(range.start_time.as_ref())?,
                    end: convert::instant(range.end_time.as_ref())?,
                })
            })
            .filter(|period| period.start <= at && at < period.end)
            .min_by_key(|period| period.start))
    }

    async fn invoice_ending_at(
        &self,
        customer_id: &str,
        end: DateTime<Utc>,
    ) -> Result<Option<TallyInvoice>, TallyUnavailable> {
        let mut client =
            InvoiceServiceClient::with_interceptor(self.peer.channel(), self.peer.interceptor());
        let response = client
            .list_invoices(ListInvoicesRequest {
                customer_id: customer_id.to_owned(),
                statuses: vec![
                    InvoiceStatus::Draft as i32,
                    InvoiceStatus::Finalized as i32,
                    InvoiceStatus::Paid as i32,
                    InvoiceStatus::Uncollectible as i32,
                ],
                period_start_range: Some(convert::time_range(
                    end - Duration::days(400),
                    end + Duration::seconds(1),
                )),
                include_lines: true,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .map_err(|status| unavailable("ListInvoices", &status))?
            .into_inner();
        // Tally's invoice of boundary `end` bills the period ending there
        // (`period` = [previous boundary, end)); a subscription's first
        // invoice has the same period (its in-advance start), so the cycle's
        // invoice is preferred.
        let of_period: Vec<&Invoice> = response
            .invoices
            .iter()
            .filter(|invoice| {
                invoice
                    .period
                    .as_ref()
                    .and_then(|period| convert::instant(period.end_time.as_ref()))
                    == Some(end)
            })
            .collect();
        let chosen = of_period
            .iter()
            .find(|invoice| invoice.billing_reason() != BillingReason::SubscriptionCreate)
            .or_else(|| of_period.first());
        Ok(chosen.and_then(|invoice| tally_invoice(invoice)))
    }

    async fn set_billing_mode(&self, change: &BillingModeChange) -> Result<(), TallyUnavailable> {
        let mut client =
            CustomerServiceClient::with_interceptor(self.peer.channel(), self.peer.interceptor());
        client
            .set_billing_mode(SetBillingModeRequest {
                customer_id: change.customer_id.clone(),
                tally_bills_after: change.tally_bills_after.map(convert::timestamp),
                version: change.version,
            })
            .await
            .map_err(|status| unavailable("SetBillingMode", &status))?;
        Ok(())
    }
}
