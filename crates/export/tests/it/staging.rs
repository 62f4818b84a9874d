//! Staging in batches: one transaction stages a batch of messages with their
//! inbox records; a message already in the inbox, or twice in the batch,
//! stages nothing more; a fact republished under another message id is one
//! row; a message of another type is refused by the decoder (dead-lettered
//! by the bus), never staged.

use std::sync::Arc;

use prost::Message as _;
use tally_bus::Message;
use tally_bus::batch::BatchHandler;
use tally_export::{Decoded, Stager, USAGE_ACCEPTED_SUBSCRIPTION, UsageAcceptedHandler};
use tally_runtime::{ManualClock, SharedClock};

use crate::support::{at, usage};

fn message(id: &str, sequence: u64) -> Message {
    let event = usage("cus_a", &format!("e{sequence}"), sequence, 3);
    Message::new("tally.events.v1.UsageAccepted", 1, event.encode_to_vec()).with_id(id)
}

async fn staged(pool: &sqlx::PgPool) -> (i64, i64) {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM export.rows")
        .fetch_one(pool)
        .await
        .unwrap();
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM export.inbox")
        .fetch_one(pool)
        .await
        .unwrap();
    (rows, inbox)
}

#[tokio::test]
async fn a_batch_is_staged_once_in_one_transaction() {
    let db = tally_testkit::postgres::database().await;
    let clock: SharedClock = Arc::new(ManualClock::new(at("2026-11-20T00:00:00Z")));
    let handler = UsageAcceptedHandler(Stager::new(
        db.pool.clone(),
        clock,
        USAGE_ACCEPTED_SUBSCRIPTION,
    ));
    let decode = |id: &str, sequence: u64| handler.decode(&message(id, sequence)).unwrap();

    // Three messages, one of them delivered twice within the batch.
    let first: Vec<Decoded> = vec![
        decode("uacc_1", 1),
        decode("uacc_2", 2),
        decode("uacc_1", 1),
        decode("uacc_3", 3),
    ];
    BatchHandler::handle(&handler, first.clone()).await.unwrap();
    assert_eq!(staged(&db.pool).await, (3, 3));
    assert_eq!(handler.0.stage_all(&first).await.unwrap(), 0);

    // A redelivered batch with one new message, and e2 republished under another id.
    let second = vec![
        decode("uacc_2", 2),
        decode("uacc_4", 4),
        decode("again_2", 2),
    ];
    assert_eq!(handler.0.stage_all(&second).await.unwrap(), 2);
    assert_eq!(staged(&db.pool).await, (4, 5));
    let keys: Vec<String> = sqlx::query_scalar("SELECT row_key FROM export.rows ORDER BY seq")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(keys, ["cus_a/e1", "cus_a/e2", "cus_a/e3", "cus_a/e4"]);

    // Another type on the topic: poison, with the reason.
    let wrong = Message::new("tally.events.v1.InvoiceEvent", 1, Vec::new()).with_id("x");
    let reason = handler.decode(&wrong).unwrap_err();
    assert!(reason.contains("InvoiceEvent"), "{reason}");
}
