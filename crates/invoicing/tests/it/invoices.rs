//! InvoiceService: preview, void, credit notes, on-demand bill runs.

use chrono::Duration;
use rust_decimal_macros::dec;
use tally_proto::invoicing::*;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn preview_shows_the_next_invoice_without_storing_it() {
    let mut h = harness(at(2025, 4, 1), config(0)).await;
    let plan = h
        .plan("pro", PlanSpec::advance("30.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 4, 1)).await;
    h.bill_at(at(2025, 4, 1)).await;
    h.calls(&customer, "apr", 7, at(2025, 4, 10)).await;
    h.clock.set(at(2025, 4, 15)).unwrap();
    let preview = h
        .invoices
        .preview_upcoming_invoice(PreviewUpcomingInvoiceRequest {
            subscription_id: subscription.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!((preview.id.as_str(), preview.number.as_str()), ("", ""));
    assert_eq!(preview.status, InvoiceStatus::Draft as i32);
    let lines: Vec<(i32, String)> = preview
        .lines
        .iter()
        .map(|line| (line.kind, line.amount.clone().unwrap().amount))
        .collect();
    assert_eq!(
        lines,
        vec![
            (InvoiceLineKind::Usage as i32, "0.70".into()),
            (InvoiceLineKind::Recurring as i32, "30.00".into())
        ]
    );
    assert_eq!(preview.total.unwrap().amount, "30.70");
    assert_eq!(
        h.invoice_table(&subscription).await.len(),
        1,
        "nothing stored"
    );
    let status = h
        .invoices
        .preview_upcoming_invoice(PreviewUpcomingInvoiceRequest {
            subscription_id: "sub_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn void_returns_credits_and_credit_notes_never_exceed_what_was_billed() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("40.00")).await;
    let customer = h.customer("acme").await;
    h.grant(&customer, CreditGrantKind::Promotional, "15.00", 0, None)
        .await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    h.bill_at(at(2025, 2, 1)).await;
    let january = h.invoice_at(&subscription, at(2025, 1, 1)).await;
    let february = h.invoice_at(&subscription, at(2025, 2, 1)).await;
    let invoice = h.invoice(&january).await;
    assert_eq!(
        (
            invoice.subtotal.unwrap().amount,
            invoice.credits_applied.unwrap().amount,
            invoice.total.unwrap().amount
        ),
        ("40.00".into(), "-15.00".into(), "25.00".into())
    );
    let fee_line = invoice.lines[0].id.clone();
    // Partial credit notes: per line at most what it billed, in total at most the invoice total.
    let partial = |amount: &str, key: &str| CreateCreditNoteRequest {
        idempotency_key: key.into(),
        invoice_id: january.clone(),
        reason: CreditNoteReason::ProductUnsatisfactory as i32,
        amount: Some(create_credit_note_request::Amount::Partial(
            CreditNoteLines {
                lines: vec![CreditNoteLine {
                    invoice_line_id: fee_line.clone(),
                    description: "goodwill".into(),
                    amount: usd(amount),
                }],
            },
        )),
        ..Default::default()
    };
    let status = h
        .invoices
        .create_credit_note(partial("30.00", "cn-1"))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    let note = h
        .invoices
        .create_credit_note(partial("10.00", "cn-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(note.credit_note.unwrap().number, "TALLY-CN-000001");
    assert_eq!(note.invoice.unwrap().amount_due.unwrap().amount, "15.00");
    let replay = h
        .invoices
        .create_credit_note(partial("10.00", "cn-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replay.credit_note.unwrap().number,
        "TALLY-CN-000001",
        "a replay issues nothing new"
    );
    // February is voided: its burned credits come back.
    let (burned,): (rust_decimal::Decimal,) =
        sqlx::query_as("SELECT -credits_applied FROM invoicing.invoices WHERE id = $1")
            .bind(&february)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(burned, dec!(0), "the grant was used up in January");
    let voided = h
        .invoices
        .void_invoice(VoidInvoiceRequest {
            idempotency_key: "void-1".into(),
            invoice_id: january.clone(),
            reason: "duplicate".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!(
        (voided.status, voided.void_reason.as_str()),
        (InvoiceStatus::Void as i32, "duplicate")
    );
    let balance = h
        .credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: customer.clone(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        balance.available.unwrap().amount,
        "15.00",
        "the voided invoice's credits are returned"
    );
    let status = h
        .invoices
        .void_invoice(VoidInvoiceRequest {
            idempotency_key: "void-2".into(),
            invoice_id: january.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = h
        .invoices
        .create_credit_note(CreateCreditNoteRequest {
            idempotency_key: "cn-3".into(),
            invoice_id: january,
            reason: CreditNoteReason::Duplicate as i32,
            amount: Some(create_credit_note_request::Amount::Full(true)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "no credit note on a void invoice"
    );
}

#[tokio::test]
async fn run_billing_on_demand_and_finalize_now() {
    let mut h = harness(at(2025, 1, 1), config(48)).await;
    let plan = h
        .plan("basic", PlanSpec::advance("12.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.sync().await;
    // The creation invoice bills fees only: no grace, finalized at once.
    let run = h
        .invoices
        .run_billing(RunBillingRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((run.invoices_created, run.invoices_finalized), (1, 1));
    // January's usage makes February's invoice a draft for 48 hours.
    h.calls(&customer, "jan", 3, at(2025, 1, 20)).await;
    h.clock.set(at(2025, 2, 1)).unwrap();
    let run = h
        .invoices
        .run_billing(RunBillingRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((run.invoices_created, run.invoices_finalized), (1, 0));
    let draft = h.invoice_at(&subscription, at(2025, 2, 1)).await;
    let finalized = h
        .invoices
        .finalize_invoice(FinalizeInvoiceRequest {
            invoice_id: draft.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!(
        (finalized.status, finalized.number.as_str()),
        (InvoiceStatus::Finalized as i32, "TALLY-000002")
    );
    assert_eq!(finalized.total, usd("12.30"));
    assert_eq!(
        finalized.grace_period_ends_at,
        Some(ts(at(2025, 2, 1) + Duration::hours(48)))
    );
    let again = h
        .invoices
        .finalize_invoice(FinalizeInvoiceRequest { invoice_id: draft })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!(
        again.number, "TALLY-000002",
        "finalizing twice changes nothing"
    );
    let listed = h
        .invoices
        .list_invoices(ListInvoicesRequest {
            customer_id: customer,
            include_lines: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invoices;
    assert_eq!(listed.len(), 2);
    // Newest first: usage and February's fee; then January's fee.
    assert_eq!(listed[0].lines.len(), 2);
    assert_eq!(listed[1].lines.len(), 1);
}

#[tokio::test]
async fn proration_by_day_counts_the_change_day_in_full() {
    let mut h = harness(at(2025, 4, 1), config(0)).await;
    let basic = h.plan("basic", PlanSpec::advance("30.00")).await;
    let pro = h.plan("pro", PlanSpec::advance("60.00")).await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &basic, at(2025, 4, 1)).await;
    h.bill_at(at(2025, 4, 1)).await;
    h.clock.set(at(2025, 4, 16) + Duration::hours(12)).unwrap();
    h.change_plan(
        &subscription,
        &pro,
        ChangeTiming::Immediately,
        ProrationPolicy::ProrateByDay,
    )
    .await;
    h.bill_at(at(2025, 5, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 5, 1)).await,
        vec![
            line("proration_credit", "04-01..05-01", dec!(-15.00)),
            line("proration_charge", "04-01..05-01", dec!(30.00)),
            line("recurring", "05-01..06-01", dec!(60.00)),
        ]
    );
}

#[tokio::test]
async fn credit_grants_are_validated_idempotent_and_voidable() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let customer = h.customer("acme").await;
    let grant = |key: &str, amount: &str| GrantCreditRequest {
        idempotency_key: key.into(),
        customer_id: customer.clone(),
        kind: CreditGrantKind::Prepaid as i32,
        amount: usd(amount),
        description: "prepaid".into(),
        ..Default::default()
    };
    let status = h
        .credits
        .grant_credit(grant("g-1", "10.001"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("amount.amount"),
        "{}",
        status.message()
    );
    let first = h
        .credits
        .grant_credit(grant("g-2", "10.00"))
        .await
        .unwrap()
        .into_inner()
        .credit_grant
        .unwrap();
    let replay = h
        .credits
        .grant_credit(grant("g-2", "10.00"))
        .await
        .unwrap()
        .into_inner()
        .credit_grant
        .unwrap();
    assert_eq!(first.id, replay.id);
    let status = h
        .credits
        .grant_credit(grant("g-2", "11.00"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let voided = h
        .credits
        .void_credit_grant(VoidCreditGrantRequest {
            idempotency_key: "v-1".into(),
            credit_grant_id: first.id.clone(),
            reason: "mistake".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credit_grant
        .unwrap();
    assert_eq!(
        (voided.status, voided.remaining.unwrap().amount.as_str()),
        (CreditGrantStatus::Void as i32, "0.00")
    );
    let status = h
        .credits
        .void_credit_grant(VoidCreditGrantRequest {
            idempotency_key: "v-2".into(),
            credit_grant_id: first.id,
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let entries = h
        .credits
        .list_credit_ledger_entries(ListCreditLedgerEntriesRequest {
            customer_id: customer,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entries.entries.len(), 1);
    assert!(
        !entries.next_page_token.is_empty(),
        "two entries, pages of one"
    );
}

#[tokio::test]
async fn list_subscriptions_filters_by_derived_status() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("10.00").trial(14)).await;
    let customer = h.customer("acme").await;
    let trialing = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    let pending = h.subscribe(&customer, &plan, at(2025, 1, 10)).await;
    let list = |h: &mut Harness, statuses: Vec<SubscriptionStatus>| {
        let mut client = h.subscriptions.clone();
        async move {
            client
                .list_subscriptions(ListSubscriptionsRequest {
                    statuses: statuses.into_iter().map(|status| status as i32).collect(),
                    page_size: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let page = list(&mut h, vec![SubscriptionStatus::Trialing]).await;
    assert_eq!(
        page.subscriptions
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        vec![trialing.clone()]
    );
    let page = list(&mut h, vec![SubscriptionStatus::Pending]).await;
    assert_eq!(
        page.subscriptions
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        vec![pending.clone()]
    );
    h.clock.set(at(2025, 1, 16)).unwrap();
    let page = list(&mut h, vec![SubscriptionStatus::Active]).await;
    assert_eq!(page.subscriptions.len(), 1);
    assert_eq!(
        page.subscriptions[0].id, trialing,
        "the trial ended on the 15th"
    );
    let page = list(&mut h, vec![]).await;
    assert_eq!(
        (page.subscriptions.len(), page.next_page_token.is_empty()),
        (1, false)
    );
}

#[tokio::test]
async fn canceling_at_an_invoiced_boundary_gives_back_money_and_credits() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h.plan("basic", PlanSpec::advance("40.00")).await;
    let customer = h.customer("acme").await;
    h.grant(&customer, CreditGrantKind::Promotional, "50.00", 0, None)
        .await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    h.bill_at(at(2025, 2, 1)).await;
    let february = h
        .invoice(&h.invoice_at(&subscription, at(2025, 2, 1)).await)
        .await;
    assert_eq!(
        (
            february.credits_applied.unwrap().amount,
            february.total.unwrap().amount
        ),
        ("-10.00".into(), "30.00".into())
    );
    h.subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: "cancel".into(),
            subscription_id: subscription.clone(),
            timing: ChangeTiming::Immediately as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    // February's fee was paid 30.00 in money (a credit note) and 10.00 in credits (returned).
    let february = h.invoice(&february.id).await;
    assert_eq!(
        (
            february.amount_credited.unwrap().amount,
            february.amount_due.unwrap().amount
        ),
        ("30.00".into(), "0.00".into())
    );
    let balance = h
        .credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: customer,
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.available.unwrap().amount, "10.00");
}
