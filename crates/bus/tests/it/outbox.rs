//! The outbox publishes exactly what was committed; the inbox makes redelivery harmless.

use std::sync::Arc;
use std::time::Duration;

use tally_bus::inbox::{self, ServiceSchema};
use tally_bus::outbox::{self, OutboxRelay};
use tally_bus::{InProcessBus, SharedBus, SubscriptionConfig};

use crate::support::{next, numbered};

async fn bus_with_subscription() -> (SharedBus, Box<dyn tally_bus::MessageStream>) {
    let bus: SharedBus = Arc::new(InProcessBus::new());
    bus.ensure_topic("usage-accepted").await.unwrap();
    let config = SubscriptionConfig::ordered("rating-usage", "usage-accepted");
    bus.ensure_subscription(&config).await.unwrap();
    let stream = bus.subscribe(&config.name).await.unwrap();
    (bus, stream)
}

#[tokio::test]
async fn committed_messages_are_relayed_in_order_and_rolled_back_ones_never() {
    let database = tally_testkit::postgres::database().await;
    let (bus, mut stream) = bus_with_subscription().await;

    let mut committed = Vec::new();
    let mut transaction = database.pool.begin().await.unwrap();
    for number in 0..5 {
        let message = numbered("cus_1", number);
        outbox::enqueue(
            &mut transaction,
            ServiceSchema::Ingest,
            "usage-accepted",
            &message,
        )
        .await
        .unwrap();
        committed.push(message);
    }
    transaction.commit().await.unwrap();

    let mut rolled_back = database.pool.begin().await.unwrap();
    outbox::enqueue(
        &mut rolled_back,
        ServiceSchema::Ingest,
        "usage-accepted",
        &numbered("cus_1", 99),
    )
    .await
    .unwrap();
    rolled_back.rollback().await.unwrap();

    let relay = OutboxRelay::new(
        database.pool.clone(),
        ServiceSchema::Ingest,
        Arc::clone(&bus),
    );
    assert_eq!(relay.relay_once().await.unwrap(), 5);
    assert_eq!(
        relay.relay_once().await.unwrap(),
        0,
        "published rows are not sent again"
    );
    assert_eq!(relay.lag_seconds().await.unwrap(), 0.0);

    for expected in &committed {
        let delivery = next(&mut stream).await;
        assert_eq!(
            &delivery.message, expected,
            "exactly the committed message, in order"
        );
        delivery.ack();
    }
    let nothing_more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(
        nothing_more.is_err(),
        "the rolled-back message was never published"
    );
}

#[tokio::test]
async fn a_crash_after_publishing_republishes_the_same_id_and_the_inbox_absorbs_it() {
    let database = tally_testkit::postgres::database().await;
    let (bus, mut stream) = bus_with_subscription().await;
    let message = numbered("cus_2", 1);
    let mut connection = database.pool.acquire().await.unwrap();
    outbox::enqueue(
        &mut connection,
        ServiceSchema::Ingest,
        "usage-accepted",
        &message,
    )
    .await
    .unwrap();
    drop(connection);

    let relay = OutboxRelay::new(
        database.pool.clone(),
        ServiceSchema::Ingest,
        Arc::clone(&bus),
    );
    relay.relay_once().await.unwrap();
    // Simulate a crash between publishing and marking the row published.
    sqlx::query("UPDATE ingest.outbox SET published_at = NULL")
        .execute(&database.pool)
        .await
        .unwrap();
    assert!(
        relay.lag_seconds().await.unwrap() > 0.0,
        "an unpublished row has waited"
    );
    relay.relay_once().await.unwrap();

    let mut applied = 0;
    for _ in 0..2 {
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.message.id, message.id, "a republish keeps the id");
        let mut transaction = database.pool.begin().await.unwrap();
        if inbox::record_once(
            &mut transaction,
            ServiceSchema::Rating,
            "rating-usage",
            &delivery.message.id,
        )
        .await
        .unwrap()
        {
            applied += 1;
        }
        transaction.commit().await.unwrap();
        delivery.ack();
    }
    assert_eq!(applied, 1, "the effect happened once");
}

#[tokio::test]
async fn relay_publishes_after_a_bus_outage() {
    let database = tally_testkit::postgres::database().await;
    let bus: SharedBus = Arc::new(InProcessBus::new());
    let mut connection = database.pool.acquire().await.unwrap();
    outbox::enqueue(
        &mut connection,
        ServiceSchema::Invoicing,
        "invoice-events",
        &numbered("cus_3", 1),
    )
    .await
    .unwrap();
    let relay = OutboxRelay::new(
        database.pool.clone(),
        ServiceSchema::Invoicing,
        Arc::clone(&bus),
    );
    // The topic does not exist yet: nothing is marked published.
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    bus.ensure_topic("invoice-events").await.unwrap();
    assert_eq!(relay.relay_once().await.unwrap(), 1);
}
