//! `tally.rating.v1.RatingService`: the priced usage lines of a period
//! (`GetUsageCharges`), the live cost of open periods (`GetCurrentCost`), the
//! usage that cannot be rated yet (`ListUnratedUsage`), where single events
//! stand (`GetEventRatingStatus`), usage over any range
//! ([`crate::usage_query`]), thresholds ([`crate::thresholds::api`]) and
//! re-rate jobs ([`crate::rerate::api`]). Both cost RPCs and spend thresholds
//! price the same stored aggregates through the same function
//! ([`charges::price_period`]), so the live cost of the open period equals
//! its usage charges at the same instant.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::PgPool;
use tally_domain::money::Currency;
use tally_domain::period::{BillingCycle, Period};
use tally_proto::events::UsageAccepted;
use tally_proto::rating::rating_service_server::RatingService;
use tally_proto::rating::*;
use tally_runtime::SharedClock;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::peer::Peer;
use tonic::{Request, Response, Status};

use crate::cache::CatalogCache;
use crate::charges::{self, PricedPeriod};
use crate::error::RatingError;
use crate::rerate::RerateQueue;
use crate::rerate::api::{get_rerate_job, rerate_subscription};
use crate::thresholds::api::{delete_threshold, list_thresholds, set_threshold};
use crate::usage::store::{self, PhaseRow, UnratedRow};
use crate::usage_query::get_usage;
use crate::wire::{money, time_range, timestamp};

/// Most pairs one `BatchGetUsageCharges` prices.
const MAX_BATCH_REQUESTS: usize = 1000;

/// Most event ids one `GetEventRatingStatus` asks about.
const MAX_STATUS_EVENTS: usize = 1000;

/// The `RatingService` implementation.
#[derive(Debug, Clone)]
pub struct RatingApi {
    pool: PgPool,
    clock: SharedClock,
    cache: CatalogCache,
    rerates: RerateQueue,
    ids: SharedIdGenerator,
    ingest: Peer,
}

