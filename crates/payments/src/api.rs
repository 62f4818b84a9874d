//! `tally.payments.v1.PaymentService`.

use tally_domain::ids::{CustomerId, InvoiceId, PaymentId};
use tally_proto::convert::{id, optional_id};
use tally_proto::payments as proto;
use tally_proto::payments::payment_service_server::PaymentService;
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::error::PaymentsError;
use crate::store::reads::{self, CustomerLookup, PaymentFilter};
use crate::store::{self, PaymentKey};
use crate::wire::timestamp;
use crate::{refund, retry};

/// The `PaymentService` implementation.
#[derive(Debug, Clone)]
pub struct PaymentsApi {
    core: Core,
}

impl PaymentsApi {
    /// The API over `core`.
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 1000;

#[tonic::async_trait]
impl PaymentService for PaymentsApi {
    async fn get_payment(
        &self,
        request: Request<proto::GetPaymentRequest>,
    ) -> Result<Response<proto::GetPaymentResponse>, Status> {
        let payment_id: PaymentId =
            id(&request.into_inner().payment_id, "payment_id").map_err(PaymentsError::from)?;
        let mut connection = self
            .core
            .pool
            .acquire()
            .await
            .map_err(PaymentsError::from)?;
        let Some(payment) =
            store::payment(&mut connection, PaymentKey::Id(payment_id.as_str()), false)
                .await
                .map_err(PaymentsError::from)?
        else {
            return Err(
                PaymentsError::NotFound(format!("payment {payment_id} does not exist")).into(),
            );
        };
        let payment = store::payment_to_proto(&mut connection, &payment)
            .await
            .map_err(PaymentsError::from)?;
        Ok(Response::new(proto::GetPaymentResponse {
            payment: Some(payment),
        }))
    }

    async fn list_payments(
        &self,
        request: Request<proto::ListPaymentsRequest>,
    ) -> Result<Response<proto::ListPaymentsResponse>, Status> {
        let request = request.into_inner();
        optional_id::<CustomerId>(&request.customer_id, "customer_id")
            .map_err(PaymentsError::from)?;
        optional_id::<InvoiceId>(&request.invoice_id, "invoice_id").map_err(PaymentsError::from)?;
        let page_size = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size if (1..=MAX_PAGE_SIZE).contains(&size) => size,
            _ => {
                return Err(PaymentsError::InvalidArgument {
                    field: "page_size",
                    reason: format!("must be between 0 and {MAX_PAGE_SIZE}"),
                }
                .into());
            }
        };
        let statuses: Vec<String> = request
            .statuses
            .iter()
            .map(|status| status_name(*status))
            .collect::<Result<_, _>>()?;
        let mut connection = self
            .core
            .pool
            .acquire()
            .await
            .map_err(PaymentsError::from)?;
        // Ids sort by creation time, so "newest first" is id descending; the
        // token is the last id of the previous page.
        let filter = PaymentFilter {
            customer_id: &request.customer_id,
            invoice_id: &request.invoice_id,
            statuses: &statuses,
        };
        let ids =
            reads::payment_ids_page(&mut connection, filter, &request.page_token, page_size + 1)
                .await?;
        let more = ids.len() > usize::try_from(page_size).unwrap_or(usize::MAX);
        let mut payments = Vec::new();
        for id in ids
            .iter()
            .take(usize::try_from(page_size).unwrap_or(usize::MAX))
        {
            if let Some(payment) = store::payment(&mut connection, PaymentKey::Id(id), false)
                .await
                .map_err(PaymentsError::from)?
            {
                payments.push(
                    store::payment_to_proto(&mut connection, &payment)
                        .await
                        .map_err(PaymentsError::from)?,
                );
            }
        }
        let next_page_token = if more {
            payments
                .last()
                .map(|payment| payment.id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListPaymentsResponse {
            payments,
            next_page_token,
        }))
    }

    async fn refund(
        &self,
        request: Request<proto::RefundRequest>,
    ) -> Result<Response<proto::RefundResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let response = refund::refund(&self.core, request.get_ref(), &origin).await?;
        Ok(Response::new(response))
    }

    async fn retry_payment(
        &self,
        request: Request<proto::RetryPaymentRequest>,
    ) -> Result<Response<proto::RetryPaymentResponse>, Status> {
        let response = retry::retry_payment(&self.core, request.get_ref()).await?;
        Ok(Response::new(response))
    }

    async fn get_stripe_customer(
        &self,
        request: Request<proto::GetStripeCustomerRequest>,
    ) -> Result<Response<proto::GetStripeCustomerResponse>, Status> {
        use proto::get_stripe_customer_request::Lookup;
        let request = request.into_inner();
        let (lookup, value) = match &request.lookup {
            Some(Lookup::CustomerId(customer_id)) if !customer_id.is_empty() => {
                id::<CustomerId>(customer_id, "customer_id").map_err(PaymentsError::from)?;
                (CustomerLookup::CustomerId(customer_id), customer_id)
            }
            Some(Lookup::StripeCustomerId(id)) if !id.is_empty() => {
                (CustomerLookup::StripeCustomerId(id), id)
            }
            _ => {
                return Err(PaymentsError::InvalidArgument {
                    field: "lookup",
                    reason: "customer_id or stripe_customer_id is required".into(),
                }
                .into());
            }
        };
        let Some(row) = reads::stripe_customer(&self.core.pool, lookup).await? else {
            return Err(
                PaymentsError::NotFound(format!("no Stripe customer mapped to {value}")).into(),
            );
        };
        Ok(Response::new(proto::GetStripeCustomerResponse {
            stripe_customer: Some(proto::StripeCustomer {
                customer_id: row.customer_id,
                stripe_customer_id: row.stripe_customer_id,
                has_default_payment_method: row.has_default_payment_method,
                livemode: row.livemode,
                created_at: Some(timestamp(row.created_at)),
                synced_at: Some(timestamp(row.synced_at)),
            }),
        }))
    }
}

fn status_name(status: i32) -> Result<String, Status> {
    let name = match proto::PaymentStatus::try_from(status) {
        Ok(proto::PaymentStatus::Pending) => "pending",
        Ok(proto::PaymentStatus::Succeeded) => "succeeded",
        Ok(proto::PaymentStatus::Failed) => "failed",
        Ok(proto::PaymentStatus::PartiallyRefunded) => "partially_refunded",
        Ok(proto::PaymentStatus::Refunded) => "refunded",
        Ok(proto::PaymentStatus::Disputed) => "disputed",
        Ok(proto::PaymentStatus::Uncollectible) => "uncollectible",
        Ok(proto::PaymentStatus::Canceled) => "canceled",
        Ok(proto::PaymentStatus::Unspecified) | Err(_) => {
            return Err(PaymentsError::InvalidArgument {
                field: "statuses",
                reason: format!("unknown status {status}"),
            }
            .into());
        }
    };
    Ok(name.to_owned())
}
