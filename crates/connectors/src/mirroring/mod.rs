//! Mirroring Tally's customers and subscriptions in the external biller
//! (Orb), driven by Tally's bus facts. The rule: **a Tally object is one
//! biller object**, however often its facts arrive.
//!
//! * Customers come from the customer snapshot on `invoice-events` (the only
//!   topic that carries a customer's name, email and currency); the Orb
//!   customer's external id is Tally's external id, else its id.
//!   Subscriptions come from `subscription-events` (its snapshot: plan,
//!   currency, start), under the Orb plan `connectors.orb_plans` maps the
//!   Tally plan to.
//! * A customer already in `connectors.orb_customers` (mirrored, or mapped by
//!   hand to an Orb customer that existed), and a subscription already
//!   `mirrored`, cost no request: the stored mapping answers.
//! * Every create carries an `Idempotency-Key` derived from Tally's id, so a
//!   retry after a 500, or a crash between Orb's answer and the commit, is
//!   the same Orb object.
//! * The mapping and the message's inbox record are written in one
//!   transaction; Orb unavailable is a retry (redelivery), Orb refusing a
//!   customer is poison (dead-lettered with Orb's reason), Orb refusing a
//!   subscription is recorded `refused` with the reason.
//! * A subscription whose customer is not in Orb yet waits
//!   (`waiting_for_customer`) and is mirrored when a fact about the customer
//!   finds it in Orb; one whose plan has no Orb plan is `plan_not_mapped`
//!   and is tried again on its next fact.

pub mod consumer;
pub mod model;
pub mod store;

use std::sync::Arc;

use sqlx::PgPool;
use tally_bus::consumer::HandlerError;
use tally_bus::inbox::{self, ServiceSchema};
use tally_runtime::SharedClock;

use self::model::{CustomerFact, SubscriptionFact, SubscriptionRecord, SubscriptionState};
use crate::biller::{BillerError, CustomerMirror, ExternalBiller, NotSent, SubscriptionMirror};

/// Mirrors customers and subscriptions in one biller.
#[derive(Clone)]
pub struct Mirroring {
    pool: PgPool,
    clock: SharedClock,
    biller: Arc<dyn ExternalBiller>,
}

impl std::fmt::Debug for Mirroring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Mirroring")
            .field("biller", &self.biller.name())
            .finish_non_exhaustive()
    }
}

fn database(error: sqlx::Error) -> HandlerError {
    HandlerError::Retry(format!("database: {error}"))
}

/// Orb unavailable or the key refused: later; anything else: never as is.
fn not_sent(not_sent: NotSent) -> Result<String, HandlerError> {
    match not_sent.error {
        BillerError::Unavailable { .. } | BillerError::Unauthorized { .. } => {
            Err(HandlerError::Retry(not_sent.to_string()))
        }
        BillerError::Refused { .. } | BillerError::Unreadable(_) => Ok(not_sent.to_string()),
    }
}

impl Mirroring {
    /// Mirroring in `biller`, recording in `pool`.
    pub fn new(pool: PgPool, clock: SharedClock, biller: Arc<dyn ExternalBiller>) -> Self {
        Self {
            pool,
            clock,
            biller,
        }
    }

    /// Maps the Tally plan `plan_id` to the Orb plan `orb_plan_id`.
    pub async fn map_plan(&self, plan_id: &str, orb_plan_id: &str) -> Result<(), sqlx::Error> {
        store::map_plan(&self.pool, plan_id, orb_plan_id, self.clock.now()).await
    }

    /// The record of a subscription, if connectors saw it.
    pub async fn subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRecord>, sqlx::Error> {
        store::subscription(&self.pool, subscription_id).await
    }

    /// A transaction holding the inbox record of `message_id`, or `None`
    /// when the inbox had it already (a concurrent delivery applied it).
    async fn inbox_transaction(
        &self,
        subscription: &str,
        message_id: &str,
    ) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, HandlerError> {
        let mut transaction = self.pool.begin().await.map_err(database)?;
        let first = inbox::record_once(
            &mut transaction,
            ServiceSchema::Connectors,
            subscription,
            message_id,
        )
        .await
        .map_err(database)?;
        Ok(first.then_some(transaction))
    }

    async fn seen(&self, subscription: &str, message_id: &str) -> Result<bool, HandlerError> {
        let seen = crate::forwarding::store::already_applied(
            &self.pool,
            subscription,
            &[message_id.to_owned()],
        )
        .await
        .map_err(database)?;
        Ok(!seen.is_empty())
    }

