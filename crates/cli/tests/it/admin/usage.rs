//! `tally usage show|cost|unrated` and `tally invoices upcoming` against
//! `tally dev`: what an AI-inference team checks first, from the terminal;
//! customers named by their external id (`subscriptions create|list` too).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Dev, create_key, documented_catalog, run, run_with_stdin, text};

/// Runs `check` until it returns `Some`, at most `limit` (polling, never a
/// fixed wait: rating hears of usage over the bus).
pub fn poll<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A dev with the documented catalog, customer `acme` subscribed to
/// `inference_pro` from 2026-11-01, and the clock on 2026-11-10: returns
/// (dev, key, customer id, subscription id).
pub async fn subscribed_customer() -> (
    Dev,
    String,
    String,
    String,
    tally_testkit::postgres::TestDatabase,
) {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let dev = Dev::start(&database.url, &[]).await;
    let address = dev.address.clone();
    run_with_stdin(
        &key,
        &["catalog", "apply", "-f", "-", "--address", &address],
        Some(&documented_catalog()),
    )
    .expect(0);
    let acme = dev.json(
        &key,
        &[
            "customers",
            "create",
            "--name",
            "Acme AI",
            "--currency",
            "USD",
            "--external-id",
            "acme",
        ],
    );
    let customer = text(&acme["id"]);
    let subscription = dev.json(
        &key,
        &[
            "subscriptions",
            "create",
            // The external id works where a customer is named.
            "--customer",
            "acme",
            "--plan",
            "inference_pro",
            "--start-at",
            "2026-11-01T00:00:00Z",
        ],
    );
    run(
        &key,
        &[
            "clock",
            "set",
            "2026-11-10T12:00:00Z",
            "--address",
            &address,
        ],
    )
    .expect(0);
    let subscription = text(&subscription["id"]);
    (dev, key, customer, subscription, database)
}

