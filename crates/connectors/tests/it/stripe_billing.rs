//! The Stripe Billing adapter against a fake Stripe whose every body parses
//! with async-stripe's own types: customers, prices and subscriptions over
//! pages, a customer's invoices with exact amounts, failures retried or
//! named; and the import plan of that account (dry run): what is created,
//! what is not and why.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tally_connectors::biller::{BillerCustomer, ExternalBiller, InvoiceQuery};
use tally_connectors::import::mapping::MappingFile;
use tally_connectors::import::plan::{ImportPlan, PlanContext, StartChoice, TallyPlan, plan};
use tally_connectors::import::{ImportSource, SourceAccount, SourceError, SourcePriceKind};
use tally_connectors::stripe_billing::{StripeBilling, StripeBillingKey, StripeBillingSettings};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::stripe_account::{
    DAY, MAPPING, acme_invoices, customers, invalid_key, mount_account, mount_acme_invoices,
    prices, subscriptions,
};
use crate::stripe_objects::list;

/// 2026-12-07T00:00:00Z.
const NOW: i64 = 1_796_601_600;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

pub fn stripe(server: &MockServer) -> StripeBilling {
    StripeBilling::new(
        StripeBillingSettings {
            api_base_url: server.uri(),
            max_attempts: 3,
            retry_base_delay: Duration::from_millis(5),
            retry_max_delay: Duration::from_millis(20),
            request_timeout: Duration::from_secs(10),
        },
        &StripeBillingKey::new("sk_test_fake"),
    )
    .unwrap()
}

fn parses<T: miniserde::Deserialize>(body: &Value, what: &str) {
    let text = body.to_string();
    assert!(
        miniserde::json::from_str::<T>(&text).is_ok(),
        "async-stripe cannot parse the fake's {what}: {text}"
    );
}

#[test]
fn every_fake_body_parses_with_async_stripe() {
    for customer in customers(NOW) {
        parses::<stripe_shared::Customer>(&customer, "customer");
    }
    for price in prices() {
        parses::<stripe_shared::Price>(&price, "price");
    }
    for subscription in subscriptions(NOW) {
        parses::<stripe_shared::Subscription>(&subscription, "subscription");
    }
    let (october, november, rest) = acme_invoices(NOW - 70 * DAY);
    parses::<stripe_shared::Invoice>(&october, "invoice");
    parses::<stripe_shared::Invoice>(&november, "invoice");
    parses::<stripe_types::List<stripe_shared::InvoiceLineItem>>(&rest, "invoice lines");
    parses::<stripe_types::List<stripe_shared::Subscription>>(
        &list("/v1/subscriptions", subscriptions(NOW), false),
        "subscription list",
    );
    // And the check is a check: a subscription without its items is refused.
    let mut broken = subscriptions(NOW).remove(0);
    broken.as_object_mut().unwrap().remove("items");
    assert!(miniserde::json::from_str::<stripe_shared::Subscription>(&broken.to_string()).is_err());
}

