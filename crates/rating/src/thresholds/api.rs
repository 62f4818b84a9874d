//! `SetThreshold`, `ListThresholds` and `DeleteThreshold`: validation and
//! wire mapping.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tally_domain::ids::{MeterCode, SubscriptionId, ThresholdId};
use tally_domain::money::Currency;
use tally_proto::common;
use tally_proto::rating::{
    DeleteThresholdRequest, DeleteThresholdResponse, ListThresholdsRequest, ListThresholdsResponse,
    SetThresholdRequest, SetThresholdResponse, Threshold as ThresholdMessage, UsageLimit,
    set_threshold_request, threshold,
};
use tally_runtime::ids::SharedIdGenerator;

use super::store::{self, Limit, NewThreshold, Threshold};
use crate::cache::CatalogCache;
use crate::charges::subscription_phases;
use crate::error::RatingError;
use crate::wire::{decimal, timestamp};

/// Longest threshold key.
const MAX_KEY_CHARS: usize = 64;

fn invalid<T>(message: impl Into<String>) -> Result<T, RatingError> {
    Err(RatingError::InvalidArgument(message.into()))
}

/// Creates or replaces a threshold.
pub async fn set_threshold(
    pool: &PgPool,
    cache: &CatalogCache,
    ids: &SharedIdGenerator,
    now: DateTime<Utc>,
    request: SetThresholdRequest,
) -> Result<SetThresholdResponse, RatingError> {
    let subscription_id: SubscriptionId =
        tally_proto::convert::id(&request.subscription_id, "subscription_id")?;
    check_key(&request.key)?;
    let customer = store::subscription_customer(pool, &request.subscription_id).await?;
    let Some(customer_id) = customer else {
        return Err(RatingError::NotFound(format!(
            "subscription_id: rating has no subscription {}",
            request.subscription_id
        )));
    };
    let limit = match request.limit {
        None => return invalid("limit: spend or usage is required"),
        Some(set_threshold_request::Limit::Spend(money)) => {
            spend_limit(pool, cache, &request.subscription_id, money).await?
        }
        Some(set_threshold_request::Limit::Usage(usage)) => {
            usage_limit(pool, cache, &request.subscription_id, usage).await?
        }
    };
    let threshold_id = ids.mint::<ThresholdId>();
    let stored = store::set(
        pool,
        &NewThreshold {
            threshold_id: &threshold_id,
            subscription_id: &subscription_id,
            customer_id: &customer_id,
            key: &request.key,
            limit: &limit,
            now,
        },
    )
    .await?;
    Ok(SetThresholdResponse {
        threshold: Some(to_message(stored, now)),
    })
}

fn check_key(key: &str) -> Result<(), RatingError> {
    if key.is_empty() {
        return invalid("key: is required");
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return invalid("key: is longer than 64 characters");
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return invalid("key: may contain only letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

fn positive(field: &str, value: &str) -> Result<Decimal, RatingError> {
    let parsed = tally_proto::convert::decimal_field(value, field)?;
    if parsed <= Decimal::ZERO {
        return invalid(format!(
            "{field}: must be a positive decimal, got {value:?}"
        ));
    }
    Ok(parsed.normalize())
}

async fn spend_limit(
    pool: &PgPool,
    cache: &CatalogCache,
    subscription_id: &str,
    money: common::Money,
) -> Result<Limit, RatingError> {
    let Ok(currency) = Currency::from_str(&money.currency) else {
        return invalid(format!(
            "spend.currency: {:?} is not an ISO 4217 currency code",
            money.currency
        ));
    };
    let amount = positive("spend.amount", &money.amount)?;
    for phase in subscription_phases(pool, subscription_id).await? {
        if let Some(version) = cache.version(&phase.plan_version_id).await?
            && version.published.plan.currency() != currency
        {
            return invalid(format!(
                "spend.currency: {} differs from the currency of plan version {} ({})",
                currency.code(),
                phase.plan_version_id,
                version.published.plan.currency().code()
            ));
        }
    }
    Ok(Limit::Spend {
        currency: currency.code().to_owned(),
        amount,
    })
}

async fn usage_limit(
    pool: &PgPool,
    cache: &CatalogCache,
    subscription_id: &str,
    usage: UsageLimit,
) -> Result<Limit, RatingError> {
    if usage.meter_code.is_empty() {
        return invalid("usage.meter_code: is required");
    }
    let quantity = positive(
        "usage.quantity",
        usage
            .quantity
            .as_ref()
            .map_or("", |quantity| quantity.value.as_str()),
    )?;
    let meter = MeterCode::parse(&usage.meter_code)
        .map_err(|error| RatingError::InvalidArgument(format!("usage.meter_code: {error}")))?;
    let mut charged = false;
    for phase in subscription_phases(pool, subscription_id).await? {
        if let Some(version) = cache.version(&phase.plan_version_id).await? {
            charged |= version
                .published
                .plan
                .usage_charges(&meter)
                .next()
                .is_some();
        }
    }
    if !charged {
        return invalid(format!(
            "usage.meter_code: no usage charge of {subscription_id}'s plan versions uses meter {}",
            usage.meter_code
        ));
    }
    Ok(Limit::Usage {
        meter_code: usage.meter_code,
        quantity,
    })
}

/// The thresholds of a subscription, by key.
pub async fn list_thresholds(
    pool: &PgPool,
    now: DateTime<Utc>,
    request: ListThresholdsRequest,
) -> Result<ListThresholdsResponse, RatingError> {
    let subscription_id: SubscriptionId =
        tally_proto::convert::id(&request.subscription_id, "subscription_id")?;
    let thresholds = store::of_subscription(pool, &subscription_id).await?;
    Ok(ListThresholdsResponse {
        thresholds: thresholds
            .into_iter()
            .map(|threshold| to_message(threshold, now))
            .collect(),
    })
}

/// Deletes a threshold.
pub async fn delete_threshold(
    pool: &PgPool,
    request: DeleteThresholdRequest,
) -> Result<DeleteThresholdResponse, RatingError> {
    let threshold_id: ThresholdId =
        tally_proto::convert::id(&request.threshold_id, "threshold_id")?;
    if !store::delete(pool, &threshold_id).await? {
        return Err(RatingError::NotFound(format!(
            "threshold_id: no threshold {}",
            request.threshold_id
        )));
    }
    Ok(DeleteThresholdResponse {})
}

/// A threshold on the wire, as seen at `now`.
pub fn to_message(threshold: Threshold, now: DateTime<Utc>) -> ThresholdMessage {
    let limit = match threshold.limit {
        Limit::Spend { currency, amount } => threshold::Limit::Spend(common::Money {
            currency,
            amount: amount.to_string(),
        }),
        Limit::Usage {
            meter_code,
            quantity,
        } => threshold::Limit::Usage(UsageLimit {
            meter_code,
            quantity: Some(decimal(quantity)),
        }),
    };
    ThresholdMessage {
        id: threshold.threshold_id,
        subscription_id: threshold.subscription_id,
        customer_id: threshold.customer_id,
        key: threshold.key,
        limit: Some(limit),
        last_crossed_at: threshold.last_crossing.map(|(_, _, at)| timestamp(at)),
        crossed_in_current_period: threshold
            .last_crossing
            .is_some_and(|(start, end, _)| start <= now && now < end),
        created_at: Some(timestamp(threshold.created_at)),
        updated_at: Some(timestamp(threshold.updated_at)),
    }
}
