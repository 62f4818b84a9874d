//! `tally.rating.v1.RatingService`: the priced usage lines of a period
//! (`GetUsageCharges`), the live cost of open periods (`GetCurrentCost`), the
//! usage that cannot be rated yet (`ListUnratedUsage`), usage over any range
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
use crate::usage::store::PhaseRow;
use crate::usage_query::get_usage;
use crate::wire::{instant, money, time_range, timestamp};

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
        if request.subscription_id.is_empty() {
            return Err(RatingError::InvalidArgument(
                "subscription_id: is required".into(),
            ));
        }
        let period = required_period(request.period.as_ref())?;
        let customer: Option<(String,)> = sqlx::query_as(
            "SELECT customer_id FROM rating.subscriptions WHERE subscription_id = $1",
        )
        .bind(&request.subscription_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((customer_id,)) = customer else {
            return Err(RatingError::NotFound(format!(
                "subscription {:?} is unknown to rating",
                request.subscription_id
            )));
        };
        let phases = self.phases(&request.subscription_id).await?;
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
        let priced = self
            .priced(&request.subscription_id, &period, &phases)
            .await?;
        Ok(GetUsageChargesResponse {
            subscription_id: request.subscription_id,
            customer_id,
            period: Some(time_range(period.start(), period.end())),
            total: Some(money(priced.total, priced.currency.unwrap_or(currency))),
            charges: priced.charges,
            as_of_sequence_number: priced.as_of_sequence_number,
            computed_at: Some(timestamp(self.clock.now())),
        })
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
        let subscriptions: Vec<(String,)> = sqlx::query_as(
            "SELECT subscription_id FROM rating.subscriptions \
             WHERE customer_id = $1 AND ($2 = '' OR subscription_id = $2) ORDER BY subscription_id",
        )
        .bind(&request.customer_id)
        .bind(&request.subscription_id)
        .fetch_all(&self.pool)
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
        for (subscription_id,) in subscriptions {
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
        const FILTER: &str = "($1 = '' OR customer_id = $1) AND ($2 = 0 OR reason = $2)";
        let rows: Vec<UnratedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT customer_id, event_id, seq, accepted, reason, detail, first_seen_at \
             FROM rating.unrated_events WHERE {FILTER} \
               AND ($3::timestamptz IS NULL OR (first_seen_at, customer_id, event_id) > ($3, $4, $5)) \
             ORDER BY first_seen_at, customer_id, event_id LIMIT $6"
        )))
        .bind(&request.customer_id)
        .bind(reason as i16)
        .bind(after_time)
        .bind(after_customer)
        .bind(after_event)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM rating.unrated_events WHERE {FILTER}"
        )))
        .bind(&request.customer_id)
        .bind(reason as i16)
        .fetch_one(&self.pool)
        .await?;
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

#[derive(sqlx::FromRow)]
struct UnratedRow {
    customer_id: String,
    event_id: String,
    seq: i64,
    accepted: Vec<u8>,
    reason: i16,
    detail: String,
    first_seen_at: DateTime<Utc>,
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
    let range = range.ok_or_else(|| RatingError::InvalidArgument("period: is required".into()))?;
    let start = instant(range.start_time.as_ref())
        .ok_or_else(|| RatingError::InvalidArgument("period.start_time: is required".into()))?;
    let end = instant(range.end_time.as_ref())
        .ok_or_else(|| RatingError::InvalidArgument("period.end_time: is required".into()))?;
    Period::new(start, end).map_err(|_| {
        RatingError::InvalidArgument("period.end_time: must be after period.start_time".into())
    })
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

    async fn get_current_cost(
        &self,
        request: Request<GetCurrentCostRequest>,
    ) -> Result<Response<GetCurrentCostResponse>, Status> {
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
