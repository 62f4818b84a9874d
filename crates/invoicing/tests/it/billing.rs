//! Bill runs driven by the manual clock through months, with exact cents.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::invoicing::{
    CancelSubscriptionRequest, ChangeTiming, CreditGrantKind, GetCreditBalanceRequest,
    ListCreditLedgerEntriesRequest, PauseSubscriptionRequest, ProrationPolicy, SubscriptionStatus,
};
use tally_proto::rating::BillingTiming;

use crate::support::*;

const ADVANCE: BillingTiming = BillingTiming::InAdvance;

#[tokio::test]
async fn anchor_on_the_31st_through_a_leap_february() {
    let mut h = harness(at(2024, 1, 31), config(0)).await;
    let plan = h
        .plan("pro", PlanSpec::advance("29.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2024, 1, 31)).await;
    h.bill_at(at(2024, 1, 31)).await;
    h.calls(&customer, "feb", 5, at(2024, 2, 10)).await;
    h.bill_at(at(2024, 2, 29)).await;
    h.calls(&customer, "mar", 3, at(2024, 3, 15)).await;
    h.bill_at(at(2024, 3, 31)).await;
    h.bill_at(at(2024, 4, 30)).await;
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2024-01-31",
                "2024-01-31..2024-02-29",
                "finalized",
                "TALLY-000001",
                dec!(29.00),
                dec!(0),
                dec!(29.00)
            ),
            row(
                "2024-02-29",
                "2024-01-31..2024-02-29",
                "finalized",
                "TALLY-000002",
                dec!(29.50),
                dec!(0),
                dec!(29.50)
            ),
            row(
                "2024-03-31",
                "2024-02-29..2024-03-31",
                "finalized",
                "TALLY-000003",
                dec!(29.30),
                dec!(0),
                dec!(29.30)
            ),
            row(
                "2024-04-30",
                "2024-03-31..2024-04-30",
                "finalized",
                "TALLY-000004",
                dec!(29.00),
                dec!(0),
                dec!(29.00)
            ),
        ]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2024, 2, 29)).await,
        vec![
            line("usage", "01-31..02-29", dec!(0.50)),
            line("recurring", "02-29..03-31", dec!(29.00))
        ]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2024, 4, 30)).await,
        vec![
            line("usage", "03-31..04-30", dec!(0.00)),
            line("recurring", "04-30..05-31", dec!(29.00))
        ]
    );
    // Listed newest period first, two per page.
    let mut numbers = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .invoices
            .list_invoices(tally_proto::invoicing::ListInvoicesRequest {
                subscription_id: subscription.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        numbers.extend(page.invoices.into_iter().map(|invoice| invoice.number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        numbers,
        [
            "TALLY-000004",
            "TALLY-000003",
            "TALLY-000002",
            "TALLY-000001"
        ]
    );
    // What a finalized invoice billed cannot change, not even by hand.
    for statement in [
        "UPDATE invoicing.invoices SET total = 0 WHERE number = 'TALLY-000001'",
        "DELETE FROM invoicing.invoice_lines WHERE invoice_id = (SELECT id FROM invoicing.invoices WHERE number = 'TALLY-000001')",
        "DELETE FROM invoicing.invoices WHERE number = 'TALLY-000001'",
    ] {
        let refused = sqlx::query(statement)
            .execute(&h.db.pool)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("immutable")
                || refused.to_string().contains("never deleted"),
            "{refused}"
        );
    }
    // A second run at the same instant bills nothing twice.
    let again = h.bill_at(at(2024, 4, 30)).await;
    assert_eq!((again.invoices_created, again.invoices_finalized), (0, 0));
}

/// A subscription on Basic (31.00 in advance) from 1 January 2025, billed
/// once, with Pro (62.00) published: (harness, basic, pro, subscription).
async fn on_basic_with_pro() -> (Harness, String, String, String) {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let basic = h.plan("basic", PlanSpec::advance("31.00")).await;
    let pro = h.plan("pro", PlanSpec::advance("62.00")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &basic, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    (h, basic, pro, subscription)
}

#[tokio::test]
async fn upgrade_with_proration_and_downgrade_without() {
    let (mut h, basic, pro, subscription) = on_basic_with_pro().await;
    h.clock.set(at(2025, 1, 11)).unwrap();
    h.change_plan(
        &subscription,
        &pro,
        ChangeTiming::Immediately,
        ProrationPolicy::Prorate,
    )
    .await;
    h.bill_at(at(2025, 2, 1)).await;
    h.clock.set(at(2025, 2, 15)).unwrap();
    h.change_plan(
        &subscription,
        &basic,
        ChangeTiming::Immediately,
        ProrationPolicy::None,
    )
    .await;
    h.bill_at(at(2025, 3, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 2, 1)).await,
        vec![
            line("proration_credit", "01-01..02-01", dec!(-21.00)),
            line("proration_charge", "01-01..02-01", dec!(42.00)),
            line("recurring", "02-01..03-01", dec!(62.00)),
        ]
    );
    // Each explains itself: Basic's unused 21 of 31 days, Pro's used ones.
    assert_eq!(
        h.prorations_at(&subscription, at(2025, 2, 1)).await,
        vec![
            line("proration_credit", "01-11..02-01", dec!(0.6774)),
            line("proration_charge", "01-11..02-01", dec!(0.6774)),
        ]
    );
    // NONE: February stays on Pro; Basic's fee starts with March.
    assert_eq!(
        h.lines_at(&subscription, at(2025, 3, 1)).await,
        vec![line("recurring", "03-01..04-01", dec!(31.00))]
    );
    let totals: Vec<Decimal> = h
        .invoice_table(&subscription)
        .await
        .into_iter()
        .map(|row| row.6)
        .collect();
    assert_eq!(totals, vec![dec!(31.00), dec!(83.00), dec!(31.00)]);
}

#[tokio::test]
async fn a_trial_converts_and_its_usage_is_billed() {
    let mut h = harness(at(2025, 3, 1), config(0)).await;
    let plan = h
        .plan(
            "trial",
            PlanSpec {
                fee: Some(("20.00", ADVANCE)),
                per_call: Some("0.10"),
                trial_days: 14,
                ..Default::default()
            },
        )
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 3, 1)).await;
    h.bill_at(at(2025, 3, 1)).await;
    h.calls(&customer, "trial", 4, at(2025, 3, 5)).await;
    h.clock.set(at(2025, 3, 10)).unwrap();
    assert_eq!(
        h.subscription(&subscription).await.status,
        SubscriptionStatus::Trialing as i32
    );
    h.bill_at(at(2025, 3, 15)).await;
    assert_eq!(
        h.subscription(&subscription).await.status,
        SubscriptionStatus::Active as i32
    );
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![row(
            "2025-03-15",
            "2025-03-01..2025-03-15",
            "finalized",
            "TALLY-000001",
            dec!(20.40),
            dec!(0),
            dec!(20.40)
        )]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2025, 3, 15)).await,
        vec![
            line("usage", "03-01..03-15", dec!(0.40)),
            line("recurring", "03-15..04-15", dec!(20.00))
        ]
    );
}

