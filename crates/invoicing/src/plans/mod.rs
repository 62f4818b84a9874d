//! The plan versions subscriptions bill: fetched from rating's
//! `CatalogService.GetPlanVersion` through the rating peer the first time a
//! subscription names them, and kept in `invoicing.plan_versions`. Published
//! versions never change, so the copy never goes stale; rating stays the
//! only owner of the catalog.
//!
//! Invoicing needs only what it bills itself: currency, interval, trial,
//! minimum commitment and the recurring fees (usage is priced by rating).
//! A recurring fee is the price of one unit per period (the contract has no
//! subscription quantity yet): a flat fee, or a per-unit price (after
//! included units, within the charge's minimum and maximum). A recurring
//! charge with another model is refused when subscribing (FAILED_PRECONDITION).

mod store;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tally_domain::ids::PlanVersionId;
use tally_domain::money::Currency;
use tally_domain::period::BillingInterval;
use tally_proto::rating::{self as wire, PlanVersionStatus, price};

use self::store::PlanRow;
use crate::error::{InvoicingError, Result};
use crate::rating::RatingClient;

/// A recurring fee of a plan version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringFee {
    /// The charge key.
    pub key: String,
    /// Printed on the invoice.
    pub name: String,
    /// Billed at the start of the period it pays for.
    pub in_advance: bool,
    /// The fee per full period (precise).
    pub amount: Decimal,
}

/// What invoicing keeps of a published plan version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanInfo {
    /// `pv_…`.
    pub id: String,
    /// `plan_…`.
    pub plan_id: String,
    /// Version number.
    pub version: i32,
    /// Currency of every amount.
    pub currency: Currency,
    /// Billing interval.
    pub interval: BillingInterval,
    /// Trial length in days.
    pub trial_days: u32,
    /// Minimum usage spend per period.
    pub minimum_commitment: Option<Decimal>,
    /// Recurring fees.
    pub recurring: Vec<RecurringFee>,
}

/// The stored name of an interval.
pub fn interval_name(interval: BillingInterval) -> &'static str {
    match interval {
        BillingInterval::Day => "day",
        BillingInterval::Week => "week",
        BillingInterval::Month => "month",
        BillingInterval::Quarter => "quarter",
        BillingInterval::Year => "year",
    }
}

/// The interval of a stored name.
pub fn interval_from_name(name: &str) -> Result<BillingInterval> {
    Ok(match name {
        "day" => BillingInterval::Day,
        "week" => BillingInterval::Week,
        "month" => BillingInterval::Month,
        "quarter" => BillingInterval::Quarter,
        "year" => BillingInterval::Year,
        other => {
            return Err(InvoicingError::Internal(format!(
                "stored interval {other:?}"
            )));
        }
    })
}

fn precondition(message: String) -> InvoicingError {
    InvoicingError::FailedPrecondition(message)
}

fn wire_decimal(value: Option<&tally_proto::common::Decimal>) -> Option<Decimal> {
    value.and_then(|value| tally_proto::convert::decimal(&value.value).ok())
}

fn wire_amount(value: Option<&tally_proto::common::Money>) -> Option<Decimal> {
    value.and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
}

/// The fee of one unit per period of a recurring charge.
fn recurring_fee(version_id: &str, charge: &wire::Charge) -> Result<RecurringFee> {
    let unsupported = |what: &str| {
        precondition(format!(
            "plan version {version_id}: recurring charge {:?} uses {what}; invoicing bills flat-fee and per-unit recurring charges",
            charge.key
        ))
    };
    let model = charge.price.as_ref().and_then(|price| price.model.as_ref());
    let base = match model {
        Some(price::Model::FlatFee(fee)) => wire_amount(fee.amount.as_ref())
            .ok_or_else(|| unsupported("a flat fee without amount"))?,
        Some(price::Model::PerUnit(per_unit)) => {
            let unit_price = wire_decimal(per_unit.unit_price.as_ref())
                .ok_or_else(|| unsupported("a per-unit price without unit price"))?;
            let included = wire_decimal(charge.included_quantity.as_ref()).unwrap_or(Decimal::ZERO);
            (Decimal::ONE - included).max(Decimal::ZERO) * unit_price
        }
        Some(price::Model::Package(_)) => return Err(unsupported("a package price")),
        Some(price::Model::Graduated(_)) => return Err(unsupported("a graduated price")),
        Some(price::Model::Volume(_)) => return Err(unsupported("a volume price")),
        Some(price::Model::Bulk(_)) => return Err(unsupported("a bulk price")),
        Some(price::Model::Percentage(_)) => return Err(unsupported("a percentage price")),
        Some(price::Model::Matrix(_)) => return Err(unsupported("a matrix price")),
        None => return Err(unsupported("no price")),
    };
    let mut amount = base;
    if let Some(minimum) = wire_amount(charge.minimum_amount.as_ref()) {
        amount = amount.max(minimum);
    }
    if let Some(maximum) = wire_amount(charge.maximum_amount.as_ref()) {
        amount = amount.min(maximum);
    }
    Ok(RecurringFee {
        key: charge.key.clone(),
        name: charge.name.clone(),
        in_advance: charge.billing_timing == wire::BillingTiming::InAdvance as i32,
        amount,
    })
}

