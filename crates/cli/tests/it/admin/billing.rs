//! `tally customers|subscriptions|credits|invoices` against `tally dev` (all
//! four services in one process on a manual clock): a month of billing driven
//! from the terminal, as an operator would.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Dev, create_key, documented_catalog, run, run_with_stdin, text};

/// Waits until rating's live cost shows the usage (it travels over the bus).
async fn wait_until_rated(address: &str, key: &str, customer_id: &str) {
    use tally_proto::rating::GetCurrentCostRequest;
    use tally_proto::rating::rating_service_client::RatingServiceClient;
    let channel = tonic::transport::Channel::from_shared(address.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rating = RatingServiceClient::new(channel);
    let started = Instant::now();
    loop {
        let mut request = tonic::Request::new(GetCurrentCostRequest {
            customer_id: customer_id.to_owned(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let costs = rating
            .get_current_cost(request)
            .await
            .unwrap()
            .into_inner()
            .costs;
        let usage_total = costs
            .first()
            .and_then(|cost| cost.usage_total.as_ref())
            .map(|total| total.amount.clone());
        if usage_total.as_deref() == Some("2.10") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "usage not rated: {usage_total:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_month_of_billing_from_the_terminal() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let dev = Dev::start(&database.url, &[]).await;
    let address = dev.address.as_str();

    let yaml = documented_catalog();
    run_with_stdin(
        &key,
        &["catalog", "apply", "-f", "-", "--address", address],
        Some(&yaml),
    )
    .expect(0);
    let shown = dev.json(&key, &["catalog", "show"]);
    let version_of = |code: &str| {
        shown["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|plan| plan["code"] == code)
            .map(|plan| text(&plan["latestPublishedVersionId"]))
            .unwrap()
    };
    let (pro, starter) = (version_of("inference_pro"), version_of("inference_starter"));

    // Customers: created once by external id.
    let create = [
        "customers",
        "create",
        "--name",
        "Acme AI",
        "--currency",
        "USD",
        "--external-id",
        "acme",
        "--email",
        "billing@acme.test",
        "--country",
        "DE",
        "--address-line1",
        "Torstraße 1",
        "--city",
        "Berlin",
        "--postal-code",
        "10115",
    ];
    let acme = dev.json(&key, &create);
    let customer = text(&acme["id"]);
    assert!(customer.starts_with("cus_"), "{acme}");
    assert_eq!(acme["billingAddress"]["country"], "DE");
    let mut again: Vec<&str> = create.to_vec();
    again.extend(["--address", address]);
    let repeated = run(&key, &again).expect(0);
    assert!(
        repeated.stderr.contains("already existed"),
        "{}",
        repeated.stderr
    );
    assert!(repeated.stdout.contains(&customer), "{}", repeated.stdout);
    let listed = run(&key, &["customers", "list", "--address", address]).expect(0);
    assert!(listed.stdout.contains("Acme AI"), "{}", listed.stdout);
    let by_external = dev.json(&key, &["customers", "show", "acme"]);
    assert_eq!(by_external["id"], Value::String(customer.clone()));

    // A subscription from the first of the month, and prepaid credits.
    let subscription = dev.json(
        &key,
        &[
            "subscriptions",
            "create",
            "--customer",
            &customer,
            "--plan-version",
            &pro,
            "--start-at",
            "2026-11-01T00:00:00Z",
        ],
    );
    let subscription_id = text(&subscription["id"]);
    assert_eq!(
        subscription["status"], "SUBSCRIPTION_STATUS_ACTIVE",
        "{subscription}"
    );
    let grant = dev.json(
        &key,
        &[
            "credits",
            "grant",
            "--customer",
            &customer,
            "--amount",
            "100.00",
            "--currency",
            "USD",
            "--description",
            "welcome",
        ],
    );
    assert!(text(&grant["id"]).starts_with("grant_"), "{grant}");
    let balance = dev.json(&key, &["credits", "balance", "--customer", &customer]);
    assert_eq!(balance["available"]["amount"], "100.00", "{balance}");

    // Usage on the 10th: 1,000,000 tokens at 0.0000021 = 2.10.
    run(
        &key,
        &["clock", "set", "2026-11-10T12:00:00Z", "--address", address],
    )
    .expect(0);
    let events = "{\"id\": \"t1\", \"customerId\": \"CUSTOMER\", \"eventType\": \"llm_tokens\", \"timestamp\": \"2026-11-10T12:00:00Z\", \"properties\": {\"tokens\": \"1000000\"}}\n"
        .replace("CUSTOMER", &customer);
    let sent = run_with_stdin(
        &key,
        &["events", "send", "--address", address],
        Some(&events),
    )
    .expect(0);
    // stderr is not a terminal: no progress line, only the summaries (what
    // ingest accepted, then what rating made of it).
    assert!(
        sent.stderr
            .starts_with("accepted 1, duplicate 0, conflict 0, rejected 0, not sent 0\nrated "),
        "{}",
        sent.stderr
    );
    assert!(!sent.stderr.contains('\r'), "{}", sent.stderr);
    wait_until_rated(address, &key, &customer).await;

    // The month ends: the bill run finalizes November's invoice.
    run(
        &key,
        &["clock", "set", "2026-12-01T00:10:00Z", "--address", address],
    )
    .expect(0);
    let started = Instant::now();
    let cycle = loop {
        let invoices = dev.json(&key, &["invoices", "list", "--customer", &customer]);
        // At the boundary: December's fee in advance, November's usage in arrears.
        let found = invoices.as_array().unwrap().iter().find(|invoice| {
            invoice["billingReason"] == "BILLING_REASON_SUBSCRIPTION_CYCLE"
                && invoice["status"] != "INVOICE_STATUS_DRAFT"
        });
        if let Some(found) = found {
            break found.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no finalized cycle invoice: {invoices}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let invoice_id = text(&cycle["id"]);
    let shown = run(
        &key,
        &["invoices", "show", &invoice_id, "--address", address],
    )
    .expect(0);
    assert!(shown.stdout.contains("Platform fee"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("meter llm_tokens"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("1000000 × 0.0000021"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("amount due:"), "{}", shown.stdout);
    let finalized = run(
        &key,
        &[
            "invoices",
            "list",
            "--status",
            "finalized,paid",
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(
        finalized.stdout.contains(&invoice_id),
        "{}",
        finalized.stdout
    );
    let drafts = run(
        &key,
        &[
            "invoices",
            "list",
            "--status",
            "draft",
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(!drafts.stdout.contains(&invoice_id), "{}", drafts.stdout);
    let full = dev.json(&key, &["invoices", "show", &invoice_id]);
    assert_eq!(full["id"], Value::String(invoice_id.clone()));
    let history = run(
        &key,
        &[
            "credits",
            "history",
            "--customer",
            &customer,
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(history.stdout.contains("grant"), "{}", history.stdout);

    // A plan change and a cancellation at the period's end.
    let changed = dev.json(
        &key,
        &[
            "subscriptions",
            "change-plan",
            &subscription_id,
            "--plan",
            "inference_starter",
        ],
    );
    assert_eq!(
        changed["planVersionId"],
        Value::String(starter.clone()),
        "{changed}"
    );
    let canceled = dev.json(
        &key,
        &[
            "subscriptions",
            "cancel",
            &subscription_id,
            "--timing",
            "at-period-end",
            "--reason",
            "moving on",
        ],
    );
    assert_eq!(canceled["cancelAt"], "2027-01-01T00:00:00Z", "{canceled}");
    let shown = run(
        &key,
        &[
            "subscriptions",
            "show",
            &subscription_id,
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(shown.stdout.contains("phases:"), "{}", shown.stdout);
    assert!(shown.stdout.contains(&starter), "{}", shown.stdout);

    // Archiving: refused while a subscription is live; fine for a new customer.
    let refused = run(
        &key,
        &["customers", "archive", &customer, "--address", address],
    )
    .expect(1);
    assert!(
        refused.stderr.contains("ArchiveCustomer"),
        "{}",
        refused.stderr
    );
    let other = dev.json(
        &key,
        &[
            "customers",
            "create",
            "--name",
            "Beta",
            "--external-id",
            "beta",
            "--currency",
            "EUR",
        ],
    );
    let archived = dev.json(&key, &["customers", "archive", &text(&other["id"])]);
    assert_eq!(archived["status"], "CUSTOMER_STATUS_ARCHIVED");

    // A plan code without a published version is refused; no plan at all is a usage error.
    let unknown = run(
        &key,
        &[
            "subscriptions",
            "change-plan",
            &subscription_id,
            "--plan",
            "no_such_plan",
            "--address",
            address,
        ],
    )
    .expect(1);
    assert!(
        unknown.stderr.contains("GetPlan no_such_plan"),
        "{}",
        unknown.stderr
    );
    run(
        &key,
        &[
            "subscriptions",
            "change-plan",
            &subscription_id,
            "--address",
            address,
        ],
    )
    .expect(2);

    // Usage errors exit 2 before anything is sent.
    run(
        &key,
        &[
            "subscriptions",
            "cancel",
            &subscription_id,
            "--timing",
            "at-time",
            "--address",
            address,
        ],
    )
    .expect(2);
    run(
        &key,
        &[
            "customers",
            "create",
            "--name",
            "X",
            "--external-id",
            "x",
            "--currency",
            "USD",
            "--metadata",
            "novalue",
            "--address",
            address,
        ],
    )
    .expect(2);
}
