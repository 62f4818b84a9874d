//! Rows stored as protobuf by the release before
//! `20261207800000_invoicing_own_model.sql` keep reading the same through the
//! API: before `tally migrate` converts them (the readers' fallback), after
//! it converts them, and after a second run (which converts nothing). And
//! the previous release can still read every row (a rolling upgrade, a
//! rollback): each keeps its protobuf, equal to what the API answers.
//!
//! The old rows are made the way the previous code made them: the previous
//! code stored `encode_to_vec()` of exactly the wire customer, line and
//! credit note the API returns, with none of the new columns. So a month of
//! billing is run (recurring fee, usage, credits applied, a plan change with
//! prorations, two credit notes), its rows are written back in that form,
//! and every answer is compared with the one given before.

use prost::Message as _;
use tally_proto::invoicing::{
    self as invoicing_proto, Address, ChangeTiming, CreateCreditNoteRequest, CreateCustomerRequest,
    CreditGrantKind, CreditNoteLine, CreditNoteLines, CreditNoteReason, GetCustomerRequest,
    ListCreditNotesRequest, ProrationPolicy, TaxId, create_credit_note_request,
    get_customer_request,
};

use crate::support::*;

/// What the API answers for everything the conversion touches.
#[derive(Debug, PartialEq)]
struct Answers {
    customer: invoicing_proto::Customer,
    invoices: Vec<invoicing_proto::Invoice>,
    credit_notes: Vec<invoicing_proto::CreditNote>,
}