#[tokio::test]
async fn a_pause_credits_its_days_and_a_cancellation_at_period_end_stops_billing() {
    let mut h = harness(at(2025, 4, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("30.00")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 4, 1)).await;
    h.bill_at(at(2025, 4, 1)).await;
    let key = h.key();
    h.subscriptions
        .pause_subscription(PauseSubscriptionRequest {
            idempotency_key: key,
            subscription_id: subscription.clone(),
            pause_at: Some(ts(at(2025, 4, 11))),
            resume_at: Some(ts(at(2025, 4, 21))),
        })
        .await
        .unwrap();
    h.bill_at(at(2025, 5, 1)).await;
    h.clock.set(at(2025, 5, 10)).unwrap();
    let key = h.key();
    let canceled = h
        .subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: key,
            subscription_id: subscription.clone(),
            timing: ChangeTiming::AtPeriodEnd as i32,
            reason: "moving on".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(canceled.cancel_at, Some(ts(at(2025, 6, 1))));
    h.bill_at(at(2025, 6, 1)).await;
    h.bill_at(at(2025, 7, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 5, 1)).await,
        vec![
            line("proration_credit", "04-01..05-01", dec!(-10.00)),
            line("recurring", "05-01..06-01", dec!(30.00))
        ]
    );
    // The credit names the paused days: 10 of 30.
    assert_eq!(
        h.prorations_at(&subscription, at(2025, 5, 1)).await,
        vec![line("proration_credit", "04-11..04-21", dec!(0.3333))]
    );
    // The period after the cancellation was paid in advance: nothing more to bill.
    assert_eq!(h.invoice_table(&subscription).await.len(), 2);
    let (rating_cancel,): (Option<chrono::DateTime<chrono::Utc>>,) = sqlx::query_as(
        "SELECT max(end_at) FROM rating.subscription_phases WHERE subscription_id = $1",
    )
    .bind(&subscription)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        rating_cancel,
        Some(at(2025, 6, 1)),
        "rating cuts the phases at the cancellation"
    );
}

