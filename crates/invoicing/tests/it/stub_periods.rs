//! Periods that start between two anchor dates: a trial whose end is the
//! billing anchor, a start on the 16th with the anchor on the 1st. The first
//! period is a stub, and everything about it — the current period a client
//! sees, the fee, the minimum commitment — covers the stub only.

use rust_decimal_macros::dec;
use tally_proto::common::TimeRange;
use tally_proto::invoicing::SubscriptionStatus;
use tally_proto::rating::BillingTiming;

use crate::support::*;

fn range(start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) -> TimeRange {
    TimeRange {
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
    }
}

/// A 5-day trial created at its start instant (1 April) is anchored on its
/// end (6 April): the current period is 1 → 6 April, not the cycle's
/// 6 March → 6 April (issue: it started weeks before the subscription).
#[tokio::test]
async fn a_trial_created_at_its_start_reports_a_current_period_from_the_start() {
    let mut h = harness(at(2026, 4, 1), config(0)).await;
    let plan = h
        .plan(
            "trial",
            PlanSpec {
                fee: Some(("20.00", BillingTiming::InAdvance)),
                per_call: Some("0.10"),
                trial_days: 5,
                ..Default::default()
            },
        )
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2026, 4, 1)).await;
    let created = h.subscription(&subscription).await;
    assert_eq!(created.status, SubscriptionStatus::Trialing as i32);
    assert_eq!(created.billing_anchor_at, Some(ts(at(2026, 4, 6))));
    assert_eq!(
        created.current_period,
        Some(range(at(2026, 4, 1), at(2026, 4, 6)))
    );
    // Nothing is billed for the trial at the start.
    h.bill_at(at(2026, 4, 1)).await;
    assert!(h.invoice_table(&subscription).await.is_empty());
    h.calls(&customer, "trial", 3, at(2026, 4, 3)).await;
    h.clock.set(at(2026, 4, 5)).unwrap();
    assert_eq!(
        h.subscription(&subscription).await.current_period,
        Some(range(at(2026, 4, 1), at(2026, 4, 6)))
    );
    h.bill_at(at(2026, 4, 6)).await;
    let converted = h.subscription(&subscription).await;
    assert_eq!(converted.status, SubscriptionStatus::Active as i32);
    assert_eq!(
        converted.current_period,
        Some(range(at(2026, 4, 6), at(2026, 5, 6)))
    );
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![row(
            "2026-04-06",
            "2026-04-01..2026-04-06",
            "finalized",
            "TALLY-000001",
            dec!(20.30),
            dec!(0),
            dec!(20.30)
        )]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2026, 4, 6)).await,
        vec![
            line("usage", "04-01..04-06", dec!(0.30)),
            line("recurring", "04-06..05-06", dec!(20.00))
        ]
    );
}