impl RatingApi {
    /// The service over `pool`, pricing with `cache`, answering at `clock`'s
    /// now, queueing re-rates on `rerates`, minting threshold ids with `ids`,
    /// reading usage back from `ingest`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        cache: CatalogCache,
        rerates: RerateQueue,
        ids: SharedIdGenerator,
        ingest: Peer,
    ) -> Self {
        Self {
            pool,
            clock,
            cache,
            rerates,
            ids,
            ingest,
        }
    }

    async fn phases(&self, subscription_id: &str) -> Result<Vec<PhaseRow>, RatingError> {
        charges::subscription_phases(&self.pool, subscription_id).await
    }

    /// The billing period of `phase` containing `instant`, and the plan's currency.
    async fn period_of(
        &self,
        phase: &PhaseRow,
        instant: DateTime<Utc>,
    ) -> Result<(Period, Currency), RatingError> {
        let entry = self
            .cache
            .version(&phase.plan_version_id)
            .await?
            .ok_or_else(|| {
                RatingError::Corrupt(format!(
                    "plan version {} of {} is not published",
                    phase.plan_version_id, phase.subscription_id
                ))
            })?;
        let plan = &entry.published.plan;
        let period = BillingCycle::new(phase.billing_anchor_at, plan.interval())
            .period_containing(instant)
            .map_err(|error| RatingError::Corrupt(error.to_string()))?;
        Ok((period, plan.currency()))
    }

    async fn priced(
        &self,
        subscription_id: &str,
        period: &Period,
        phases: &[PhaseRow],
    ) -> Result<PricedPeriod, RatingError> {
        charges::price_period(&self.pool, &self.cache, subscription_id, period, phases).await
    }

    async fn usage_charges(
        &self,
        request: GetUsageChargesRequest,
    ) -> Result<GetUsageChargesResponse, RatingError> {
        let mut answers = self.usage_charges_batch(vec![request]).await?;
        answers
            .pop()
            .unwrap_or_else(|| Err(RatingError::Corrupt("no answer for the request".into())))
    }

    /// `GetUsageCharges` for many pairs: the subscriptions (customer and
    /// phases) in one query, then every period's aggregates and transactions
    /// in one query each ([`charges::price_periods`]). One answer per
    /// request, in order; an error of the database fails them all.
    async fn usage_charges_batch(
        &self,
        requests: Vec<GetUsageChargesRequest>,
    ) -> Result<Vec<Result<GetUsageChargesResponse, RatingError>>, RatingError> {
        let ids: Vec<&str> = requests
            .iter()
            .map(|request| request.subscription_id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        let subscriptions = self.subscriptions_with_phases(&ids).await?;
        let mut answers: Vec<Result<(Period, Currency), RatingError>> =
            Vec::with_capacity(requests.len());
        for request in &requests {
            answers.push(self.billing_period(request, &subscriptions).await);
        }
        let to_price: Vec<(&str, Period, &[PhaseRow])> = requests
            .iter()
            .zip(&answers)
            .filter_map(|(request, answer)| {
                let (period, _) = answer.as_ref().ok()?;
                let (_, phases) = subscriptions.get(request.subscription_id.as_str())?;
                Some((request.subscription_id.as_str(), *period, phases.as_slice()))
            })
            .collect();
        // One answer per priced pair: a pair that cannot be priced is an error
        // for that pair alone (`BatchGetUsageCharges` carries it in its result).
        let mut priced = charges::price_periods(&self.pool, &self.cache, &to_price)
            .await?
            .into_iter();
        let computed_at = timestamp(self.clock.now());
        Ok(requests
            .into_iter()
            .zip(answers)
            .map(|(request, answer)| {
                let (period, currency) = answer?;
                let priced = priced
                    .next()
                    .ok_or_else(|| RatingError::Corrupt("a period was not priced".into()))??;
                let customer_id = subscriptions
                    .get(request.subscription_id.as_str())
                    .map(|(customer, _)| customer.clone())
                    .unwrap_or_default();
                Ok(GetUsageChargesResponse {
                    subscription_id: request.subscription_id,
                    customer_id,
                    period: Some(time_range(period.start(), period.end())),
                    total: Some(money(priced.total, priced.currency.unwrap_or(currency))),
                    charges: priced.charges,
                    as_of_sequence_number: priced.as_of_sequence_number,
                    computed_at: Some(computed_at),
                })
            })
            .collect())
    }

    /// Customer and phases (by start) of each of `ids` known to rating.
    async fn subscriptions_with_phases(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, (String, Vec<PhaseRow>)>, RatingError> {
        let customers = store::subscription_customers(&self.pool, ids).await?;
        let mut subscriptions: HashMap<String, (String, Vec<PhaseRow>)> = customers
            .into_iter()
            .map(|(subscription, customer)| (subscription, (customer, Vec::new())))
            .collect();
        for phase in charges::subscriptions_phases(&self.pool, ids).await? {
            if let Some((_, phases)) = subscriptions.get_mut(&phase.subscription_id) {
                phases.push(phase);
            }
        }
        Ok(subscriptions)
    }

    /// The billing period `request` names, checked against the
    /// subscription's phases, and the plan's currency.
    async fn billing_period(
        &self,
        request: &GetUsageChargesRequest,
        subscriptions: &HashMap<String, (String, Vec<PhaseRow>)>,
    ) -> Result<(Period, Currency), RatingError> {
        if request.subscription_id.is_empty() {
            return Err(RatingError::InvalidArgument(
                "subscription_id: is required".into(),
            ));
        }
        let period = required_period(request.period.as_ref())?;
        let Some((_, phases)) = subscriptions.get(&request.subscription_id) else {
            return Err(RatingError::NotFound(format!(
                "subscription {:?} is unknown to rating",
                request.subscription_id
            )));
        };
        let mut currency = None;
        for phase in phases
            .iter()
            .filter(|phase| phase.segment(&period).is_some())
        {
            let anchor_instant = period.start().max(phase.start_at);
            let (phase_period, phase_currency) = self.period_of(phase, anchor_instant).await?;
            if phase_period != period {
                return Err(not_a_period(&request.subscription_id, &period));
            }
            currency = Some(phase_currency);
        }
        let Some(currency) = currency else {
            return Err(not_a_period(&request.subscription_id, &period));
        };
        Ok((period, currency))
    }

    async fn current_cost(
        &self,
        request: GetCurrentCostRequest,
    ) -> Result<GetCurrentCostResponse, RatingError> {
        if request.customer_id.is_empty() {
            return Err(RatingError::InvalidArgument(
                "customer_id: is required".into(),
            ));
        }
        let subscriptions = store::customer_subscription_ids(
            &self.pool,
            &request.customer_id,
            &request.subscription_id,
        )
        .await?;
        if subscriptions.is_empty() {
            return Err(RatingError::NotFound(format!(
                "customer {:?} has no subscription{} known to rating",
                request.customer_id,
                if request.subscription_id.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", request.subscription_id)
                }
            )));
        }
        let now = self.clock.now();
        let mut costs = Vec::new();
        let mut as_of = 0;
        for subscription_id in subscriptions {
            let phases = self.phases(&subscription_id).await?;
            let Some(phase) = phases.iter().find(|phase| phase.covers(now)) else {
                continue;
            };
            let (period, currency) = self.period_of(phase, now).await?;
            let priced = self.priced(&subscription_id, &period, &phases).await?;
            as_of = as_of.max(priced.as_of_sequence_number);
            costs.push(SubscriptionCost {
                subscription_id,
                period: Some(time_range(period.start(), period.end())),
                usage_total: Some(money(priced.total, priced.currency.unwrap_or(currency))),
                charges: priced.charges,
            });
        }
        Ok(GetCurrentCostResponse {
            costs,
            as_of_sequence_number: as_of,
            computed_at: Some(timestamp(now)),
        })
    }

    async fn unrated(
        &self,
        request: ListUnratedUsageRequest,
    ) -> Result<ListUnratedUsageResponse, RatingError> {
        let reason = UnratedReason::try_from(request.reason).map_err(|_| {
            RatingError::InvalidArgument(format!("reason: unknown value {}", request.reason))
        })?;
        let limit = match request.page_size {
            size if size <= 0 => 50,
            size => i64::from(size).min(1000),
        };
        let after = page_after(&request.page_token)?;
        let (after_time, after_customer, after_event) = match &after {
            Some((time, customer, event)) => (Some(*time), customer.as_str(), event.as_str()),
            None => (None, "", ""),
        };
        let rows = store::unrated_events_page(
            &self.pool,
            &request.customer_id,
            reason as i16,
            (after_time, after_customer, after_event),
            limit + 1,
        )
        .await?;
        let total =
            store::unrated_event_count(&self.pool, &request.customer_id, reason as i16).await?;
        let more = usize::try_from(limit).is_ok_and(|limit| rows.len() > limit);
        let page: Vec<UnratedRow> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        let next_page_token = match page.last() {
            Some(last) if more => format!(
                "unrated:{}:{}:{}",
                last.first_seen_at.timestamp_micros(),
                last.customer_id,
                last.event_id
            ),
            Some(_) | None => String::new(),
        };
        Ok(ListUnratedUsageResponse {
            unrated_usage: page.into_iter().map(UnratedRow::into_proto).collect(),
            next_page_token,
            total_count: u64::try_from(total).unwrap_or(0),
        })
    }
}

