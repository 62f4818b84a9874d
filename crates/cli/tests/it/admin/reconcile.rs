//! `tally reconcile` against a real payments whose Stripe is a wiremock.

use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::{Service, create_key, once_the_key_is_known, run};

/// The complete Stripe objects of the end-to-end test's fake Stripe (async-stripe
/// parses answers strictly: a partial invoice is refused).
#[allow(dead_code)]
#[path = "../../e2e/stripe_objects.rs"]
mod stripe_objects;

fn list(data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "object": "list", "data": data, "has_more": false, "url": "/v1/list"
    }))
}

async fn payments(database_url: &str, stripe: &MockServer) -> Service {
    let webhooks = format!(
        "127.0.0.1:{}",
        tally_runtime::local_postgres::free_port().unwrap()
    );
    Service::start(
        database_url,
        "payments",
        &[
            ("STRIPE_API_KEY", "sk_test_cli"),
            ("TALLY_PAYMENTS__STRIPE_API_BASE_URL", &stripe.uri()),
            ("TALLY_PAYMENTS__STRIPE_MAX_ATTEMPTS", "1"),
            ("TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR", &webhooks),
        ],
    )
    .await
}

/// An open 12.50 USD invoice Tally never made.
fn stray_invoice(created: i64) -> serde_json::Value {
    let form =
        std::collections::BTreeMap::from([("email".to_owned(), "stray@example.com".to_owned())]);
    let customer = stripe_objects::customer("cus_Q1Stray", &form, created);
    let mut invoice = stripe_objects::invoice(stripe_objects::InvoiceParts {
        id: "in_1Stray",
        customer: &customer,
        currency: "usd",
        collection_method: "charge_automatically",
        metadata: &std::collections::BTreeMap::new(),
        created,
    });
    for (field, value) in [
        ("status", json!("open")),
        ("amount_due", json!(1250)),
        ("amount_remaining", json!(1250)),
        ("subtotal", json!(1250)),
        ("subtotal_excluding_tax", json!(1250)),
        ("total", json!(1250)),
        ("total_excluding_tax", json!(1250)),
    ] {
        invoice[field] = value;
    }
    invoice
}

const OCTOBER: [&str; 4] = [
    "--from",
    "2026-10-01T00:00:00Z",
    "--to",
    "2026-11-01T00:00:00Z",
];

#[tokio::test]
async fn a_clean_window_exits_0_and_a_stray_stripe_invoice_exits_1() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let stripe = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/"))
        .respond_with(list(json!([])))
        .with_priority(5)
        .mount(&stripe)
        .await;
    let payments = payments(&database.url, &stripe).await;

    let mut args = vec!["reconcile", "--address", &payments.address];
    args.extend(OCTOBER);
    let clean = run(&key, &args).expect(0);
    assert!(
        clean.stderr.contains("0 missing in Tally"),
        "{}",
        clean.stderr
    );

    // Stripe has an invoice Tally never made.
    let created = 1_791_000_000; // 2026-10-03
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(list(json!([stray_invoice(created)])))
        .with_priority(1)
        .mount(&stripe)
        .await;
    let found = run(&key, &args).expect(1);
    assert!(
        found.stdout.contains("missing_in_tally"),
        "{}\n{}",
        found.stdout,
        found.stderr
    );
    assert!(found.stdout.contains("in_1Stray"), "{}", found.stdout);
    assert!(
        found.stderr.contains("Tally and Stripe disagree"),
        "{}",
        found.stderr
    );

    args.extend(["--output", "json"]);
    let json = run(&key, &args).expect(1).json();
    assert_eq!(json["report"]["state"], "RECONCILIATION_STATE_COMPLETED");
    assert_eq!(json["report"]["summary"]["missingInTally"], "1");
    assert_eq!(json["findings"][0]["kind"], "FINDING_KIND_MISSING_IN_TALLY");
    assert_eq!(
        json["findings"][0]["stripeAmount"],
        json!({"currency": "USD", "amount": "12.50"})
    );

    // A key without the admin scope is refused, saying which scope.
    let writer = create_key(&database.url, "write");
    let denied = once_the_key_is_known(|| run(&writer, &args[..args.len() - 2])).expect(1);
    assert!(
        denied.stderr.contains("PermissionDenied"),
        "{}",
        denied.stderr
    );
}