/// One JSON line per event: `(id, customer, event type, properties)`.
pub fn events(lines: &[(&str, &str, &str, &str)]) -> String {
    lines
        .iter()
        .map(|(id, customer, event_type, properties)| {
            format!(
                "{{\"id\": \"{id}\", \"customerId\": \"{customer}\", \"eventType\": \"{event_type}\", \
                 \"timestamp\": \"2026-11-10T11:00:00Z\", \"properties\": {properties}}}\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_cost_unrated_and_the_upcoming_invoice_from_the_terminal() {
    let (dev, key, customer, subscription, _database) = subscribed_customer().await;
    let address = dev.address.as_str();

    // Nothing yet: a clear answer, not an empty table.
    let none = run(&key, &["usage", "unrated", "--address", address]).expect(0);
    assert!(none.stdout.contains("no unrated usage"), "{}", none.stdout);

    // 1,000,000 tokens (2.10) and a misspelled event type.
    let sent = events(&[
        ("t1", &customer, "llm_tokens", "{\"tokens\": \"1000000\"}"),
        ("t2", &customer, "llm_tokenz", "{\"tokens\": \"5\"}"),
    ]);
    run_with_stdin(&key, &["events", "send", "--address", address], Some(&sent));

    // Live cost, by external id: 2.10 once rated.
    let costs = poll(Duration::from_secs(30), "the cost shows the tokens", || {
        let costs = dev.json(&key, &["usage", "cost", "--customer", "acme"]);
        (costs["costs"][0]["usageTotal"]["amount"] == "2.10").then_some(costs)
    });
    assert_eq!(
        costs["costs"][0]["subscriptionId"],
        Value::String(subscription.clone())
    );
    let table = run(
        &key,
        &[
            "usage",
            "cost",
            "--customer",
            &customer,
            "--address",
            address,
        ],
    )
    .expect(0);
    for expected in [
        "usage so far:",
        "2.10 USD",
        "tokens",
        "llm_tokens",
        "1000000",
        "invoices upcoming",
    ] {
        assert!(
            table.stdout.contains(expected),
            "`{expected}` in:\n{}",
            table.stdout
        );
    }

    // Unrated usage and why, with what to do.
    let unrated = poll(
        Duration::from_secs(30),
        "the misspelled event is unrated",
        || {
            let listed = dev.json(&key, &["usage", "unrated", "--customer", "acme"]);
            (listed.as_array().unwrap().len() == 1).then_some(listed)
        },
    );
    assert_eq!(unrated[0]["eventId"], "t2", "{unrated}");
    assert_eq!(
        unrated[0]["reason"], "UNRATED_REASON_NO_MATCHING_CHARGE",
        "{unrated}"
    );
    let table = run(&key, &["usage", "unrated", "--address", address]).expect(0);
    assert!(table.stdout.starts_with("EVENT"), "{}", table.stdout);
    for expected in [
        "t2",
        "llm_tokenz",
        "no matching charge",
        "1 of 1 unrated events",
        "check its spelling",
    ] {
        assert!(
            table.stdout.contains(expected),
            "`{expected}` in:\n{}",
            table.stdout
        );
    }
    let filtered = dev.json(&key, &["usage", "unrated", "--reason", "out-of-range"]);
    assert_eq!(filtered, Value::Array(Vec::new()));

    // Usage of the current period: every accepted event, rated or not.
    let shown = run(
        &key,
        &["usage", "show", "--customer", "acme", "--address", address],
    )
    .expect(0);
    let rows = shown.rows();
    assert!(
        rows.iter()
            .any(|row| row[0] == "llm_tokens"
                && row.ends_with(&["1000000".to_owned(), "1".to_owned()])),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("2026-11-01T00:00:00Z → 2026-12-01T00:00:00Z"),
        "{}",
        shown.stdout
    );
    assert!(
        !shown.stdout.contains("api_requests"),
        "unused meters are left out:\n{}",
        shown.stdout
    );
    let json = dev.json(
        &key,
        &[
            "usage",
            "show",
            "--customer",
            &customer,
            "--meter",
            "llm_tokens",
            "--from",
            "2026-11-10T00:00:00Z",
            "--to",
            "2026-11-11T00:00:00Z",
        ],
    );
    assert_eq!(json[0]["meterCode"], "llm_tokens", "{json}");
    assert_eq!(
        json[0]["values"][0]["quantity"]["value"], "1000000",
        "{json}"
    );
    run(
        &key,
        &[
            "usage",
            "show",
            "--customer",
            "acme",
            "--from",
            "2026-11-10T00:00:00Z",
            "--address",
            address,
        ],
    )
    .expect(2);

    // The upcoming invoice: the platform fee and the tokens so far.
    let upcoming = run(
        &key,
        &["invoices", "upcoming", &subscription, "--address", address],
    )
    .expect(0);
    for expected in ["Tokens", "1000000 × 0.0000021", "amount due:"] {
        assert!(
            upcoming.stdout.contains(expected),
            "`{expected}` in:\n{}",
            upcoming.stdout
        );
    }
    let previews = dev.json(&key, &["invoices", "upcoming", "--customer", "acme"]);
    assert_eq!(previews.as_array().unwrap().len(), 1, "{previews}");
    assert_eq!(
        previews[0]["subscriptionId"],
        Value::String(subscription.clone())
    );
    let one = dev.json(&key, &["invoices", "upcoming", &subscription]);
    assert_eq!(one["status"], "INVOICE_STATUS_DRAFT", "{one}");
    run(&key, &["invoices", "upcoming", "--address", address]).expect(2);

    // Subscriptions by external id too; an unknown one is refused, named.
    let listed = dev.json(&key, &["subscriptions", "list", "--customer", "acme"]);
    assert_eq!(listed[0]["customerId"], Value::String(customer.clone()));
    let unknown = run(
        &key,
        &[
            "subscriptions",
            "list",
            "--customer",
            "nobody",
            "--address",
            address,
        ],
    )
    .expect(1);
    assert!(
        unknown
            .stderr
            .contains("GetCustomer (external id nobody) failed: NotFound"),
        "{}",
        unknown.stderr
    );

    // A customer without a subscription has no current period: say what to do.
    let beta = dev.json(
        &key,
        &[
            "customers",
            "create",
            "--name",
            "Beta",
            "--currency",
            "USD",
            "--external-id",
            "beta",
        ],
    );
    let refused = run(
        &key,
        &[
            "usage",
            "show",
            "--customer",
            &text(&beta["id"]),
            "--address",
            address,
        ],
    )
    .expect(1);
    assert!(
        refused.stderr.contains("no subscription known to rating"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--from"), "{}", refused.stderr);
}