impl RatingApi {
    /// Rated (a row in `rating.rated_events`), else unrated (a row in
    /// `rating.unrated_events`), else pending, for each id in request order.
    async fn event_rating_status(
        &self,
        request: GetEventRatingStatusRequest,
    ) -> Result<GetEventRatingStatusResponse, RatingError> {
        if request.customer_id.is_empty() {
            return Err(RatingError::InvalidArgument(
                "customer_id: is required".into(),
            ));
        }
        if request.event_ids.is_empty() || request.event_ids.len() > MAX_STATUS_EVENTS {
            return Err(RatingError::InvalidArgument(format!(
                "event_ids: between 1 and {MAX_STATUS_EVENTS} ids, got {}",
                request.event_ids.len()
            )));
        }
        let rated: std::collections::HashSet<String> =
            store::rated_event_ids(&self.pool, &request.customer_id, &request.event_ids)
                .await?
                .into_iter()
                .collect();
        let unrated =
            store::unrated_statuses(&self.pool, &request.customer_id, &request.event_ids).await?;
        let unrated: HashMap<String, (i16, String)> = unrated
            .into_iter()
            .map(|(event_id, reason, detail)| (event_id, (reason, detail)))
            .collect();
        let statuses = request
            .event_ids
            .into_iter()
            .map(|event_id| {
                let mut status = EventRatingStatus {
                    state: EventRatingState::Pending as i32,
                    ..Default::default()
                };
                if rated.contains(&event_id) {
                    status.state = EventRatingState::Rated as i32;
                } else if let Some((reason, detail)) = unrated.get(&event_id) {
                    status.state = EventRatingState::Unrated as i32;
                    status.reason = i32::from(*reason);
                    status.detail.clone_from(detail);
                }
                status.event_id = event_id;
                status
            })
            .collect();
        Ok(GetEventRatingStatusResponse { statuses })
    }
}

impl UnratedRow {
    fn into_proto(self) -> UnratedUsage {
        let event = UsageAccepted::decode(self.accepted.as_slice())
            .ok()
            .and_then(|accepted| accepted.event)
            .unwrap_or_default();
        UnratedUsage {
            event_id: self.event_id,
            customer_id: self.customer_id,
            event_type: event.event_type,
            timestamp: event.timestamp,
            properties: event.properties.into_iter().collect::<HashMap<_, _>>(),
            sequence_number: u64::try_from(self.seq).unwrap_or(0),
            reason: i32::from(self.reason),
            detail: self.detail,
            first_seen_at: Some(timestamp(self.first_seen_at)),
        }
    }
}

