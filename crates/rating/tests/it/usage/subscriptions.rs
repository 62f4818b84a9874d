//! Subscriptions and unrated usage: snapshots by version, backdating, pauses,
//! and every reason usage is held.

use super::*;

#[tokio::test]
async fn usage_without_a_subscription_is_kept_and_rated_when_a_backdated_one_arrives() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    let late = vec![
        accepted(1, "cus_late", "l1", "api_calls", at(3, 0, 0, 0), &[]),
        accepted(
            2,
            "cus_late",
            "l2",
            "llm.tokens",
            at(4, 0, 0, 0),
            &[("tokens", "100")],
        ),
        accepted(3, "cus_late", "l3", "api_calls", at(5, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &late).await, summary(0, 0, 3));
    // Redelivery keeps one row per event.
    assert_eq!(rate(&h, &late).await.unrated, 3);

    let first_page = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            customer_id: "cus_late".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.total_count, 3);
    assert_eq!(first_page.unrated_usage.len(), 2);
    assert!(!first_page.next_page_token.is_empty());
    let second_page = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            customer_id: "cus_late".into(),
            page_size: 2,
            page_token: first_page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.unrated_usage.len(), 1);
    assert!(second_page.next_page_token.is_empty());
    let mut ids: Vec<String> = first_page
        .unrated_usage
        .iter()
        .chain(&second_page.unrated_usage)
        .map(|unrated| {
            assert_eq!(unrated.reason, UnratedReason::UnknownCustomer as i32);
            unrated.event_id.clone()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["l1", "l2", "l3"]);
    let tokens = first_page
        .unrated_usage
        .iter()
        .chain(&second_page.unrated_usage)
        .find(|unrated| unrated.event_id == "l2")
        .unwrap();
    assert_eq!(tokens.event_type, "llm.tokens");
    assert_eq!(
        tokens.properties.get("tokens").map(String::as_str),
        Some("100")
    );
    assert_eq!(tokens.sequence_number, 2);
    assert_eq!(tokens.timestamp, Some(ts(at(4, 0, 0, 0))));
    // The gauge behind the "usage that will not be billed" alert: every
    // reason, zero included.
    let held = tally_rating::metrics::unrated_events(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(held.len(), 6, "{held:?}");
    assert!(
        held.contains(&(UnratedReason::UnknownCustomer, 3)),
        "{held:?}"
    );
    assert!(
        held.contains(&(UnratedReason::NoSubscription, 0)),
        "{held:?}"
    );

    // The subscription is created on the 21st, backdated to the 1st.
    let applied = apply(
        &h,
        &snapshot(
            "sub_late",
            "cus_late",
            1,
            at(1, 0, 0, 0),
            &[(&version, at(1, 0, 0, 0), None)],
        ),
    )
    .await;
    assert_eq!(
        applied,
        Applied::Applied {
            retried: summary(3, 0, 0),
            rerate_job_id: None,
        }
    );
    let left = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.total_count, 0, "{left:?}");
    let held = tally_rating::metrics::unrated_events(&h.db.pool)
        .await
        .unwrap();
    assert!(held.iter().all(|(_, count)| *count == 0), "{held:?}");
    let response = charges(&mut h, "sub_late").await;
    assert_eq!(
        table(&response),
        vec![
            row("api_requests", dec!(2), dec!(0.20), dec!(0.20)),
            // A charge without usage still has its (zero) line.
            row("exports", dec!(0), dec!(0), dec!(0)),
            row("tokens", dec!(100), dec!(0.21), dec!(0.21)),
        ]
    );
    // The same events delivered again now are duplicates.
    assert_eq!(rate(&h, &late).await.duplicates, 3);
}

