//! Invoices whose lines add up to less than zero: a cancellation or a
//! downgrade with proration credits more than the boundary bills. The credit
//! is carried to a credit grant, the invoice is finalized at zero, and billing
//! goes on (issue: a negative draft used to fail the bill run at every run).

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::invoicing::{
    CancelSubscriptionRequest, ChangeTiming, GetCreditBalanceRequest, ProrationPolicy,
};

use crate::support::*;

/// Every proration policy a request can name.
const POLICIES: [ProrationPolicy; 3] = [
    ProrationPolicy::Prorate,
    ProrationPolicy::ProrateByDay,
    ProrationPolicy::None,
];

async fn credit_balance(h: &mut Harness, customer: &str) -> String {
    h.credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: customer.into(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .available
        .unwrap()
        .amount
}

/// The totals of `subscription`'s invoices, oldest first.
async fn totals(h: &Harness, subscription: &str) -> Vec<(String, Decimal, Decimal, Decimal)> {
    h.invoice_table(subscription)
        .await
        .into_iter()
        .map(|row| (row.0, row.4, row.5, row.6))
        .collect()
}

/// Starter (31.00 in advance, from 1 January 2025) canceled on the 20th:
/// 12 of January's 31 days were paid and not used.
#[tokio::test]
async fn a_prorated_cancellation_becomes_a_credit_grant_and_billing_goes_on() {
    for policy in POLICIES {
        let mut h = harness(at(2025, 1, 1), config(0)).await;
        let starter = h.plan("starter", PlanSpec::advance("31.00")).await;
        let customer = h.customer("acme").await;
        let canceled = h.subscribe(&customer, &starter, at(2025, 1, 1)).await;
        // A second subscription of the same customer keeps billing and burns the credit.
        let other = h.subscribe(&customer, &starter, at(2025, 1, 1)).await;
        h.bill_at(at(2025, 1, 1)).await;
        h.clock.set(at(2025, 1, 20)).unwrap();
        let key = h.key();
        h.subscriptions
            .cancel_subscription(CancelSubscriptionRequest {
                idempotency_key: key,
                subscription_id: canceled.clone(),
                timing: ChangeTiming::Immediately as i32,
                proration_policy: policy as i32,
                reason: "moving on".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        h.bill_at(at(2025, 1, 20)).await;
        h.bill_at(at(2025, 2, 1)).await;
        h.bill_at(at(2025, 3, 1)).await;

        let carried = if policy == ProrationPolicy::None {
            // NONE keeps the fees paid for the rest of January: no end invoice.
            assert_eq!(
                totals(&h, &canceled).await,
                vec![("2025-01-01".into(), dec!(31.00), dec!(0), dec!(31.00))],
                "{policy:?}"
            );
            dec!(0)
        } else {
            assert_eq!(
                h.lines_at(&canceled, at(2025, 1, 20)).await,
                vec![
                    line("proration_credit", "01-01..01-20", dec!(-12.00)),
                    line("adjustment", "01-01..01-20", dec!(12.00)),
                ],
                "{policy:?}"
            );
            assert_eq!(
                totals(&h, &canceled).await,
                vec![
                    ("2025-01-01".into(), dec!(31.00), dec!(0), dec!(31.00)),
                    // Finalized at zero: the 12.00 went to a credit grant.
                    ("2025-01-20".into(), dec!(0), dec!(0), dec!(0)),
                ],
                "{policy:?}"
            );
            dec!(12.00)
        };
        // The other subscription is billed every period; February burns the carried credit.
        assert_eq!(
            totals(&h, &other).await,
            vec![
                ("2025-01-01".into(), dec!(31.00), dec!(0), dec!(31.00)),
                (
                    "2025-02-01".into(),
                    dec!(31.00),
                    -carried,
                    dec!(31.00) - carried
                ),
                ("2025-03-01".into(), dec!(31.00), dec!(0), dec!(31.00)),
            ],
            "{policy:?}"
        );
        assert_eq!(
            credit_balance(&mut h, &customer).await,
            "0.00",
            "{policy:?}"
        );
    }
}

/// Pro (93.00) downgraded to Starter (3.10) on 20 January: Pro's unused 12
/// days (36.00) are worth more than Starter's 12 days (1.20) and February's
/// fee (3.10) together, so the February invoice is negative (−31.70).
#[tokio::test]
async fn a_prorated_downgrade_carries_its_negative_total_and_later_periods_burn_it() {
    for policy in POLICIES {
        let mut h = harness(at(2025, 1, 1), config(0)).await;
        let pro = h.plan("pro", PlanSpec::advance("93.00")).await;
        let starter = h.plan("starter", PlanSpec::advance("3.10")).await;
        let customer = h.customer("acme").await;
        let subscription = h.subscribe(&customer, &pro, at(2025, 1, 1)).await;
        h.bill_at(at(2025, 1, 1)).await;
        h.clock.set(at(2025, 1, 20)).unwrap();
        h.change_plan(&subscription, &starter, ChangeTiming::Immediately, policy)
            .await;
        for month in 2..=4 {
            h.bill_at(at(2025, month, 1)).await;
        }
        if policy == ProrationPolicy::None {
            // January stays on Pro; Starter starts with February.
            assert_eq!(
                totals(&h, &subscription).await,
                vec![
                    ("2025-01-01".into(), dec!(93.00), dec!(0), dec!(93.00)),
                    ("2025-02-01".into(), dec!(3.10), dec!(0), dec!(3.10)),
                    ("2025-03-01".into(), dec!(3.10), dec!(0), dec!(3.10)),
                    ("2025-04-01".into(), dec!(3.10), dec!(0), dec!(3.10)),
                ],
                "{policy:?}"
            );
            assert_eq!(credit_balance(&mut h, &customer).await, "0.00");
            continue;
        }
        assert_eq!(
            h.lines_at(&subscription, at(2025, 2, 1)).await,
            vec![
                line("proration_credit", "01-01..02-01", dec!(-36.00)),
                line("proration_charge", "01-01..02-01", dec!(1.20)),
                line("recurring", "02-01..03-01", dec!(3.10)),
                line("adjustment", "01-01..02-01", dec!(31.70)),
            ],
            "{policy:?}"
        );
        assert_eq!(
            totals(&h, &subscription).await,
            vec![
                ("2025-01-01".into(), dec!(93.00), dec!(0), dec!(93.00)),
                ("2025-02-01".into(), dec!(0), dec!(0), dec!(0)),
                // March and April are paid from the carried 31.70.
                ("2025-03-01".into(), dec!(3.10), dec!(-3.10), dec!(0.00)),
                ("2025-04-01".into(), dec!(3.10), dec!(-3.10), dec!(0.00)),
            ],
            "{policy:?}"
        );
        assert_eq!(
            credit_balance(&mut h, &customer).await,
            "25.50",
            "{policy:?}"
        );
    }
}

/// With a grace period the negative invoice first waits as a draft (its total
/// below zero), then is finalized like any other. (The plans bill usage: an
/// invoice of fees only has no grace period and is finalized at once.)
#[tokio::test]
async fn a_negative_draft_waits_out_its_grace_period() {
    let mut h = harness(at(2025, 1, 1), config(24)).await;
    let pro = h
        .plan("pro", PlanSpec::advance("93.00").calls("0.10"))
        .await;
    let starter = h
        .plan("starter", PlanSpec::advance("3.10").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &pro, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 2)).await;
    h.clock.set(at(2025, 1, 20)).unwrap();
    h.change_plan(
        &subscription,
        &starter,
        ChangeTiming::Immediately,
        ProrationPolicy::Prorate,
    )
    .await;
    h.bill_at(at(2025, 2, 1)).await;
    let draft = h.invoice_table(&subscription).await;
    assert_eq!(draft[1].2, "draft");
    assert_eq!(draft[1].6, dec!(-31.70));
    h.bill_at(at(2025, 2, 2)).await;
    assert_eq!(
        totals(&h, &subscription).await[1],
        ("2025-02-01".into(), dec!(0), dec!(0), dec!(0))
    );
    assert_eq!(credit_balance(&mut h, &customer).await, "31.70");
}
