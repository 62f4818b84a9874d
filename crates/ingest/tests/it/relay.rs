//! The hand-off to rating: what was committed reaches `usage-accepted`, once
//! after de-duplication, in per-customer order, across crashes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tally_bus::{Bus, BusError, Message, MessageStream, SharedBus, SubscriptionConfig};
use tally_ingest::relay::AcceptedRelay;
use tally_runtime::config::IngestConfig;

use crate::support::*;

/// A bus whose publishes start failing after a budget: a relay "crashing"
/// halfway through a round.
#[derive(Debug)]
struct FailingAfter {
    inner: SharedBus,
    budget: AtomicUsize,
}

#[async_trait]
impl Bus for FailingAfter {
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        self.inner.ensure_topic(topic).await
    }
    async fn ensure_subscription(&self, config: &SubscriptionConfig) -> Result<(), BusError> {
        self.inner.ensure_subscription(config).await
    }
    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(BusError::Backend("simulated crash".into()));
        }
        self.budget.store(left - 1, Ordering::SeqCst);
        self.inner.publish(topic, message).await
    }
    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn MessageStream>, BusError> {
        self.inner.subscribe(subscription).await
    }
}

#[tokio::test]
async fn a_crash_between_commit_and_publish_loses_and_duplicates_nothing() {
    let bus = in_process();
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let mut rating = watch_accepted(&bus, "rating-usage-accepted").await;

    // Three batches committed while no relay runs (the process "crashed" after commit).
    let mut sent = 0;
    for batch in 0..3 {
        let events = (0..400)
            .map(|n| event(&format!("cus_{}", n % 17), &format!("b{batch}-{n}")))
            .collect();
        sent += h.send(events).await.counts.unwrap().accepted as usize;
    }
    // A relay that dies after publishing 500 events: its round is not recorded.
    let crashing = AcceptedRelay::new(
        h.db.pool.clone(),
        Arc::new(FailingAfter {
            inner: Arc::clone(&bus),
            budget: AtomicUsize::new(500),
        }),
        Arc::new(tally_ingest::metrics::IngestMetrics::new(start_time())),
    );
    assert!(crashing.relay_once().await.is_err());
    assert_eq!(
        crashing.published_events().await.unwrap(),
        0,
        "nothing counts as published before its round is recorded"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.accepted_batches")
            .await,
        3,
        "nothing marked"
    );

    // After restart the relay publishes everything again, then finishes.
    let restarted = h.restart().await;
    while restarted.ingest.relay().relay_once().await.unwrap() > 0 {}
    assert_eq!(
        restarted.ingest.relay().published_events().await.unwrap(),
        u64::try_from(sent).unwrap(),
        "tally.ingest.published_events counts each accepted event once"
    );
    assert_eq!(
        restarted
            .count("SELECT count(*) FROM ingest.accepted_batches")
            .await,
        0
    );

    let delivered = drain(&mut rating, sent + 500).await;
    assert_eq!(
        delivered.len(),
        sent + 500,
        "the crashed round's 500 are redelivered"
    );
    let mut first_seen = HashSet::new();
    let mut order: HashMap<String, Vec<u64>> = HashMap::new();
    for accepted in &delivered {
        let event = accepted.event.as_ref().unwrap();
        if first_seen.insert((event.customer_id.clone(), event.id.clone())) {
            order
                .entry(event.customer_id.clone())
                .or_default()
                .push(accepted.sequence_number);
        }
    }
    assert_eq!(
        first_seen.len(),
        sent,
        "after de-duplication each event exactly once"
    );
    for (customer, seqs) in order {
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "{customer} in order"
        );
    }
    let published: i64 = restarted
        .count("SELECT published_high_water FROM ingest.relay_state")
        .await;
    let high_water: i64 = restarted.count("SELECT max(seq) FROM ingest.events").await;
    assert_eq!(published, high_water);
}

#[tokio::test]
async fn a_rolled_back_batch_publishes_nothing() {
    let bus = in_process();
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let mut rating = watch_accepted(&bus, "rating-usage-accepted").await;
    // Make the batch transaction fail at its last statement.
    sqlx::query(
        "CREATE FUNCTION ingest.fail_batch() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'simulated failure'; END $$",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_batch BEFORE INSERT ON ingest.accepted_batches \
         FOR EACH ROW EXECUTE FUNCTION ingest.fail_batch()",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let failed = h
        .client
        .ingest_batch(tally_proto::ingest::IngestBatchRequest {
            events: vec![event("cus_a", "e1")],
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.event_keys").await,
        0,
        "keys rolled back too"
    );
    sqlx::query("DROP TRIGGER fail_batch ON ingest.accepted_batches")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let retried = h.send(vec![event("cus_a", "e1")]).await;
    assert_eq!(
        retried.counts.unwrap().accepted,
        1,
        "the retry is accepted, not a duplicate"
    );
    h.ingest.relay().relay_once().await.unwrap();
    assert_eq!(drain(&mut rating, 1).await.len(), 1);
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), rating.next()).await;
    assert!(more.is_err(), "the failed batch was never published");
}
