//! A plan and builders shared by the terms tests.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::{
    ChargeUsage, Discount, DiscountDuration, DiscountTarget, DiscountValue, OverridePrice,
    PeriodUsage, PriceOverride, SubscriptionTerms, SubscriptionTermsSpec,
};
use crate::ids::{ChargeCode, MeterCode, PlanId};
use crate::money::{Currency, Money};
use crate::period::{BillingInterval, Period};
use crate::plan::{AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
use crate::pricing::{
    ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, PerUnit, PerUnitSpec, PriceModel, Tier,
    Tiered, TieredSpec,
};
use crate::subscription::PlanRef;

pub(super) fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
}

/// The calendar month `[year-month-01, next month)`.
pub(super) fn month(year: i32, month: u32) -> Period {
    let next = if month == 12 {
        at(year + 1, 1, 1)
    } else {
        at(year, month + 1, 1)
    };
    Period::new(at(year, month, 1), next).unwrap()
}

pub(super) fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

pub(super) fn code(text: &str) -> ChargeCode {
    ChargeCode::parse(text).unwrap()
}

pub(super) fn meter(text: &str) -> MeterCode {
    MeterCode::parse(text).unwrap()
}

pub(super) fn per_unit(unit_price: Decimal) -> ChargePrice {
    ChargePrice::new(ChargePriceSpec::plain(PriceModel::PerUnit(
        PerUnit::new(PerUnitSpec { unit_price }).unwrap(),
    )))
    .unwrap()
}

pub(super) fn flat(amount: Decimal) -> ChargePrice {
    ChargePrice::new(ChargePriceSpec::plain(PriceModel::Flat(
        FlatFee::new(FlatFeeSpec { amount }).unwrap(),
    )))
    .unwrap()
}

/// Volume pricing: 0.05 per image up to 1 000, 0.03 per image for all when above.
fn images_price() -> ChargePrice {
    let tier = |up_to, unit_price| Tier {
        up_to,
        unit_price,
        flat_fee: Decimal::ZERO,
    };
    let tiers = TieredSpec {
        tiers: vec![tier(Some(dec!(1000)), dec!(0.05)), tier(None, dec!(0.03))],
    };
    ChargePrice::new(ChargePriceSpec::plain(PriceModel::Volume(
        Tiered::new(tiers).unwrap(),
    )))
    .unwrap()
}

fn charge(name: &str, kind: ChargeKind, price: ChargePrice) -> PlanCharge {
    PlanCharge {
        code: code(name),
        name: name.into(),
        kind,
        price,
    }
}

/// A monthly calendar plan in USD: `platform` 500.00 in advance, `tokens` 0.01 each,
/// `images` on volume tiers.
pub(super) fn plan() -> Plan {
    Plan::new(PlanSpec {
        id: PlanId::parse("plan_ai").unwrap(),
        version: 3,
        name: "AI inference".into(),
        currency: Currency::USD,
        interval: BillingInterval::Month,
        anchor: AnchorPolicy::Calendar,
        trial_days: 0,
        minimum_commitment: None,
        charges: vec![
            charge(
                "platform",
                ChargeKind::Recurring {
                    timing: BillingTiming::InAdvance,
                },
                flat(dec!(500)),
            ),
            charge(
                "tokens",
                ChargeKind::Usage {
                    meter: meter("tokens"),
                },
                per_unit(dec!(0.01)),
            ),
            charge(
                "images",
                ChargeKind::Usage {
                    meter: meter("images"),
                },
                images_price(),
            ),
        ],
    })
    .unwrap()
}

/// No terms, from 1 January 2026.
pub(super) fn spec() -> SubscriptionTermsSpec {
    SubscriptionTermsSpec::list_price(PlanRef::from(&plan()), Currency::USD, at(2026, 1, 1))
}

pub(super) fn terms(spec: SubscriptionTermsSpec) -> SubscriptionTerms {
    SubscriptionTerms::new(spec, &plan()).unwrap()
}

pub(super) fn usage(tokens: i64, images: i64) -> PeriodUsage {
    PeriodUsage::from([
        (code("tokens"), ChargeUsage::Quantity(Decimal::from(tokens))),
        (code("images"), ChargeUsage::Quantity(Decimal::from(images))),
    ])
}

pub(super) fn percent_off(
    name: &str,
    percent: Decimal,
    applies_to: DiscountTarget,
    duration: DiscountDuration,
) -> Discount {
    Discount {
        name: name.into(),
        value: DiscountValue::Percentage { percent },
        applies_to,
        starts_at: None,
        duration,
    }
}

pub(super) fn amount_off(name: &str, amount: Decimal, applies_to: DiscountTarget) -> Discount {
    Discount {
        name: name.into(),
        value: DiscountValue::Amount {
            amount: usd(amount),
        },
        applies_to,
        starts_at: None,
        duration: DiscountDuration::Forever,
    }
}

pub(super) fn on(charges: &[&str]) -> DiscountTarget {
    DiscountTarget::Charges {
        charges: charges.iter().map(|name| code(name)).collect(),
    }
}

pub(super) fn unit_price_override(
    charge: &str,
    unit_price: Decimal,
    ends_at: Option<DateTime<Utc>>,
) -> PriceOverride {
    PriceOverride {
        charge: code(charge),
        price: OverridePrice::UnitPrice { unit_price },
        starts_at: None,
        ends_at,
    }
}
