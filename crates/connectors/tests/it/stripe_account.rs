//! A fake Stripe Billing account on wiremock, dated relative to `now`:
//! five customers over two pages, six prices, four subscriptions over two
//! pages, and Acme's invoices. What an import of it should do:
//!
//! * `sub_1Acme` (Acme, USD): platform fee + metered API calls → plan
//!   `pro` (its support price ignored by the mapping), started 280 days ago, so it starts at its current period (6 days ago);
//! * `sub_1Globex` (Globex, no currency of its own, EUR): → plan `pro_eu`,
//!   started 17 days ago (inside the backdating window): its historical start;
//! * `sub_1Hooli` (Hooli): `price_1Legacy` × 3 is in no mapping → reported;
//! * `sub_1Initech`: canceled → reported;
//! * Umbrella has no currency and no subscription → reported; Initech (USD)
//!   and Hooli (USD) are created as customers.

use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::stripe_objects::{
    self, InvoiceParts, LineParts, SubscriptionParts, customer, invoice, line, list, price,
};

pub const DAY: i64 = 86_400;

/// The mapping file the tests import with.
pub const MAPPING: &str = "\
plans:
  - plan: pro
    prices:
      price_1ProBase: platform_fee
      price_1ProCalls: api_calls
  - plan: pro_eu
    prices:
      price_1EuBase: platform_fee
ignore:
  price_1Setup: onboarding fee, billed in Stripe before the move
  price_1Support: support contract, invoiced separately after the move
";

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("Request-Id", "req_1Fake")
        .set_body_json(body)
}

pub fn customers(now: i64) -> Vec<Value> {
    vec![
        customer(
            "cus_1Acme",
            "Acme Analytics",
            "ap@acme.test",
            Some("usd"),
            now - 300 * DAY,
        ),
        customer(
            "cus_1Globex",
            "Globex",
            "billing@globex.test",
            None,
            now - 20 * DAY,
        ),
        customer(
            "cus_1Hooli",
            "Hooli",
            "finance@hooli.test",
            Some("usd"),
            now - 500 * DAY,
        ),
        customer(
            "cus_1Initech",
            "Initech",
            "ap@initech.test",
            Some("usd"),
            now - 450 * DAY,
        ),
        customer(
            "cus_1Umbrella",
            "",
            "it@umbrella.test",
            None,
            now - 10 * DAY,
        ),
    ]
}

pub fn prices() -> Vec<Value> {
    vec![
        price(
            "price_1EuBase",
            "Pro EU platform fee",
            "eur",
            "4500",
            Some(("month", 1, "licensed")),
        ),
        price(
            "price_1Legacy",
            "Legacy seats",
            "usd",
            "1000",
            Some(("month", 1, "licensed")),
        ),
        price(
            "price_1ProBase",
            "Pro platform fee",
            "usd",
            "4900",
            Some(("month", 1, "licensed")),
        ),
        // A quarter of a cent per call: `unit_amount` is null, the decimal string exact.
        price(
            "price_1ProCalls",
            "Pro API calls",
            "usd",
            "0.25",
            Some(("month", 1, "metered")),
        ),
        price("price_1Setup", "Onboarding", "usd", "50000", None),
        price(
            "price_1Support",
            "Premium support",
            "usd",
            "20000",
            Some(("month", 1, "licensed")),
        ),
    ]
}

fn price_by_id(id: &str) -> Value {
    prices()
        .into_iter()
        .find(|price| price["id"] == id)
        .unwrap()
}

pub fn subscriptions(now: i64) -> Vec<Value> {
    vec![
        stripe_objects::subscription(SubscriptionParts {
            id: "sub_1Acme",
            customer: "cus_1Acme",
            status: "active",
            currency: "usd",
            start_date: now - 280 * DAY,
            period: (now - 6 * DAY, now + 25 * DAY),
            trial_end: None,
            items: vec![
                ("si_1AcmeBase", price_by_id("price_1ProBase"), Some(1)),
                ("si_1AcmeCalls", price_by_id("price_1ProCalls"), None),
                ("si_1AcmeSupport", price_by_id("price_1Support"), Some(1)),
            ],
        }),
        stripe_objects::subscription(SubscriptionParts {
            id: "sub_1Globex",
            customer: "cus_1Globex",
            status: "active",
            currency: "eur",
            start_date: now - 17 * DAY,
            period: (now - 17 * DAY, now + 14 * DAY),
            trial_end: None,
            items: vec![("si_1GlobexBase", price_by_id("price_1EuBase"), Some(1))],
        }),
        stripe_objects::subscription(SubscriptionParts {
            id: "sub_1Hooli",
            customer: "cus_1Hooli",
            status: "past_due",
            currency: "usd",
            start_date: now - 400 * DAY,
            period: (now - 10 * DAY, now + 21 * DAY),
            trial_end: None,
            items: vec![("si_1HooliSeats", price_by_id("price_1Legacy"), Some(3))],
        }),
        stripe_objects::subscription(SubscriptionParts {
            id: "sub_1Initech",
            customer: "cus_1Initech",
            status: "canceled",
            currency: "usd",
            start_date: now - 400 * DAY,
            period: (now - 100 * DAY, now - 70 * DAY),
            trial_end: None,
            items: vec![("si_1InitechBase", price_by_id("price_1ProBase"), Some(1))],
        }),
    ]
}

