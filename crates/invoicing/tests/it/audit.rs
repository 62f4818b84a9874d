//! Invoicing's audit chain: the bill run's and a manual finalization, a
//! void and a credit note each leave exactly one entry, with the right actor
//! and before/after states; refused and replayed calls leave none; no key
//! appears anywhere; the chain verifies.

use serde_json::Value;
use tally_audit::{Filter, Schema, StoredEntry};
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::*;
use tally_runtime::auth::{self, Scope};
use tally_testkit::keys::{Bearer, REQUEST_ID, serve_with_key};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::*;

type Client = InvoiceServiceClient<InterceptedService<Channel, Bearer>>;

/// Invoicing served again with authentication, and a `write` key
/// `key_finance` named `finance-team`: a channel sending it, and the key.
async fn authenticated_channel(h: &Harness) -> (InterceptedService<Channel, Bearer>, String) {
    let (channel, key) = serve_with_key(
        h.invoicing.grpc_server(16 << 20),
        &h.shutdown,
        "key_finance",
        "finance-team",
        &[Scope::Write],
    )
    .await
    .unwrap();
    (channel, key.plaintext)
}

/// [`authenticated_channel`]'s `InvoiceService` client and key.
async fn authenticated(h: &Harness) -> (Client, String) {
    let (channel, key) = authenticated_channel(h).await;
    (InvoiceServiceClient::new(channel), key)
}

async fn entries(h: &Harness) -> Vec<StoredEntry> {
    tally_audit::list(
        &h.db.pool,
        &[Schema::Invoicing],
        &Filter::default(),
        None,
        1000,
    )
    .await
    .unwrap()
    .0
}

fn state(json: Option<&String>) -> Value {
    serde_json::from_str(json.expect("a state")).unwrap()
}

fn of<'a>(entries: &'a [StoredEntry], action: &str, resource: &str) -> Vec<&'a StoredEntry> {
    entries
        .iter()
        .filter(|entry| entry.action == action && entry.resource_id == resource)
        .collect()
}