async fn answers(h: &mut Harness, customer: &str, invoices: &[String]) -> Answers {
    let customer = h
        .customers
        .get_customer(GetCustomerRequest {
            lookup: Some(get_customer_request::Lookup::CustomerId(customer.into())),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    let mut read = Vec::new();
    for id in invoices {
        read.push(h.invoice(id).await);
    }
    let credit_notes = h
        .invoices
        .list_credit_notes(ListCreditNotesRequest {
            customer_id: customer.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credit_notes;
    Answers {
        customer,
        invoices: read,
        credit_notes,
    }
}

/// Writes every row back in the previous release's format.
async fn store_the_old_way(h: &Harness, before: &Answers) {
    let pool = &h.db.pool;
    sqlx::query("UPDATE invoicing.customers SET snapshot = $2, document = NULL WHERE id = $1")
        .bind(&before.customer.id)
        .bind(before.customer.encode_to_vec())
        .execute(pool)
        .await
        .unwrap();
    // The previous release could not have written anything else: the
    // immutability trigger is not what is under test here.
    sqlx::query(
        "ALTER TABLE invoicing.invoice_lines DISABLE TRIGGER invoice_lines_immutable_after_draft",
    )
    .execute(pool)
    .await
    .unwrap();
    for invoice in &before.invoices {
        for line in &invoice.lines {
            sqlx::query(
                "UPDATE invoicing.invoice_lines SET detail = $2, description = NULL, quantity = NULL, \
                 unit_price = NULL, precise_amount = NULL, explanation = NULL WHERE id = $1",
            )
            .bind(&line.id)
            .bind(line.encode_to_vec())
            .execute(pool)
            .await
            .unwrap();
        }
    }
    sqlx::query(
        "ALTER TABLE invoicing.invoice_lines ENABLE TRIGGER invoice_lines_immutable_after_draft",
    )
    .execute(pool)
    .await
    .unwrap();
    // An invoice a pod of the previous release finalized has only the wire
    // number of its collection mode
    // (`20261207800200_invoicing_collection_mode_text.sql`).
    for invoice in &before.invoices {
        sqlx::query("UPDATE invoicing.invoices SET collection_mode_name = NULL WHERE id = $1")
            .bind(&invoice.id)
            .execute(pool)
            .await
            .unwrap();
    }
    for note in &before.credit_notes {
        sqlx::query(
            "UPDATE invoicing.credit_notes SET snapshot = $2, reason = NULL, memo = NULL, lines = NULL, \
             currency = NULL, credited_to_balance = NULL, refund_amount = NULL WHERE id = $1",
        )
        .bind(&note.id)
        .bind(note.encode_to_vec())
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Rows stored only as protobuf: (customers, credit notes, lines).
async fn protobuf_only(h: &Harness) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM invoicing.customers WHERE document IS NULL), \
                (SELECT count(*) FROM invoicing.credit_notes WHERE reason IS NULL), \
                (SELECT count(*) FROM invoicing.invoice_lines WHERE quantity IS NULL)",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

/// What the previous release reads: every row's protobuf, decoded, must be
/// what the API answers.
async fn previous_release_reads(h: &Harness, expected: &Answers) {
    let pool = &h.db.pool;
    let (bytes,): (Vec<u8>,) =
        sqlx::query_as("SELECT snapshot FROM invoicing.customers WHERE id = $1")
            .bind(&expected.customer.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        invoicing_proto::Customer::decode(bytes.as_slice()).unwrap(),
        expected.customer
    );
    for invoice in &expected.invoices {
        let details: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT detail FROM invoicing.invoice_lines WHERE invoice_id = $1 ORDER BY position",
        )
        .bind(&invoice.id)
        .fetch_all(pool)
        .await
        .unwrap();
        let lines: Vec<invoicing_proto::InvoiceLine> = details
            .iter()
            .map(|(bytes,)| invoicing_proto::InvoiceLine::decode(bytes.as_slice()).unwrap())
            .collect();
        assert_eq!(lines, invoice.lines);
    }
    for note in &expected.credit_notes {
        let (bytes,): (Vec<u8>,) =
            sqlx::query_as("SELECT snapshot FROM invoicing.credit_notes WHERE id = $1")
                .bind(&note.id)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(
            &invoicing_proto::CreditNote::decode(bytes.as_slice()).unwrap(),
            note
        );
    }
}

#[tokio::test]
async fn rows_stored_as_protobuf_read_the_same_before_and_after_the_conversion() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let basic = h
        .plan("basic", PlanSpec::advance("40.00").calls("0.0015"))
        .await;
    let pro = h
        .plan("pro", PlanSpec::advance("100.00").calls("0.001"))
        .await;
    let customer = h
        .customers
        .create_customer(CreateCustomerRequest {
            external_id: "acme".into(),
            name: "Acme GmbH".into(),
            billing_email: "billing@acme.example".into(),
            billing_address: Some(Address {
                line1: "Hauptstraße 1".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
                ..Default::default()
            }),
            tax_id: Some(TaxId {
                kind: "eu_vat".into(),
                value: "DE123456789".into(),
            }),
            currency: "USD".into(),
            collection_mode: invoicing_proto::CollectionMode::SendInvoice as i32,
            metadata: [("team".to_owned(), "platform".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
        .id;
    h.grant(&customer, CreditGrantKind::Promotional, "15.00", 0, None)
        .await;
    let subscription = h.subscribe(&customer, &basic, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    h.calls(&customer, "jan", 7, at(2025, 1, 10)).await;
    h.bill_at(at(2025, 2, 1)).await;
    h.clock.set(at(2025, 2, 15)).unwrap();
    h.change_plan(
        &subscription,
        &pro,
        ChangeTiming::Immediately,
        ProrationPolicy::Prorate,
    )
    .await;
    h.bill_at(at(2025, 3, 1)).await;
    let invoices = vec![
        h.invoice_at(&subscription, at(2025, 1, 1)).await,
        h.invoice_at(&subscription, at(2025, 2, 1)).await,
        h.invoice_at(&subscription, at(2025, 3, 1)).await,
    ];
    let january = h.invoice(&invoices[0]).await;
    // A partial note whose amount keeps the text it was given ("5.5"), and
    // a full one.
    h.invoices
        .create_credit_note(CreateCreditNoteRequest {
            idempotency_key: "cn-partial".into(),
            invoice_id: january.id.clone(),
            reason: CreditNoteReason::ProductUnsatisfactory as i32,
            memo: "goodwill".into(),
            amount: Some(create_credit_note_request::Amount::Partial(
                CreditNoteLines {
                    lines: vec![CreditNoteLine {
                        invoice_line_id: january.lines[0].id.clone(),
                        description: "goodwill".into(),
                        amount: usd("5.5"),
                    }],
                },
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    h.invoices
        .create_credit_note(CreateCreditNoteRequest {
            idempotency_key: "cn-full".into(),
            invoice_id: invoices[1].clone(),
            reason: CreditNoteReason::BillingError as i32,
            amount: Some(create_credit_note_request::Amount::Full(true)),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = answers(&mut h, &customer, &invoices).await;
    let kinds: std::collections::BTreeSet<i32> = before
        .invoices
        .iter()
        .flat_map(|invoice| invoice.lines.iter().map(|line| line.kind))
        .collect();
    for kind in [
        invoicing_proto::InvoiceLineKind::Recurring,
        invoicing_proto::InvoiceLineKind::Usage,
        invoicing_proto::InvoiceLineKind::ProrationCredit,
        invoicing_proto::InvoiceLineKind::ProrationCharge,
        invoicing_proto::InvoiceLineKind::CreditsApplied,
    ] {
        assert!(
            kinds.contains(&(kind as i32)),
            "the month bills a {kind:?} line"
        );
    }
    assert_eq!(before.credit_notes.len(), 2);
    assert_eq!(
        protobuf_only(&h).await,
        (0, 0, 0),
        "new rows hold the model"
    );
    previous_release_reads(&h, &before).await;
    // An invoice's collection mode is its name, and the number the previous
    // release reads beside it.
    let modes: Vec<(Option<String>, i32)> = sqlx::query_as(
        "SELECT collection_mode_name, collection_mode FROM invoicing.invoices \
         WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&invoices)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        modes,
        vec![(Some("send_invoice".to_owned()), 2); 3],
        "finalized invoices copy the customer's mode"
    );
    for invoice in &before.invoices {
        assert_eq!(
            invoice.collection_mode,
            invoicing_proto::CollectionMode::SendInvoice as i32
        );
    }

    store_the_old_way(&h, &before).await;
    let line_count = before.invoices.iter().map(|i| i.lines.len()).sum::<usize>();
    assert_eq!(
        protobuf_only(&h).await,
        (1, 2, i64::try_from(line_count).unwrap())
    );
    assert_eq!(
        answers(&mut h, &customer, &invoices).await,
        before,
        "old rows read the same before they are converted"
    );

    let converted = tally_invoicing::upgrade::convert_stored_protobuf(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        (
            converted.customers,
            converted.credit_notes,
            converted.invoice_lines
        ),
        (1, 2, line_count)
    );
    assert_eq!(protobuf_only(&h).await, (0, 0, 0));
    previous_release_reads(&h, &before).await;
    assert_eq!(
        answers(&mut h, &customer, &invoices).await,
        before,
        "converted rows read the same"
    );
    let again = tally_invoicing::upgrade::convert_stored_protobuf(&h.db.pool)
        .await
        .unwrap();
    assert!(again.is_empty(), "a second run converts nothing: {again:?}");

    // A converted customer is changed as usual, and the model is what is
    // stored: its enums as text.
    let (mode, status): (String, String) = sqlx::query_as(
        "SELECT document->>'collection_mode', status FROM invoicing.customers WHERE id = $1",
    )
    .bind(&customer)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!((mode.as_str(), status.as_str()), ("send_invoice", "active"));
}

#[tokio::test]
async fn a_stored_name_this_version_does_not_know_is_refused() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (_, _, invoice) = h.first_invoice("40.00").await;
    let refused = sqlx::query("UPDATE invoicing.invoices SET status = 'archived' WHERE id = $1")
        .bind(&invoice)
        .execute(&h.db.pool)
        .await;
    assert!(refused.is_err(), "the CHECK lists the statuses");
    let refused = sqlx::query(
        "ALTER TABLE invoicing.invoice_lines DISABLE TRIGGER invoice_lines_immutable_after_draft",
    )
    .execute(&h.db.pool)
    .await
    .and(
        sqlx::query("UPDATE invoicing.invoice_lines SET kind = 'discount' WHERE invoice_id = $1")
            .bind(&invoice)
            .execute(&h.db.pool)
            .await,
    );
    assert!(refused.is_err(), "the CHECK lists the line kinds");
    let refused = sqlx::query(
        "UPDATE invoicing.invoices SET collection_mode_name = 'by_carrier_pigeon' WHERE id = $1",
    )
    .bind(&invoice)
    .execute(&h.db.pool)
    .await;
    assert!(refused.is_err(), "the CHECK lists the collection modes");
    let refused = sqlx::query(
        "UPDATE invoicing.invoices SET collection_mode_name = 'charge_automatically', collection_mode = 2 \
         WHERE id = $1",
    )
    .bind(&invoice)
    .execute(&h.db.pool)
    .await;
    assert!(refused.is_err(), "the name and the number never disagree");
    // A line explanation with a timing this version does not know is an
    // error when read, never a default.
    sqlx::query(
        "UPDATE invoicing.invoice_lines SET explanation = jsonb_set(explanation, '{billing_timing}', '\"someday\"') \
         WHERE invoice_id = $1",
    )
    .bind(&invoice)
    .execute(&h.db.pool)
    .await
    .unwrap();
    let status = h
        .invoices
        .get_invoice(invoicing_proto::GetInvoiceRequest {
            invoice_id: invoice.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{}", status.message());
}
