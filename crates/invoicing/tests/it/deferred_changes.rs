//! A plan change made right after a subscription is created: whether the bill
//! run comes before the change, after it, or is deferred because rating has
//! not seen the change yet, the invoices are the same — each boundary bills
//! in advance on the subscription as it stood then, and the change is a
//! true-up at the next boundary (issue: a deferred run billed two prorated
//! charges at the start instead of the fee, then proration lines).

use chrono::Duration;
use rust_decimal_macros::dec;
use tally_proto::invoicing::{ChangeTiming, ProrationPolicy};

use crate::support::*;

/// When the first bill runs come.
#[derive(Clone, Copy, Debug)]
enum Timing {
    /// At the start, before the change; rating always up to date.
    Prompt,
    /// After the change, with neither the subscription nor the change relayed
    /// to rating: the start is billed (it needs no usage), the first period's
    /// end is deferred ("not yet published to rating") until rating has them.
    Deferred,
    /// Not before the first period has ended: both boundaries in one run.
    Late,
}

type Lines = Vec<(String, String, rust_decimal::Decimal)>;

/// Basic (31.00 in advance, 0.10 a call) from 1 January 2025, changed to Pro
/// (62.00, 0.10 a call) at 06:00 with proration, 5 calls on 10 January,
/// billed through 1 March: the invoices and the lines at each boundary.
async fn changed_right_after_creation(timing: Timing) -> (Vec<InvoiceRow>, Vec<Lines>) {
    let start = at(2025, 1, 1);
    let changed_at = start + Duration::hours(6);
    let mut h = harness(start, config(0)).await;
    let basic = h
        .plan("basic", PlanSpec::advance("31.00").calls("0.10"))
        .await;
    let pro = h
        .plan("pro", PlanSpec::advance("62.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &basic, start).await;
    if let Timing::Prompt = timing {
        h.bill_at(start).await;
    }
    h.clock.set(changed_at).unwrap();
    h.change_plan(
        &subscription,
        &pro,
        ChangeTiming::Immediately,
        ProrationPolicy::Prorate,
    )
    .await;
    if let Timing::Deferred = timing {
        // Nothing relayed: rating knows neither the subscription nor the change.
        let run = h.invoicing.bill_run().await.unwrap();
        assert_eq!(
            (run.invoices_created, run.failures),
            (1, 0),
            "the start needs no usage: billed at once, {run:?}"
        );
        h.clock.set(at(2025, 2, 1)).unwrap();
        let run = h.invoicing.bill_run().await.unwrap();
        assert_eq!((run.invoices_created, run.failures), (0, 1), "{run:?}");
        assert_eq!(run.failed[0].subscription_id, subscription);
        assert!(
            run.failed[0].reason.contains("not yet published to rating"),
            "{run:?}"
        );
    }
    h.sync().await;
    h.calls(&customer, "jan", 5, at(2025, 1, 10)).await;
    h.bill_at(at(2025, 2, 1)).await;
    h.bill_at(at(2025, 3, 1)).await;
    let mut lines = Vec::new();
    for boundary in [start, at(2025, 2, 1), at(2025, 3, 1)] {
        lines.push(h.lines_at(&subscription, boundary).await);
    }
    (h.invoice_table(&subscription).await, lines)
}

#[tokio::test]
async fn a_change_right_after_creation_bills_the_same_whenever_the_bill_run_comes() {
    let (table, lines) = changed_right_after_creation(Timing::Prompt).await;
    assert_eq!(
        table,
        vec![
            row(
                "2025-01-01",
                "2025-01-01..2025-02-01",
                "finalized",
                "TALLY-000001",
                dec!(31.00),
                dec!(0),
                dec!(31.00)
            ),
            row(
                "2025-02-01",
                "2025-01-01..2025-02-01",
                "finalized",
                "TALLY-000002",
                dec!(93.25),
                dec!(0),
                dec!(93.25)
            ),
            row(
                "2025-03-01",
                "2025-02-01..2025-03-01",
                "finalized",
                "TALLY-000003",
                dec!(62.00),
                dec!(0),
                dec!(62.00)
            ),
        ]
    );
    // Basic bills January in advance; on 1 February its 30.75 unused
    // (744 − 6 of 744 hours) comes back and Pro's 61.50 is charged.
    assert_eq!(
        lines,
        vec![
            vec![line("recurring", "01-01..02-01", dec!(31.00))],
            vec![
                line("proration_credit", "01-01..02-01", dec!(-30.75)),
                line("proration_charge", "01-01..02-01", dec!(61.50)),
                // Rating's lines per phase: Basic's six hours, then Pro's calls.
                line("usage", "01-01..01-01", dec!(0.00)),
                line("usage", "01-01..02-01", dec!(0.50)),
                line("recurring", "02-01..03-01", dec!(62.00)),
            ],
            vec![
                line("usage", "02-01..03-01", dec!(0.00)),
                line("recurring", "03-01..04-01", dec!(62.00)),
            ],
        ]
    );
    for timing in [Timing::Deferred, Timing::Late] {
        assert_eq!(
            changed_right_after_creation(timing).await,
            (table.clone(), lines.clone()),
            "{timing:?}"
        );
    }
}
