//! `tally events send` says what it sent that is not billed, and why:
//! mistakes are accepted (a customer may be created later) but never quietly
//! unbilled.

use std::time::Duration;

use super::support::{create_key, run_with_stdin};
use super::usage::{events, poll, subscribed_customer};

#[tokio::test]
async fn events_send_says_what_is_unrated_and_why() {
    let (dev, key, customer, _subscription, database) = subscribed_customer().await;
    let address = dev.address.as_str();

    // One good event, a misspelled event type, a customer nobody subscribed,
    // a property that is not a number.
    let sent = events(&[
        ("e1", &customer, "llm_tokens", "{\"tokens\": \"1000\"}"),
        ("e2", &customer, "llm_tokenz", "{\"tokens\": \"5\"}"),
        ("e3", "cus_nobody", "llm_tokens", "{\"tokens\": \"5\"}"),
        ("e4", &customer, "llm_tokens", "{\"tokens\": \"abc\"}"),
    ]);
    let waited = run_with_stdin(
        &key,
        &["events", "send", "--wait-rated", "60", "--address", address],
        Some(&sent),
    )
    .expect(0);
    for expected in [
        "line 2: e2 accepted, not billed: no matching charge",
        "line 3: e3 accepted, not billed: unknown customer",
        "line 4: e4 accepted, not billed: invalid property",
    ] {
        assert!(
            waited.stdout.contains(expected),
            "`{expected}` in:\n{}",
            waited.stdout
        );
    }
    assert!(!waited.stdout.contains(" e1 "), "{}", waited.stdout);
    for expected in [
        "accepted 4, duplicate 0, conflict 0, rejected 0, not sent 0",
        "rated 1, unrated 3, not rated yet 0",
        "check its spelling",
        "tally subscriptions create",
    ] {
        assert!(
            waited.stderr.contains(expected),
            "`{expected}` in:\n{}",
            waited.stderr
        );
    }

    // Without --wait-rated: a summary of what rating has seen by then, and,
    // for anything it has not, how to check.
    let quick = run_with_stdin(
        &key,
        &["events", "send", "--address", address],
        Some(&events(&[(
            "e5",
            "cus_nobody",
            "llm_tokens",
            "{\"tokens\": \"1\"}",
        )])),
    )
    .expect(0);
    let summary = quick
        .stderr
        .lines()
        .find(|line| line.starts_with("rated "))
        .unwrap_or_else(|| panic!("a rating summary in:\n{}", quick.stderr));
    if summary.ends_with("not rated yet 0") {
        assert!(
            quick
                .stdout
                .contains("e5 accepted, not billed: unknown customer"),
            "{}",
            quick.stdout
        );
    } else {
        assert!(
            quick
                .stderr
                .contains("tally usage unrated --customer cus_nobody"),
            "{}",
            quick.stderr
        );
        assert!(quick.stderr.contains("--wait-rated"), "{}", quick.stderr);
    }

    // Re-sent: duplicates, already unrated, said again.
    let again = run_with_stdin(
        &key,
        &["events", "send", "--wait-rated", "--address", address],
        Some(&sent),
    )
    .expect(0);
    assert!(
        again.stderr.contains("rated 1, unrated 3, not rated yet 0"),
        "{}",
        again.stderr
    );

    // A key that may only send usage cannot read rating: said, not failed.
    let ingest_only = create_key(&database.url, "ingest");
    let one = events(&[("e6", &customer, "llm_tokens", "{\"tokens\": \"1\"}")]);
    // Running services load new keys within a second: retry until it is known.
    let sent_only = poll(Duration::from_secs(30), "the new key is known", || {
        let sent = run_with_stdin(
            &ingest_only,
            &["events", "send", "--wait-rated", "--address", address],
            Some(&one),
        );
        (!sent.stderr.contains("Unauthenticated")).then_some(sent)
    })
    .expect(0);
    assert!(
        sent_only.stderr.contains("rating not checked"),
        "{}",
        sent_only.stderr
    );
}