/// Turns a published wire version into what invoicing keeps.
pub fn from_wire(version: &wire::PlanVersion) -> Result<PlanInfo> {
    if version.status != PlanVersionStatus::Published as i32 {
        return Err(precondition(format!(
            "plan version {} is not published",
            version.id
        )));
    }
    let spec = version.spec.as_ref().ok_or_else(|| {
        InvoicingError::Internal(format!("plan version {} has no spec", version.id))
    })?;
    let currency = Currency::from_code(&spec.currency).map_err(InvoicingError::internal)?;
    let interval = match wire::BillingInterval::try_from(spec.billing_interval) {
        Ok(wire::BillingInterval::Day) => BillingInterval::Day,
        Ok(wire::BillingInterval::Week) => BillingInterval::Week,
        Ok(wire::BillingInterval::Month) => BillingInterval::Month,
        Ok(wire::BillingInterval::Quarter) => BillingInterval::Quarter,
        Ok(wire::BillingInterval::Year) => BillingInterval::Year,
        Ok(wire::BillingInterval::Unspecified) | Err(_) => {
            return Err(InvoicingError::Internal(format!(
                "plan version {} has no interval",
                version.id
            )));
        }
    };
    let recurring = spec
        .charges
        .iter()
        .filter(|charge| charge.meter_code.is_empty())
        .map(|charge| recurring_fee(&version.id, charge))
        .collect::<Result<Vec<_>>>()?;
    Ok(PlanInfo {
        id: version.id.clone(),
        plan_id: version.plan_id.clone(),
        version: i32::try_from(version.version).unwrap_or(i32::MAX),
        currency,
        interval,
        trial_days: spec.trial_days,
        minimum_commitment: wire_amount(spec.minimum_commitment.as_ref())
            .filter(|minimum| *minimum > Decimal::ZERO),
        recurring,
    })
}

fn from_row(row: PlanRow) -> Result<PlanInfo> {
    Ok(PlanInfo {
        id: row.id,
        plan_id: row.plan_id,
        version: row.version,
        currency: crate::wire::stored_currency(&row.currency)?,
        interval: interval_from_name(&row.billing_interval)?,
        trial_days: u32::try_from(row.trial_days).unwrap_or(0),
        minimum_commitment: row.minimum_commitment,
        recurring: serde_json::from_value(row.recurring).map_err(InvoicingError::internal)?,
    })
}

/// Stored plan versions already read, shared by every composition of the
/// process: the fields kept here (currency, interval, trial, minimum,
/// recurring fees) never change once a version is published, so an entry
/// is never stale. A bill run reads each version once instead of once per
/// subscription.
#[derive(Debug, Clone, Default)]
pub struct PlanCache {
    versions: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, PlanInfo>>>,
}

impl PlanCache {
    /// The stored plan version `id`, from the cache or the database.
    pub async fn stored(&self, connection: &mut PgConnection, id: &str) -> Result<PlanInfo> {
        let cached = self
            .versions
            .read()
            .ok()
            .and_then(|versions| versions.get(id).cloned());
        if let Some(plan) = cached {
            return Ok(plan);
        }
        let plan = stored(connection, id)
            .await?
            .ok_or_else(|| InvoicingError::Internal(format!("plan version {id} is not stored")))?;
        if let Ok(mut versions) = self.versions.write() {
            versions.insert(id.to_owned(), plan.clone());
        }
        Ok(plan)
    }
}

/// A stored plan version (every version a subscription names is stored).
pub async fn stored(connection: &mut PgConnection, id: &str) -> Result<Option<PlanInfo>> {
    store::plan_version(connection, id)
        .await?
        .map(from_row)
        .transpose()
}

/// The plan version `id` for a new subscription or phase: published, from the
/// local copy or fetched from rating and stored.
pub async fn published(
    connection: &mut PgConnection,
    rating: &RatingClient,
    id: &str,
    field: &str,
    now: DateTime<Utc>,
) -> Result<PlanInfo> {
    tally_proto::convert::id::<PlanVersionId>(id, field)?;
    let version = rating.plan_version(id).await?;
    // Archived versions are kept locally for existing subscriptions but cannot
    // be subscribed to; so the status is always asked from rating.
    let info = from_wire(&version)?;
    if let Some(existing) = stored(&mut *connection, id).await? {
        return Ok(existing);
    }
    store::insert_plan_version(connection, &info, now).await?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(model: price::Model) -> wire::Charge {
        wire::Charge {
            key: "fee".into(),
            name: "Fee".into(),
            billing_timing: wire::BillingTiming::InAdvance as i32,
            price: Some(wire::Price { model: Some(model) }),
            ..Default::default()
        }
    }

    #[test]
    fn recurring_fees_of_one_unit() {
        let flat = charge(price::Model::FlatFee(wire::FlatFeePrice {
            amount: Some(tally_proto::common::Money {
                currency: "USD".into(),
                amount: "49.00".into(),
            }),
        }));
        let fee = recurring_fee("pv_1", &flat).unwrap();
        assert_eq!(fee.amount, Decimal::new(4900, 2));
        assert!(fee.in_advance);
        let mut per_unit = charge(price::Model::PerUnit(wire::PerUnitPrice {
            unit_price: Some(tally_proto::common::Decimal { value: "10".into() }),
        }));
        per_unit.minimum_amount = Some(tally_proto::common::Money {
            currency: "USD".into(),
            amount: "12".into(),
        });
        assert_eq!(
            recurring_fee("pv_1", &per_unit).unwrap().amount,
            Decimal::from(12)
        );
        let matrix = charge(price::Model::Matrix(wire::MatrixPrice::default()));
        assert!(matches!(
            recurring_fee("pv_1", &matrix),
            Err(InvoicingError::FailedPrecondition(_))
        ));
    }
}