/// `(first_seen_at, customer, event id)` after which a page resumes.
fn page_after(token: &str) -> Result<Option<(DateTime<Utc>, String, String)>, RatingError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        RatingError::InvalidArgument(format!(
            "page_token: {token:?} was not issued for this listing"
        ))
    };
    let rest = token.strip_prefix("unrated:").ok_or_else(invalid)?;
    let mut parts = rest.splitn(3, ':');
    let micros: i64 = parts
        .next()
        .and_then(|micros| micros.parse().ok())
        .ok_or_else(invalid)?;
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let customer = parts.next().ok_or_else(invalid)?;
    let event = parts.next().ok_or_else(invalid)?;
    Ok(Some((time, customer.to_owned(), event.to_owned())))
}

fn required_period(range: Option<&tally_proto::common::TimeRange>) -> Result<Period, RatingError> {
    Ok(tally_proto::convert::required_period(range, "period")?)
}

fn not_a_period(subscription_id: &str, period: &Period) -> RatingError {
    RatingError::FailedPrecondition(format!(
        "{period} is not a billing period of subscription {subscription_id}"
    ))
}

#[tonic::async_trait]
impl RatingService for RatingApi {
    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        tally_runtime::portal::ensure_customer(
            request.extensions(),
            &request.get_ref().customer_id,
        )?;
        Ok(Response::new(
            get_usage(&self.cache, &self.ingest, request.into_inner()).await?,
        ))
    }

    async fn get_usage_charges(
        &self,
        request: Request<GetUsageChargesRequest>,
    ) -> Result<Response<GetUsageChargesResponse>, Status> {
        Ok(Response::new(
            self.usage_charges(request.into_inner()).await?,
        ))
    }

    async fn batch_get_usage_charges(
        &self,
        request: Request<BatchGetUsageChargesRequest>,
    ) -> Result<Response<BatchGetUsageChargesResponse>, Status> {
        let requests = request.into_inner().requests;
        if requests.is_empty() || requests.len() > MAX_BATCH_REQUESTS {
            return Err(RatingError::InvalidArgument(format!(
                "requests: between 1 and {MAX_BATCH_REQUESTS} pairs, got {}",
                requests.len()
            ))
            .into());
        }
        let results = self
            .usage_charges_batch(requests)
            .await?
            .into_iter()
            .map(|answer| UsageChargesResult {
                result: Some(match answer {
                    Ok(charges) => usage_charges_result::Result::Charges(charges),
                    Err(error) => {
                        let status = Status::from(error);
                        usage_charges_result::Result::Error(UsageChargesError {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                        })
                    }
                }),
            })
            .collect();
        Ok(Response::new(BatchGetUsageChargesResponse { results }))
    }

    async fn get_current_cost(
        &self,
        request: Request<GetCurrentCostRequest>,
    ) -> Result<Response<GetCurrentCostResponse>, Status> {
        tally_runtime::portal::ensure_customer(
            request.extensions(),
            &request.get_ref().customer_id,
        )?;
        Ok(Response::new(
            self.current_cost(request.into_inner()).await?,
        ))
    }

    async fn list_unrated_usage(
        &self,
        request: Request<ListUnratedUsageRequest>,
    ) -> Result<Response<ListUnratedUsageResponse>, Status> {
        Ok(Response::new(self.unrated(request.into_inner()).await?))
    }

    async fn get_event_rating_status(
        &self,
        request: Request<GetEventRatingStatusRequest>,
    ) -> Result<Response<GetEventRatingStatusResponse>, Status> {
        Ok(Response::new(
            self.event_rating_status(request.into_inner()).await?,
        ))
    }

    async fn rerate_subscription(
        &self,
        request: Request<RerateSubscriptionRequest>,
    ) -> Result<Response<RerateSubscriptionResponse>, Status> {
        Ok(Response::new(
            rerate_subscription(&self.pool, &self.rerates, request.into_inner()).await?,
        ))
    }

    async fn get_rerate_job(
        &self,
        request: Request<GetRerateJobRequest>,
    ) -> Result<Response<GetRerateJobResponse>, Status> {
        Ok(Response::new(
            get_rerate_job(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn set_threshold(
        &self,
        request: Request<SetThresholdRequest>,
    ) -> Result<Response<SetThresholdResponse>, Status> {
        Ok(Response::new(
            set_threshold(
                &self.pool,
                &self.cache,
                &self.ids,
                self.clock.now(),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn list_thresholds(
        &self,
        request: Request<ListThresholdsRequest>,
    ) -> Result<Response<ListThresholdsResponse>, Status> {
        Ok(Response::new(
            list_thresholds(&self.pool, self.clock.now(), request.into_inner()).await?,
        ))
    }

    async fn delete_threshold(
        &self,
        request: Request<DeleteThresholdRequest>,
    ) -> Result<Response<DeleteThresholdResponse>, Status> {
        Ok(Response::new(
            delete_threshold(&self.pool, request.into_inner()).await?,
        ))
    }
}