#[tokio::test]
async fn lists_customers_prices_and_subscriptions_over_pages() {
    let server = MockServer::start().await;
    mount_account(&server, NOW).await;
    let account = stripe(&server).read_account().await.unwrap();

    let customers: Vec<(&str, &str, Option<&str>)> = account
        .customers
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.currency.as_deref()))
        .collect();
    assert_eq!(
        customers,
        [
            ("cus_1Acme", "Acme Analytics", Some("USD")),
            ("cus_1Globex", "Globex", None),
            ("cus_1Hooli", "Hooli", Some("USD")),
            ("cus_1Initech", "Initech", Some("USD")),
            // No name in Stripe: the email stands in.
            ("cus_1Umbrella", "it@umbrella.test", None),
        ]
    );
    let calls = account
        .prices
        .iter()
        .find(|p| p.id == "price_1ProCalls")
        .unwrap();
    assert_eq!(calls.kind, SourcePriceKind::Metered);
    assert_eq!(
        calls.unit_amount,
        Some(dec("0.0025")),
        "a quarter cent, exactly"
    );
    assert_eq!(
        (calls.interval.as_str(), calls.interval_count),
        ("month", 1)
    );
    let setup = account
        .prices
        .iter()
        .find(|p| p.id == "price_1Setup")
        .unwrap();
    assert_eq!(
        (setup.kind.clone(), setup.unit_amount),
        (SourcePriceKind::OneTime, Some(dec("500")))
    );
    assert_eq!(account.prices.len(), 6);

    let ids: Vec<&str> = account
        .subscriptions
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["sub_1Acme", "sub_1Globex", "sub_1Hooli", "sub_1Initech"]
    );
    let acme = &account.subscriptions[0];
    assert_eq!(
        (
            acme.customer_id.as_str(),
            acme.status.as_str(),
            acme.currency.as_str()
        ),
        ("cus_1Acme", "active", "USD")
    );
    assert_eq!(acme.started_at, at(NOW - 280 * DAY));
    assert_eq!(
        (acme.current_period_start, acme.current_period_end),
        (at(NOW - 6 * DAY), at(NOW + 25 * DAY))
    );
    let items: Vec<(&str, Option<u64>)> = acme
        .items
        .iter()
        .map(|i| (i.price_id.as_str(), i.quantity))
        .collect();
    assert_eq!(
        items,
        [
            ("price_1ProBase", Some(1)),
            ("price_1ProCalls", None),
            ("price_1Support", Some(1))
        ]
    );
    // Every page was asked for exactly once.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 6, "{requests:?}");
    assert!(
        requests.iter().all(|r| r.method.as_str() == "GET"),
        "read-only"
    );
    let subscriptions_first = requests
        .iter()
        .find(|r| r.url.path() == "/v1/subscriptions")
        .unwrap();
    assert_eq!(
        subscriptions_first.url.query(),
        Some("limit=100&status=all")
    );
}

#[tokio::test]
async fn reads_a_customers_invoices_for_a_period_with_every_line_exactly() {
    let server = MockServer::start().await;
    let (from, to) = (NOW - 70 * DAY, NOW);
    mount_acme_invoices(&server, from, to).await;
    let invoices = stripe(&server)
        .list_invoices(&InvoiceQuery {
            customer: BillerCustomer::ExternalId("cus_1Acme".into()),
            from: at(from),
            to: at(to),
        })
        .await
        .unwrap();
    let amounts: Vec<(&str, &str, Decimal, Decimal, Decimal, Decimal, usize)> = invoices
        .iter()
        .map(|i| {
            (
                i.id.as_str(),
                i.status.as_str(),
                i.subtotal,
                i.discounts,
                i.total,
                i.amount_due,
                i.lines.len(),
            )
        })
        .collect();
    assert_eq!(
        amounts,
        [
            (
                "in_1AcmeOct",
                "paid",
                dec("349.00"),
                dec("-30.00"),
                dec("319.00"),
                dec("319.00"),
                2
            ),
            (
                "in_1AcmeNov",
                "open",
                dec("172.45"),
                dec("0.00"),
                dec("172.45"),
                dec("172.45"),
                2
            ),
        ]
    );
    let october = &invoices[0];
    assert_eq!(
        (october.currency.as_str(), october.minimums),
        ("USD", Decimal::ZERO)
    );
    let calls = &october.lines[1];
    assert_eq!(
        (
            calls.price_id.as_str(),
            calls.quantity,
            calls.subtotal,
            calls.adjusted_subtotal,
            calls.amount
        ),
        (
            "price_1ProCalls",
            dec("120000"),
            dec("300.00"),
            dec("270.00"),
            dec("270.00")
        )
    );
    // November's second line came from its own page.
    let november_calls = &invoices[1].lines[1];
    assert_eq!(
        (november_calls.id.as_str(), november_calls.amount),
        ("il_1NovCalls", dec("123.45"))
    );
}

