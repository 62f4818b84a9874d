//! Properties of pricing under random terms and usage.

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::fixtures::{amount_off, at, meter, month, on, percent_off, spec, terms, usd};
use super::*;
use crate::money::{Money, RoundingMode};
use crate::period::Period;

/// Random terms on the fixture plan: an optional token override, a percentage and a fixed
/// discount (on the invoice or on tokens), free tokens, a minimum, a maximum, a threshold.
#[derive(Clone, Debug)]
struct RandomTerms {
    token_price_micros: Option<i64>,
    percent: i64,
    fixed_cents: i64,
    on_invoice: bool,
    free_tokens: i64,
    minimum_cents: Option<i64>,
    cap_above_minimum_cents: Option<i64>,
    threshold_cents: i64,
    stub: bool,
}

fn cents(amount: i64) -> Money {
    usd(Decimal::new(amount, 2))
}

impl RandomTerms {
    fn build(&self) -> SubscriptionTerms {
        let mut spec = spec();
        if self.stub {
            spec.starts_at = at(2026, 1, 16);
        }
        if let Some(micros) = self.token_price_micros {
            spec.base.overrides = vec![super::fixtures::unit_price_override(
                "tokens",
                Decimal::new(micros, 6),
                None,
            )];
        }
        let target = || {
            if self.on_invoice {
                DiscountTarget::Invoice
            } else {
                on(&["tokens"])
            }
        };
        spec.base.discounts = vec![
            amount_off("Fixed", Decimal::new(self.fixed_cents, 2), target()),
            percent_off(
                "Percent",
                Decimal::from(self.percent),
                target(),
                DiscountDuration::Forever,
            ),
        ];
        spec.base.usage_discounts = vec![UsageDiscount {
            name: "Free tokens".into(),
            meter: meter("tokens"),
            free_units: Decimal::from(self.free_tokens),
        }];
        spec.base.minimum = self.minimum_cents.map(cents);
        spec.base.maximum = self
            .cap_above_minimum_cents
            .map(|above| cents(self.minimum_cents.unwrap_or(0) + above));
        spec.invoicing_threshold = Some(cents(self.threshold_cents));
        terms(spec)
    }

    /// A stub (16 – 31 January, the minimum and cap prorated) or a full month.
    fn period(&self) -> Period {
        if self.stub {
            Period::new(at(2026, 1, 16), at(2026, 2, 1)).unwrap()
        } else {
            month(2026, 2)
        }
    }
}

prop_compose! {
    fn random_terms()(
        token_price_micros in proptest::option::of(0i64..=20_000),
        percent in 0i64..=100,
        fixed_cents in 0i64..=60_000,
        on_invoice in any::<bool>(),
        free_tokens in 0i64..=5_000,
        minimum_cents in proptest::option::of(0i64..=200_000),
        cap_above_minimum_cents in proptest::option::of(0i64..=200_000),
        threshold_cents in 1i64..=20_000,
        stub in any::<bool>(),
    ) -> RandomTerms {
        RandomTerms {
            token_price_micros,
            percent,
            fixed_cents,
            on_invoice,
            free_tokens,
            minimum_cents,
            cap_above_minimum_cents,
            threshold_cents,
            stub,
        }
    }
}

/// Cumulative usage after each of a period's usage reports: (tokens, images) added.
fn reports() -> impl Strategy<Value = Vec<(i64, i64)>> {
    proptest::collection::vec((0i64..=40_000, 0i64..=800), 1..8)
}

const ROUNDING: RoundingMode = RoundingMode::HalfUp;

fn usage_of(tokens: i64, images: i64) -> PeriodUsage {
    super::fixtures::usage(tokens, images)
}

/// Every invoice of one period, threshold invoices checked after each report.
fn period_invoices(
    effective: &EffectiveTerms,
    reports: &[(i64, i64)],
) -> (Vec<PricedPeriod>, PeriodUsage) {
    let (mut tokens, mut images) = (0, 0);
    let mut invoices = Vec::new();
    let mut billed: Vec<Money> = Vec::new();
    for (more_tokens, more_images) in reports {
        tokens += more_tokens;
        images += more_images;
        if let Some(invoice) =
            threshold_invoice(effective, &usage_of(tokens, images), &billed, ROUNDING).unwrap()
        {
            billed.push(invoice.total().unwrap());
            invoices.push(invoice);
        }
    }
    let usage = usage_of(tokens, images);
    invoices.push(period_end_invoice(effective, &usage, &billed, ROUNDING).unwrap());
    (invoices, usage)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// (a) The progressive invoices of a period add up to its single invoice, to the cent,
    /// and (c) no line is negative unless it takes money off by its kind.
    #[test]
    fn progressive_invoices_sum_to_the_single_invoice(
        random in random_terms(),
        reports in reports(),
    ) {
        let terms = random.build();
        let effective = terms_for_period(&terms, &random.period()).unwrap();
        let (invoices, usage) = period_invoices(&effective, &reports);
        let single = price_period(&effective, &usage, ROUNDING, PricingScope::WholePeriod).unwrap();
        let totals: Vec<Money> = invoices.iter().map(|invoice| invoice.total().unwrap()).collect();
        prop_assert_eq!(Money::sum(single.currency(), &totals).unwrap(), single.total().unwrap());
        for line in invoices.iter().chain([&single]).flat_map(PricedPeriod::lines) {
            if !line.kind().is_deduction() {
                prop_assert!(!line.amount().is_negative(), "{:?}", line);
                prop_assert!(!line.precise_amount().is_negative(), "{:?}", line);
            }
        }
    }

    /// (b) Percentage before fixed: the line is `A × (1 − p) − F` (F limited to what is
    /// left, in whole cents), never the `(A − F) × (1 − p)` of the other order.
    #[test]
    fn discounts_apply_in_the_documented_order(
        tokens in 1i64..=1_000_000,
        percent in 1i64..=99,
        fixed_cents in 1i64..=100_000,
    ) {
        let mut spec = spec();
        spec.base.discounts = vec![
            amount_off("Fixed", Decimal::new(fixed_cents, 2), on(&["tokens"])),
            percent_off("Percent", Decimal::from(percent), on(&["tokens"]), DiscountDuration::Forever),
        ];
        let terms = terms(spec);
        let effective = terms_for_period(&terms, &month(2026, 1)).unwrap();
        let priced = price_period(&effective, &usage_of(tokens, 0), ROUNDING, PricingScope::WholePeriod).unwrap();
        let line = priced.line(&super::fixtures::code("tokens")).unwrap();
        let list = Decimal::from(tokens) * Decimal::new(1, 2);
        let keep = Decimal::ONE - Decimal::from(percent) / Decimal::ONE_HUNDRED;
        let fixed = Decimal::new(fixed_cents, 2);
        let after_percentage = list * keep;
        let documented = after_percentage - fixed.min(RoundingMode::Down.round(after_percentage, 2));
        prop_assert_eq!(line.precise_amount().amount(), documented);
        let wrong_order = (list - fixed).max(Decimal::ZERO) * keep;
        if fixed < RoundingMode::Down.round(after_percentage, 2) {
            prop_assert_ne!(line.precise_amount().amount(), wrong_order);
        }
    }
}