#[tokio::test]
async fn bill_run_finalizations_voids_and_credit_notes_are_audited_once_each() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (_, subscription, january) = h.first_invoice("40.00").await;
    let (mut client, key) = authenticated(&h).await;

    // January was finalized by the bill run.
    let all = entries(&h).await;
    let finalized = of(&all, "invoice.finalized", &january);
    assert_eq!(finalized.len(), 1, "{all:?}");
    let finalized = finalized[0];
    assert_eq!(
        (finalized.actor_kind.as_str(), finalized.actor_id.as_str()),
        ("system", "bill_run")
    );
    assert_eq!(state(finalized.before_state.as_ref())["status"], "draft");
    let after = state(finalized.after_state.as_ref());
    assert_eq!(
        (after["status"].as_str(), after["total"].as_str()),
        (Some("finalized"), Some("40.00"))
    );
    assert!(
        after["number"]
            .as_str()
            .is_some_and(|number| !number.is_empty())
    );
    // And created by it, just before: the draft after, nothing before.
    let created = of(&all, "invoice.created", &january);
    assert_eq!(created.len(), 1, "{all:?}");
    assert_eq!(created[0].actor_id, "bill_run");
    assert!(created[0].before_state.is_none());
    assert_eq!(state(created[0].after_state.as_ref())["status"], "draft");
    assert_eq!(created[0].comment.as_deref(), Some("1 lines"));
    assert!(created[0].sequence < finalized.sequence);

    // A credit note too large is refused: no entry.
    let note = |amount: &str, key: &str| CreateCreditNoteRequest {
        idempotency_key: key.into(),
        invoice_id: january.clone(),
        reason: CreditNoteReason::ProductUnsatisfactory as i32,
        memo: "goodwill for the outage".into(),
        amount: Some(create_credit_note_request::Amount::Partial(
            CreditNoteLines {
                lines: vec![CreditNoteLine {
                    invoice_line_id: String::new(),
                    description: "goodwill".into(),
                    amount: usd(amount),
                }],
            },
        )),
        ..Default::default()
    };
    let refused = client
        .create_credit_note(note("99.00", "cn-too-much"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let issued = client
        .create_credit_note(note("10.00", "cn-1"))
        .await
        .unwrap()
        .into_inner()
        .credit_note
        .unwrap();
    client
        .create_credit_note(note("10.00", "cn-1"))
        .await
        .unwrap(); // a replay
    let all = entries(&h).await;
    let notes: Vec<_> = all
        .iter()
        .filter(|entry| entry.action == "credit_note.issued")
        .collect();
    assert_eq!(notes.len(), 1, "the refusal and the replay wrote nothing");
    let entry = notes[0];
    assert_eq!(entry.resource_id, issued.id);
    assert_eq!(
        (
            entry.actor_kind.as_str(),
            entry.actor_id.as_str(),
            entry.actor_name.as_str()
        ),
        ("api_key", "key_finance", "finance-team")
    );
    assert_eq!(entry.request_id.as_deref(), Some(REQUEST_ID));
    assert_eq!(entry.reason.as_deref(), Some("product_unsatisfactory"));
    assert_eq!(entry.comment.as_deref(), Some("goodwill for the outage"));
    assert_eq!(
        state(entry.before_state.as_ref())["invoice"]["amount_credited"],
        "0.00"
    );
    let after = state(entry.after_state.as_ref());
    assert_eq!(after["invoice"]["amount_credited"], "10.00");
    assert_eq!(after["credit_note"]["total"]["amount"], "10.00");

    // February: billed, then voided by the key.
    h.bill_at(at(2025, 2, 1)).await;
    let february = h.invoice_at(&subscription, at(2025, 2, 1)).await;
    let void = VoidInvoiceRequest {
        idempotency_key: "void-feb".into(),
        invoice_id: february.clone(),
        reason: "billed in error".into(),
    };
    client.void_invoice(void.clone()).await.unwrap();
    client.void_invoice(void).await.unwrap(); // a replay
    let all = entries(&h).await;
    assert_eq!(of(&all, "invoice.finalized", &february).len(), 1);
    let voids = of(&all, "invoice.voided", &february);
    assert_eq!(voids.len(), 1);
    let entry = voids[0];
    assert_eq!(entry.actor_id, "key_finance");
    assert_eq!(entry.reason.as_deref(), Some("billed in error"));
    assert_eq!(state(entry.before_state.as_ref())["status"], "finalized");
    let after = state(entry.after_state.as_ref());
    assert_eq!(
        (after["status"].as_str(), after["void_reason"].as_str()),
        (Some("void"), Some("billed in error"))
    );

    // Nothing else was recorded (the harness created the customer and
    // subscribed without a key: an anonymous caller), no key is in any
    // entry, the chain holds.
    let actions: Vec<&str> = all.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(all[0].actor_kind, "anonymous");
    assert_eq!(
        actions,
        vec![
            "customer.created",
            "subscription.created",
            "invoice.created",
            "invoice.finalized",
            "credit_note.issued",
            "invoice.created",
            "invoice.finalized",
            "invoice.voided"
        ]
    );
    assert_no_secret(&h, &key).await;
    let verification = tally_audit::verify(&h.db.pool, Schema::Invoicing)
        .await
        .unwrap();
    assert_eq!(
        (verification.entries_checked, verification.broken),
        (8, None)
    );
}

#[tokio::test]
async fn a_manual_finalization_is_audited_with_the_caller_as_actor() {
    // Usage waits out the grace period as a draft; in-advance fees do not.
    let mut h = harness(at(2025, 4, 1), config(24)).await;
    let plan = h
        .plan("pro", PlanSpec::advance("30.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 4, 1)).await;
    h.bill_at(at(2025, 4, 1)).await;
    h.calls(&customer, "apr", 3, at(2025, 4, 10)).await;
    h.bill_at(at(2025, 5, 1)).await;
    let draft = h.invoice_at(&subscription, at(2025, 5, 1)).await;
    assert_eq!(h.invoice(&draft).await.status, InvoiceStatus::Draft as i32);
    let all = entries(&h).await;
    assert!(
        of(&all, "invoice.finalized", &draft).is_empty(),
        "a draft is not finalized"
    );
    assert_eq!(
        of(&all, "invoice.created", &draft).len(),
        1,
        "but created by the bill run"
    );
    let (mut client, key) = authenticated(&h).await;
    for _ in 0..2 {
        // The second call finds it finalized: nothing changes, nothing is recorded.
        client
            .finalize_invoice(FinalizeInvoiceRequest {
                invoice_id: draft.clone(),
            })
            .await
            .unwrap();
    }
    let all = entries(&h).await;
    let finalized = of(&all, "invoice.finalized", &draft);
    assert_eq!(finalized.len(), 1, "{all:?}");
    let entry = finalized[0];
    assert_eq!(
        (entry.actor_kind.as_str(), entry.actor_id.as_str()),
        ("api_key", "key_finance")
    );
    let before = state(entry.before_state.as_ref());
    let after = state(entry.after_state.as_ref());
    assert_eq!(
        (before["status"].as_str(), before["number"].as_str()),
        (Some("draft"), None)
    );
    assert_eq!(after["status"], "finalized");
    assert_eq!(
        after["total"], "30.30",
        "30.00 in advance and 3 calls at 0.10"
    );
    assert_eq!(
        all.len(),
        6,
        "and the customer, the subscription, April's invoice created and finalized by the bill run, May's created: {all:?}"
    );
    assert_eq!(all[0].action, "customer.created");
    assert_eq!(all[1].action, "subscription.created");
    assert_eq!(all[2].actor_id, "bill_run");
    assert_no_secret(&h, &key).await;
}

/// No entry holds the API key (or anything shaped like a secret).
async fn assert_no_secret(h: &Harness, key: &str) {
    for entry in entries(h).await {
        let text = format!("{entry:?}");
        assert!(!text.contains(key), "the key leaked into {}", entry.id);
        assert!(
            !text.contains(&auth::hash_key(key)),
            "the key's hash leaked into {}",
            entry.id
        );
        assert!(
            !tally_audit::looks_secret(&text),
            "a secret in {}",
            entry.id
        );
    }
}

#[tokio::test]
async fn payment_events_that_change_an_invoice_are_audited_once_by_the_event() {
    use crate::payments::message;
    use tally_bus::consumer::MessageHandler as _;
    use tally_proto::events::{PaymentEvent, payment_event};

    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, _, invoice) = h.first_invoice("25.00").await;
    let handler = h.invoicing.payment_events();
    let event = |id: &str, kind| PaymentEvent {
        event_id: id.into(),
        invoice_id: invoice.clone(),
        customer_id: customer.clone(),
        kind: Some(kind),
        ..Default::default()
    };
    // A failed payment moves only the subscription: no invoice entry.
    let failed = event(
        "pevt_1",
        payment_event::Kind::Failed(payment_event::Failed {
            amount: usd("25.00"),
            attempt_number: 1,
            failure_code: "card_declined".into(),
            ..Default::default()
        }),
    );
    handler.handle(&message(&failed), 1).await.unwrap();
    let succeeded = event(
        "pevt_evt_2",
        payment_event::Kind::Succeeded(payment_event::Succeeded {
            amount: usd("25.00"),
            attempt_number: 2,
            ..Default::default()
        }),
    );
    handler.handle(&message(&succeeded), 1).await.unwrap();
    handler.handle(&message(&succeeded), 2).await.unwrap(); // redelivered
    let refunded = event(
        "pevt_ref_1_refunded",
        payment_event::Kind::Refunded(payment_event::Refunded {
            refund_id: "ref_1".into(),
            amount: usd("10.00"),
            ..Default::default()
        }),
    );
    handler.handle(&message(&refunded), 1).await.unwrap();

    let all = entries(&h).await;
    let by_events: Vec<(&str, &str)> = all
        .iter()
        .filter(|entry| entry.actor_id.starts_with("payment_event:"))
        .map(|entry| (entry.action.as_str(), entry.actor_id.as_str()))
        .collect();
    assert_eq!(
        by_events,
        vec![
            ("invoice.payment_succeeded", "payment_event:pevt_evt_2"),
            ("invoice.refunded", "payment_event:pevt_ref_1_refunded"),
        ]
    );
    let paid = of(&all, "invoice.payment_succeeded", &invoice)[0];
    assert_eq!(state(paid.before_state.as_ref())["status"], "finalized");
    let after = state(paid.after_state.as_ref());
    assert_eq!(
        (after["status"].as_str(), after["amount_paid"].as_str()),
        (Some("paid"), Some("25.00"))
    );
    let refund = of(&all, "invoice.refunded", &invoice)[0];
    assert_eq!(refund.comment.as_deref(), Some("refund ref_1"));
    assert_eq!(
        state(refund.after_state.as_ref())["amount_credited"],
        "10.00"
    );
    let verification = tally_audit::verify(&h.db.pool, Schema::Invoicing)
        .await
        .unwrap();
    assert_eq!(verification.broken, None);
}

#[tokio::test]
async fn credit_grants_and_their_voids_are_audited_with_the_caller() {
    use tally_proto::invoicing::credit_service_client::CreditServiceClient;

    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let customer = h.customer("acme").await;
    let (channel, key) = authenticated_channel(&h).await;
    let mut credits = CreditServiceClient::new(channel);
    let grant = GrantCreditRequest {
        idempotency_key: "grant-1".into(),
        customer_id: customer.clone(),
        kind: CreditGrantKind::Promotional as i32,
        amount: usd("15.00"),
        description: "launch promotion".into(),
        ..Default::default()
    };
    let granted = credits
        .grant_credit(grant.clone())
        .await
        .unwrap()
        .into_inner()
        .credit_grant
        .unwrap();
    credits.grant_credit(grant).await.unwrap(); // a replay
    let void = VoidCreditGrantRequest {
        idempotency_key: "void-grant-1".into(),
        credit_grant_id: granted.id.clone(),
        reason: "granted to the wrong customer".into(),
    };
    credits.void_credit_grant(void.clone()).await.unwrap();
    credits.void_credit_grant(void).await.unwrap(); // a replay

    let all: Vec<StoredEntry> = entries(&h)
        .await
        .into_iter()
        .filter(|entry| entry.resource_type == "credit_grant")
        .collect();
    let actions: Vec<&str> = all.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["credit_grant.granted", "credit_grant.voided"]);
    for entry in &all {
        assert_eq!(entry.resource_id, granted.id);
        assert_eq!(entry.actor_id, "key_finance");
    }
    assert_eq!(all[0].comment.as_deref(), Some("launch promotion"));
    let after = state(all[0].after_state.as_ref());
    assert_eq!(after["amount"]["amount"], "15.00");
    assert_eq!(after["remaining"]["amount"], "15.00");
    assert_eq!(
        all[1].reason.as_deref(),
        Some("granted to the wrong customer")
    );
    assert_eq!(
        state(all[1].before_state.as_ref())["remaining"]["amount"],
        "15.00"
    );
    assert_eq!(
        state(all[1].after_state.as_ref())["status"],
        "CREDIT_GRANT_STATUS_VOID"
    );
    assert_no_secret(&h, &key).await;
}

#[tokio::test]
async fn subscription_changes_are_audited_with_the_caller_and_the_reason() {
    use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;

    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let basic = h.plan("basic", PlanSpec::advance("10.00")).await;
    let pro = h.plan("pro", PlanSpec::advance("30.00")).await;
    let customer = h.customer("acme").await;
    let (channel, key) = authenticated_channel(&h).await;
    let mut subscriptions = SubscriptionServiceClient::new(channel);
    let created = subscriptions
        .create_subscription(CreateSubscriptionRequest {
            idempotency_key: "sub-1".into(),
            customer_id: customer.clone(),
            plan_version_id: basic.clone(),
            start_at: Some(ts(at(2025, 1, 1))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    h.clock.set(at(2025, 1, 10)).unwrap();
    let upgrade = ChangePlanRequest {
        idempotency_key: "upgrade-1".into(),
        subscription_id: created.id.clone(),
        plan_version_id: pro.clone(),
        timing: ChangeTiming::Immediately as i32,
        reason: "needs more seats".into(),
        ..Default::default()
    };
    subscriptions.change_plan(upgrade.clone()).await.unwrap();
    subscriptions.change_plan(upgrade).await.unwrap(); // a replay
    subscriptions
        .cancel_subscription(CancelSubscriptionRequest {
            idempotency_key: "cancel-1".into(),
            subscription_id: created.id.clone(),
            timing: ChangeTiming::AtPeriodEnd as i32,
            reason: "moving to a competitor".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    subscriptions
        .resume_subscription(ResumeSubscriptionRequest {
            idempotency_key: "resume-1".into(),
            subscription_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let all: Vec<StoredEntry> = entries(&h)
        .await
        .into_iter()
        .filter(|entry| entry.resource_id == created.id)
        .collect();
    let actions: Vec<&str> = all.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "subscription.created",
            "subscription.plan_changed",
            "subscription.canceled",
            "subscription.resumed"
        ]
    );
    assert!(all.iter().all(|entry| entry.actor_id == "key_finance"));
    assert!(all[0].before_state.is_none());
    assert_eq!(
        state(all[0].after_state.as_ref())["plan_version_id"],
        basic.as_str()
    );
    assert_eq!(all[1].reason.as_deref(), Some("needs more seats"));
    assert_eq!(
        state(all[1].before_state.as_ref())["plan_version_id"],
        basic.as_str()
    );
    assert_eq!(
        state(all[1].after_state.as_ref())["plan_version_id"],
        pro.as_str()
    );
    assert_eq!(all[2].reason.as_deref(), Some("moving to a competitor"));
    assert!(state(all[2].after_state.as_ref())["cancel_at"].is_string());
    assert!(state(all[3].after_state.as_ref())["cancel_at"].is_null());
    assert_no_secret(&h, &key).await;
}

#[tokio::test]
async fn customer_changes_are_audited_without_personal_data() {
    use tally_proto::invoicing::customer_service_client::CustomerServiceClient;

    let h = harness(at(2025, 1, 1), config(0)).await;
    let (channel, _key) = authenticated_channel(&h).await;
    let mut customers = CustomerServiceClient::new(channel);
    let create = CreateCustomerRequest {
        external_id: "globex".into(),
        name: "Globex".into(),
        currency: "USD".into(),
        billing_email: "ap@globex.example".into(),
        ..Default::default()
    };
    let created = customers
        .create_customer(create.clone())
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    customers.create_customer(create).await.unwrap(); // a replay records nothing
    customers
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                id: created.id.clone(),
                name: "Globex Corporation".into(),
                billing_email: "billing@globex.example".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into(), "billing_email".into()],
            }),
        })
        .await
        .unwrap();
    customers
        .archive_customer(ArchiveCustomerRequest {
            customer_id: created.id.clone(),
        })
        .await
        .unwrap();

    let all: Vec<StoredEntry> = entries(&h)
        .await
        .into_iter()
        .filter(|entry| entry.resource_id == created.id)
        .collect();
    let actions: Vec<&str> = all.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        ["customer.created", "customer.updated", "customer.archived"]
    );
    assert!(all.iter().all(|entry| entry.actor_id == "key_finance"));
    let updated = &all[1];
    assert_eq!(
        updated.comment.as_deref(),
        Some("fields: name, billing_email")
    );
    assert_eq!(state(updated.before_state.as_ref())["name"], "Globex");
    assert_eq!(
        state(updated.after_state.as_ref())["name"],
        "Globex Corporation"
    );
    assert_eq!(
        state(all[2].after_state.as_ref())["status"],
        "CUSTOMER_STATUS_ARCHIVED"
    );
    for entry in &all {
        assert!(
            !format!("{entry:?}").contains("globex.example"),
            "an email reached the append-only log: {entry:?}"
        );
    }
}
