//! Which fee and which status a subscription has at an instant.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_domain::finance::mrr::MrrChange;
use tally_domain::money::{Currency, Money};

use super::fees::StoredFee;
use super::history::{CustomerHistory, SubscriptionHistory, SubscriptionTiming, mrr_before};
use super::subscriptions::Pause;

fn at(day: &str) -> DateTime<Utc> {
    format!("2026-{day}T00:00:00Z").parse().unwrap()
}

fn fee(plan_version: &str, charge: &str, from: &str, mrr: Decimal) -> StoredFee {
    StoredFee {
        subscription_id: "sub_1".into(),
        customer_id: "cus_1".into(),
        plan_version_id: plan_version.into(),
        charge_key: charge.into(),
        effective_from: at(from),
        mrr,
    }
}

fn customer(timing: Option<SubscriptionTiming>, fees: Vec<StoredFee>) -> CustomerHistory {
    let mut customer = CustomerHistory::default();
    customer
        .subscriptions
        .insert("sub_1".into(), SubscriptionHistory { timing, fees });
    customer
}

fn mrr(customer: &CustomerHistory, day: &str) -> Decimal {
    customer.mrr_at(Currency::USD, at(day)).unwrap().amount()
}

#[test]
fn charges_of_the_version_in_force_sum_and_carry_forward() {
    // A base fee in advance and a seat fee in arrears (known a period late),
    // then a plan change on 10 March to a version with one charge.
    let customer = customer(
        None,
        vec![
            fee("pv_a", "base", "01-01", dec!(100)),
            fee("pv_a", "seats", "01-01", dec!(20)),
            fee("pv_a", "base", "02-01", dec!(100)),
            fee("pv_a", "base", "03-01", dec!(100)),
            fee("pv_b", "base", "03-10", dec!(150)),
        ],
    );
    assert_eq!(mrr(&customer, "01-15"), dec!(120));
    // February's seats are not invoiced yet: January's carry forward.
    assert_eq!(mrr(&customer, "02-15"), dec!(120));
    assert_eq!(mrr(&customer, "03-09"), dec!(120));
    assert_eq!(mrr(&customer, "03-10"), dec!(150), "pv_a's charges stop");
    let before = customer
        .mrr_at(Currency::USD, "2025-12-31T00:00:00Z".parse().unwrap())
        .unwrap();
    assert!(before.is_zero(), "nothing before the first fee");
}

#[test]
fn trials_pauses_and_the_end_count_nothing() {
    let timing = SubscriptionTiming {
        start_at: Some(at("01-01")),
        trial_end_at: Some(at("01-15")),
        ends_at: Some(at("06-01")),
        pauses: vec![Pause {
            pause_at: at("03-01"),
            resume_at: Some(at("04-01")),
        }],
    };
    // A fee row dated inside the trial still counts only from its end.
    let customer = customer(Some(timing), vec![fee("pv_a", "base", "01-01", dec!(30))]);
    assert_eq!(mrr(&customer, "01-10"), dec!(0), "trialing");
    assert_eq!(mrr(&customer, "01-15"), dec!(30));
    assert_eq!(mrr(&customer, "03-15"), dec!(0), "paused");
    assert_eq!(mrr(&customer, "04-01"), dec!(30), "resumed");
    assert_eq!(mrr(&customer, "06-01"), dec!(0), "ended");
    let changes: Vec<(DateTime<Utc>, Decimal)> = customer
        .changes(Currency::USD)
        .unwrap()
        .iter()
        .map(|change| (change.at, change.mrr.amount()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (at("01-15"), dec!(30)),
            (at("03-01"), dec!(0)),
            (at("04-01"), dec!(30)),
            (at("06-01"), dec!(0)),
        ]
    );
}

#[test]
fn mrr_before_an_instant_leaves_its_changes_out() {
    let usd = |amount| Money::new(amount, Currency::USD);
    let changes = [
        MrrChange {
            at: at("01-01"),
            mrr: usd(dec!(10)),
        },
        MrrChange {
            at: at("02-01"),
            mrr: usd(dec!(25)),
        },
    ];
    assert_eq!(
        mrr_before(Currency::USD, &changes, at("01-01")).amount(),
        dec!(0)
    );
    assert_eq!(
        mrr_before(Currency::USD, &changes, at("02-01")).amount(),
        dec!(10)
    );
    assert_eq!(
        mrr_before(Currency::USD, &changes, at("02-02")).amount(),
        dec!(25)
    );
}

/// A small deterministic generator (no dependency): the same histories on
/// every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }

    fn day(&mut self) -> DateTime<Utc> {
        at("01-01") + chrono::Days::new(self.below(365))
    }
}

fn random_subscription(random: &mut Lcg, id: &str) -> SubscriptionHistory {
    let start = random.day();
    let days = |random: &mut Lcg| chrono::Days::new(random.below(120));
    let pause_at = start + days(random);
    let timing = SubscriptionTiming {
        start_at: Some(start),
        trial_end_at: (random.below(2) == 0).then(|| start + days(random)),
        ends_at: (random.below(2) == 0).then(|| start + days(random) + days(random)),
        pauses: (random.below(3) == 0)
            .then(|| Pause {
                pause_at,
                resume_at: (random.below(2) == 0).then(|| pause_at + days(random)),
            })
            .into_iter()
            .collect(),
    };
    let mut fees: Vec<StoredFee> = (0..random.below(5))
        .map(|_| StoredFee {
            subscription_id: id.into(),
            customer_id: "cus_1".into(),
            plan_version_id: format!("pv_{}", random.below(2)),
            charge_key: format!("charge{}", random.below(2)),
            effective_from: start + days(random),
            // Thirds keep the sums at full precision.
            mrr: Decimal::from(random.below(1000)) / dec!(3),
        })
        .collect();
    fees.sort_by_key(|fee| fee.effective_from);
    SubscriptionHistory {
        timing: (random.below(4) != 0).then_some(timing),
        fees,
    }
}

#[test]
fn movements_over_any_range_sum_to_ending_minus_starting_mrr() {
    let mut random = Lcg(20_261_207);
    for _ in 0..200 {
        let mut customer = CustomerHistory::default();
        for index in 0..random.below(4) {
            let id = format!("sub_{index}");
            let subscription = random_subscription(&mut random, &id);
            customer.subscriptions.insert(id, subscription);
        }
        let changes = customer.changes(Currency::USD).unwrap();
        let movements =
            tally_domain::finance::mrr::mrr_movements(&changes, chrono::TimeDelta::zero()).unwrap();
        for _ in 0..10 {
            let (first, second) = (random.day(), random.day());
            let (from, to) = (first.min(second), first.max(second));
            let moved: Decimal = movements
                .iter()
                .filter(|movement| from <= movement.at && movement.at < to)
                .map(|movement| movement.amount().unwrap().amount())
                .sum();
            let starting = mrr_before(Currency::USD, &changes, from).amount();
            let ending = mrr_before(Currency::USD, &changes, to).amount();
            // Exact to Decimal's last digit: thirds are kept to 28 digits and
            // their sums round there (the domain's MRR precision rule).
            assert!(
                (moved - (ending - starting)).abs() <= dec!(0.00000000000000000001),
                "{from} – {to}: {moved} ≠ {ending} − {starting}: {changes:?}"
            );
            // The history agrees with MRR computed at the instant.
            assert_eq!(
                mrr_before(
                    Currency::USD,
                    &changes,
                    to + chrono::TimeDelta::nanoseconds(1)
                ),
                customer.mrr_at(Currency::USD, to).unwrap(),
            );
        }
    }
}