#[tokio::test]
async fn rejected_list_has_a_header_and_the_full_reason() {
    let database = tally_testkit::postgres::database().await;
    let key = super::support::create_key(&database.url, "admin");
    let dev = super::support::Dev::start(&database.url, &[]).await;
    let address = dev.address.as_str();
    super::support::run(
        &key,
        &["clock", "set", "2026-11-10T12:00:00Z", "--address", address],
    )
    .expect(0);
    // A customer id with a character ids may not have: refused by ingest.
    run_with_stdin(
        &key,
        &["events", "send", "--address", address],
        Some(&events(&[(
            "r1",
            "cus_acme!",
            "llm_tokens",
            "{\"tokens\": \"1\"}",
        )])),
    )
    .expect(1);
    let listed = super::support::run(&key, &["rejected", "list", "--address", address]).expect(0);
    let mut lines = listed.stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("REJECTION") && header.contains("REASON"),
        "{}",
        listed.stdout
    );
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with("rej_"), "{}", listed.stdout);
    assert!(
        row.contains("cus_acme!") && row.contains("r1"),
        "{}",
        listed.stdout
    );
    // The rule and the API's description of it, not a shortened label.
    assert!(
        row.contains("customer_id invalid_characters: "),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stderr.contains("1 open rejected events"),
        "{}",
        listed.stderr
    );
}

#[tokio::test]
async fn without_rating_at_the_address_events_send_says_where_to_look() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    // A cluster's ingest alone: rating is served elsewhere.
    let ingest = super::support::Service::start(&database.url, "ingest", &[]).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let line = format!(
        "{{\"id\": \"w1\", \"customerId\": \"cus_acme\", \"eventType\": \"llm_tokens\", \
         \"timestamp\": \"{now}\", \"properties\": {{\"tokens\": \"1\"}}}}\n"
    );
    let sent = poll(Duration::from_secs(30), "the new key is known", || {
        let sent = run_with_stdin(
            &key,
            &["events", "send", "--address", &ingest.address],
            Some(&line),
        );
        (!sent.stderr.contains("Unauthenticated")).then_some(sent)
    })
    .expect(0);
    assert!(
        sent.stderr
            .contains("rating not checked: the address does not serve rating"),
        "{}",
        sent.stderr
    );
    assert!(sent.stderr.contains("--rating-address"), "{}", sent.stderr);
    // Waiting for rating that cannot be asked fails.
    let waited = run_with_stdin(
        &key,
        &[
            "events",
            "send",
            "--wait-rated",
            "--address",
            &ingest.address,
        ],
        Some(&line),
    )
    .expect(1);
    assert!(
        waited.stderr.contains("does not serve rating"),
        "{}",
        waited.stderr
    );
}

#[tokio::test]
async fn external_customer_ids_are_looked_up_and_events_status_tells_where_each_event_is() {
    let (dev, key, customer, _subscription, _database) = subscribed_customer().await;
    let address = dev.address.as_str();

    // "acme" is the customer's external id; "ghost" is nobody's.
    let sent = run_with_stdin(
        &key,
        &["events", "send", "--wait-rated", "60", "--address", address],
        Some(&events(&[
            ("x1", "acme", "llm_tokens", "{\"tokens\": \"1000\"}"),
            ("x2", "ghost", "llm_tokens", "{\"tokens\": \"5\"}"),
            ("x3", "acme", "llm_tokenz", "{\"tokens\": \"5\"}"),
        ])),
    )
    .expect(1);
    assert!(
        sent.stdout.contains(
            "line 2: not sent: customer_id \"ghost\" is neither a Tally customer id (cus_…) nor the external id of a customer"
        ),
        "{}",
        sent.stdout
    );
    assert!(
        sent.stdout
            .contains("line 3: x3 accepted, not billed: no matching charge"),
        "{}",
        sent.stdout
    );
    for expected in [
        "accepted 2, duplicate 0, conflict 0, rejected 0, not sent 1",
        "rated 1, unrated 1, not rated yet 0",
    ] {
        assert!(
            sent.stderr.contains(expected),
            "`{expected}` in:\n{}",
            sent.stderr
        );
    }

    // Where each is, by external id or Tally's id: billed, not billed and
    // why, never seen.
    for who in ["acme", customer.as_str()] {
        let status = run_with_stdin(
            &key,
            &[
                "events",
                "status",
                "--customer",
                who,
                "x1",
                "x3",
                "x2",
                "--address",
                address,
            ],
            None,
        )
        .expect(1);
        let lines: Vec<&str> = status.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{}", status.stdout);
        assert!(
            lines[0].starts_with("x1: accepted 20") && lines[0].ends_with("; rated"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("x3: accepted 20")
                && lines[1].contains("; not billed: no matching charge"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "x2: not seen by ingest (never sent, or sent for another customer)"
        );
        assert!(
            status.stderr.contains("check its spelling"),
            "a hint per reason: {}",
            status.stderr
        );
        assert!(
            status.stderr.contains("2 of 3 events are not billed (yet)"),
            "{}",
            status.stderr
        );
    }
    // All billed: exit 0.
    run_with_stdin(
        &key,
        &[
            "events",
            "status",
            "--customer",
            "acme",
            "x1",
            "--address",
            address,
        ],
        None,
    )
    .expect(0);
}
