//! Finalized invoices mirrored to Stripe and collected.

use std::time::Duration;

use rust_decimal_macros::dec;
use tally_bus::consumer::HandlerError;
use tally_domain::money::{Currency, Money};
use tally_payments::ledger::Book;
use tally_proto::events::payment_event::Kind;
use tally_proto::invoicing::CollectionMode;
use tally_proto::payments::{
    GetPaymentRequest, GetStripeCustomerRequest, ListPaymentsRequest, PaymentStatus,
    get_stripe_customer_request,
};
use wiremock::Mock;
use wiremock::matchers::{method, path};

use crate::fixtures;
use crate::stripe_mocks::{self, respond};
use crate::support::*;

#[tokio::test]
async fn a_finalized_invoice_is_mirrored_line_by_line_and_collected() {
    let harness = harness().await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    let spec = InvoiceSpec::usd(
        "inv_000001",
        &[
            ("il_000001", "42.50"),
            ("il_000002", "12.55"),
            ("il_000003", "-5.05"),
        ],
    );

    harness.deliver(&spec.finalized()).await.expect("handled");

    // The customer: created once, mapped both ways.
    let customers = harness.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(customers.len(), 1);
    assert_eq!(
        idempotency_key(&customers[0]),
        "tally:customer:cus_000100:create"
    );
    assert_eq!(
        field(&customers[0], "metadata[tally_customer_id]").as_deref(),
        Some("cus_000100")
    );
    assert_eq!(
        field(&customers[0], "address[country]").as_deref(),
        Some("DE")
    );
    let mut client = harness.client.clone();
    let mapping = client
        .get_stripe_customer(GetStripeCustomerRequest {
            lookup: Some(get_stripe_customer_request::Lookup::StripeCustomerId(
                STRIPE_CUSTOMER.into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .stripe_customer
        .unwrap();
    assert_eq!(mapping.customer_id, "cus_000100");
    assert!(mapping.has_default_payment_method);

    // The invoice: no pending items swept in, no auto-advance, collection by us.
    let invoices = harness.stripe_requests("POST", "/v1/invoices").await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(field(&invoices[0], "currency").as_deref(), Some("usd"));
    assert_eq!(
        field(&invoices[0], "pending_invoice_items_behavior").as_deref(),
        Some("exclude")
    );
    assert_eq!(
        field(&invoices[0], "auto_advance").as_deref(),
        Some("false")
    );
    assert_eq!(
        field(&invoices[0], "collection_method").as_deref(),
        Some("charge_automatically")
    );
    assert_eq!(
        idempotency_key(&invoices[0]),
        "tally:invoice:inv_000001:create"
    );

    // One item per line, in exact minor units (a credit stays negative).
    let items = harness.stripe_requests("POST", "/v1/invoiceitems").await;
    let amounts: Vec<(String, String, String)> = items
        .iter()
        .map(|item| {
            (
                field(item, "metadata[tally_line_id]").unwrap(),
                field(item, "amount").unwrap(),
                idempotency_key(item),
            )
        })
        .collect();
    assert_eq!(
        amounts,
        vec![
            (
                "il_000001".into(),
                "4250".into(),
                "tally:invoice_item:il_000001:create".into()
            ),
            (
                "il_000002".into(),
                "1255".into(),
                "tally:invoice_item:il_000002:create".into()
            ),
            (
                "il_000003".into(),
                "-505".into(),
                "tally:invoice_item:il_000003:create".into()
            ),
        ]
    );
    assert!(
        items
            .iter()
            .all(|item| field(item, "invoice").as_deref() == Some(STRIPE_INVOICE))
    );

    // Finalized, then paid with the first attempt's key.
    let finalize = harness
        .stripe_requests("POST", "/v1/invoices/in_1Acme/finalize")
        .await;
    assert_eq!(
        idempotency_key(&finalize[0]),
        "tally:invoice:inv_000001:finalize"
    );
    let pay = harness
        .stripe_requests("POST", "/v1/invoices/in_1Acme/pay")
        .await;
    assert_eq!(pay.len(), 1);
    assert_eq!(idempotency_key(&pay[0]), "tally:invoice:inv_000001:pay:1");
    for request in harness.stripe.received_requests().await.unwrap() {
        // async-stripe sends the API version its types are generated for.
        assert_eq!(
            request.headers.get("Stripe-Version").unwrap(),
            "2026-09-30.endive",
            "{}",
            request.url.path()
        );
        assert_eq!(
            request
                .headers
                .get("Authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            format!("Bearer {STRIPE_SECRET_KEY}")
        );
    }

    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(payment.amount.as_ref().unwrap().amount, "50.00");
    assert_eq!(payment.stripe_invoice_id, STRIPE_INVOICE);
    assert_eq!(payment.stripe_charge_id, CHARGE);
    assert_eq!(payment.attempts.len(), 1);
    assert!(payment.attempts[0].succeeded);

    let events = harness.payment_events().await;
    assert_eq!(events.len(), 1);
    let Some(Kind::Succeeded(succeeded)) = &events[0].kind else {
        panic!("{:?}", events[0].kind)
    };
    assert_eq!(succeeded.amount.as_ref().unwrap().amount, "50.00");
    assert_eq!(succeeded.stripe_charge_id, CHARGE);
    assert_eq!(events[0].customer_id, "cus_000100");

    // Receivable in and out again; the money sits at Stripe.
    assert_eq!(harness.usd(Book::Receivable).await, dec!(0));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(50.00));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(50.00));
}

#[tokio::test]
async fn amounts_follow_the_currency_exponent() {
    let harness = harness().await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "jpy", 1_050).await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "1000"), ("il_000002", "50")]);
    spec.currency = "JPY".into();
    harness.deliver(&spec.finalized()).await.expect("handled");
    let items = harness.stripe_requests("POST", "/v1/invoiceitems").await;
    let amounts: Vec<String> = items
        .iter()
        .map(|item| field(item, "amount").unwrap())
        .collect();
    assert_eq!(amounts, vec!["1000", "50"], "yen have no minor unit");
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
}

