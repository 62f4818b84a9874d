//! Re-rating against a real ingest: events go in through `IngestBatch`,
//! reach rating over the bus, and a backdated subscription change is rebuilt
//! from ingest's `ReadEvents`.

use std::time::Duration;

use rust_decimal_macros::dec;
use tally_proto::events::UsageEvent;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};
use tally_proto::rating::*;
use tally_rating::replica::Applied;
use tally_rating::rerate::JobState;
use tonic::Code;
use tonic::transport::Channel;

use crate::usage::*;

fn call(id: &str, day: u32) -> UsageEvent {
    usage_event(id, "api_calls", day, &[])
}

fn tokens(id: &str, day: u32, count: &str) -> UsageEvent {
    usage_event(id, "llm.tokens", day, &[("tokens", count)])
}

fn usage_event(id: &str, event_type: &str, day: u32, properties: &[(&str, &str)]) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        customer_id: "cus_acme".into(),
        event_type: event_type.into(),
        timestamp: Some(ts(at(day, 10, 0, 0))),
        properties: properties
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        source: String::new(),
    }
}

async fn send(client: &mut IngestServiceClient<Channel>, events: Vec<UsageEvent>) {
    let results = client
        .ingest_batch(IngestBatchRequest { events })
        .await
        .unwrap()
        .into_inner()
        .results;
    for result in results {
        assert_eq!(result.outcome, EventOutcome::Accepted as i32, "{result:?}");
    }
}

