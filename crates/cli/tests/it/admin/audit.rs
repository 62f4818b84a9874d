//! `tally keys` and `tally audit list|show|head|verify` against `tally dev`:
//! key creation and revocation, the bill run's finalization and a void from
//! the terminal each leave their entry; an exported head verifies; an entry
//! edited behind the triggers' back makes `verify` exit 1.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Dev, TALLY, create_key, run, text};

/// `tally keys create --name audit-reader --scope read`: the new key's id.
fn create_reader(database_url: &str) -> String {
    let output = Command::new(TALLY)
        .args([
            "keys",
            "create",
            "--name",
            "audit-reader",
            "--scope",
            "read",
        ])
        .env("DATABASE_URL", database_url)
        .env_remove("TALLY_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let id = stderr
        .split_whitespace()
        .find(|word| word.starts_with("key_"))
        .unwrap_or_else(|| panic!("no key id in {stderr}"));
    id.to_owned()
}

/// Polls `tally audit list <filters>` until it lists `count` entries.
async fn entries(dev: &Dev, key: &str, filters: &[&str], count: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut args = vec!["audit", "list"];
        args.extend(filters);
        let listed = dev.json(key, &args);
        let listed = listed.as_array().unwrap().clone();
        if listed.len() >= count {
            return listed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{count} entries for {filters:?} never came: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|entry| text(&entry["action"])).collect()
}

#[tokio::test]
async fn keys_finalizations_and_voids_are_listed_shown_and_verified_from_the_terminal() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let reader = create_reader(&database.url);
    let revoked = Command::new(TALLY)
        .args(["keys", "revoke", &reader])
        .env("DATABASE_URL", &database.url)
        .env_remove("TALLY_CONFIG")
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    let dev = Dev::start(&database.url, &[]).await;
    let address = dev.address.as_str();

    // The reader key: created and revoked by `tally keys`, never its secret.
    let of_reader = entries(&dev, &key, &["--resource", &reader], 2).await;
    assert_eq!(actions(&of_reader), ["api_key.created", "api_key.revoked"]);
    for entry in &of_reader {
        assert_eq!(entry["chain"], "auth");
        assert_eq!(entry["actor"]["id"], "tally_keys");
        assert_eq!(entry["actor"]["kind"], "ACTOR_KIND_SYSTEM");
    }
    let after: Value = serde_json::from_str(&text(&of_reader[1]["afterJson"])).unwrap();
    assert_eq!(
        (after["name"].as_str(), after["scopes"][0].as_str()),
        (Some("audit-reader"), Some("read"))
    );
    assert!(after["revoked_at"].is_string(), "{after}");
    let exported_auth = entries(&dev, &key, &["--service", "auth"], 3).await;
    assert!(
        exported_auth
            .iter()
            .all(|entry| !entry.to_string().contains(&key))
    );

    // An invoice finalized by the bill run, then voided from the terminal.
    dev.acme_on_inference_pro(&key);
    run(&key, &["clock", "advance", "1h", "--address", address]).expect(0);
    let finalized = entries(
        &dev,
        &key,
        &["--action", "invoice.finalized", "--actor", "bill_run"],
        1,
    )
    .await;
    let invoice = text(&finalized[0]["resourceId"]);
    run(
        &key,
        &[
            "invoices",
            "void",
            &invoice,
            "--reason",
            "wrong customer",
            "--address",
            address,
        ],
    )
    .expect(0);
    let timeline = entries(&dev, &key, &["--resource", &invoice], 3).await;
    assert_eq!(
        actions(&timeline),
        ["invoice.created", "invoice.finalized", "invoice.voided"]
    );
    assert_eq!(timeline[2]["reason"], "wrong customer");
    assert_eq!(timeline[2]["actor"]["name"], "admin-test-admin");
    assert_eq!(timeline[2]["chain"], "invoicing");

    // The invoice view ends with its timeline.
    let view = run(&key, &["invoices", "show", &invoice, "--address", address]).expect(0);
    let history = view.stdout.split("history:").nth(1).unwrap_or_default();
    for part in [
        "invoice.finalized",
        "bill_run",
        "invoice.voided",
        "wrong customer",
    ] {
        assert!(history.contains(part), "no `{part}` in:\n{}", view.stdout);
    }

    // `show`, as text: the before and after states.
    let shown = run(
        &key,
        &[
            "audit",
            "show",
            &text(&timeline[2]["id"]),
            "--address",
            address,
        ],
    )
    .expect(0);
    for part in [
        "invoice.voided",
        "wrong customer",
        "admin-test-admin",
        "\"status\": \"finalized\"",
        "\"status\": \"void\"",
    ] {
        assert!(
            shown.stdout.contains(part),
            "no `{part}` in:\n{}",
            shown.stdout
        );
    }

    // The heads, exported; verification with them passes…
    let heads = dev.json(&key, &["audit", "head"]);
    let exported: Vec<String> = heads["heads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|head| {
            format!(
                "{}:{}:{}",
                text(&head["chain"]),
                // proto3 JSON leaves a zero out
                head["sequence"].as_str().unwrap_or("0"),
                text(&head["hash"])
            )
        })
        .collect();
    assert_eq!(
        exported.len(),
        7,
        "every chain, finance's and connectors' too: {heads}"
    );
    let mut verify = vec!["audit", "verify", "--address", address];
    for head in &exported {
        verify.extend(["--head", head.as_str()]);
    }
    let intact = run(&key, &verify).expect(0);
    assert_eq!(
        intact.stdout.matches("intact").count(),
        7,
        "{}",
        intact.stdout
    );

    // …and an entry edited behind the triggers is found: exit 1, naming it.
    let pool = tally_runtime::db::connect_url(&database.url, 1)
        .await
        .unwrap();
    for statement in [
        "ALTER TABLE invoicing.audit_log DISABLE TRIGGER USER",
        "UPDATE invoicing.audit_log SET reason = 'customer asked' WHERE action = 'invoice.voided'",
        "ALTER TABLE invoicing.audit_log ENABLE TRIGGER USER",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let broken = run(
        &key,
        &[
            "audit",
            "verify",
            "--service",
            "invoicing",
            "--address",
            address,
        ],
    )
    .expect(1);
    let voided_at = format!("BROKEN at {}: hash", text(&timeline[2]["sequence"]));
    assert!(broken.stdout.contains(&voided_at), "{}", broken.stdout);
    assert!(
        broken.stderr.contains("broken audit chain: invoicing"),
        "{}",
        broken.stderr
    );
}