#[tokio::test]
async fn each_reason_for_unrated_usage_is_named() {
    let mut h = harness().await;
    meters(&mut h).await;
    h.meter(meter_request("orphan", Aggregation::Count, ""))
        .await;
    let version = published(&mut h, "standard", standard_charges()).await;
    apply(
        &h,
        &snapshot(
            "sub_acme",
            "cus_acme",
            1,
            at(10, 0, 0, 0),
            &[(&version, at(10, 0, 0, 0), None)],
        ),
    )
    .await;
    let events = vec![
        accepted(1, "cus_acme", "early", "api_calls", at(5, 0, 0, 0), &[]),
        accepted(2, "cus_acme", "orphan", "orphan", at(12, 0, 0, 0), &[]),
        accepted(
            3,
            "cus_acme",
            "bad",
            "llm.tokens",
            at(12, 0, 0, 0),
            &[("tokens", "lots")],
        ),
        accepted(4, "cus_acme", "missing", "llm.tokens", at(12, 0, 0, 0), &[]),
        accepted(
            5,
            "cus_other",
            "stranger",
            "api_calls",
            at(12, 0, 0, 0),
            &[],
        ),
        accepted(6, "cus_acme", "fine", "api_calls", at(12, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &events).await, summary(1, 0, 5));
    let reasons = unrated_reasons(&mut h).await;
    assert_eq!(
        reasons,
        vec![
            ("bad".to_owned(), UnratedReason::InvalidProperty as i32),
            ("early".to_owned(), UnratedReason::NoSubscription as i32),
            ("missing".to_owned(), UnratedReason::InvalidProperty as i32),
            ("orphan".to_owned(), UnratedReason::NoMatchingCharge as i32),
            ("stranger".to_owned(), UnratedReason::UnknownCustomer as i32),
        ]
    );
    let only_invalid = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            reason: UnratedReason::InvalidProperty as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_invalid.total_count, 2);
    let bad_token = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            page_token: "meters:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn snapshots_apply_by_version_whatever_the_delivery_order() {
    let mut h = harness().await;
    meters(&mut h).await;
    let basic = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    let pro = published(&mut h, "pro", vec![per_unit("calls", "api_calls", "0.02")]).await;
    let created = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&basic, at(1, 0, 0, 0), None)],
    );
    let upgraded = snapshot(
        "sub_acme",
        "cus_acme",
        2,
        at(1, 0, 0, 0),
        &[(&pro, at(1, 0, 0, 0), None)],
    );
    assert!(matches!(
        apply(&h, &upgraded).await,
        Applied::Applied { .. }
    ));
    assert_eq!(
        apply(&h, &created).await,
        Applied::Stale { stored_version: 2 }
    );
    assert_eq!(
        apply(&h, &upgraded).await,
        Applied::Stale { stored_version: 2 }
    );
    rate(
        &h,
        &[accepted(
            1,
            "cus_acme",
            "a",
            "api_calls",
            at(2, 0, 0, 0),
            &[],
        )],
    )
    .await;
    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(response.charges.len(), 1);
    assert_eq!(response.charges[0].plan_version_id, pro);

    let broken = SubscriptionEvent {
        subscription: None,
        ..created
    };
    let error = h.rating.replica().apply(&broken).await.unwrap_err();
    assert!(
        matches!(error, tally_rating::RatingError::InvalidArgument(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn usage_while_paused_or_after_the_end_is_not_billed_until_a_snapshot_covers_it() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    let mut paused = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    if let Some(subscription) = paused.subscription.as_mut() {
        subscription.pause = Some(tally_proto::invoicing::PauseWindow {
            pause_at: Some(ts(at(10, 0, 0, 0))),
            resume_at: Some(ts(at(12, 0, 0, 0))),
        });
        subscription.cancel_at = Some(ts(at(25, 0, 0, 0)));
    }
    apply(&h, &paused).await;
    let events = vec![
        accepted(1, "cus_acme", "before", "api_calls", at(9, 23, 0, 0), &[]),
        accepted(2, "cus_acme", "paused", "api_calls", at(11, 0, 0, 0), &[]),
        accepted(3, "cus_acme", "resumed", "api_calls", at(12, 0, 0, 0), &[]),
        accepted(4, "cus_acme", "ended", "api_calls", at(26, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &events).await, summary(2, 0, 2));
    let held = unrated_reasons(&mut h).await;
    assert_eq!(
        held,
        vec![
            ("ended".to_owned(), UnratedReason::NoSubscription as i32),
            ("paused".to_owned(), UnratedReason::NoSubscription as i32),
        ]
    );
    // The pause and the cancellation are withdrawn: both events are rated.
    let resumed = snapshot(
        "sub_acme",
        "cus_acme",
        2,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    // It also changes how rated usage after the old end is rated: a re-rate
    // is queued (nothing ran it here, and it would change nothing).
    let Applied::Applied {
        retried,
        rerate_job_id,
    } = apply(&h, &resumed).await
    else {
        panic!("the snapshot is newer");
    };
    assert_eq!(retried, summary(2, 0, 0));
    assert!(rerate_job_id.is_some());
    assert_eq!(
        table(&charges(&mut h, "sub_acme").await),
        vec![row("calls", dec!(4), dec!(0.04), dec!(0.04))]
    );
}

#[tokio::test]
async fn a_rated_event_redelivered_after_a_backdated_pause_stays_rated_once() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    subscribe_acme(&h, &version).await;
    let call = accepted(1, "cus_acme", "call", "api_calls", at(11, 0, 0, 0), &[]);
    assert_eq!(
        rate(&h, std::slice::from_ref(&call)).await,
        summary(1, 0, 0)
    );
    let mut paused = snapshot(
        "sub_acme",
        "cus_acme",
        2,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    if let Some(subscription) = paused.subscription.as_mut() {
        subscription.pause = Some(tally_proto::invoicing::PauseWindow {
            pause_at: Some(ts(at(10, 0, 0, 0))),
            resume_at: None,
        });
    }
    apply(&h, &paused).await;
    // The redelivery is unratable now, but it was rated: a duplicate, not
    // unrated usage (the re-rate job, not the consumer, moves rated usage).
    assert_eq!(rate(&h, &[call]).await, summary(0, 1, 0));
    assert!(unrated_reasons(&mut h).await.is_empty());
}

#[tokio::test]
async fn usage_in_every_pause_window_stays_unbilled() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    let window = |from: u32, to: u32| tally_proto::invoicing::PauseWindow {
        pause_at: Some(ts(at(from, 0, 0, 0))),
        resume_at: Some(ts(at(to, 0, 0, 0))),
    };
    let mut first = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    if let Some(subscription) = first.subscription.as_mut() {
        subscription.pause = Some(window(5, 7));
        subscription.pauses = vec![window(5, 7)];
    }
    apply(&h, &first).await;
    // A second pause: the snapshot's `pause` is the latest window only.
    let mut second = first.clone();
    second.version = 2;
    if let Some(subscription) = second.subscription.as_mut() {
        subscription.version = 2;
        subscription.pause = Some(window(15, 16));
        subscription.pauses = vec![window(5, 7), window(15, 16)];
    }
    apply(&h, &second).await;
    let events = vec![
        accepted(
            1,
            "cus_acme",
            "first-pause",
            "api_calls",
            at(6, 0, 0, 0),
            &[],
        ),
        accepted(2, "cus_acme", "between", "api_calls", at(10, 0, 0, 0), &[]),
        accepted(
            3,
            "cus_acme",
            "second-pause",
            "api_calls",
            at(15, 12, 0, 0),
            &[],
        ),
    ];
    assert_eq!(rate(&h, &events).await, summary(1, 0, 2));
    assert_eq!(
        unrated_reasons(&mut h).await,
        vec![
            (
                "first-pause".to_owned(),
                UnratedReason::NoSubscription as i32
            ),
            (
                "second-pause".to_owned(),
                UnratedReason::NoSubscription as i32
            ),
        ]
    );
}

#[tokio::test]
async fn the_rating_status_of_events_is_rated_unrated_or_pending() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    apply(
        &h,
        &snapshot(
            "sub_acme",
            "cus_acme",
            1,
            at(1, 0, 0, 0),
            &[(&version, at(1, 0, 0, 0), None)],
        ),
    )
    .await;
    let events = vec![
        accepted(1, "cus_acme", "rated", "api_calls", at(5, 0, 0, 0), &[]),
        accepted(
            2,
            "cus_acme",
            "bad",
            "llm.tokens",
            at(5, 0, 0, 0),
            &[("tokens", "abc")],
        ),
    ];
    assert_eq!(rate(&h, &events).await, summary(1, 0, 1));
    let status = async |h: &mut Harness, customer: &str, ids: &[&str]| {
        h.usage
            .get_event_rating_status(GetEventRatingStatusRequest {
                customer_id: customer.into(),
                event_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            })
            .await
    };
    // In request order; an id rating never saw is pending.
    let statuses = status(&mut h, "cus_acme", &["bad", "rated", "unseen"])
        .await
        .unwrap()
        .into_inner()
        .statuses;
    let states: Vec<(&str, i32)> = statuses
        .iter()
        .map(|status| (status.event_id.as_str(), status.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("bad", EventRatingState::Unrated as i32),
            ("rated", EventRatingState::Rated as i32),
            ("unseen", EventRatingState::Pending as i32),
        ]
    );
    assert_eq!(statuses[0].reason, UnratedReason::InvalidProperty as i32);
    assert!(statuses[0].detail.contains("tokens"), "{statuses:?}");
    assert_eq!(statuses[1].reason, UnratedReason::Unspecified as i32);
    // Ids are per customer.
    let other = status(&mut h, "cus_other", &["rated"])
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(other[0].state, EventRatingState::Pending as i32);
    // No customer, no ids, too many ids: refused.
    let too_many: Vec<String> = (0..1001).map(|index| format!("e{index}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    for (customer, ids) in [
        ("", &["rated"][..]),
        ("cus_acme", &[][..]),
        ("cus_acme", &too_many[..]),
    ] {
        let refused = status(&mut h, customer, ids).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
}