#[tokio::test]
async fn credits_burn_in_order_and_expire() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("40.00")).await;
    let customer = h.customer("acme").await;
    for (kind, amount, priority, expires) in [
        (
            CreditGrantKind::Promotional,
            "50.00",
            1,
            Some(at(2025, 1, 15)),
        ),
        (CreditGrantKind::Prepaid, "100.00", 2, None),
    ] {
        h.grant(&customer, kind, amount, priority, expires).await;
    }
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    h.bill_at(at(2025, 2, 1)).await;
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2025-01-01",
                "2025-01-01..2025-02-01",
                "paid",
                "TALLY-000001",
                dec!(40.00),
                dec!(-40.00),
                dec!(0.00)
            ),
            row(
                "2025-02-01",
                "2025-01-01..2025-02-01",
                "paid",
                "TALLY-000002",
                dec!(40.00),
                dec!(-40.00),
                dec!(0.00)
            ),
        ]
    );
    let entries = h
        .credits
        .list_credit_ledger_entries(ListCreditLedgerEntriesRequest {
            customer_id: customer.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let amounts: Vec<(i32, String, String)> = entries
        .iter()
        .map(|entry| {
            (
                entry.kind,
                entry.amount.clone().unwrap().amount,
                entry.balance_after.clone().unwrap().amount,
            )
        })
        .collect();
    assert_eq!(
        amounts,
        vec![
            (1, "50.00".into(), "50.00".into()),
            (1, "100.00".into(), "150.00".into()),
            (2, "-40.00".into(), "110.00".into()),
            (3, "-10.00".into(), "100.00".into()),
            (2, "-40.00".into(), "60.00".into()),
        ]
    );
    let balance = h
        .credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: customer.clone(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.available.unwrap().amount, "60.00");
    // The balance at an earlier instant comes from the ledger: after January's
    // burn, before the promotional grant expired.
    let earlier = h
        .credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: customer.clone(),
            as_of: Some(ts(at(2025, 1, 10))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(earlier.available.unwrap().amount, "110.00");
    assert_eq!(earlier.grants.len(), 2);
    // Paid by credits: `finalized`, then `paid` as a newer snapshot.
    let payloads: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT payload FROM invoicing.outbox WHERE topic = 'invoice-events' ORDER BY seq LIMIT 2",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let kinds: Vec<(bool, u64)> = payloads
        .iter()
        .map(|(bytes,)| {
            let event =
                <tally_proto::events::InvoiceEvent as prost::Message>::decode(bytes.as_slice())
                    .unwrap();
            let paid = matches!(
                event.kind,
                Some(tally_proto::events::invoice_event::Kind::Paid(_))
            );
            (paid, event.invoice.unwrap().version)
        })
        .collect();
    assert_eq!(kinds, vec![(false, 2), (true, 3)]);
    // Every transaction balances (the domain refuses to build one that does not).
    let (unbalanced,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM invoicing.ledger_transactions t WHERE (SELECT sum(CASE WHEN e->>'side' = 'debit' \
           THEN (e->'amount'->>'amount')::numeric ELSE -(e->'amount'->>'amount')::numeric END) \
           FROM jsonb_array_elements(t.body->'entries') e) <> 0",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
}

#[tokio::test]
async fn minimum_commitment_true_up() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h
        .plan(
            "usage",
            PlanSpec {
                per_call: Some("0.10"),
                minimum: Some("5.00"),
                ..Default::default()
            },
        )
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    h.calls(&customer, "jan", 10, at(2025, 1, 20)).await;
    h.bill_at(at(2025, 2, 1)).await;
    h.calls(&customer, "feb", 60, at(2025, 2, 20)).await;
    h.bill_at(at(2025, 3, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 2, 1)).await,
        vec![
            line("usage", "01-01..02-01", dec!(1.00)),
            line("minimum_true_up", "01-01..02-01", dec!(4.00))
        ]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2025, 3, 1)).await,
        vec![line("usage", "02-01..03-01", dec!(6.00))]
    );
}