    /// Applies a customer fact carried by `message_id` of `subscription`.
    pub async fn customer(
        &self,
        subscription: &str,
        message_id: &str,
        fact: &CustomerFact,
    ) -> Result<(), HandlerError> {
        if self.seen(subscription, message_id).await? {
            return Ok(());
        }
        let known = store::orb_customer(&self.pool, &fact.customer_id)
            .await
            .map_err(database)?;
        let mut created = None;
        if known.is_none() {
            let external = fact.external_customer_id();
            let holder = store::holder_of(&self.pool, external)
                .await
                .map_err(database)?;
            if let Some(holder) = holder {
                return Err(HandlerError::Poison(format!(
                    "the Orb external customer id {external:?} of {} is mapped to {holder}",
                    fact.customer_id
                )));
            }
            let mirror = CustomerMirror {
                customer_id: fact.customer_id.clone(),
                external_customer_id: external.to_owned(),
                name: fact.name.clone(),
                email: fact.email.clone(),
                currency: fact.currency.clone(),
            };
            match self.biller.mirror_customer(&mirror).await {
                Ok(sent) => created = Some((mirror, sent.answer.biller_id)),
                Err(error) => return Err(HandlerError::Poison(not_sent(error)?)),
            }
        }
        if let Some(mut transaction) = self.inbox_transaction(subscription, message_id).await? {
            if let Some((mirror, orb_id)) = &created {
                store::record_customer(
                    &mut transaction,
                    &mirror.customer_id,
                    &mirror.external_customer_id,
                    orb_id,
                    self.clock.now(),
                )
                .await
                .map_err(database)?;
            }
            transaction.commit().await.map_err(database)?;
        }
        if let Some((mirror, orb_id)) = &created {
            tracing::info!(customer_id = %mirror.customer_id, orb_customer_id = %orb_id, "customer mirrored in orb");
        }
        self.mirror_waiting(&fact.customer_id).await
    }

    /// Mirrors the subscriptions of `customer_id` that waited for it.
    async fn mirror_waiting(&self, customer_id: &str) -> Result<(), HandlerError> {
        let waiting = store::waiting_for(&self.pool, customer_id)
            .await
            .map_err(database)?;
        for record in waiting {
            let (record, orb_plan) = self.attempt(&record.fact()).await?;
            let mut transaction = self.pool.begin().await.map_err(database)?;
            store::record_subscription(
                &mut transaction,
                &record,
                orb_plan.as_deref(),
                self.clock.now(),
            )
            .await
            .map_err(database)?;
            transaction.commit().await.map_err(database)?;
        }
        Ok(())
    }

    /// Applies a subscription fact carried by `message_id` of `subscription`.
    pub async fn subscription_fact(
        &self,
        subscription: &str,
        message_id: &str,
        fact: &SubscriptionFact,
    ) -> Result<(), HandlerError> {
        if self.seen(subscription, message_id).await? {
            return Ok(());
        }
        let existing = store::subscription(&self.pool, &fact.subscription_id)
            .await
            .map_err(database)?;
        let mirrored = existing.is_some_and(|record| record.state == SubscriptionState::Mirrored);
        let outcome = if mirrored {
            None
        } else {
            Some(self.attempt(fact).await?)
        };
        if let Some(mut transaction) = self.inbox_transaction(subscription, message_id).await? {
            if let Some((record, orb_plan)) = &outcome {
                store::record_subscription(
                    &mut transaction,
                    record,
                    orb_plan.as_deref(),
                    self.clock.now(),
                )
                .await
                .map_err(database)?;
            }
            transaction.commit().await.map_err(database)?;
        }
        Ok(())
    }

    /// Tries to mirror `fact`: the record to write and the Orb plan used.
    async fn attempt(
        &self,
        fact: &SubscriptionFact,
    ) -> Result<(SubscriptionRecord, Option<String>), HandlerError> {
        let Some(external) = store::orb_customer(&self.pool, &fact.customer_id)
            .await
            .map_err(database)?
        else {
            let reason = format!("customer {} is not in Orb yet", fact.customer_id);
            return Ok((
                SubscriptionRecord::of(fact, SubscriptionState::WaitingForCustomer, reason),
                None,
            ));
        };
        let Some(orb_plan) = store::orb_plan(&self.pool, &fact.plan_id)
            .await
            .map_err(database)?
        else {
            let reason = format!(
                "plan {} has no Orb plan: map it (connectors.orb_plans) and the next fact of \
                 the subscription mirrors it",
                fact.plan_id
            );
            return Ok((
                SubscriptionRecord::of(fact, SubscriptionState::PlanNotMapped, reason),
                None,
            ));
        };
        let mirror = SubscriptionMirror {
            subscription_id: fact.subscription_id.clone(),
            customer_id: fact.customer_id.clone(),
            external_customer_id: external,
            biller_plan_id: orb_plan.clone(),
            start_at: fact.start_at,
            currency: fact.currency.clone(),
        };
        let record = match self.biller.mirror_subscription(&mirror).await {
            Ok(sent) => SubscriptionRecord {
                state: SubscriptionState::Mirrored,
                orb_subscription_id: Some(sent.answer.biller_id),
                attempts: sent.attempts,
                ..SubscriptionRecord::of(fact, SubscriptionState::Mirrored, String::new())
            },
            Err(error) => {
                let attempts = error.attempts;
                let reason = not_sent(error)?;
                SubscriptionRecord {
                    attempts,
                    ..SubscriptionRecord::of(fact, SubscriptionState::Refused, reason)
                }
            }
        };
        Ok((record, Some(orb_plan)))
    }
}
