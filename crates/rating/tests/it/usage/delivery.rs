//! Delivery: redelivery, reordering, concurrent consumers and the bus.

use super::*;

#[tokio::test]
async fn redelivered_and_reordered_events_give_identical_charges() {
    let (mut in_order, _) = standard().await;
    let events = standard_events();
    rate(&in_order, &events).await;
    let expected = charges(&mut in_order, "sub_acme").await;

    let (mut shuffled, _) = standard().await;
    let mut reversed = events.clone();
    reversed.reverse();
    // Half, then everything twice in one batch (duplicates within and across batches).
    let first = rate(&shuffled, &reversed[..4]).await;
    assert_eq!(first.rated, 4);
    let mut twice = reversed.clone();
    twice.extend(events.iter().cloned());
    let second = rate(&shuffled, &twice).await;
    assert_eq!(second, summary(5, 13, 0));
    let again = rate(&shuffled, &events).await;
    assert_eq!(again, summary(0, 9, 0));

    let actual = charges(&mut shuffled, "sub_acme").await;
    assert_eq!(actual.charges, expected.charges);
    assert_eq!(actual.total, expected.total);
}

#[tokio::test]
async fn concurrent_consumers_count_each_event_once() {
    let (mut h, _) = standard().await;
    let events = standard_events();
    let mut reversed = events.clone();
    reversed.reverse();
    let first = h.rating.usage_consumer();
    let second = h.rating.usage_consumer();
    let (left, right) = tokio::join!(first.rate(&events), second.rate(&reversed));
    let (left, right) = (left.unwrap(), right.unwrap());
    assert_eq!(left.rated + right.rated, 9, "{left:?} {right:?}");
    assert_eq!(left.duplicates + right.duplicates, 9, "{left:?} {right:?}");
    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(amount(response.total.as_ref()), dec!(6.02));
}

#[tokio::test]
async fn the_consumers_rate_what_arrives_on_the_in_process_bus() {
    consumers_rate_what_arrives(harness().await).await;
}

#[tokio::test]
async fn the_consumers_rate_what_arrives_on_the_pubsub_emulator() {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    let bus =
        tally_bus::PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap()
            .with_lease_extension(std::time::Duration::from_secs(10));
    consumers_rate_what_arrives(harness_with(std::sync::Arc::new(bus)).await).await;
}