#[tokio::test]
async fn late_usage_updates_the_draft_then_becomes_an_adjustment() {
    let mut h = harness(at(2025, 1, 1), config(24)).await;
    let plan = h
        .plan(
            "usage",
            PlanSpec {
                per_call: Some("0.10"),
                ..Default::default()
            },
        )
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.calls(&customer, "jan", 10, at(2025, 1, 20)).await;
    h.bill_at(at(2025, 2, 1)).await;
    h.calls(&customer, "late", 5, at(2025, 1, 31)).await;
    let inside = h
        .bill_at(at(2025, 2, 1) + chrono::Duration::hours(12))
        .await;
    assert_eq!(inside.invoices_updated, 1);
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![row(
            "2025-02-01",
            "2025-01-01..2025-02-01",
            "draft",
            "",
            dec!(1.50),
            dec!(0),
            dec!(1.50)
        )]
    );
    h.bill_at(at(2025, 2, 2)).await;
    h.calls(&customer, "later", 2, at(2025, 1, 31)).await;
    h.bill_at(at(2025, 3, 2)).await;
    let january = h.invoice_at(&subscription, at(2025, 2, 1)).await;
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2025-02-01",
                "2025-01-01..2025-02-01",
                "finalized",
                "TALLY-000001",
                dec!(1.50),
                dec!(0),
                dec!(1.50)
            ),
            row(
                "2025-03-01",
                "2025-02-01..2025-03-01",
                "finalized",
                "TALLY-000002",
                dec!(0.20),
                dec!(0),
                dec!(0.20)
            ),
        ]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2025, 3, 1)).await,
        vec![
            line("usage", "02-01..03-01", dec!(0.00)),
            line("adjustment", "01-01..02-01", dec!(0.20))
        ]
    );
    let (original,): (Option<String>,) = sqlx::query_as(
        "SELECT original_invoice_id FROM invoicing.invoice_lines WHERE kind = 'adjustment'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(original, Some(january));
}

#[tokio::test]
async fn two_replicas_bill_each_period_once_with_gapless_numbers() {
    let h = harness(at(2025, 1, 1), config(0)).await;
    let mut h = h;
    let plan = h.plan("basic", PlanSpec::advance("10.00")).await;
    for index in 0..12 {
        let customer = h.customer(&format!("customer-{index}")).await;
        h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    }
    let other = invoicing_on(
        &h.db,
        &h.clock,
        &h.bus,
        &h.ids,
        &h.rating_address,
        config(0),
    )
    .await;
    for month in [1, 2, 3, 4] {
        h.clock.set(at(2025, month, 1)).unwrap();
        h.sync().await;
        let (left, right) = tokio::join!(h.invoicing.bill_run(), other.bill_run());
        let (left, right) = (left.unwrap(), right.unwrap());
        assert_eq!(
            left.invoices_created + right.invoices_created,
            12,
            "{left:?} {right:?}"
        );
    }
    let (invoices, distinct, max_number): (i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (subscription_id, boundary_at)), max(number) FROM invoicing.invoices",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!((invoices, distinct), (48, 48));
    assert_eq!(
        max_number.as_deref(),
        Some("TALLY-000048"),
        "numbers 1..=48 with no gap"
    );
}