/// Mounts `GET {url}` in two pages: the first without `starting_after`,
/// the second after the first page's last id.
async fn two_pages(server: &MockServer, url: &str, all: Vec<Value>, split: usize) {
    let (first, second) = all.split_at(split);
    let last = first.last().unwrap()["id"].as_str().unwrap().to_owned();
    Mock::given(method("GET"))
        .and(path(url))
        .and(query_param("limit", "100"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(ok(list(url, first.to_vec(), true)))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(url))
        .and(query_param("starting_after", last.as_str()))
        .respond_with(ok(list(url, second.to_vec(), false)))
        .mount(server)
        .await;
}

/// The whole account on `server`.
pub async fn mount_account(server: &MockServer, now: i64) {
    two_pages(server, "/v1/customers", customers(now), 3).await;
    two_pages(server, "/v1/prices", prices(), 2).await;
    two_pages(server, "/v1/subscriptions", subscriptions(now), 2).await;
}

/// Acme's two invoices of `[from, to)`: October's (paid, a 10% discount,
/// one page of lines) and November's (open, its lines over two pages).
pub fn acme_invoices(from: i64) -> (Value, Value, Value) {
    let october = (from, from + 31 * DAY);
    let november = (from + 31 * DAY, from + 61 * DAY);
    let base = |id: &str, invoice_id: &str, period: (i64, i64)| {
        line(LineParts {
            id,
            invoice: invoice_id,
            price: "price_1ProBase",
            description: "1 × Pro platform fee",
            currency: "usd",
            amount: 4900,
            discount: 0,
            quantity: 1,
            period,
        })
    };
    let calls = |id: &str, invoice_id: &str, period: (i64, i64), calls: u64, discount: i64| {
        line(LineParts {
            id,
            invoice: invoice_id,
            price: "price_1ProCalls",
            description: "Pro API calls",
            currency: "usd",
            amount: i64::try_from(calls).unwrap() / 4,
            discount,
            quantity: calls,
            period,
        })
    };
    let october_invoice = invoice(InvoiceParts {
        id: "in_1AcmeOct",
        customer: "cus_1Acme",
        status: "paid",
        currency: "usd",
        created: october.1,
        period: october,
        subtotal: 4900 + 30_000,
        discount: 3_000,
        lines: vec![
            base("il_1OctBase", "in_1AcmeOct", october),
            calls("il_1OctCalls", "in_1AcmeOct", october, 120_000, 3_000),
        ],
        more_lines: false,
    });
    let november_invoice = invoice(InvoiceParts {
        id: "in_1AcmeNov",
        customer: "cus_1Acme",
        status: "open",
        currency: "usd",
        created: november.1,
        period: november,
        subtotal: 4900 + 12_345,
        discount: 0,
        lines: vec![base("il_1NovBase", "in_1AcmeNov", november)],
        more_lines: true,
    });
    let november_rest = list(
        "/v1/invoices/in_1AcmeNov/lines",
        vec![calls("il_1NovCalls", "in_1AcmeNov", november, 49_380, 0)],
        false,
    );
    (october_invoice, november_invoice, november_rest)
}

/// Acme's invoices of `[from, to)`, October's on the first page.
pub async fn mount_acme_invoices(server: &MockServer, from: i64, to: i64) {
    let (october, november, november_rest) = acme_invoices(from);
    let (gte, lt) = (from.to_string(), to.to_string());
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .and(query_param("customer", "cus_1Acme"))
        .and(query_param("created[gte]", gte.as_str()))
        .and(query_param("created[lt]", lt.as_str()))
        .and(query_param_is_missing("starting_after"))
        .respond_with(ok(list("/v1/invoices", vec![october], true)))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .and(query_param("customer", "cus_1Acme"))
        .and(query_param("starting_after", "in_1AcmeOct"))
        .respond_with(ok(list("/v1/invoices", vec![november], false)))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_1AcmeNov/lines"))
        .and(query_param("starting_after", "il_1NovBase"))
        .respond_with(ok(november_rest))
        .mount(server)
        .await;
}

/// A 401 as Stripe answers a wrong key.
pub fn invalid_key() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({
        "error": {
            "message": "Invalid API Key provided: sk_test_****wxyz",
            "type": "invalid_request_error"
        }
    }))
}