/// Waits until `events` events are rated into the subscription's November lines.
async fn wait_rated(h: &mut Harness, subscription: &str, events: u64) -> GetUsageChargesResponse {
    let mut last = None;
    for _ in 0..200 {
        let response = charges(h, subscription).await;
        let rated: u64 = response.charges.iter().map(|line| line.event_count).sum();
        if rated == events {
            return response;
        }
        last = Some(rated);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{events} events were never rated (last count {last:?})");
}

async fn job(h: &mut Harness, job_id: &str) -> RerateJob {
    h.usage
        .get_rerate_job(GetRerateJobRequest {
            job_id: job_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
}

async fn wait_job(h: &mut Harness, job_id: &str) -> RerateJob {
    for _ in 0..200 {
        let job = job(h, job_id).await;
        if job.state == RerateJobState::Succeeded as i32
            || job.state == RerateJobState::Failed as i32
        {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("re-rate job {job_id} never finished");
}

/// Basic (calls 0.10, tokens 0.002) and pro (calls 0.04, tokens 0.001).
async fn two_plans(h: &mut Harness) -> (String, String) {
    meters(h).await;
    let basic = published(
        h,
        "basic",
        vec![
            per_unit("calls", "api_calls", "0.10"),
            per_unit("tokens", "llm.tokens", "0.002"),
        ],
    )
    .await;
    let pro = published(
        h,
        "pro",
        vec![
            per_unit("calls", "api_calls", "0.04"),
            per_unit("tokens", "llm.tokens", "0.001"),
        ],
    )
    .await;
    (basic, pro)
}

/// Eight calls (days 2–8 and 12–18) and 4,000 tokens (day 3 and 15).
fn november_usage() -> Vec<UsageEvent> {
    let mut events: Vec<UsageEvent> = [2, 4, 6, 8, 12, 14, 16, 18]
        .into_iter()
        .map(|day| call(&format!("call-{day}"), day))
        .collect();
    events.push(tokens("tok-3", 3, "1000"));
    events.push(tokens("tok-15", 15, "3000"));
    events
}

/// `(plan version, charge, quantity, amount)` of each line.
fn lines(response: &GetUsageChargesResponse) -> Vec<(String, String, String, String)> {
    response
        .charges
        .iter()
        .map(|line| {
            (
                line.plan_version_id.clone(),
                line.charge_key.clone(),
                line.quantity.as_ref().unwrap().value.clone(),
                line.amount.as_ref().unwrap().amount.clone(),
            )
        })
        .collect()
}

fn acme(version: u64, phases: &[PhaseSpec<'_>]) -> tally_proto::events::SubscriptionEvent {
    snapshot("sub_acme", "cus_acme", version, at(1, 0, 0, 0), phases)
}

#[tokio::test]
async fn a_backdated_plan_change_is_rerated_as_if_known_up_front() {
    let (mut h, mut ingest) = harness_with_ingest().await;
    let (basic, pro) = two_plans(&mut h).await;
    apply(&h, &acme(1, &[(&basic, at(1, 0, 0, 0), None)])).await;
    send(&mut ingest, november_usage()).await;
    let before = wait_rated(&mut h, "sub_acme", 10).await;
    assert_eq!(
        table(&before),
        vec![
            row("calls", dec!(8), dec!(0.80), dec!(0.80)),
            row("tokens", dec!(4000), dec!(8.000), dec!(8.00)),
        ]
    );

    // On the 21st, invoicing says the customer moved to pro on the 10th.
    let changed = [
        (basic.as_str(), at(1, 0, 0, 0), Some(at(10, 0, 0, 0))),
        (pro.as_str(), at(10, 0, 0, 0), None),
    ];
    let Applied::Applied {
        rerate_job_id: Some(job_id),
        ..
    } = apply(&h, &acme(2, &changed)).await
    else {
        panic!("a backdated change queues a re-rate");
    };
    let finished = wait_job(&mut h, &job_id).await;
    assert_eq!(
        finished.state,
        RerateJobState::Succeeded as i32,
        "{finished:?}"
    );
    assert_eq!(finished.events_replayed, 10);
    assert_eq!(finished.periods, vec![november()]);
    let after = wait_rated(&mut h, "sub_acme", 10).await;
    assert_eq!(
        table(&after),
        vec![
            row("calls", dec!(4), dec!(0.40), dec!(0.40)),
            row("tokens", dec!(1000), dec!(2.000), dec!(2.00)),
            row("calls", dec!(4), dec!(0.16), dec!(0.16)),
            row("tokens", dec!(3000), dec!(3.000), dec!(3.00)),
        ]
    );

    // The same catalog, the change known from the start, the same events.
    let (mut up_front, mut up_front_ingest) = harness_with_ingest().await;
    two_plans(&mut up_front).await;
    apply(&up_front, &acme(1, &changed)).await;
    send(&mut up_front_ingest, november_usage()).await;
    let expected = wait_rated(&mut up_front, "sub_acme", 10).await;
    assert_eq!(lines(&after), lines(&expected));
    assert_eq!(
        after.total.as_ref().unwrap().amount,
        expected.total.as_ref().unwrap().amount
    );

    // Usage arriving after the re-rate is rated under the new phases.
    send(&mut ingest, vec![call("call-19", 19)]).await;
    let late = wait_rated(&mut h, "sub_acme", 11).await;
    assert_eq!(
        table(&late)[2],
        row("calls", dec!(5), dec!(0.20), dec!(0.20))
    );

    // Re-rating what did not change changes nothing.
    let response = h
        .usage
        .rerate_subscription(RerateSubscriptionRequest {
            idempotency_key: "audit-1".into(),
            subscription_id: "sub_acme".into(),
            from: Some(ts(at(1, 0, 0, 0))),
            reason: "audit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let audit = wait_job(&mut h, &response.job.unwrap().id).await;
    assert_eq!(audit.state, RerateJobState::Succeeded as i32, "{audit:?}");
    assert_eq!(audit.events_replayed, 11);
    assert_eq!(lines(&charges(&mut h, "sub_acme").await), lines(&late));
}

#[tokio::test]
async fn a_backdated_cancellation_turns_later_usage_into_unrated_usage() {
    let (mut h, mut ingest) = harness_with_ingest().await;
    let (basic, _) = two_plans(&mut h).await;
    apply(&h, &acme(1, &[(&basic, at(1, 0, 0, 0), None)])).await;
    send(&mut ingest, vec![call("call-2", 2), call("call-12", 12)]).await;
    wait_rated(&mut h, "sub_acme", 2).await;

    let ended = [(basic.as_str(), at(1, 0, 0, 0), Some(at(10, 0, 0, 0)))];
    let Applied::Applied {
        rerate_job_id: Some(job_id),
        ..
    } = apply(&h, &acme(2, &ended)).await
    else {
        panic!("a backdated end queues a re-rate");
    };
    assert_eq!(
        wait_job(&mut h, &job_id).await.state,
        RerateJobState::Succeeded as i32
    );
    let after = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&after),
        vec![
            row("calls", dec!(1), dec!(0.10), dec!(0.10)),
            row("tokens", dec!(0), dec!(0), dec!(0.00)),
        ]
    );
    assert_eq!(
        unrated_reasons(&mut h).await,
        vec![("call-12".to_owned(), UnratedReason::NoSubscription as i32)]
    );
}

#[tokio::test]
async fn rerate_subscription_is_validated_idempotent_and_retried_while_ingest_is_down() {
    let (mut h, _) = standard().await;
    rate(&h, &standard_events()).await;
    let before = charges(&mut h, "sub_acme").await;
    let request = RerateSubscriptionRequest {
        idempotency_key: "fix-1".into(),
        subscription_id: "sub_acme".into(),
        from: Some(ts(at(1, 0, 0, 0))),
        reason: "catalog fix".into(),
    };

    let refused = [
        (
            RerateSubscriptionRequest {
                idempotency_key: String::new(),
                ..request.clone()
            },
            Code::InvalidArgument,
            "idempotency_key",
        ),
        (
            RerateSubscriptionRequest {
                from: None,
                ..request.clone()
            },
            Code::InvalidArgument,
            "from",
        ),
        (
            RerateSubscriptionRequest {
                subscription_id: "sub_nobody".into(),
                ..request.clone()
            },
            Code::NotFound,
            "subscription_id",
        ),
    ];
    for (bad, code, field) in refused {
        let status = h.usage.rerate_subscription(bad).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }

    let first = h
        .usage
        .rerate_subscription(request.clone())
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(first.state, RerateJobState::Pending as i32);
    let replay = h
        .usage
        .rerate_subscription(request.clone())
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(replay.id, first.id);
    let conflict = h
        .usage
        .rerate_subscription(RerateSubscriptionRequest {
            from: Some(ts(at(5, 0, 0, 0))),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");

    // Ingest is unreachable: the job stays pending with the error and the
    // aggregates are untouched.
    let outcome = h.rating.rerate_worker().run_next().await.unwrap();
    assert!(
        matches!(outcome, Some(tally_rating::rerate::JobOutcome::Retrying(_))),
        "{outcome:?}"
    );
    let pending = job(&mut h, &first.id).await;
    assert_eq!(pending.state, JobState::Pending as i32);
    assert!(pending.error.contains("ingest"), "{pending:?}");
    assert_eq!(charges(&mut h, "sub_acme").await, before);
    // Not due again before its backoff.
    assert!(h.rating.rerate_worker().run_next().await.unwrap().is_none());
}
