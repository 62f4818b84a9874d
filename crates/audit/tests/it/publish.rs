//! Chain heads published outside the database as they move, and a
//! published head catching a consistent rewrite of history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_audit::{BrokenLinkKind, Head, HeadPublisher, HeadSink, Schema};
use tally_runtime::{ManualClock, SharedClock, Shutdown};
use tally_testkit::postgres;

use super::record_many;
use super::tamper::forge_from;

/// Keeps what it is given (a log pipeline or a warehouse in production).
#[derive(Debug, Default)]
struct Kept(Mutex<Vec<Head>>);

#[tonic::async_trait]
impl HeadSink for Kept {
    async fn publish(&self, head: &Head) -> Result<(), String> {
        self.0.lock().unwrap().push(*head);
        Ok(())
    }
}

impl Kept {
    fn heads(&self) -> Vec<(Schema, i64)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|head| (head.schema, head.sequence))
            .collect()
    }
}

fn publisher(pool: &sqlx::PgPool, clock: SharedClock, sink: Arc<Kept>) -> HeadPublisher {
    HeadPublisher::new(
        pool.clone(),
        clock,
        &[Schema::Invoicing, Schema::Payments],
        Duration::from_secs(3600),
        sink,
    )
}

#[tokio::test]
async fn heads_are_published_on_start_and_when_they_move_and_catch_a_rewrite() {
    let database = postgres::database().await;
    let pool = &database.pool;
    let clock: SharedClock = Arc::new(ManualClock::new(super::at(0)));
    let kept = Arc::new(Kept::default());
    let publisher = publisher(pool, clock, kept.clone());
    let mut published = HashMap::new();

    record_many(pool, Schema::Invoicing, 1..=3).await;
    publisher.publish_moved(&mut published).await;
    // A baseline for every chain, the empty one too.
    assert_eq!(
        kept.heads(),
        vec![(Schema::Invoicing, 3), (Schema::Payments, 0)]
    );
    publisher.publish_moved(&mut published).await;
    assert_eq!(kept.heads().len(), 2, "nothing moved, nothing published");

    record_many(pool, Schema::Invoicing, 4..=5).await;
    publisher.publish_moved(&mut published).await;
    assert_eq!(kept.heads()[2..], [(Schema::Invoicing, 5)]);

    // An administrator rewrites entries 2–5 and recomputes every hash: the
    // chain is consistent, but the head published at 3 no longer matches.
    forge_from(pool, 2).await;
    let alone = tally_audit::verify(pool, Schema::Invoicing).await.unwrap();
    assert_eq!(alone.broken, None);
    let earlier = kept.0.lock().unwrap()[0];
    let against = tally_audit::verify_against(pool, Schema::Invoicing, &[earlier])
        .await
        .unwrap();
    let broken = against.broken.expect("the published head catches it");
    assert_eq!(
        (broken.kind, broken.sequence),
        (BrokenLinkKind::ExportedHead, 3)
    );
}

#[tokio::test]
async fn the_background_job_publishes_when_the_clock_moves_and_stops_on_shutdown() {
    let database = postgres::database().await;
    let pool = &database.pool;
    let manual = Arc::new(ManualClock::new(super::at(0)));
    let kept = Arc::new(Kept::default());
    let shutdown = Shutdown::new();
    let job = tokio::spawn(publisher(pool, manual.clone(), kept.clone()).run(shutdown.clone()));

    let wait_for = |count: usize| {
        let kept = kept.clone();
        async move {
            let started = std::time::Instant::now();
            while kept.heads().len() < count {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{count} heads never published: {:?}",
                    kept.heads()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(2).await;
    record_many(pool, Schema::Payments, 1..=1).await;
    // The hour-long interval has not passed: moving the clock wakes the job.
    manual.advance(chrono::Duration::minutes(5)).unwrap();
    wait_for(3).await;
    assert_eq!(kept.heads()[2], (Schema::Payments, 1));
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job stops on shutdown")
        .unwrap();
}