#[tokio::test]
async fn an_anchor_after_the_start_bills_a_prorated_first_period() {
    let mut h = harness(at(2025, 1, 15), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("31.00")).await;
    let customer = h.customer("acme").await;
    let key = h.key();
    let subscription = h
        .subscriptions
        .create_subscription(tally_proto::invoicing::CreateSubscriptionRequest {
            idempotency_key: key,
            customer_id: customer,
            plan_version_id: plan,
            start_at: Some(ts(at(2025, 1, 15))),
            billing_anchor_at: Some(ts(at(2025, 2, 1))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
        .id;
    h.bill_at(at(2025, 1, 15)).await;
    h.bill_at(at(2025, 2, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 1, 15)).await,
        vec![line("proration_charge", "01-15..02-01", dec!(17.00))]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2025, 2, 1)).await,
        vec![line("recurring", "02-01..03-01", dec!(31.00))]
    );
}

#[tokio::test]
async fn a_failed_subscription_rolls_back_alone_and_numbers_stay_gapless() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h
        .plan("basic", PlanSpec::advance("10.00").calls("0.01"))
        .await;
    let first = h.customer("first").await;
    let second = h.customer("second").await;
    let billed = h.subscribe(&first, &plan, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    // The second subscription's snapshot has not reached rating when the run
    // comes (its outbox row is not relayed): its start is billed (in-advance
    // fees need no usage), the end of January waits for rating.
    let delayed = h.subscribe(&second, &plan, at(2025, 1, 1)).await;
    h.clock.set(at(2025, 2, 1)).unwrap();
    let run = h.invoicing.bill_run().await.unwrap();
    assert_eq!((run.invoices_created, run.failures), (2, 1), "{run:?}");
    assert_eq!(
        h.invoice_table(&delayed)
            .await
            .into_iter()
            .map(|row| row.0)
            .collect::<Vec<_>>(),
        vec!["2025-01-01"],
        "nothing of the deferred period is left"
    );
    // The next run, once rating has it, bills it with the next number.
    h.bill_at(at(2025, 2, 1)).await;
    let numbers: Vec<String> = [
        h.invoice_table(&billed).await,
        h.invoice_table(&delayed).await,
    ]
    .concat()
    .into_iter()
    .map(|row| row.3)
    .collect();
    assert_eq!(
        numbers,
        vec![
            "TALLY-000001",
            "TALLY-000002",
            "TALLY-000003",
            "TALLY-000004"
        ]
    );
    assert_eq!(
        h.invoice_table(&delayed).await.len(),
        2,
        "its start and its first period end"
    );
}

