//! Set-based batches (`apply_all`: one statement per table for a batch's
//! facts) store exactly what the same messages applied one by one store,
//! row for row in every table the ledger and its analytics write — with
//! credit notes, refunds, voids inside and across batches, a redelivery and
//! a fact replayed under a new message id.

use tally_proto::events::{InvoiceEvent, PaymentEvent};
use tally_proto::invoicing::InvoiceLine;

use crate::mrr_support::recurring;
use crate::support::{Books, credit_note, finalized, invoice, paid, refunded, usage_line, voided};

/// Customer `n`'s December: an invoice with a recurring fee (with its
/// detail, so analytics keeps it) and usage; every 4th gets a credit note,
/// every 7th a credit note refunded, every 5th is voided (`None` payment).
fn december(n: usize) -> (Vec<InvoiceEvent>, Vec<PaymentEvent>) {
    let (id, customer) = (format!("inv_{n:04}"), format!("cus_{n:04}"));
    let usage = format!("{}.{:02}", 5 + n % 40, n % 100);
    let mut bill = invoice(
        &id,
        &customer,
        &[usage_line(
            &format!("il_{n:04}_usage"),
            "tokens",
            &usage,
            ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        )],
    );
    let fee: InvoiceLine = recurring(
        &format!("il_{n:04}_fee"),
        if n.is_multiple_of(2) {
            "pv_pro"
        } else {
            "pv_team"
        },
        "30.00",
        ("12-01", "2027-01-01T00:00:00Z"),
    );
    bill.lines.insert(0, fee);
    bill.subscription_id = format!("sub_{n:04}");
    let total = (rust_decimal::Decimal::from(30) + usage.parse::<rust_decimal::Decimal>().unwrap())
        .to_string();
    let mut invoices = vec![finalized(bill.clone(), "2026-12-01T00:05:00Z")];
    let mut payments = Vec::new();
    if n.is_multiple_of(5) {
        invoices.push(voided(bill, "2026-12-02T00:00:00Z"));
        return (invoices, payments);
    }
    let payment = format!("pay_{n:04}");
    payments.push(paid(
        &id,
        &customer,
        &payment,
        &total,
        "2026-12-01T00:10:00Z",
    ));
    if n.is_multiple_of(4) {
        let note = format!("cn_{n:04}");
        invoices.push(credit_note(
            bill.clone(),
            &note,
            "3.00",
            "",
            "2026-12-03T00:00:00Z",
        ));
    }
    if n.is_multiple_of(7) {
        let note = format!("cn_{n:04}r");
        invoices.push(credit_note(
            bill,
            &note,
            "5.00",
            "5.00",
            "2026-12-04T00:00:00Z",
        ));
        let refund = format!("ref_{n:04}");
        payments.push(refunded(
            &id,
            &customer,
            &payment,
            &refund,
            "5.00",
            "2026-12-04T00:01:00Z",
        ));
    }
    (invoices, payments)
}

/// Every row the ledger and analytics keep, table by table, as JSON, in a
/// fixed order (`seq` columns left out of the rows but kept as the order).
async fn every_row(books: &Books) -> Vec<(String, serde_json::Value)> {
    let tables = [
        ("transactions", "seq", "seq"),
        ("entries", "transaction_id, line", ""),
        ("facts", "seq", "seq"),
        ("accounts", "id", ""),
        ("invoices", "invoice_id", ""),
        ("schedule_days", "invoice_id, line_id, day", ""),
        (
            "subscription_fees",
            "subscription_id, plan_version_id, charge_key, effective_from",
            "",
        ),
        ("inbox", "subscription, message_id", "processed_at"),
    ];
    let mut rows = Vec::new();
    for (table, order, left_out) in tables {
        let left_out = if left_out.is_empty() {
            String::new()
        } else {
            format!(" - '{left_out}'")
        };
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t){left_out} ORDER BY {order}), '[]') FROM finance.{table} t"
        );
        let value: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&books.database.pool)
            .await
            .unwrap();
        rows.push((table.to_owned(), value));
    }
    rows
}

