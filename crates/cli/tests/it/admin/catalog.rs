//! `tally catalog apply|show` against a real rating: the documented example
//! price book, idempotence, new versions, conflicts and refusals.

use super::support::{Run, Service, create_key, documented_catalog, run, run_with_stdin};

fn apply(service: &Service, key: &str, yaml: &str, extra: &[&str]) -> Run {
    let mut args = vec!["catalog", "apply", "-f", "-", "--address", &service.address];
    args.extend_from_slice(extra);
    run_with_stdin(key, &args, Some(yaml))
}

/// `(kind, code, change)` of each row of `apply`'s table.
fn changes(run: &Run) -> Vec<(String, String, String)> {
    run.stdout
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (
                cells[0].to_owned(),
                cells[1].to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect()
}

fn show_json(service: &Service, key: &str) -> serde_json::Value {
    let args = [
        "catalog",
        "show",
        "--output",
        "json",
        "--address",
        &service.address,
    ];
    run(key, &args).expect(0).json()
}

fn all_unchanged(run: &Run) -> bool {
    changes(run)
        .iter()
        .all(|(_, _, change)| change == "unchanged")
}

fn triple(kind: &str, code: &str, change: &str) -> (String, String, String) {
    (kind.to_owned(), code.to_owned(), change.to_owned())
}

async fn rating() -> (tally_testkit::postgres::TestDatabase, Service, String) {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let service = Service::start(&database.url, "rating", &[]).await;
    (database, service, key)
}

#[tokio::test]
async fn apply_creates_the_catalog_once_and_publishes_changes_as_new_versions() {
    let (_database, rating, key) = rating().await;
    let catalog = documented_catalog();

    // A dry run shows everything as new and writes nothing.
    let dry = apply(&rating, &key, &catalog, &["--dry-run"]).expect(0);
    assert_eq!(
        changes(&dry),
        vec![
            triple("meter", "gpu_seconds", "new"),
            triple("meter", "llm_tokens", "new"),
            triple("meter", "api_requests", "new"),
            triple("plan", "inference_pro", "new"),
            triple("plan", "inference_starter", "new"),
        ]
    );
    assert!(dry.stdout.contains("would be created"), "{}", dry.stdout);
    let shown = show_json(&rating, &key);
    assert_eq!(shown["meters"], serde_json::json!([]));

    // The first run creates and publishes; the second changes nothing.
    let first = apply(&rating, &key, &catalog, &[]).expect(0);
    assert!(
        first.stdout.contains("created; version 1 published"),
        "{}",
        first.stdout
    );
    let second = apply(&rating, &key, &catalog, &[]).expect(0);
    assert!(all_unchanged(&second), "{}", second.stdout);

    let shown = show_json(&rating, &key);
    let meters: Vec<&str> = shown["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap())
        .collect();
    assert_eq!(meters, ["api_requests", "gpu_seconds", "llm_tokens"]);
    let pro = shown["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plan| plan["code"] == "inference_pro")
        .unwrap();
    let version = &pro["latestPublishedVersion"];
    assert_eq!(version["version"], 1);
    assert_eq!(version["status"], "PLAN_VERSION_STATUS_PUBLISHED");
    assert_eq!(
        version["spec"]["charges"][2]["price"]["graduated"]["tiers"][0]["unitPrice"]["value"],
        "0.0000021"
    );
    assert_eq!(
        version["spec"]["charges"][1]["price"]["matrix"]["cells"][0]["dimensionValues"]["gpu_type"],
        "h100"
    );
    let table = run(&key, &["catalog", "show", "--address", &rating.address]).expect(0);
    assert!(
        table
            .stdout
            .lines()
            .any(|line| line.starts_with("inference_pro")
                && line.contains("platform_fee,gpu_time,tokens,requests")),
        "{}",
        table.stdout
    );

    // A new token price: inference_pro gets version 2, the rest is unchanged.
    let cheaper = catalog.replace("\"0.0000021\"", "\"0.0000020\"");
    let changed = apply(&rating, &key, &cheaper, &["--dry-run"]).expect(0);
    assert!(
        changed.stdout.contains("would replace version 1"),
        "{}",
        changed.stdout
    );
    let changed = apply(&rating, &key, &cheaper, &["--output", "json"]).expect(0);
    let rows = changed.json();
    let pro_row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["code"] == "inference_pro")
        .unwrap();
    assert_eq!(pro_row["change"], "new version");
    assert_eq!(pro_row["version"], 2);
    assert_eq!(
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|row| row["change"] == "unchanged")
            .count(),
        4
    );

    // One plan in detail: its versions and the latest published charges.
    let plan_args = [
        "catalog",
        "show",
        "--plan",
        "inference_pro",
        "--address",
        &rating.address,
    ];
    let detail = run(&key, &plan_args).expect(0);
    for expected in [
        "charges of version 2 (USD, month, trial 0 days)",
        "graduated: ≤10000000 × 0.0000020; ≤100000000 × 0.0000015; above × 0.0000009",
        "matrix: gpu_type=a100 × 0.00080; gpu_type=h100 × 0.00125; gpu_type=l4 × 0.00022",
        "flat fee 499.00 USD",
        "in_advance",
    ] {
        assert!(
            detail.stdout.contains(expected),
            "{expected} in\n{}",
            detail.stdout
        );
    }

    // Version 1 is still published with its own price: never modified.
    let detail = run(&key, &[&plan_args[..], &["--output", "json"]].concat())
        .expect(0)
        .json();
    let versions = detail["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["status"], "PLAN_VERSION_STATUS_PUBLISHED");
    assert_eq!(
        versions[0]["spec"]["charges"][2]["price"]["graduated"]["tiers"][0]["unitPrice"]["value"],
        "0.0000021"
    );

    // Going back to the first price is a third version, not version 1 again.
    let back = apply(&rating, &key, &catalog, &[]).expect(0);
    assert!(
        back.stdout.contains("version 3 published"),
        "{}",
        back.stdout
    );
    apply(&rating, &key, &catalog, &[]).expect(0);
}

#[tokio::test]
async fn conflicts_and_invalid_versions_are_refused_with_their_reasons() {
    let (_database, rating, key) = rating().await;
    let catalog = documented_catalog();
    apply(&rating, &key, &catalog, &[]).expect(0);

    // A changed meter and a renamed plan: conflicts, nothing written.
    let conflicting = catalog
        .replace(
            "aggregation: sum\n    property: tokens",
            "aggregation: max\n    property: tokens",
        )
        .replace("name: Inference Starter", "name: Inference Basic")
        .replace("\"0.0000025\"", "\"0.0000030\"");
    let refused = apply(&rating, &key, &conflicting, &[]).expect(1);
    assert!(
        changes(&refused).contains(&triple("meter", "llm_tokens", "conflict")),
        "{}",
        refused.stdout
    );
    assert!(
        changes(&refused).contains(&triple("plan", "inference_starter", "conflict")),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("differs in aggregation"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("nothing was applied"),
        "{}",
        refused.stderr
    );
    let again = apply(&rating, &key, &catalog, &[]).expect(0);
    assert!(all_unchanged(&again), "{}", again.stdout);

    // A version naming a meter that does not exist: every violation, exit 1.
    let unknown = catalog.replace("meter: api_requests", "meter: api_calls");
    let invalid = apply(&rating, &key, &unknown, &[]).expect(1);
    assert!(
        invalid.stderr.contains("unknown_meter"),
        "{}",
        invalid.stderr
    );
    assert!(
        invalid.stderr.contains("stays a draft"),
        "{}",
        invalid.stderr
    );

    // Usage errors: a float price, two price models, an unreadable file.
    let float = catalog.replace("\"0.0001\"", "0.0001");
    let usage = apply(&rating, &key, &float, &[]).expect(2);
    assert!(usage.stderr.contains("YAML float"), "{}", usage.stderr);
    let two = catalog.replace(
        "per_unit: \"0.0001\"",
        "per_unit: \"0.0001\"\n          flat_fee: \"1\"",
    );
    let usage = apply(&rating, &key, &two, &[]).expect(2);
    assert!(usage.stderr.contains("2 price models"), "{}", usage.stderr);
    let twice = catalog.replace("  - code: api_requests", "  - code: llm_tokens");
    let usage = apply(&rating, &key, &twice, &[]).expect(2);
    assert!(
        usage.stderr.contains("meter llm_tokens appears twice"),
        "{}",
        usage.stderr
    );
    let missing = run(
        &key,
        &[
            "catalog",
            "apply",
            "-f",
            "/nonexistent/catalog.yaml",
            "--address",
            &rating.address,
        ],
    )
    .expect(2);
    assert!(
        missing
            .stderr
            .contains("cannot read /nonexistent/catalog.yaml"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn failures_say_what_to_do() {
    let (database, rating, key) = rating().await;
    let nobody = "http://127.0.0.1:9";
    let refused = run(&key, &["catalog", "show", "--address", nobody]).expect(1);
    assert!(
        refused.stderr.contains("is Tally running there?"),
        "{}",
        refused.stderr
    );

    let wrong = run(
        "tally_0000",
        &["catalog", "show", "--address", &rating.address],
    )
    .expect(1);
    assert!(wrong.stderr.contains("Unauthenticated"), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("hint: pass a valid key"),
        "{}",
        wrong.stderr
    );

    let reader = create_key(&database.url, "read");
    // The key cache refreshes every second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let denied = apply(&rating, &reader, &documented_catalog(), &[]).expect(1);
    assert!(
        denied.stderr.contains("PermissionDenied"),
        "{}",
        denied.stderr
    );

    let bad_address = run(&key, &["catalog", "show", "--address", "not a url"]).expect(2);
    assert!(
        bad_address.stderr.contains("is not an address"),
        "{}",
        bad_address.stderr
    );
    run(&key, &["catalog", "nonsense"]).expect(2);
}