#[tokio::test]
async fn a_redelivered_finalization_calls_stripe_once() {
    let harness = harness().await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let requests = harness.stripe.received_requests().await.unwrap().len();
    harness.deliver(&spec.finalized()).await.unwrap();
    assert_eq!(
        harness.stripe.received_requests().await.unwrap().len(),
        requests
    );
    assert_eq!(harness.payment_events().await.len(), 1);
    assert_eq!(harness.count("payments").await, 1);
}

#[tokio::test]
async fn a_gateway_error_page_instead_of_stripes_error_object_is_retried() {
    let harness = harness().await;
    // A proxy in front of Stripe answers 502 with an HTML page: async-stripe
    // cannot read it as Stripe's error object and hides the status, so this
    // checks that such an answer is still retried with the same key.
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            wiremock::ResponseTemplate::new(502)
                .set_body_raw("<html><body>502 Bad Gateway</body></html>", "text/html"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_000).await;

    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness.deliver(&spec.finalized()).await.expect("handled");

    let customers = harness.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(customers.len(), 2, "the 502, then success");
    assert_eq!(
        idempotency_key(&customers[0]),
        idempotency_key(&customers[1])
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
}

#[tokio::test]
async fn rate_limits_server_errors_and_timeouts_are_retried_with_the_same_key() {
    let harness = harness().await;
    let customer = fixtures::customer(STRIPE_CUSTOMER, "cus_000100");
    for (priority, response) in [
        (
            1,
            respond(429, fixtures::invalid_request("Too many requests", "")),
        ),
        (
            2,
            respond(
                500,
                serde_json::json!({"error": {"type": "api_error", "message": "Something went wrong"}}),
            ),
        ),
        (
            3,
            respond(200, customer.clone()).set_delay(Duration::from_millis(1_500)),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path("/v1/customers"))
            .respond_with(response)
            .up_to_n_times(1)
            .with_priority(priority)
            .mount(&harness.stripe)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(respond(200, customer))
        .with_priority(4)
        .mount(&harness.stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .respond_with(respond(200, fixtures::invoice_item("ii_1", 1000, "usd")))
        .mount(&harness.stripe)
        .await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 1_000).await;
    stripe_mocks::pay_succeeds(&harness.stripe, "inv_000001", "usd", 1_000).await;

    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness
        .deliver(&spec.finalized())
        .await
        .expect("handled after retries");

    let customers = harness.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(customers.len(), 4, "429, 500, timeout, then success");
    assert!(
        customers
            .iter()
            .all(|request| idempotency_key(request) == "tally:customer:cus_000100:create"),
        "every retry reuses the key"
    );
    assert!(
        customers
            .iter()
            .all(|request| request.body == customers[0].body)
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
}

#[tokio::test]
async fn stripe_down_for_every_try_is_redelivered_and_resumes_with_the_same_keys() {
    let harness = harness().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(respond(
            503,
            serde_json::json!({"error": {"type": "api_error", "message": "down"}}),
        ))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);

    let first = harness.deliver(&spec.finalized()).await;
    assert!(matches!(first, Err(HandlerError::Retry(_))), "{first:?}");
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Pending
    );
    assert!(harness.payment_events().await.is_empty());

    harness
        .deliver(&spec.finalized())
        .await
        .expect("the redelivery completes");
    let keys: Vec<String> = harness.keys("/v1/customers").await;
    assert_eq!(keys.len(), 5);
    assert!(
        keys.iter()
            .all(|key| key == "tally:customer:cus_000100:create")
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
}

#[tokio::test]
async fn a_permanent_error_is_recorded_once_and_not_retried() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices"))
        .respond_with(respond(
            400,
            fixtures::invalid_request("Missing required param: customer.", "customer"),
        ))
        .mount(&harness.stripe)
        .await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);

    harness
        .deliver(&spec.finalized())
        .await
        .expect("acked: retrying cannot help");
    assert_eq!(
        harness.stripe_requests("POST", "/v1/invoices").await.len(),
        1,
        "never retried"
    );
    let error = harness.sync_error("inv_000001").await;
    assert!(
        error.contains("Missing required param: customer."),
        "{error}"
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert_eq!(
        payment.attempts[0].failure_code,
        "sync_failed:parameter_invalid_empty"
    );
    assert!(
        payment.next_retry_at.is_none(),
        "no dunning for a refused mirror"
    );
    let events = harness.payment_events().await;
    assert!(matches!(events[0].kind, Some(Kind::Failed(_))));
    // A redelivery does nothing more.
    harness.deliver(&spec.finalized()).await.unwrap();
    assert_eq!(
        harness.stripe_requests("POST", "/v1/invoices").await.len(),
        1
    );
}

#[tokio::test]
async fn a_declined_first_attempt_fails_and_schedules_dunning() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 1_000).await;
    stripe_mocks::pay_declined(&harness.stripe).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();

    let pay = harness
        .stripe_requests("POST", "/v1/invoices/in_1Acme/pay")
        .await;
    assert_eq!(pay.len(), 1, "a decline is not retried by the client");
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert_eq!(payment.attempts[0].failure_code, "insufficient_funds");
    assert_eq!(
        payment.attempts[0].failure_message,
        "Your card has insufficient funds."
    );
    assert_eq!(payment.attempts[0].stripe_payment_intent_id, PAYMENT_INTENT);
    let next = payment.next_retry_at.unwrap();
    assert_eq!(
        next.seconds,
        (start_time() + chrono::Duration::days(1)).timestamp()
    );
    let events = harness.payment_events().await;
    let Some(Kind::Failed(failed)) = &events[0].kind else {
        panic!()
    };
    assert_eq!(failed.attempt_number, 1);
    assert_eq!(
        failed.next_attempt_at.as_ref().unwrap().seconds,
        next.seconds
    );
    assert_eq!(harness.usd(Book::Receivable).await, dec!(10.00));
}

