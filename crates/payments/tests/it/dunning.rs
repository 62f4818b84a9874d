//! Dunning: retries on the schedule, then the final policy, each step an event.

use std::time::Duration;

use chrono::Duration as Days;
use rust_decimal_macros::dec;
use tally_payments::dunning::Dunning;
use tally_payments::ledger::Book;
use tally_proto::events::payment_event::Kind;
use tally_proto::payments::{PaymentStatus, RetryPaymentRequest};
use wiremock::Mock;
use wiremock::matchers::{method, path};

use crate::fixtures;
use crate::stripe_mocks::{self, respond};
use crate::support::*;

fn dunning(harness: &Harness) -> Dunning {
    Dunning::new(harness.payments.core().clone(), Duration::from_secs(60))
}

async fn declined_invoice(harness: &Harness) {
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 2_000).await;
    stripe_mocks::pay_declined(&harness.stripe).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "20.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
}

fn kinds(events: &[tally_proto::events::PaymentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match &event.kind {
            Some(Kind::Failed(failed)) => format!("failed#{}", failed.attempt_number),
            Some(Kind::DunningStep(step)) => format!("step{}:{}", step.step, step.action),
            Some(Kind::Uncollectible(end)) => {
                format!(
                    "uncollectible(attempts {}, cancel {})",
                    end.attempts, end.cancel_subscription
                )
            }
            Some(Kind::Succeeded(succeeded)) => format!("succeeded#{}", succeeded.attempt_number),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn dunning_retries_on_schedule_then_gives_up() {
    let harness = harness().await;
    declined_invoice(&harness).await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices/in_1Acme/mark_uncollectible"))
        .respond_with(respond(
            200,
            fixtures::invoice(
                STRIPE_INVOICE,
                "inv_000001",
                "uncollectible",
                "usd",
                2000,
                0,
                3,
                Some(PAYMENT_INTENT),
                None,
            ),
        ))
        .mount(&harness.stripe)
        .await;
    let scheduler = dunning(&harness);

    // Nothing is due before the first retry day.
    harness.clock.advance(Days::hours(23)).unwrap();
    assert_eq!(scheduler.run_due_steps().await.unwrap(), 0);
    harness.clock.advance(Days::hours(1)).unwrap();
    assert_eq!(scheduler.run_due_steps().await.unwrap(), 1, "day 1: retry");
    assert_eq!(
        scheduler.run_due_steps().await.unwrap(),
        0,
        "a step is taken once"
    );
    harness.clock.advance(Days::days(2)).unwrap();
    assert_eq!(scheduler.run_due_steps().await.unwrap(), 1, "day 3: retry");
    harness.clock.advance(Days::days(1)).unwrap();
    assert_eq!(
        scheduler.run_due_steps().await.unwrap(),
        0,
        "day 4: nothing"
    );
    harness.clock.advance(Days::days(1)).unwrap();
    assert_eq!(
        scheduler.run_due_steps().await.unwrap(),
        1,
        "day 5: give up"
    );

    let keys: Vec<String> = harness.keys("/v1/invoices/in_1Acme/pay").await;
    assert_eq!(
        keys,
        vec![
            "tally:invoice:inv_000001:pay:1",
            "tally:invoice:inv_000001:pay:2",
            "tally:invoice:inv_000001:pay:3"
        ]
    );
    assert_eq!(
        harness
            .stripe_requests("POST", "/v1/invoices/in_1Acme/mark_uncollectible")
            .await
            .len(),
        1
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Uncollectible);
    assert_eq!(payment.attempts.len(), 3);
    assert_eq!(payment.dunning_step, 3);
    assert!(payment.next_retry_at.is_none());
    assert_eq!(
        kinds(&harness.payment_events().await),
        vec![
            "failed#1",
            "failed#2",
            "step1:retry",
            "failed#3",
            "step2:retry",
            "step3:mark_uncollectible",
            "uncollectible(attempts 3, cancel true)",
        ]
    );
    let events = harness.payment_events().await;
    let Some(Kind::DunningStep(first)) = &events[2].kind else {
        panic!()
    };
    assert_eq!(
        first.next_step_at.as_ref().unwrap().seconds,
        (start_time() + Days::days(3)).timestamp()
    );
    assert_eq!(harness.usd(Book::Receivable).await, dec!(0));
    assert_eq!(harness.usd(Book::BadDebt).await, dec!(20.00));
    // Nothing further is scheduled.
    harness.clock.advance(Days::days(30)).unwrap();
    assert_eq!(scheduler.run_due_steps().await.unwrap(), 0);

    // Each step taken is one audit entry by `dunning`, the payment before and after.
    let steps = dunning_entries(&harness).await;
    let listed: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|entry| {
            (
                entry.action.as_str(),
                entry.actor_id.as_str(),
                entry.comment.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "payment.dunning_retried",
                "dunning",
                "step 1, attempt 2: failed"
            ),
            (
                "payment.dunning_retried",
                "dunning",
                "step 2, attempt 3: failed"
            ),
            (
                "payment.dunning_gave_up",
                "dunning",
                "step 3, attempt 3: uncollectible"
            ),
        ]
    );
    let state = |text: Option<&String>| -> serde_json::Value {
        serde_json::from_str(text.unwrap()).unwrap()
    };
    assert_eq!(state(steps[2].before_state.as_ref())["status"], "failed");
    assert_eq!(
        state(steps[2].after_state.as_ref())["status"],
        "uncollectible"
    );
    for entry in &steps {
        assert_eq!(entry.resource_id, payment.id);
    }
}

/// Payments' audit entries of dunning steps, oldest first.
async fn dunning_entries(harness: &Harness) -> Vec<tally_audit::StoredEntry> {
    let filter = tally_audit::Filter {
        actor_id: Some("dunning".into()),
        ..Default::default()
    };
    let (entries, _) = tally_audit::list(
        &harness.db.pool,
        &[tally_audit::Schema::Payments],
        &filter,
        None,
        100,
    )
    .await
    .unwrap();
    entries
}

#[tokio::test]
async fn a_successful_retry_ends_dunning() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 2_000).await;
    stripe_mocks::pay_declined_once(&harness.stripe).await;
    stripe_mocks::pay_succeeds(&harness.stripe, "inv_000001", "usd", 2_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "20.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();

    harness.clock.advance(Days::days(1)).unwrap();
    assert_eq!(dunning(&harness).run_due_steps().await.unwrap(), 1);
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert!(payment.next_retry_at.is_none());
    assert_eq!(
        kinds(&harness.payment_events().await),
        vec!["failed#1", "succeeded#2", "step1:retry"]
    );
    harness.clock.advance(Days::days(10)).unwrap();
    assert_eq!(dunning(&harness).run_due_steps().await.unwrap(), 0);
    let steps = dunning_entries(&harness).await;
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].action, "payment.dunning_retried");
    assert_eq!(
        steps[0].comment.as_deref(),
        Some("step 1, attempt 2: succeeded")
    );
}