#[tokio::test]
async fn a_failing_page_is_retried_and_a_wrong_key_is_named() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_account(&server, NOW).await;
    assert_eq!(stripe(&server).list_customers().await.unwrap().len(), 5);

    let refusing = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(invalid_key())
        .mount(&refusing)
        .await;
    let error = stripe(&refusing).list_prices().await.unwrap_err();
    assert_eq!(
        error,
        SourceError::Unauthorized {
            source_name: "Stripe",
            status: 401,
            variable: "STRIPE_BILLING_API_KEY"
        }
    );
    assert_eq!(
        error.to_string(),
        "Stripe refused the API key (HTTP 401): check STRIPE_BILLING_API_KEY"
    );
    assert_eq!(
        refusing.received_requests().await.unwrap().len(),
        1,
        "a 401 is not retried"
    );

    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&down)
        .await;
    let error = stripe(&down).list_subscriptions().await.unwrap_err();
    assert!(
        matches!(&error, SourceError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("Stripe is unavailable after 3 requests"),
        "{error}"
    );
}

pub fn catalog() -> BTreeMap<String, TallyPlan> {
    let plan = |code: &str, version: &str, currency: &str, charges: &[&str]| {
        (
            code.to_owned(),
            TallyPlan {
                code: code.to_owned(),
                version_id: version.to_owned(),
                currency: currency.to_owned(),
                interval: "month".to_owned(),
                charge_keys: charges
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect::<BTreeSet<_>>(),
            },
        )
    };
    BTreeMap::from([
        plan("pro", "pv_1Pro", "USD", &["platform_fee", "api_calls"]),
        plan("pro_eu", "pv_1ProEu", "EUR", &["platform_fee"]),
    ])
}

/// The plan at `NOW` with a 30-day backdating window.
fn plan_stripe(
    account: &SourceAccount,
    mapping: &MappingFile,
    catalog: &BTreeMap<String, TallyPlan>,
) -> ImportPlan {
    plan(
        account,
        &PlanContext {
            source: "stripe",
            mapping,
            catalog,
            now: at(NOW),
            backdate_window_days: 30,
        },
    )
}