#[tokio::test]
async fn send_invoice_customers_get_the_invoice_by_email() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 1_000).await;
    stripe_mocks::send_succeeds(&harness.stripe, "inv_000001", 1_000).await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    spec.mode = CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.unwrap();

    let created = harness.stripe_requests("POST", "/v1/invoices").await;
    assert_eq!(
        field(&created[0], "collection_method").as_deref(),
        Some("send_invoice")
    );
    assert_eq!(field(&created[0], "days_until_due").as_deref(), Some("14"));
    let sent = harness
        .stripe_requests("POST", "/v1/invoices/in_1Acme/send")
        .await;
    assert_eq!(idempotency_key(&sent[0]), "tally:invoice:inv_000001:send");
    assert!(
        harness
            .stripe_requests("POST", "/v1/invoices/in_1Acme/pay")
            .await
            .is_empty()
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Pending
    );
}

#[tokio::test]
async fn a_line_in_another_currency_is_poison_and_touches_nothing() {
    let harness = harness().await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    let mut event = spec.finalized();
    event.invoice.as_mut().unwrap().lines[0]
        .amount
        .as_mut()
        .unwrap()
        .currency = "EUR".into();
    let outcome = harness.deliver(&event).await;
    let Err(HandlerError::Poison(reason)) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("invoice.lines[0].amount: currency EUR differs from the invoice's USD"),
        "{reason}"
    );
    let mut unrounded = spec.finalized();
    unrounded.invoice.as_mut().unwrap().lines[0]
        .amount
        .as_mut()
        .unwrap()
        .amount = "10.005".into();
    let Err(HandlerError::Poison(reason)) = harness.deliver(&unrounded).await else {
        panic!()
    };
    assert!(reason.contains("not in whole minor units"), "{reason}");
    assert!(harness.stripe.received_requests().await.unwrap().is_empty());
    assert_eq!(harness.count("invoices").await, 0);
}

