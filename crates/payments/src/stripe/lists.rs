//! The paged lists reconciliation reads (objects created in a range).

use stripe_billing::invoice::ListInvoice;
use stripe_core::balance_transaction::ListBalanceTransaction;
use stripe_core::charge::ListCharge;
use stripe_core::refund::ListRefund;
use stripe_types::{RangeBoundsTs, RangeQueryTs};

use super::{
    RemoteBalanceTransaction, RemoteCharge, RemoteInvoice, RemoteRefund, Stripe, StripeError,
};

/// A page of a list call.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The objects.
    pub items: Vec<T>,
    /// Whether more follow (ask again `starting_after` the last id).
    pub has_more: bool,
}

impl Stripe {
    /// One page of the invoices created in `[start, end)` (Unix seconds),
    /// 100 a page, after `starting_after`.
    pub async fn list_invoices(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteInvoice>, StripeError> {
        let mut request = ListInvoice::new()
            .created(created_in(start, end))
            .limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, RemoteInvoice::from_stripe).await
    }

    /// One page of the charges created in `[start, end)` (their `invoice` is
    /// not looked up: reconciliation matches charges by id).
    pub async fn list_charges(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteCharge>, StripeError> {
        let mut request = ListCharge::new().created(created_in(start, end)).limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, |charge| RemoteCharge::from_stripe(charge, None))
            .await
    }

    /// One page of the refunds created in `[start, end)`.
    pub async fn list_refunds(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteRefund>, StripeError> {
        let mut request = ListRefund::new().created(created_in(start, end)).limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, RemoteRefund::from_stripe).await
    }

    /// One page of the balance transactions created in `[start, end)`.
    pub async fn list_balance_transactions(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteBalanceTransaction>, StripeError> {
        let mut request = ListBalanceTransaction::new()
            .created(created_in(start, end))
            .limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, RemoteBalanceTransaction::from_stripe)
            .await
    }

    async fn page<R, S, T>(
        &self,
        request: &R,
        read: impl Fn(&S) -> Result<T, StripeError>,
    ) -> Result<Page<T>, StripeError>
    where
        R: stripe::StripeRequest<Output = stripe_types::List<S>>,
        stripe_types::List<S>: miniserde::Deserialize,
    {
        let list = self.http.send(request, None).await?;
        Ok(Page {
            items: list.data.iter().map(read).collect::<Result<Vec<_>, _>>()?,
            has_more: list.has_more,
        })
    }
}

/// `created[gte]=start&created[lt]=end`.
fn created_in(start: i64, end: i64) -> RangeQueryTs {
    RangeQueryTs::Bounds(RangeBoundsTs {
        gt: None,
        gte: Some(start),
        lt: Some(end),
        lte: None,
    })
}