#[tokio::test]
async fn the_dry_run_lists_exactly_what_it_creates_and_what_it_does_not() {
    let server = MockServer::start().await;
    mount_account(&server, NOW).await;
    let account = stripe(&server).read_account().await.unwrap();
    let mapping = MappingFile::parse(MAPPING).unwrap();
    let planned = plan_stripe(&account, &mapping, &catalog());
    let starts: Vec<(&str, &str, DateTime<Utc>, StartChoice)> = planned
        .subscriptions
        .iter()
        .map(|s| {
            (
                s.source_id.as_str(),
                s.plan_version_id.as_str(),
                s.start_at,
                s.start,
            )
        })
        .collect();
    assert_eq!(
        starts,
        [
            (
                "sub_1Acme",
                "pv_1Pro",
                at(NOW - 6 * DAY),
                StartChoice::CurrentPeriod
            ),
            (
                "sub_1Globex",
                "pv_1ProEu",
                at(NOW - 17 * DAY),
                StartChoice::Historical
            ),
        ]
    );
    let acme = &planned.subscriptions[0];
    assert_eq!(acme.idempotency_key, "migrate-import:stripe:sub_1Acme");
    assert_eq!(
        acme.metadata["source_started_at"],
        at(NOW - 280 * DAY).to_rfc3339()
    );
    assert_eq!(
        acme.ignored,
        [(
            "price_1Support".to_owned(),
            "support contract, invoiced separately after the move".to_owned()
        )]
    );
    let report = planned.describe("stripe");
    let expected = format!(
        "\
import from stripe: 4 customers, 2 subscriptions; 3 not imported
create customer cus_1Acme \"Acme Analytics\" <ap@acme.test> USD
create customer cus_1Globex \"Globex\" <billing@globex.test> EUR
create customer cus_1Hooli \"Hooli\" <finance@hooli.test> USD
create customer cus_1Initech \"Initech\" <ap@initech.test> USD
create subscription sub_1Acme for cus_1Acme on plan pro (pv_1Pro) from {acme_start} (its current period's start (the historical start is before the backdating window)); started {acme_started}; charges price_1ProBase→platform_fee, price_1ProCalls→api_calls
  ignore price price_1Support: support contract, invoiced separately after the move
create subscription sub_1Globex for cus_1Globex on plan pro_eu (pv_1ProEu) from {globex_start} (its historical start); started {globex_start}; charges price_1EuBase→platform_fee
not imported: customer cus_1Umbrella: it has no currency in the source and no live subscription to take one from; create it by hand
not imported: subscription sub_1Hooli: not in the mapping: price_1Legacy (Legacy seats, USD, licensed per month); add each under a plan's prices, or under ignore with the reason
not imported: subscription sub_1Initech: it has ended in the source (status canceled)
",
        acme_start = at(NOW - 6 * DAY).to_rfc3339(),
        acme_started = at(NOW - 280 * DAY).to_rfc3339(),
        globex_start = at(NOW - 17 * DAY).to_rfc3339(),
    );
    assert_eq!(report, expected);
}

#[test]
fn an_unmapped_or_mismatched_price_is_reported_never_guessed() {
    let now = at(NOW);
    let mut account = SourceAccount::default();
    account
        .customers
        .push(tally_connectors::import::SourceCustomer {
            id: "cus_1A".into(),
            name: "A".into(),
            email: String::new(),
            currency: Some("USD".into()),
            created_at: now,
        });
    let subscription = |id: &str, prices: &[&str]| tally_connectors::import::SourceSubscription {
        id: id.into(),
        customer_id: "cus_1A".into(),
        status: "active".into(),
        currency: "USD".into(),
        started_at: now - chrono::Duration::days(400),
        current_period_start: now - chrono::Duration::days(40),
        current_period_end: now + chrono::Duration::days(325),
        trial_end: None,
        items: prices
            .iter()
            .map(|p| tally_connectors::import::SourceItem {
                price_id: (*p).into(),
                quantity: None,
            })
            .collect(),
        metadata: BTreeMap::new(),
    };
    account.subscriptions = vec![
        subscription("sub_1Both", &["price_1ProBase", "price_1EuBase"]),
        subscription("sub_1Calls", &["price_1ProCalls"]),
        subscription("sub_1Ignored", &["price_1Setup"]),
        subscription("sub_1Unknown", &["price_1Nope"]),
        subscription("sub_1Yearly", &["price_1ProBase"]),
    ];
    let mapping = MappingFile::parse(MAPPING).unwrap();
    let mut catalog = catalog();
    catalog
        .get_mut("pro")
        .unwrap()
        .charge_keys
        .remove("api_calls");
    let planned = plan_stripe(&account, &mapping, &catalog);
    let reasons: Vec<(&str, &str)> = planned
        .not_imported
        .iter()
        .map(|n| (n.source_id.as_str(), n.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "sub_1Both",
                "its prices map to different Tally plans (pro, pro_eu, …); a Tally subscription has one plan"
            ),
            (
                "sub_1Calls",
                "price price_1ProCalls maps to charge api_calls, which plan pro (pv_1Pro) does not have (it has platform_fee)"
            ),
            (
                "sub_1Ignored",
                "every one of its prices is ignored in the mapping: nothing to bill"
            ),
            (
                "sub_1Unknown",
                "not in the mapping: price_1Nope (not among the account's prices); add each under a plan's prices, or under ignore with the reason"
            ),
        ]
    );
    // The account has no price objects here, so the yearly check cannot
    // run; its current period began 40 days ago: it starts at the next one.
    assert_eq!(planned.subscriptions.len(), 1);
    assert_eq!(planned.subscriptions[0].start, StartChoice::NextPeriod);
    assert_eq!(
        planned.subscriptions[0].start_at,
        now + chrono::Duration::days(325)
    );
}