#[tokio::test]
async fn a_voided_invoice_is_voided_in_stripe_and_its_receivable_reversed() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 1_000).await;
    stripe_mocks::pay_declined(&harness.stripe).await;
    stripe_mocks::void_succeeds(&harness.stripe, "inv_000001").await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    harness.deliver(&spec.voided()).await.unwrap();

    let voids = harness
        .stripe_requests("POST", "/v1/invoices/in_1Acme/void")
        .await;
    assert_eq!(voids.len(), 1);
    assert_eq!(idempotency_key(&voids[0]), "tally:invoice:inv_000001:void");
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Canceled);
    assert!(payment.next_retry_at.is_none());
    assert_eq!(
        harness.balance(Book::Receivable, Currency::USD).await,
        Money::zero(Currency::USD)
    );
    // The older finalization, redelivered with a new id, changes nothing.
    let mut late = spec.finalized();
    late.event_id = "ievt_late".into();
    harness.deliver(&late).await.unwrap();
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Canceled
    );
}

#[tokio::test]
async fn a_mirror_interrupted_half_way_resumes_without_repeating_a_step() {
    let harness = harness().await;
    // The second line's item fails on every try of the first delivery.
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .and(wiremock::matchers::body_string_contains("il_000002"))
        .respond_with(respond(
            502,
            serde_json::json!({"error": {"type": "api_error", "message": "bad gateway"}}),
        ))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 3_000).await;
    let spec = InvoiceSpec::usd(
        "inv_000001",
        &[("il_000001", "10.00"), ("il_000002", "20.00")],
    );

    assert!(matches!(
        harness.deliver(&spec.finalized()).await,
        Err(HandlerError::Retry(_))
    ));
    assert!(
        harness
            .keys("/v1/invoices/in_1Acme/finalize")
            .await
            .is_empty()
    );
    harness
        .deliver(&spec.finalized())
        .await
        .expect("the redelivery completes");

    assert_eq!(
        harness.keys("/v1/customers").await.len(),
        1,
        "customer created once"
    );
    assert_eq!(
        harness.keys("/v1/invoices").await.len(),
        1,
        "invoice created once"
    );
    let items = harness.keys("/v1/invoiceitems").await;
    assert_eq!(
        items.iter().filter(|key| key.contains("il_000001")).count(),
        1,
        "the first line is not sent again"
    );
    assert_eq!(
        items.iter().filter(|key| key.contains("il_000002")).count(),
        5,
        "four failed tries, then the redelivery"
    );
    assert_eq!(harness.keys("/v1/invoices/in_1Acme/pay").await.len(), 1);
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
    assert_eq!(harness.payment_events().await.len(), 1);
}

