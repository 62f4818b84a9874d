//! SubscriptionService and what rating learns from subscription-events.

use chrono::{DateTime, Utc};
use tally_proto::invoicing::*;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn every_change_reaches_rating_as_phases_in_version_order() {
    let mut h = harness(at(2025, 1, 10), config(0)).await;
    let basic = h
        .plan("basic", PlanSpec::advance("10.00").calls("0.01"))
        .await;
    let pro = h
        .plan("pro", PlanSpec::advance("20.00").calls("0.01"))
        .await;
    let customer = h.customer("acme").await;
    let request = CreateSubscriptionRequest {
        idempotency_key: "create-1".into(),
        customer_id: customer.clone(),
        plan_version_id: basic.clone(),
        start_at: Some(ts(at(2025, 1, 1))),
        ..Default::default()
    };
    let created = h
        .subscriptions
        .create_subscription(request.clone())
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(
        (created.version, created.status),
        (1, SubscriptionStatus::Active as i32)
    );
    // A replay returns the subscription; another request with the key is refused.
    let replay = h
        .subscriptions
        .create_subscription(request.clone())
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(replay.id, created.id);
    let mut changed = request;
    changed.plan_version_id = pro.clone();
    assert_eq!(
        h.subscriptions
            .create_subscription(changed)
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    let scheduled = h
        .subscriptions
        .change_plan(ChangePlanRequest {
            idempotency_key: "change-1".into(),
            subscription_id: created.id.clone(),
            plan_version_id: pro.clone(),
            timing: ChangeTiming::AtPeriodEnd as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(scheduled.version, 2);
    assert_eq!(
        scheduled.plan_version_id, basic,
        "the change waits for the period end"
    );
    h.subscriptions
        .pause_subscription(PauseSubscriptionRequest {
            idempotency_key: "pause-1".into(),
            subscription_id: created.id.clone(),
            pause_at: Some(ts(at(2025, 2, 10))),
            resume_at: Some(ts(at(2025, 2, 20))),
        })
        .await
        .unwrap();
    h.sync().await;
    let phases: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT plan_version_id, start_at, end_at FROM rating.subscription_phases WHERE subscription_id = $1 ORDER BY phase_index",
    )
    .bind(&created.id)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        phases,
        vec![
            (basic.clone(), at(2025, 1, 1), Some(at(2025, 2, 1))),
            (pro.clone(), at(2025, 2, 1), None)
        ]
    );
    // Rating keeps every pause window as [pause_at, resume_at] pairs.
    type Pauses = Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>;
    let (version, pauses): (i64, sqlx::types::Json<Pauses>) = sqlx::query_as(
        "SELECT version, pauses FROM rating.subscriptions WHERE subscription_id = $1",
    )
    .bind(&created.id)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (version, pauses.0),
        (3, vec![(at(2025, 2, 10), Some(at(2025, 2, 20)))])
    );
    // Usage inside the pause is not rated; usage before it is.
    h.calls(&customer, "before", 2, at(2025, 2, 5)).await;
    h.calls(&customer, "paused", 3, at(2025, 2, 12)).await;
    let (rated,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rating.rated_events WHERE customer_id = $1")
            .bind(&customer)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(rated, 2);
}

#[tokio::test]
async fn changes_are_validated() {
    let mut h = harness(at(2025, 3, 1), config(0)).await;
    let basic = h.plan("basic", PlanSpec::advance("10.00")).await;
    let customer = h.customer("acme").await;
    // Before the backdating window (30 days).
    let status = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            idempotency_key: "old".into(),
            customer_id: customer.clone(),
            plan_version_id: basic.clone(),
            start_at: Some(ts(at(2025, 1, 1))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("start_at"),
        "{}",
        status.message()
    );
    let status = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            idempotency_key: "missing".into(),
            customer_id: customer.clone(),
            plan_version_id: "pv_missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let subscription = h.subscribe(&customer, &basic, at(2025, 2, 1)).await;
    h.bill_at(at(2025, 3, 1)).await;
    // A backdated change into an invoiced period is refused.
    let status = h
        .subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: "cancel-old".into(),
            subscription_id: subscription.clone(),
            timing: ChangeTiming::AtTime as i32,
            effective_at: Some(ts(at(2025, 2, 20))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = h
        .subscriptions
        .resume_subscription(ResumeSubscriptionRequest {
            idempotency_key: "resume".into(),
            subscription_id: subscription.clone(),
            resume_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let canceled = h
        .subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: "cancel".into(),
            subscription_id: subscription.clone(),
            timing: ChangeTiming::Immediately as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(canceled.status, SubscriptionStatus::Canceled as i32);
    // Canceled right at the boundary that billed March in advance: March is
    // credited on that (finalized) invoice.
    let notes = h
        .invoices
        .list_credit_notes(ListCreditNotesRequest {
            customer_id: customer.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credit_notes;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].total.as_ref().unwrap().amount, "10.00");
    assert!(
        !notes[0].credited_to_balance,
        "the invoice is unpaid: the note reduces what is due"
    );
    let status = h
        .subscriptions
        .pause_subscription(PauseSubscriptionRequest {
            idempotency_key: "pause".into(),
            subscription_id: subscription,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn resuming_withdraws_a_scheduled_cancellation() {
    let mut h = harness(at(2025, 5, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("10.00")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 5, 1)).await;
    h.subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: "cancel".into(),
            subscription_id: subscription.clone(),
            timing: ChangeTiming::AtPeriodEnd as i32,
            reason: "too expensive".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    h.sync().await;
    assert_eq!(
        h.rating_phase_ends(&subscription).await,
        vec![Some(at(2025, 6, 1))],
        "rating stops at the cancellation"
    );
    let resumed = h.resume(&subscription).await;
    assert_eq!((resumed.cancel_at, resumed.version), (None, 3));
    h.sync().await;
    assert_eq!(
        h.rating_phase_ends(&subscription).await,
        vec![None],
        "and rates again after it"
    );
    h.bill_at(at(2025, 6, 1)).await;
    assert_eq!(
        h.invoice_table(&subscription).await.len(),
        2,
        "June is billed"
    );
}