/// Half the usage before the subscription is known, the rest and a
/// redelivery of everything after, and one poison message: the totals are
/// exact and the poison message is dead-lettered with its reason.
async fn consumers_rate_what_arrives(mut h: Harness) {
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    let bus = h.rating.bus().clone();
    let watcher = tally_bus::SubscriptionConfig::ordered(
        "watch-rating-dead-letters",
        "rating-usage-accepted-dead-letter",
    );
    bus.ensure_topic(&watcher.topic).await.unwrap();
    bus.ensure_subscription(&watcher).await.unwrap();
    let mut dead_letters = bus.subscribe(&watcher.name).await.unwrap();
    let _tasks = h.rating.spawn_background(&h.shutdown);
    let events = standard_events();
    publish_usage(&bus, &events[..4]).await;
    let created = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    bus.publish(
        tally_bus::topics::SUBSCRIPTION_EVENTS,
        tally_bus::Message::new(
            tally_rating::replica::SUBSCRIPTION_EVENT_TYPE,
            1,
            created.encode_to_vec(),
        )
        .with_ordering_key("cus_acme"),
    )
    .await
    .unwrap();
    publish_usage(&bus, &events[4..]).await;
    publish_usage(&bus, &events).await;
    bus.publish(
        tally_bus::topics::USAGE_ACCEPTED,
        tally_bus::Message::new("tally.events.v1.Nonsense", 1, vec![1, 2, 3])
            .with_ordering_key("cus_poison"),
    )
    .await
    .unwrap();

    let mut last = None;
    for _ in 0..300 {
        if let Ok(response) = h
            .usage
            .get_usage_charges(GetUsageChargesRequest {
                subscription_id: "sub_acme".into(),
                period: Some(november()),
            })
            .await
        {
            let response = response.into_inner();
            let rated: u64 = response.charges.iter().map(|line| line.event_count).sum();
            if rated == 9 {
                last = Some(response);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let response = last.expect("the bus delivers the usage and the subscription");
    assert_eq!(amount(response.total.as_ref()), dec!(6.02));
    let unrated = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unrated.total_count, 0);
    assert_eq!(
        tally_rating::metrics::applied_events(&h.db.pool)
            .await
            .unwrap(),
        9,
        "tally.rating.applied_events counts each event once, however often it came"
    );
    let letter = tokio::time::timeout(std::time::Duration::from_secs(30), dead_letters.next())
        .await
        .expect("the poison message is dead-lettered")
        .unwrap()
        .unwrap();
    assert!(
        letter.message.attributes[tally_bus::message::ATTRIBUTE_DEAD_LETTER_REASON]
            .contains("Nonsense"),
        "{letter:?}"
    );
    letter.ack();
}

/// A rough throughput figure of the rating path (not a benchmark: debug
/// build, a test cluster). Run with `--ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn rating_throughput() {
    let (h, version) = standard().await;
    let customers = 100;
    for customer in 1..customers {
        h.rating
            .replica()
            .apply(&snapshot(
                &format!("sub_c{customer}"),
                &format!("cus_c{customer}"),
                1,
                at(1, 0, 0, 0),
                &[(&version, at(1, 0, 0, 0), None)],
            ))
            .await
            .unwrap();
    }
    let events: Vec<AcceptedEvent> = (0..20_000u64)
        .map(|seq| {
            let customer = format!("cus_c{}", 1 + seq % (customers - 1));
            let day = 1 + u32::try_from(seq % 28).unwrap();
            accepted(
                seq,
                &customer,
                &format!("e{seq}"),
                "llm.tokens",
                at(day, 0, 0, 0),
                &[("tokens", "12")],
            )
        })
        .collect();
    let consumer = h.rating.usage_consumer();
    let started = std::time::Instant::now();
    for batch in events.chunks(500) {
        consumer.rate(batch).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "rated {} events in {:?}: {:.0} events/s",
        events.len(),
        elapsed,
        events.len() as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_restart_in_the_middle_of_the_stream_loses_nothing() {
    let (mut h, _) = standard().await;
    let bus = h.rating.bus().clone();
    let first_run = tally_runtime::Shutdown::new();
    let tasks = h.rating.spawn_background(&first_run);
    let mut events = standard_events();
    // Many more events than the first run can rate before it is stopped.
    for n in 0..400u64 {
        events.push(accepted(
            100 + n,
            "cus_acme",
            &format!("more-{n}"),
            "api_calls",
            at(6, 0, 0, 0),
            &[],
        ));
    }
    publish_usage(&bus, &events).await;
    first_run.trigger();
    for task in tasks {
        task.await.unwrap();
    }
    // A new process on the same database and bus picks up what is left.
    let restarted = tally_rating::Rating::start(tally_rating::RatingDeps {
        pool: h.db.pool.clone(),
        bus,
        clock: std::sync::Arc::new(h.clock.clone()),
        ids: std::sync::Arc::new(tally_testkit::SequentialIds::default()),
        ingest: crate::support::no_ingest(),
    })
    .await
    .unwrap();
    let _tasks = restarted.spawn_background(&h.shutdown);
    let mut rated = 0;
    for _ in 0..300 {
        let response = charges(&mut h, "sub_acme").await;
        rated = response.charges.iter().map(|line| line.event_count).sum();
        if rated == 409 {
            // 405 calls: 3 × 0.10 + 402 × 0.05 = 20.40; exports 3.00; tokens 2.62.
            assert_eq!(amount(response.total.as_ref()), dec!(26.02));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("only {rated} of 409 events were rated after the restart");
}

/// Publishes `events` on `usage-accepted` as ingest's relay does.
async fn publish_usage(bus: &tally_bus::SharedBus, events: &[AcceptedEvent]) {
    for event in events {
        let message = tally_bus::Message::new(
            tally_rating::usage::consumer::USAGE_ACCEPTED_TYPE,
            1,
            event.accepted.clone(),
        )
        .with_id(format!("uacc_{}", event.sequence_number))
        .with_ordering_key(event.customer_id.clone());
        bus.publish(tally_bus::topics::USAGE_ACCEPTED, message)
            .await
            .unwrap();
    }
}