#[tokio::test]
async fn a_stripe_total_that_differs_is_voided_and_never_charged() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    // Stripe finalizes 9.99 where Tally bills 10.00 (e.g. a balance Tally does not know).
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 999).await;
    stripe_mocks::pay_succeeds(&harness.stripe, "inv_000001", "usd", 999).await;
    stripe_mocks::void_succeeds(&harness.stripe, "inv_000001").await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();

    assert_eq!(harness.keys("/v1/invoices/in_1Acme/void").await.len(), 1);
    assert!(harness.keys("/v1/invoices/in_1Acme/pay").await.is_empty());
    let error = harness.sync_error("inv_000001").await;
    assert!(
        error.contains("is due 9.99 USD, Tally invoice inv_000001 is due 10.00 USD"),
        "{error}"
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Failed
    );
}

#[tokio::test]
async fn an_invoice_stripe_cannot_send_is_recorded_not_retried() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 1_000).await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices/in_1Acme/send"))
        .respond_with(respond(
            400,
            fixtures::invalid_request("The customer has no email address.", "customer"),
        ))
        .mount(&harness.stripe)
        .await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    spec.mode = CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.expect("acked");
    assert_eq!(harness.keys("/v1/invoices/in_1Acme/send").await.len(), 1);
    assert!(
        harness
            .sync_error("inv_000001")
            .await
            .contains("no email address")
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert!(payment.next_retry_at.is_none());
}

#[tokio::test]
async fn payments_are_read_by_id_invoice_customer_and_status() {
    let harness = harness().await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let mut client = harness.client.clone();
    let list = |customer: &str, statuses: Vec<PaymentStatus>| ListPaymentsRequest {
        customer_id: customer.into(),
        statuses: statuses.into_iter().map(Into::into).collect(),
        ..Default::default()
    };
    let found = client
        .list_payments(list("cus_000100", vec![PaymentStatus::Succeeded]))
        .await
        .unwrap()
        .into_inner()
        .payments;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].invoice_id, "inv_000001");
    for request in [
        list("cus_000100", vec![PaymentStatus::Failed]),
        list("cus_other", vec![]),
    ] {
        let none = client.list_payments(request).await.unwrap().into_inner();
        assert!(none.payments.is_empty());
    }
    let missing = client
        .get_payment(GetPaymentRequest {
            payment_id: "pay_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let too_big = client
        .list_payments(ListPaymentsRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
    let unmapped = client
        .get_stripe_customer(GetStripeCustomerRequest {
            lookup: Some(get_stripe_customer_request::Lookup::CustomerId(
                "cus_other".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(unmapped.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn nothing_due_sends_nothing_and_a_prepaid_part_becomes_one_adjustment_item() {
    let harness = harness().await;
    // Credits cover the whole invoice: nothing to collect, nothing sent.
    let covered = InvoiceSpec::usd(
        "inv_000009",
        &[("il_000091", "25.00"), ("il_000092", "-25.00")],
    );
    harness.deliver(&covered.finalized()).await.unwrap();
    assert!(harness.stripe.received_requests().await.unwrap().is_empty());
    assert_eq!(harness.count("payments").await, 0);

    // 30.00 billed, 12.50 already credited before finalization: 17.50 due.
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_750).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "30.00")]);
    let event = spec.finalized_with_due("17.50");
    harness.deliver(&event).await.unwrap();
    let items: Vec<(String, String)> = harness
        .stripe_requests("POST", "/v1/invoiceitems")
        .await
        .iter()
        .map(|item| {
            (
                field(item, "metadata[tally_line_id]").unwrap(),
                field(item, "amount").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![
            ("il_000001".into(), "3000".into()),
            (
                "inv_000001_settled_before_finalization".into(),
                "-1250".into()
            ),
        ]
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.amount.as_ref().unwrap().amount, "17.50");
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
}
