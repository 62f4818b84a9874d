//! PreviewUpcomingInvoice: the period's upcoming invoice, with the credits it
//! will get, equal to the cent to the invoice the bill run then writes.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::invoicing::*;

use crate::support::*;

async fn preview(h: &mut Harness, subscription: &str) -> Invoice {
    h.invoices
        .preview_upcoming_invoice(PreviewUpcomingInvoiceRequest {
            subscription_id: subscription.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap()
}

/// (kind, amount) of each line.
fn lines(invoice: &Invoice) -> Vec<(InvoiceLineKind, Decimal)> {
    invoice
        .lines
        .iter()
        .map(|line| {
            (
                line.kind(),
                line.amount.as_ref().unwrap().amount.parse().unwrap(),
            )
        })
        .collect()
}

/// (subtotal, credits applied, total, amount due).
fn totals(invoice: &Invoice) -> (Decimal, Decimal, Decimal, Decimal) {
    let amount = |money: &Option<tally_proto::common::Money>| -> Decimal {
        money.as_ref().unwrap().amount.parse().unwrap()
    };
    (
        amount(&invoice.subtotal),
        amount(&invoice.credits_applied),
        amount(&invoice.total),
        amount(&invoice.amount_due),
    )
}

async fn available(h: &mut Harness, customer: &str) -> String {
    h.credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: customer.into(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .available
        .unwrap()
        .amount
}

/// Pro (30.00 in advance, 0.10 a call) from 1 April 2025 with a 50.00
/// prepaid grant. Before the first bill run the preview is May's invoice
/// (issue: it was the creation invoice), with the 20.00 of credit the
/// creation invoice leaves (issue: no credits at all); mid-April it adds
/// the usage so far; on 1 May the bill run writes exactly that.
#[tokio::test]
async fn the_preview_is_the_periods_invoice_with_the_credits_it_will_get() {
    let mut h = harness(at(2025, 4, 1), config(0)).await;
    let plan = h
        .plan("pro", PlanSpec::advance("30.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    h.grant(&customer, CreditGrantKind::Prepaid, "50.00", 1, None)
        .await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 4, 1)).await;
    h.sync().await;

    let brand_new = preview(&mut h, &subscription).await;
    assert_eq!(
        brand_new.billing_reason,
        BillingReason::SubscriptionCycle as i32
    );
    assert_eq!(
        brand_new.period,
        Some(tally_proto::common::TimeRange {
            start_time: Some(ts(at(2025, 4, 1))),
            end_time: Some(ts(at(2025, 5, 1))),
        })
    );
    assert_eq!(
        lines(&brand_new),
        vec![
            (InvoiceLineKind::Usage, dec!(0.00)),
            (InvoiceLineKind::Recurring, dec!(30.00)),
            (InvoiceLineKind::CreditsApplied, dec!(-20.00)),
        ]
    );
    assert_eq!(
        totals(&brand_new),
        (dec!(30.00), dec!(-20.00), dec!(10.00), dec!(10.00))
    );
    assert!(
        h.invoice_table(&subscription).await.is_empty(),
        "nothing stored"
    );
    assert_eq!(
        available(&mut h, &customer).await,
        "50.00",
        "nothing burned"
    );

    h.bill_at(at(2025, 4, 1)).await;
    h.calls(&customer, "apr", 7, at(2025, 4, 10)).await;
    h.clock.set(at(2025, 4, 15)).unwrap();
    let mid_april = preview(&mut h, &subscription).await;
    assert_eq!(
        lines(&mid_april),
        vec![
            (InvoiceLineKind::Usage, dec!(0.70)),
            (InvoiceLineKind::Recurring, dec!(30.00)),
            (InvoiceLineKind::CreditsApplied, dec!(-20.00)),
        ]
    );
    assert_eq!(
        totals(&mid_april),
        (dec!(30.70), dec!(-20.00), dec!(10.70), dec!(10.70))
    );
    let Some(invoice_line::Detail::CreditsApplied(detail)) = &mid_april.lines[2].detail else {
        panic!("{mid_april:?}");
    };
    assert_eq!(detail.applications.len(), 1);
    assert!(detail.applications[0].credit_grant_id.starts_with("grant_"));
    assert_eq!(
        available(&mut h, &customer).await,
        "20.00",
        "nothing burned"
    );

    h.bill_at(at(2025, 5, 1)).await;
    assert_eq!(
        h.invoice_table(&subscription).await,
        vec![
            row(
                "2025-04-01",
                "2025-04-01..2025-05-01",
                "paid",
                "TALLY-000001",
                dec!(30.00),
                dec!(-30.00),
                dec!(0.00)
            ),
            row(
                "2025-05-01",
                "2025-04-01..2025-05-01",
                "finalized",
                "TALLY-000002",
                dec!(30.70),
                dec!(-20.00),
                dec!(10.70)
            ),
        ]
    );
    assert_eq!(available(&mut h, &customer).await, "0.00");
}

/// With a grace period, a draft still open burns the credits first: the
/// preview of the next invoice gets what the draft leaves.
#[tokio::test]
async fn the_preview_leaves_open_drafts_their_credits() {
    let mut h = harness(at(2025, 4, 1), config(24)).await;
    let plan = h.plan("usage", PlanSpec::default().calls("0.10")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 4, 1)).await;
    h.grant(&customer, CreditGrantKind::Promotional, "5.00", 1, None)
        .await;
    h.calls(&customer, "apr", 30, at(2025, 4, 10)).await;
    // April's invoice (3.00) is a draft until 2 May.
    h.bill_at(at(2025, 5, 1) + chrono::Duration::hours(1)).await;
    assert_eq!(h.invoice_table(&subscription).await[0].2, "draft");
    h.calls(
        &customer,
        "may",
        40,
        at(2025, 5, 1) + chrono::Duration::hours(1),
    )
    .await;
    let upcoming = preview(&mut h, &subscription).await;
    assert_eq!(
        lines(&upcoming),
        vec![
            (InvoiceLineKind::Usage, dec!(4.00)),
            (InvoiceLineKind::CreditsApplied, dec!(-2.00)),
        ]
    );
    assert_eq!(
        totals(&upcoming),
        (dec!(4.00), dec!(-2.00), dec!(2.00), dec!(2.00))
    );
    h.bill_at(at(2025, 5, 2)).await;
    h.bill_at(at(2025, 6, 2)).await;
    assert_eq!(
        h.invoice_table(&subscription)
            .await
            .into_iter()
            .map(|row| (row.0, row.4, row.5, row.6))
            .collect::<Vec<_>>(),
        vec![
            ("2025-05-01".to_owned(), dec!(3.00), dec!(-3.00), dec!(0.00)),
            ("2025-06-01".to_owned(), dec!(4.00), dec!(-2.00), dec!(2.00)),
        ]
    );
}