#[tokio::test]
async fn batches_store_row_for_row_what_one_by_one_stores() {
    let months: Vec<_> = (0..36).map(december).collect();
    let mut invoices: Vec<InvoiceEvent> = months.iter().flat_map(|(i, _)| i.clone()).collect();
    let mut payments: Vec<PaymentEvent> = months.iter().flat_map(|(_, p)| p.clone()).collect();
    // Customer 3's finalization and payment replayed under new message ids
    // (a re-publish), and a message delivered twice.
    let mut replayed = invoices[0].clone();
    replayed.event_id = "ievt_replayed".into();
    invoices.push(replayed);
    let mut replayed = payments[1].clone();
    replayed.event_id = "pevt_replayed".into();
    payments.insert(2, replayed);
    invoices.insert(9, invoices[4].clone());

    let one_by_one = Books::open("2026-12-05T00:00:00Z").await;
    for event in &invoices {
        one_by_one
            .invoices
            .apply(&event.event_id, event)
            .await
            .unwrap();
    }
    for event in &payments {
        one_by_one
            .payments
            .apply(&event.event_id, event)
            .await
            .unwrap();
    }

    let batched = Books::open("2026-12-05T00:00:00Z").await;
    // Batches of 7: voids fall both beside their finalization and after it.
    let mut applied = 0;
    for chunk in invoices.chunks(7) {
        let batch: Vec<(&str, &InvoiceEvent)> = chunk
            .iter()
            .map(|event| (event.event_id.as_str(), event))
            .collect();
        applied += batched.invoices.apply_all(&batch).await.unwrap();
    }
    assert_eq!(applied, invoices.len() - 1, "the redelivery is skipped");
    for chunk in payments.chunks(7) {
        let batch: Vec<(&str, &PaymentEvent)> = chunk
            .iter()
            .map(|event| (event.event_id.as_str(), event))
            .collect();
        batched.payments.apply_all(&batch).await.unwrap();
    }

    let expected = every_row(&one_by_one).await;
    let stored = every_row(&batched).await;
    for ((table, expected), (_, stored)) in expected.iter().zip(&stored) {
        assert_eq!(stored, expected, "finance.{table}");
        assert_ne!(*expected, serde_json::json!([]), "finance.{table} has rows");
    }
    assert_eq!(
        batched.balances(None).await,
        one_by_one.balances(None).await
    );

    // December recognised on both: the same again.
    one_by_one.recognise("2027-01-01T00:00:00Z").await;
    batched.recognise("2027-01-01T00:00:00Z").await;
    assert_eq!(every_row(&batched).await, every_row(&one_by_one).await);
    assert_eq!(
        batched.balances(None).await,
        one_by_one.balances(None).await
    );

    // The whole stream in one batch, again: nothing changes.
    let all: Vec<(&str, &InvoiceEvent)> = invoices
        .iter()
        .map(|event| (event.event_id.as_str(), event))
        .collect();
    assert_eq!(batched.invoices.apply_all(&all).await.unwrap(), 0);
    assert_eq!(every_row(&batched).await, every_row(&one_by_one).await);
}

#[tokio::test]
async fn a_fact_replayed_in_one_batch_with_other_content_is_refused() {
    let books = Books::open("2026-12-05T00:00:00Z").await;
    let (_, payments) = december(1);
    let mut changed = payments[0].clone();
    changed.event_id = "pevt_changed".into();
    if let Some(tally_proto::events::payment_event::Kind::Succeeded(succeeded)) = &mut changed.kind
    {
        succeeded.amount = crate::support::usd("1.00");
    }
    let error = books
        .payments
        .apply_all(&[
            (payments[0].event_id.as_str(), &payments[0]),
            ("pevt_changed", &changed),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(error, tally_bus::consumer::HandlerError::Poison(_)),
        "{error:?}"
    );
    let transactions: i64 = sqlx::query_scalar("SELECT count(*) FROM finance.transactions")
        .fetch_one(&books.database.pool)
        .await
        .unwrap();
    assert_eq!(transactions, 0, "the batch rolled back whole");
}
