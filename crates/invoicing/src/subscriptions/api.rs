//! The `SubscriptionService` gRPC surface: each RPC unwraps its request,
//! runs the change on the service context and wraps the subscription.

use tally_domain::ids::SubscriptionId;
use tally_proto::invoicing as proto;
use tally_proto::invoicing::subscription_service_server::SubscriptionService;
use tonic::{Request, Response};

use super::store as subscription_store;
use crate::error::InvoicingError;

fn wrap(subscription: proto::Subscription) -> Option<proto::Subscription> {
    Some(subscription)
}

#[tonic::async_trait]
impl SubscriptionService for crate::InvoicingApi {
    async fn create_subscription(
        &self,
        request: Request<proto::CreateSubscriptionRequest>,
    ) -> std::result::Result<Response<proto::CreateSubscriptionResponse>, tonic::Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let subscription = self
            .ctx
            .subscriptions()
            .create_subscription(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::CreateSubscriptionResponse {
            subscription: wrap(subscription),
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<proto::GetSubscriptionRequest>,
    ) -> std::result::Result<Response<proto::GetSubscriptionResponse>, tonic::Status> {
        let request = request.into_inner();
        tally_proto::convert::id::<SubscriptionId>(&request.subscription_id, "subscription_id")
            .map_err(InvoicingError::from)?;
        let mut connection = self
            .ctx
            .pool
            .acquire()
            .await
            .map_err(InvoicingError::from)?;
        let subscription =
            subscription_store::load(&mut connection, &request.subscription_id, false).await?;
        Ok(Response::new(proto::GetSubscriptionResponse {
            subscription: wrap(subscription.to_proto(self.ctx.clock.now())?),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<proto::ListSubscriptionsRequest>,
    ) -> std::result::Result<Response<proto::ListSubscriptionsResponse>, tonic::Status> {
        tally_runtime::portal::ensure_customer(
            request.extensions(),
            &request.get_ref().customer_id,
        )?;
        Ok(Response::new(
            self.ctx
                .subscriptions()
                .list_subscriptions(request.into_inner())
                .await?,
        ))
    }

    async fn change_plan(
        &self,
        request: Request<proto::ChangePlanRequest>,
    ) -> std::result::Result<Response<proto::ChangePlanResponse>, tonic::Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let subscription = self
            .ctx
            .subscriptions()
            .change_plan(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::ChangePlanResponse {
            subscription: wrap(subscription),
        }))
    }

    async fn cancel_subscription(
        &self,
        request: Request<proto::CancelSubscriptionRequest>,
    ) -> std::result::Result<Response<proto::CancelSubscriptionResponse>, tonic::Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let subscription = self
            .ctx
            .subscriptions()
            .cancel_subscription(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::CancelSubscriptionResponse {
            subscription: wrap(subscription),
        }))
    }

    async fn pause_subscription(
        &self,
        request: Request<proto::PauseSubscriptionRequest>,
    ) -> std::result::Result<Response<proto::PauseSubscriptionResponse>, tonic::Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let subscription = self
            .ctx
            .subscriptions()
            .pause_subscription(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::PauseSubscriptionResponse {
            subscription: wrap(subscription),
        }))
    }

    async fn resume_subscription(
        &self,
        request: Request<proto::ResumeSubscriptionRequest>,
    ) -> std::result::Result<Response<proto::ResumeSubscriptionResponse>, tonic::Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let subscription = self
            .ctx
            .subscriptions()
            .resume_subscription(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::ResumeSubscriptionResponse {
            subscription: wrap(subscription),
        }))
    }
}