/// A start on 16 January with the anchor on the 1st: the first period is the
/// stub 16 January → 1 February, 16 of January's 31 days. The fee (31.00)
/// and the minimum commitment (10.00) are both prorated to it (issue: the
/// minimum covered the whole month and charged the full shortfall). A
/// cancellation on 11 March makes March a stub at the other end: 10 of 31 days.
#[tokio::test]
async fn a_stub_period_prorates_the_minimum_commitment_like_the_fee() {
    use tally_proto::invoicing::invoice_line::Detail;
    use tally_proto::invoicing::{CancelSubscriptionRequest, ChangeTiming};

    let mut h = harness(at(2025, 1, 16), config(0)).await;
    let plan = h
        .plan(
            "committed",
            PlanSpec {
                fee: Some(("31.00", BillingTiming::InAdvance)),
                per_call: Some("0.10"),
                minimum: Some("10.00"),
                ..Default::default()
            },
        )
        .await;
    let customer = h.customer("acme").await;
    let key = h.key();
    let subscription = h
        .subscriptions
        .create_subscription(tally_proto::invoicing::CreateSubscriptionRequest {
            idempotency_key: key,
            customer_id: customer.clone(),
            plan_version_id: plan,
            start_at: Some(ts(at(2025, 1, 16))),
            billing_anchor_at: Some(ts(at(2025, 2, 1))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
        .id;
    h.bill_at(at(2025, 1, 16)).await;
    h.calls(&customer, "jan", 20, at(2025, 1, 20)).await;
    h.bill_at(at(2025, 2, 1)).await;
    h.calls(&customer, "feb", 60, at(2025, 2, 10)).await;
    h.bill_at(at(2025, 3, 1)).await;
    h.calls(&customer, "mar", 1, at(2025, 3, 5)).await;
    h.clock.set(at(2025, 3, 11)).unwrap();
    let key = h.key();
    h.subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: key,
            subscription_id: subscription.clone(),
            timing: ChangeTiming::Immediately as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    h.bill_at(at(2025, 3, 11)).await;

    assert_eq!(
        h.lines_at(&subscription, at(2025, 1, 16)).await,
        vec![line("proration_charge", "01-16..02-01", dec!(16.00))]
    );
    // 16/31 of 10.00 is 5.16 (exact minor units, as the fee's 16.00);
    // 2.00 of usage leaves 3.16, not the 8.00 of a whole month.
    assert_eq!(
        h.lines_at(&subscription, at(2025, 2, 1)).await,
        vec![
            line("usage", "01-16..02-01", dec!(2.00)),
            line("minimum_true_up", "01-16..02-01", dec!(3.16)),
            line("recurring", "02-01..03-01", dec!(31.00)),
        ]
    );
    // A full period owes the full minimum: 6.00 of usage, 4.00 more.
    assert_eq!(
        h.lines_at(&subscription, at(2025, 3, 1)).await,
        vec![
            line("usage", "02-01..03-01", dec!(6.00)),
            line("minimum_true_up", "02-01..03-01", dec!(4.00)),
            line("recurring", "03-01..04-01", dec!(31.00)),
        ]
    );
    // Canceled on 11 March: 10/31 of the minimum is 3.23, less 0.10 of
    // usage; 21 unused days of the fee come back. The negative total goes
    // to a credit grant.
    assert_eq!(
        h.lines_at(&subscription, at(2025, 3, 11)).await,
        vec![
            line("proration_credit", "03-01..03-11", dec!(-21.00)),
            // (rating names the whole billing period on the usage line)
            line("usage", "03-01..04-01", dec!(0.10)),
            line("minimum_true_up", "03-01..03-11", dec!(3.13)),
            line("adjustment", "03-01..03-11", dec!(17.77)),
        ]
    );
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2025-01-16",
                "2025-01-16..2025-02-01",
                "finalized",
                "TALLY-000001",
                dec!(16.00),
                dec!(0),
                dec!(16.00)
            ),
            row(
                "2025-02-01",
                "2025-01-16..2025-02-01",
                "finalized",
                "TALLY-000002",
                dec!(36.16),
                dec!(0),
                dec!(36.16)
            ),
            row(
                "2025-03-01",
                "2025-02-01..2025-03-01",
                "finalized",
                "TALLY-000003",
                dec!(41.00),
                dec!(0),
                dec!(41.00)
            ),
            row(
                "2025-03-11",
                "2025-03-01..2025-03-11",
                "paid",
                "TALLY-000004",
                dec!(0),
                dec!(0),
                dec!(0)
            ),
        ]
    );
    // The line explains the proration: which minimum, which stretch, what factor.
    let invoice_id = h.invoice_at(&subscription, at(2025, 2, 1)).await;
    let invoice = h.invoice(&invoice_id).await;
    let minimum = invoice
        .lines
        .iter()
        .find_map(|line| match &line.detail {
            Some(Detail::MinimumTrueUp(detail)) => Some((line.description.clone(), detail.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(minimum.0, "Minimum commitment true-up (prorated)");
    let detail = minimum.1;
    assert_eq!(detail.minimum_commitment, usd("10.00"));
    assert_eq!(detail.prorated_minimum, usd("5.16"));
    assert_eq!(detail.charges_total, usd("2.00"));
    assert_eq!(
        detail.full_period,
        Some(range(at(2025, 1, 1), at(2025, 2, 1)))
    );
    assert_eq!(
        detail.prorated_period,
        Some(range(at(2025, 1, 16), at(2025, 2, 1)))
    );
    let factor: rust_decimal::Decimal = detail.factor.unwrap().value.parse().unwrap();
    assert_eq!(factor, dec!(16) / dec!(31));
}
