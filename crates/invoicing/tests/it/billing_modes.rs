//! Shadow billing: a customer another system bills (CustomerService.
//! SetBillingMode, as connectors sets it) gets drafts that are composed and
//! refreshed as usual but never finalized, numbered or collected; from the
//! cutover boundary on, Tally bills it as any customer; a rollback holds the
//! drafts again. Changes apply by version only.

use rust_decimal_macros::dec;
use tally_proto::invoicing::{FinalizeInvoiceRequest, SetBillingModeRequest};

use crate::support::*;

async fn set_mode(
    h: &mut Harness,
    customer: &str,
    after: Option<chrono::DateTime<chrono::Utc>>,
    version: i64,
) -> tally_proto::invoicing::SetBillingModeResponse {
    h.customers
        .set_billing_mode(SetBillingModeRequest {
            customer_id: customer.to_owned(),
            tally_bills_after: after.map(ts),
            version,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn finalized_events(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM invoicing.outbox WHERE topic = 'invoice-events'")
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_shadowed_customers_invoices_stay_drafts_until_the_cutover_boundary() {
    let mut h = harness(at(2025, 4, 1), config(24)).await;
    let pro = h
        .plan("pro", PlanSpec::advance("30.00").calls("0.10"))
        .await;
    let customer = h.customer("shadowed").await;
    let applied = set_mode(&mut h, &customer, None, 2).await;
    assert!(applied.applied);
    let subscription = h.subscribe(&customer, &pro, at(2025, 4, 1)).await;

    // The start and a month of usage: drafts, held past any grace.
    let run = h.bill_at(at(2025, 4, 1)).await;
    assert_eq!((run.invoices_created, run.invoices_finalized), (1, 0));
    h.calls(&customer, "april", 10, at(2025, 4, 10)).await;
    h.bill_at(at(2025, 5, 1)).await;
    let run = h.bill_at(at(2025, 5, 3)).await;
    assert_eq!(run.invoices_finalized, 0);
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2025-04-01",
                "2025-04-01..2025-05-01",
                "draft",
                "",
                dec!(30.00),
                dec!(0),
                dec!(30.00)
            ),
            row(
                "2025-05-01",
                "2025-04-01..2025-05-01",
                "draft",
                "",
                dec!(31.00),
                dec!(0),
                dec!(31.00)
            ),
        ]
    );
    assert_eq!(finalized_events(&h).await, 0, "nothing reaches payments");
    // Nor can an operator finalize one by hand.
    let held = h.invoice_at(&subscription, at(2025, 5, 1)).await;
    let refused = h
        .invoices
        .finalize_invoice(FinalizeInvoiceRequest {
            invoice_id: held.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("is held"),
        "{}",
        refused.message()
    );

    // Cut over at 1 May: boundaries after it are Tally's. A stale repeat of
    // the shadow mode changes nothing.
    let cut = set_mode(&mut h, &customer, Some(at(2025, 5, 1)), 3).await;
    assert!(cut.applied);
    let stale = set_mode(&mut h, &customer, None, 2).await;
    assert!(!stale.applied);
    assert_eq!(stale.version, 3);
    h.calls(&customer, "may", 20, at(2025, 5, 10)).await;
    h.bill_at(at(2025, 6, 1)).await;
    let run = h.bill_at(at(2025, 6, 3)).await;
    assert_eq!(run.invoices_finalized, 1);
    let table = h.invoice_table(&subscription).await;
    assert_eq!(
        table[2],
        row(
            "2025-06-01",
            "2025-05-01..2025-06-01",
            "finalized",
            "TALLY-000001",
            dec!(32.00),
            dec!(0),
            dec!(32.00)
        )
    );
    assert_eq!(
        (table[0].2.as_str(), table[1].2.as_str()),
        ("draft", "draft")
    );

    // Rolled back while July's invoice waits out its grace: held again.
    h.calls(&customer, "june", 5, at(2025, 6, 10)).await;
    h.bill_at(at(2025, 7, 1)).await;
    let back = set_mode(&mut h, &customer, None, 4).await;
    assert_eq!((back.applied, back.drafts_held), (true, 1));
    let run = h.bill_at(at(2025, 7, 3)).await;
    assert_eq!(run.invoices_finalized, 0);
    assert_eq!(h.invoice_table(&subscription).await[3].2, "draft");
    assert_eq!(finalized_events(&h).await, 1);

    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, coalesce(comment, '') FROM invoicing.audit_log \
         WHERE action = 'customer.billing_mode_set' ORDER BY sequence",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[2].1, "1 drafts held");
}
