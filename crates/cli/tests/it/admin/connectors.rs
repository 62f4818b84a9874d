//! `tally connectors orb …` against `tally dev` with `ORB_API_KEY` and a fake
//! Orb: a mapped customer's usage is forwarded, an unmapped one's is not,
//! and the commands show both.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::{Dev, create_key, documented_catalog, run, run_with_stdin, text};
use super::usage::poll;

/// A proto3-JSON uint64 (a string; absent when 0).
fn count(value: &Value) -> u64 {
    value.as_str().map_or(0, |text| text.parse().unwrap())
}

fn customer(dev: &Dev, key: &str, name: &str) -> String {
    let created = dev.json(
        key,
        &[
            "customers",
            "create",
            "--name",
            name,
            "--currency",
            "USD",
            "--external-id",
            name,
        ],
    );
    text(&created["id"])
}

#[tokio::test]
async fn a_mapped_customers_usage_is_forwarded_to_orb_and_shown() {
    let orb = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/ingest"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"validation_failed": []})))
        .mount(&orb)
        .await;
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let dev = Dev::start(
        &database.url,
        &[
            ("ORB_API_KEY", "orb_test_key"),
            ("TALLY_CONNECTORS__ORB_API_BASE_URL", &orb.uri()),
        ],
    )
    .await;
    let address = dev.address.as_str();
    run_with_stdin(
        &key,
        &["catalog", "apply", "-f", "-", "--address", address],
        Some(&documented_catalog()),
    )
    .expect(0);
    let acme = customer(&dev, &key, "acme");
    let globex = customer(&dev, &key, "globex");

    let mapped = run(
        &key,
        &[
            "connectors",
            "orb",
            "map",
            "--customer",
            &acme,
            "--external-id",
            "acme-orb",
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(
        mapped.stdout.contains("acme-orb (mapped)"),
        "{}",
        mapped.stdout
    );
    let again = dev.json(
        &key,
        &[
            "connectors",
            "orb",
            "map",
            "--customer",
            &acme,
            "--external-id",
            "acme-orb",
        ],
    );
    assert_eq!(
        again["changed"],
        Value::Null,
        "unchanged (false is omitted): {again}"
    );

    let lines: String = [("o1", &acme), ("o2", &acme), ("o3", &globex)]
        .iter()
        .map(|(id, customer)| {
            format!(
                "{{\"id\": \"{id}\", \"customerId\": \"{customer}\", \"eventType\": \"llm_tokens\", \
                 \"timestamp\": \"2026-10-31T23:00:00Z\", \"properties\": {{\"tokens\": \"10\"}}}}\n"
            )
        })
        .collect();
    run_with_stdin(
        &key,
        &["events", "send", "--address", address],
        Some(&lines),
    )
    .expect(0);

    let stats = poll(Duration::from_secs(60), "three events settled", || {
        let stats = dev.json(&key, &["connectors", "orb", "stats"]);
        (count(&stats["forwarded"]) + count(&stats["notMapped"]) == 3).then_some(stats)
    });
    assert_eq!(
        (
            count(&stats["forwarded"]),
            count(&stats["notMapped"]),
            count(&stats["mappedCustomers"])
        ),
        (2, 1, 1),
        "{stats}"
    );

    let forwarded = dev.json(
        &key,
        &["connectors", "orb", "events", "--state", "forwarded"],
    );
    let keys: BTreeSet<String> = forwarded
        .as_array()
        .unwrap()
        .iter()
        .map(|event| text(&event["idempotencyKey"]))
        .collect();
    assert_eq!(keys, [format!("{acme}:o1"), format!("{acme}:o2")].into());
    let table = run(
        &key,
        &[
            "connectors",
            "orb",
            "events",
            "--customer",
            &globex,
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(table.stdout.contains("not_mapped"), "{}", table.stdout);

    let sent: BTreeSet<String> = orb
        .received_requests()
        .await
        .unwrap()
        .iter()
        .flat_map(|request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| text(&event["idempotency_key"]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sent, keys, "Orb received the mapped customer's events only");
}
