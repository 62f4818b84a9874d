//! `tally catalog apply|show|delete-draft|delete-plan` against a real rating:
//! the documented example price book, idempotence, new versions, conflicts and
//! refusals, a dry run that validates as the apply does, and unpublished drafts
//! and plans deleted.

use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::{
    CreatePlanRequest, CreatePlanVersionRequest, PlanVersionSpec, create_plan_version_request,
};

use super::support::{
    Run, Service, create_key, documented_catalog, once_the_key_is_known, run, run_with_stdin,
};

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
        invalid.stderr.contains("nothing was applied"),
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
    let denied =
        once_the_key_is_known(|| apply(&rating, &reader, &documented_catalog(), &[])).expect(1);
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

/// A new plan naming an unknown meter with descending tiers: the dry run
/// fails with the same violations as the apply, and neither writes anything.
#[tokio::test]
async fn a_dry_run_validates_in_rating_exactly_as_the_apply_does() {
    let (_database, rating, key) = rating().await;
    let catalog = documented_catalog();
    let invalid = catalog
        .replace("code: inference_starter", "code: embed_plan3")
        .replace("meter: api_requests", "meter: api_calls")
        .replace(
            "{up_to: 100000000, unit_price: \"0.0000015\"}",
            "{up_to: 1000, unit_price: \"0.0000015\"}",
        );
    assert_ne!(invalid, catalog, "the documented catalog changed shape");

    let dry = apply(&rating, &key, &invalid, &["--dry-run"]).expect(1);
    let real = apply(&rating, &key, &invalid, &[]).expect(1);
    for refused in [&dry, &real] {
        for expected in [
            "unknown_meter",
            "tiers_not_ascending",
            "plan inference_pro: plans[0].spec.charges[2].price.graduated.tiers[1].up_to",
            "nothing was applied",
        ] {
            assert!(
                refused.stderr.contains(expected),
                "{expected}: {}",
                refused.stderr
            );
        }
    }
    let violations = |run: &Run| {
        run.stderr
            .lines()
            .filter(|line| line.starts_with("  "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(violations(&dry), violations(&real));
    // Nothing was written: no meter, no plan, no draft.
    let shown = show_json(&rating, &key);
    assert_eq!(shown["meters"], serde_json::json!([]), "{shown}");
    assert_eq!(shown["plans"], serde_json::json!([]), "{shown}");

    // A meter the same file creates is known to the dry run.
    let fixed = apply(&rating, &key, &catalog, &["--dry-run"]).expect(0);
    assert!(
        fixed.stdout.contains("would be created"),
        "{}",
        fixed.stdout
    );
    // An invalid meter is refused by the dry run too (CreateMeter's rules).
    let bad_meter = catalog.replace(
        "  - code: api_requests\n",
        "  - code: api_requests\n    property: path\n",
    );
    assert_ne!(bad_meter, catalog, "the documented catalog changed shape");
    let refused = apply(&rating, &key, &bad_meter, &["--dry-run"]).expect(1);
    assert!(
        refused
            .stderr
            .contains("meter api_requests: meters[2].property"),
        "{}",
        refused.stderr
    );
}

/// What an older apply (or a client) left unpublished can be deleted: a
/// draft, then the plan that holds the code; published ones cannot.
#[tokio::test]
async fn unpublished_drafts_and_plans_can_be_deleted() {
    let (_database, rating, key) = rating().await;
    let catalog = documented_catalog();
    apply(&rating, &key, &catalog, &[]).expect(0);

    // A plan whose first version never published, as a failed apply left it.
    let channel = tonic::transport::Channel::from_shared(rating.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CatalogServiceClient::new(channel);
    let plan = client
        .create_plan(authorized(
            &key,
            CreatePlanRequest {
                code: "embed_plan3".into(),
                name: "Embeddings".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let mut drafts = Vec::new();
    for attempt in 0..2 {
        let draft = client
            .create_plan_version(authorized(
                &key,
                CreatePlanVersionRequest {
                    idempotency_key: format!("left-behind-{attempt}"),
                    plan_id: plan.id.clone(),
                    source: Some(create_plan_version_request::Source::Spec(PlanVersionSpec {
                        currency: "USD".into(),
                        ..Default::default()
                    })),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .plan_version
            .unwrap();
        drafts.push(draft.id);
    }

    // One draft by id, then the rest by plan.
    let address = rating.address.as_str();
    let one = run(
        &key,
        &["catalog", "delete-draft", &drafts[0], "--address", address],
    )
    .expect(0);
    assert!(
        one.stdout.contains(&format!("deleted draft {}", drafts[0])),
        "{}",
        one.stdout
    );
    let again = run(
        &key,
        &["catalog", "delete-draft", &drafts[0], "--address", address],
    )
    .expect(1);
    assert!(again.stderr.contains("NotFound"), "{}", again.stderr);
    let rest = run(
        &key,
        &[
            "catalog",
            "delete-draft",
            "--plan",
            "embed_plan3",
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(
        rest.stdout
            .contains(&format!("deleted draft {}", drafts[1])),
        "{}",
        rest.stdout
    );

    // A published plan's versions and the plan itself stay.
    let pro = show_json(&rating, &key)["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plan| plan["code"] == "inference_pro")
        .unwrap()["latestPublishedVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let published = run(
        &key,
        &["catalog", "delete-draft", &pro, "--address", address],
    )
    .expect(1);
    assert!(
        published.stderr.contains("only drafts can be deleted"),
        "{}",
        published.stderr
    );
    let kept = run(
        &key,
        &[
            "catalog",
            "delete-plan",
            "inference_pro",
            "--address",
            address,
        ],
    )
    .expect(1);
    assert!(kept.stderr.contains("cannot be deleted"), "{}", kept.stderr);

    // The unpublished plan goes (with a draft made after the first ones), and
    // its code can hold a plan again.
    client
        .create_plan_version(authorized(
            &key,
            CreatePlanVersionRequest {
                idempotency_key: "left-behind-2".into(),
                plan_id: plan.id.clone(),
                source: Some(create_plan_version_request::Source::Spec(
                    PlanVersionSpec::default(),
                )),
            },
        ))
        .await
        .unwrap();
    let gone = run(
        &key,
        &[
            "catalog",
            "delete-plan",
            "embed_plan3",
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(
        gone.stdout.contains("deleted plan embed_plan3") && gone.stdout.contains("1 draft"),
        "{}",
        gone.stdout
    );
    let codes: Vec<String> = show_json(&rating, &key)["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plan| plan["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["inference_pro", "inference_starter"]);
    let renamed = catalog.replace("code: inference_starter", "code: embed_plan3");
    let reused = apply(&rating, &key, &renamed, &[]).expect(0);
    assert!(reused.stdout.contains("embed_plan3"), "{}", reused.stdout);
}

fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}