#[tokio::test]
async fn the_background_scheduler_wakes_when_the_clock_moves() {
    let harness = harness().await;
    declined_invoice(&harness).await;
    let scheduler = Dunning::new(harness.payments.core().clone(), Duration::from_secs(3600));
    let task = tokio::spawn(scheduler.run(harness.shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    harness.clock.advance(Days::days(1)).unwrap();
    let started = std::time::Instant::now();
    while harness
        .stripe_requests("POST", "/v1/invoices/in_1Acme/pay")
        .await
        .len()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the retry never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    harness.shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test]
async fn retry_payment_charges_now_once_per_key() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 2_000).await;
    stripe_mocks::pay_declined_once(&harness.stripe).await;
    stripe_mocks::pay_succeeds(&harness.stripe, "inv_000001", "usd", 2_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "20.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let failed = harness.payment_of("inv_000001").await;
    let mut client = harness.client.clone();
    let retry = |key: &str, payment_id: &str| RetryPaymentRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
    };

    let retried = client
        .retry_payment(retry("retry-1", &failed.id))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(retried.status(), PaymentStatus::Succeeded);
    assert_eq!(retried.attempts.len(), 2);
    let replay = client
        .retry_payment(retry("retry-1", &failed.id))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(replay.attempts.len(), 2);
    let keys: Vec<String> = harness.keys("/v1/invoices/in_1Acme/pay").await;
    assert_eq!(
        keys,
        vec![
            "tally:invoice:inv_000001:pay:1",
            "tally:invoice:inv_000001:pay:2"
        ]
    );
    let conflict = client
        .retry_payment(retry("retry-1", "pay_999999"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
    let settled = client
        .retry_payment(retry("retry-2", &failed.id))
        .await
        .unwrap_err();
    assert_eq!(settled.code(), tonic::Code::FailedPrecondition);
    assert!(
        settled.message().contains("is succeeded, not failed"),
        "{}",
        settled.message()
    );
    // Dunning has nothing left to do.
    harness.clock.advance(Days::days(10)).unwrap();
    assert_eq!(dunning(&harness).run_due_steps().await.unwrap(), 0);
}
