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
        "accepted 4, duplicate 0, conflict 0, rejected 0, unreadable 0",
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
    // An external id where a `cus_…` id belongs: refused by ingest.
    run_with_stdin(
        &key,
        &["events", "send", "--address", address],
        Some(&events(&[(
            "r1",
            "acme",
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
        row.contains("acme") && row.contains("r1"),
        "{}",
        listed.stdout
    );
    // The rule and the API's description of it, not a shortened label.
    assert!(
        row.contains("customer_id invalid_prefix: "),
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