#[tokio::test]
async fn an_error_in_a_batch_fails_only_its_subscription() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h
        .plan("basic", PlanSpec::advance("10.00").calls("0.01"))
        .await;
    let mut subscriptions = Vec::new();
    for name in ["first", "second", "third"] {
        let customer = h.customer(name).await;
        subscriptions.push(h.subscribe(&customer, &plan, at(2025, 1, 1)).await);
    }
    h.bill_at(at(2025, 1, 1)).await;
    // The second customer's row cannot be read any more (a stand-in for
    // any error of one item): billing it fails in the middle of the batch.
    // (Not rating losing the subscription: a redelivered snapshot could
    // bring it back while the test runs.)
    sqlx::query(
        "UPDATE invoicing.customers SET snapshot = '\\xffff'::bytea WHERE id = \
         (SELECT customer_id FROM invoicing.subscriptions WHERE id = $1)",
    )
    .bind(&subscriptions[1])
    .execute(&h.db.pool)
    .await
    .unwrap();
    h.clock.set(at(2025, 2, 1)).unwrap();
    let run = h.invoicing.bill_run().await.unwrap();
    assert_eq!((run.invoices_created, run.failures), (2, 1), "{run:?}");
    // The failure is named: the subscription, its customer and why.
    let (customer,): (String,) =
        sqlx::query_as("SELECT customer_id FROM invoicing.subscriptions WHERE id = $1")
            .bind(&subscriptions[1])
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    let [failure] = run.failed.as_slice() else {
        panic!("one named failure: {run:?}");
    };
    assert_eq!(
        (
            &failure.subscription_id,
            &failure.customer_id,
            &failure.invoice_id
        ),
        (&subscriptions[1], &customer, &None)
    );
    assert!(!failure.reason.is_empty(), "{failure:?}");
    let mut numbers = Vec::new();
    for subscription in &subscriptions {
        numbers.extend(
            h.invoice_table(subscription)
                .await
                .into_iter()
                .map(|row| (row.0, row.3)),
        );
    }
    numbers.sort_by(|left, right| left.1.cmp(&right.1));
    assert_eq!(
        numbers,
        vec![
            ("2025-01-01".to_owned(), "TALLY-000001".to_owned()),
            ("2025-01-01".to_owned(), "TALLY-000002".to_owned()),
            ("2025-01-01".to_owned(), "TALLY-000003".to_owned()),
            ("2025-02-01".to_owned(), "TALLY-000004".to_owned()),
            ("2025-02-01".to_owned(), "TALLY-000005".to_owned()),
        ],
        "the others are billed, numbers stay gapless"
    );
    assert_eq!(
        h.invoice_table(&subscriptions[1]).await.len(),
        1,
        "nothing of the failed period is left"
    );
}

#[tokio::test]
async fn an_indefinite_pause_ends_when_resumed() {
    let mut h = harness(at(2025, 6, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("30.00")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 6, 1)).await;
    h.bill_at(at(2025, 6, 1)).await;
    h.clock.set(at(2025, 6, 11)).unwrap();
    let key = h.key();
    h.subscriptions
        .pause_subscription(PauseSubscriptionRequest {
            idempotency_key: key,
            subscription_id: subscription.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.subscription(&subscription).await.status,
        SubscriptionStatus::Paused as i32
    );
    h.clock.set(at(2025, 6, 26)).unwrap();
    let resumed = h.resume(&subscription).await;
    assert_eq!(
        (resumed.status, resumed.version),
        (SubscriptionStatus::Active as i32, 3)
    );
    assert_eq!(resumed.pause.unwrap().resume_at, Some(ts(at(2025, 6, 26))));
    assert_eq!(resumed.pauses.len(), 1, "every window is in the snapshot");
    h.bill_at(at(2025, 7, 1)).await;
    // June: 30 days, 15 of them paused.
    assert_eq!(
        h.lines_at(&subscription, at(2025, 7, 1)).await,
        vec![
            line("proration_credit", "06-01..07-01", dec!(-15.00)),
            line("recurring", "07-01..08-01", dec!(30.00))
        ]
    );
}

#[tokio::test]
async fn usage_arriving_in_the_second_month_after_its_period_is_still_billed_once() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h.plan("usage", PlanSpec::default().calls("0.10")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.calls(&customer, "jan", 10, at(2025, 1, 20)).await;
    h.bill_at(at(2025, 2, 1)).await;
    h.bill_at(at(2025, 3, 1)).await;
    // Within ingest's 35-day backfill window, a January event arrives in March.
    h.clock.set(at(2025, 3, 5)).unwrap();
    h.calls(&customer, "very-late", 3, at(2025, 1, 31)).await;
    h.bill_at(at(2025, 4, 1)).await;
    h.bill_at(at(2025, 5, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 4, 1)).await,
        vec![
            line("usage", "03-01..04-01", dec!(0.00)),
            line("adjustment", "01-01..02-01", dec!(0.30))
        ]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2025, 5, 1)).await,
        vec![line("usage", "04-01..05-01", dec!(0.00))],
        "adjusted once"
    );
}

