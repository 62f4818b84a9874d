//! The grace period is for late usage only: an invoice that bills usage
//! waits as a draft (late events update it), one of fees only is final when
//! composed and is finalized — numbered, and sent to payments to collect —
//! at once (issue: a new subscription's in-advance fee waited 24 hours).

use rust_decimal_macros::dec;
use tally_proto::invoicing::InvoiceStatus;

use crate::support::*;

/// The `invoice-events` kinds written so far, oldest first.
async fn invoice_events(h: &Harness) -> Vec<(String, &'static str)> {
    let payloads: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT payload FROM invoicing.outbox WHERE topic = 'invoice-events' ORDER BY seq",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    payloads
        .iter()
        .map(|(bytes,)| {
            let event =
                <tally_proto::events::InvoiceEvent as prost::Message>::decode(bytes.as_slice())
                    .unwrap();
            let kind = match event.kind {
                Some(tally_proto::events::invoice_event::Kind::Finalized(_)) => "finalized",
                Some(tally_proto::events::invoice_event::Kind::Paid(_)) => "paid",
                _ => "other",
            };
            (event.invoice.unwrap().number, kind)
        })
        .collect()
}

/// Two customers from 1 April 2025 with the default 24 hours of grace: one
/// on Pro (30.00 in advance, 0.10 a call), one on Seats (20.00 in advance,
/// no usage).
#[tokio::test]
async fn in_advance_fees_are_finalized_at_once_and_usage_waits_out_the_grace_period() {
    let mut h = harness(at(2025, 4, 1), config(24)).await;
    let pro = h
        .plan("pro", PlanSpec::advance("30.00").calls("0.10"))
        .await;
    let seats = h.plan("seats", PlanSpec::advance("20.00")).await;
    let metered_customer = h.customer("metered").await;
    let flat_customer = h.customer("flat").await;
    let metered = h.subscribe(&metered_customer, &pro, at(2025, 4, 1)).await;
    let flat = h.subscribe(&flat_customer, &seats, at(2025, 4, 1)).await;

    // The start: both fees finalized at once, due now, sent to payments.
    let run = h.bill_at(at(2025, 4, 1)).await;
    assert_eq!((run.invoices_created, run.invoices_finalized), (2, 2));
    assert_eq!(
        h.invoice_table(&metered).await,
        vec![row(
            "2025-04-01",
            "2025-04-01..2025-05-01",
            "finalized",
            "TALLY-000001",
            dec!(30.00),
            dec!(0),
            dec!(30.00)
        )]
    );
    assert_eq!(
        h.invoice_table(&flat).await,
        vec![row(
            "2025-04-01",
            "2025-04-01..2025-05-01",
            "finalized",
            "TALLY-000002",
            dec!(20.00),
            dec!(0),
            dec!(20.00)
        )]
    );
    let first = h.invoice_at(&metered, at(2025, 4, 1)).await;
    let first = h.invoice(&first).await;
    assert_eq!(first.grace_period_ends_at, Some(ts(at(2025, 4, 1))));
    assert_eq!(first.finalized_at, Some(ts(at(2025, 4, 1))));
    assert_eq!(first.due_at, Some(ts(at(2025, 4, 1))));
    assert_eq!(
        invoice_events(&h).await,
        vec![
            ("TALLY-000001".to_owned(), "finalized"),
            ("TALLY-000002".to_owned(), "finalized")
        ]
    );

    // 1 May: the metered invoice bills April's usage: a draft for 24 hours;
    // the flat renewal bills fees only: finalized at once.
    h.calls(&metered_customer, "apr", 5, at(2025, 4, 20)).await;
    let run = h.bill_at(at(2025, 5, 1)).await;
    assert_eq!((run.invoices_created, run.invoices_finalized), (2, 1));
    let statuses = |table: Vec<InvoiceRow>| -> Vec<(String, String)> {
        table.into_iter().map(|row| (row.0, row.2)).collect()
    };
    assert_eq!(
        statuses(h.invoice_table(&metered).await)[1],
        ("2025-05-01".to_owned(), "draft".to_owned())
    );
    assert_eq!(
        h.invoice_table(&flat).await[1],
        row(
            "2025-05-01",
            "2025-04-01..2025-05-01",
            "finalized",
            "TALLY-000003",
            dec!(20.00),
            dec!(0),
            dec!(20.00)
        )
    );
    // A late April event still reaches the draft.
    h.calls(
        &metered_customer,
        "late",
        2,
        at(2025, 4, 30) + chrono::Duration::hours(23),
    )
    .await;
    h.bill_at(at(2025, 5, 2)).await;
    assert_eq!(
        h.invoice_table(&metered).await[1],
        row(
            "2025-05-01",
            "2025-04-01..2025-05-01",
            "finalized",
            "TALLY-000004",
            dec!(30.70),
            dec!(0),
            dec!(30.70)
        )
    );
    let second = h.invoice_at(&metered, at(2025, 5, 1)).await;
    let second = h.invoice(&second).await;
    assert_eq!(second.status, InvoiceStatus::Finalized as i32);
    assert_eq!(second.grace_period_ends_at, Some(ts(at(2025, 5, 2))));
}
