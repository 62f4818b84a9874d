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

