//! The ledger consumers' batch path (`apply_all`, what `BatchConsumer`
//! hands them): a batch is one transaction, books what the same facts
//! applied one by one book, skips redeliveries, and a void never goes
//! through without its finalization.

use tally_bus::consumer::HandlerError;
use tally_proto::events::{InvoiceEvent, PaymentEvent};

use crate::support::{Books, voided};
use crate::throughput::month_of;

/// Customer `n`'s December invoice finalized, voided, and its payment.
fn month(n: usize) -> (InvoiceEvent, InvoiceEvent, PaymentEvent) {
    let (finalized, payment) = month_of(n);
    let void = voided(finalized.invoice.clone().unwrap(), "2026-12-02T00:00:00Z");
    (finalized, void, payment)
}

/// Every transaction (id, effective time, body) and the kept facts, by id.
async fn books_of(books: &Books) -> (Vec<(String, String, serde_json::Value)>, i64) {
    let journal =
        sqlx::query_as("SELECT id, effective_at::text, body FROM finance.transactions ORDER BY id")
            .fetch_all(&books.database.pool)
            .await
            .unwrap();
    let facts = sqlx::query_scalar("SELECT count(*) FROM finance.facts")
        .fetch_one(&books.database.pool)
        .await
        .unwrap();
    (journal, facts)
}

#[tokio::test]
async fn a_batch_books_what_one_by_one_books_and_skips_redeliveries() {
    let months: Vec<_> = (0..3).map(month).collect();
    // Customer 1's invoice is voided in the same batch as its finalization.
    let invoices: Vec<&InvoiceEvent> = vec![&months[0].0, &months[1].0, &months[1].1, &months[2].0];

    let one_by_one = Books::open("2026-12-01T00:05:00Z").await;
    for event in &invoices {
        assert!(
            one_by_one
                .invoices
                .apply(&event.event_id, event)
                .await
                .unwrap()
        );
    }
    for (_, _, payment) in &months {
        assert!(
            one_by_one
                .payments
                .apply(&payment.event_id, payment)
                .await
                .unwrap()
        );
    }

    let batched = Books::open("2026-12-01T00:05:00Z").await;
    let mut batch: Vec<(&str, &InvoiceEvent)> = invoices
        .iter()
        .map(|event| (event.event_id.as_str(), *event))
        .collect();
    // A redelivery inside the batch is applied once.
    batch.push((months[0].0.event_id.as_str(), &months[0].0));
    assert_eq!(batched.invoices.apply_all(&batch).await.unwrap(), 4);
    let payments: Vec<(&str, &PaymentEvent)> = months
        .iter()
        .map(|(_, _, payment)| (payment.event_id.as_str(), payment))
        .collect();
    assert_eq!(batched.payments.apply_all(&payments).await.unwrap(), 3);
    assert_eq!(books_of(&batched).await, books_of(&one_by_one).await);
    assert_eq!(
        batched.balances(None).await,
        one_by_one.balances(None).await
    );

    // The whole batch delivered again changes nothing.
    assert_eq!(batched.invoices.apply_all(&batch).await.unwrap(), 0);
    assert_eq!(batched.payments.apply_all(&payments).await.unwrap(), 0);
    assert_eq!(books_of(&batched).await, books_of(&one_by_one).await);
}

#[tokio::test]
async fn a_failed_batch_leaves_nothing_and_a_void_waits_for_its_finalization() {
    let books = Books::open("2026-12-01T00:05:00Z").await;
    let (first, _, _) = month(0);
    let (second, second_void, _) = month(1);
    let broken = InvoiceEvent {
        event_id: "ievt_broken".into(),
        kind: None,
        ..first.clone()
    };

    // One fact that cannot be booked rolls the whole batch back, inbox
    // records included (the bus then applies its messages one by one).
    let error = books
        .invoices
        .apply_all(&[(first.event_id.as_str(), &first), ("ievt_broken", &broken)])
        .await
        .unwrap_err();
    assert!(matches!(error, HandlerError::Poison(_)), "{error:?}");
    assert_eq!(books_of(&books).await, (Vec::new(), 0));

    // A void whose finalization is not booked is retried, never applied
    // (it would reverse nothing and be lost) ...
    let error = books
        .invoices
        .apply(&second_void.event_id, &second_void)
        .await
        .unwrap_err();
    assert!(matches!(error, HandlerError::Retry(_)), "{error:?}");
    assert_eq!(books_of(&books).await, (Vec::new(), 0));

    // ... and goes through once it is: nothing stays on the books for the
    // voided invoice.
    assert!(books.invoices.apply(&first.event_id, &first).await.unwrap());
    let before = books.balances(None).await;
    assert!(
        books
            .invoices
            .apply(&second.event_id, &second)
            .await
            .unwrap()
    );
    assert!(
        books
            .invoices
            .apply(&second_void.event_id, &second_void)
            .await
            .unwrap()
    );
    assert_eq!(
        books.balances(None).await,
        before,
        "the void reversed the whole invoice"
    );
}