#[tokio::test]
async fn fees_in_arrears_are_billed_for_what_was_used() {
    let mut h = harness(at(2025, 3, 1), config(0)).await;
    let plan = h
        .plan(
            "arrears",
            PlanSpec {
                fee: Some(("30.00", BillingTiming::InArrears)),
                ..Default::default()
            },
        )
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 3, 1)).await;
    h.bill_at(at(2025, 3, 1)).await;
    h.bill_at(at(2025, 4, 1)).await;
    h.clock.set(at(2025, 4, 11)).unwrap();
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
    h.bill_at(at(2025, 4, 11)).await;
    h.bill_at(at(2025, 5, 1)).await;
    // Nothing is billed at the start; March in full at its end; 10 of April's 30 days at the end.
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2025-04-01",
                "2025-03-01..2025-04-01",
                "finalized",
                "TALLY-000001",
                dec!(30.00),
                dec!(0),
                dec!(30.00)
            ),
            row(
                "2025-04-11",
                "2025-04-01..2025-04-11",
                "finalized",
                "TALLY-000002",
                dec!(10.00),
                dec!(0),
                dec!(10.00)
            ),
        ]
    );
    assert_eq!(
        h.lines_at(&subscription, at(2025, 4, 11)).await,
        vec![line("proration_charge", "04-01..04-11", dec!(10.00))]
    );
}

#[tokio::test]
async fn a_change_at_period_end_bills_the_new_fee_from_the_next_period() {
    let (mut h, basic, pro, subscription) = on_basic_with_pro().await;
    h.clock.set(at(2025, 1, 15)).unwrap();
    h.change_plan(
        &subscription,
        &pro,
        ChangeTiming::AtPeriodEnd,
        ProrationPolicy::Prorate,
    )
    .await;
    assert_eq!(h.subscription(&subscription).await.plan_version_id, basic);
    h.bill_at(at(2025, 2, 1)).await;
    assert_eq!(h.subscription(&subscription).await.plan_version_id, pro);
    assert_eq!(
        h.lines_at(&subscription, at(2025, 2, 1)).await,
        vec![line("recurring", "02-01..03-01", dec!(62.00))]
    );
}

#[tokio::test]
async fn a_bill_run_killed_half_way_leaves_nothing_half_done() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h
        .plan("basic", PlanSpec::advance("10.00").calls("0.01"))
        .await;
    for index in 0..30 {
        let customer = h.customer(&format!("customer-{index}")).await;
        h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    }
    h.bill_at(at(2025, 1, 1)).await;
    h.clock.set(at(2025, 2, 1)).unwrap();
    h.sync().await;
    // A replica dies in the middle of its run (its transactions are dropped).
    let invoicing = h.invoicing.clone();
    let doomed = tokio::spawn(async move { invoicing.bill_run().await });
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    doomed.abort();
    let _ = doomed.await;
    let (halfway,): (i64,) = sqlx::query_as("SELECT count(*) FROM invoicing.invoices")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    // Another run finishes the job.
    h.bill_at(at(2025, 2, 1)).await;
    let (invoices, boundaries, numbers, top): (i64, i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (subscription_id, boundary_at)), count(DISTINCT number), max(number) \
         FROM invoicing.invoices",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(halfway >= 30, "January's invoices were there before");
    assert_eq!((invoices, boundaries, numbers), (60, 60, 60));
    assert_eq!(
        top.as_deref(),
        Some("TALLY-000060"),
        "no number lost to the killed run"
    );
    let (unbalanced,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM invoicing.invoices i WHERE i.subtotal <> \
           (SELECT coalesce(sum(l.amount), 0) FROM invoicing.invoice_lines l \
            WHERE l.invoice_id = i.id AND l.kind <> 'credits_applied')",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        unbalanced, 0,
        "every invoice's lines add up to its subtotal"
    );
}
