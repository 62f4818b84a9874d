//! `tally migrate import --from stripe` against `tally dev` (manual clock at
//! 2026-11-01) and a fake Stripe Billing account (connectors' fake, whose
//! bodies async-stripe's types parse): the dry run lists exactly what it
//! would create and what not and why, and creates nothing; the import
//! creates it through invoicing's API; a second import creates nothing.

use serde_json::Value;
use wiremock::MockServer;

use super::support::{Dev, create_key, run_with_env, run_with_stdin, text};

#[allow(dead_code)]
#[path = "../../../../connectors/tests/it/stripe_objects.rs"]
mod stripe_objects;

#[allow(dead_code)]
#[path = "../../../../connectors/tests/it/stripe_account.rs"]
mod stripe_account;

use stripe_account::{DAY, MAPPING, mount_account};

/// The dev clock's start, 2026-11-01T00:00:00Z.
const NOW: i64 = 1_793_491_200;

const CATALOG: &str = "\
meters:
  - code: api_calls
    name: API calls
    aggregation: count
    unit: call
plans:
  - code: pro
    name: Pro
    version:
      currency: USD
      billing_interval: month
      charges:
        - key: platform_fee
          flat_fee: \"49.00\"
        - key: api_calls
          meter: api_calls
          per_unit: \"0.0025\"
  - code: pro_eu
    name: Pro EU
    version:
      currency: EUR
      billing_interval: month
      charges:
        - key: platform_fee
          flat_fee: \"45.00\"
";

fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap()
        .to_rfc3339()
}

/// The `pv_…` the output names for `plan`.
fn version_in(output: &str, plan: &str) -> String {
    let marker = format!("on plan {plan} (");
    let start = output.find(&marker).unwrap() + marker.len();
    output[start..].split(')').next().unwrap().to_owned()
}

struct Import<'a> {
    dev: &'a Dev,
    key: &'a str,
    stripe: &'a MockServer,
    mapping: &'a std::path::Path,
}

impl Import<'_> {
    fn run(&self, extra: &[&str]) -> super::support::Run {
        let mapping = self.mapping.to_str().unwrap();
        let stripe = self.stripe.uri();
        let mut args = vec![
            "migrate",
            "import",
            "--from",
            "stripe",
            "--mapping",
            mapping,
            "--stripe-api-base",
            &stripe,
            "--address",
            &self.dev.address,
        ];
        args.extend(extra);
        run_with_env(
            self.key,
            &args,
            None,
            &[("STRIPE_BILLING_API_KEY", "sk_test_import")],
        )
        .expect(0)
    }

    fn customers(&self) -> Vec<Value> {
        let all = self.dev.json(self.key, &["customers", "list"]);
        all.as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn a_stripe_account_is_imported_once_after_a_dry_run_that_lists_it_exactly() {
    let stripe = MockServer::start().await;
    mount_account(&stripe, NOW).await;
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let dev = Dev::start(&database.url, &[]).await;
    run_with_stdin(
        &key,
        &["catalog", "apply", "-f", "-", "--address", &dev.address],
        Some(CATALOG),
    )
    .expect(0);
    let directory =
        std::env::temp_dir().join(format!("tally-import-{}", tally_testkit::unique_suffix()));
    std::fs::create_dir_all(&directory).unwrap();
    let mapping = directory.join("stripe-mapping.yaml");
    std::fs::write(&mapping, MAPPING).unwrap();
    let import = Import {
        dev: &dev,
        key: &key,
        stripe: &stripe,
        mapping: &mapping,
    };

    let dry = import.run(&["--dry-run"]);
    let (pro, pro_eu) = (
        version_in(&dry.stdout, "pro"),
        version_in(&dry.stdout, "pro_eu"),
    );
    assert!(
        pro.starts_with("pv_") && pro_eu.starts_with("pv_"),
        "{}",
        dry.stdout
    );
    let expected = format!(
        "\
import from stripe: 4 customers, 2 subscriptions; 3 not imported
create customer cus_1Acme \"Acme Analytics\" <ap@acme.test> USD
create customer cus_1Globex \"Globex\" <billing@globex.test> EUR
create customer cus_1Hooli \"Hooli\" <finance@hooli.test> USD
create customer cus_1Initech \"Initech\" <ap@initech.test> USD
create subscription sub_1Acme for cus_1Acme on plan pro ({pro}) from {acme_start} (its current period's start (the historical start is before the backdating window)); started {acme_started}; charges price_1ProBase→platform_fee, price_1ProCalls→api_calls
  ignore price price_1Support: support contract, invoiced separately after the move
create subscription sub_1Globex for cus_1Globex on plan pro_eu ({pro_eu}) from {globex_start} (its historical start); started {globex_start}; charges price_1EuBase→platform_fee
not imported: customer cus_1Umbrella: it has no currency in the source and no live subscription to take one from; create it by hand
not imported: subscription sub_1Hooli: not in the mapping: price_1Legacy (Legacy seats, USD, licensed per month); add each under a plan's prices, or under ignore with the reason
not imported: subscription sub_1Initech: it has ended in the source (status canceled)
dry run: nothing was created
",
        acme_start = rfc3339(NOW - 6 * DAY),
        acme_started = rfc3339(NOW - 280 * DAY),
        globex_start = rfc3339(NOW - 17 * DAY),
    );
    assert_eq!(dry.stdout, expected);
    assert!(import.customers().is_empty(), "a dry run creates nothing");

    let first = import.run(&[]);
    assert!(
        first
            .stdout
            .ends_with("created 4 customers (0 existed), 2 subscriptions (0 existed)\n"),
        "{}",
        first.stdout
    );
    let second = import.run(&[]);
    assert!(
        second
            .stdout
            .ends_with("created 0 customers (4 existed), 0 subscriptions (2 existed)\n"),
        "{}",
        second.stdout
    );

    // The Stripe ids are the external ids (`--customer cus_1…` would be
    // read as a Tally id: look the Tally ids up).
    let tally_ids: std::collections::BTreeMap<String, String> = import
        .customers()
        .iter()
        .map(|customer| (text(&customer["externalId"]), text(&customer["id"])))
        .collect();
    assert_eq!(
        tally_ids.keys().map(String::as_str).collect::<Vec<_>>(),
        ["cus_1Acme", "cus_1Globex", "cus_1Hooli", "cus_1Initech"]
    );
    let subscriptions_of = |external: &str| {
        let listed = dev.json(
            &key,
            &["subscriptions", "list", "--customer", &tally_ids[external]],
        );
        listed.as_array().unwrap().clone()
    };
    let acme = subscriptions_of("cus_1Acme");
    assert_eq!(acme.len(), 1, "{acme:?}");
    assert_eq!(text(&acme[0]["planVersionId"]), pro);
    assert_eq!(text(&acme[0]["startAt"]), "2026-10-26T00:00:00Z");
    assert_eq!(
        text(&acme[0]["metadata"]["source_started_at"]),
        rfc3339(NOW - 280 * DAY)
    );
    let globex = subscriptions_of("cus_1Globex");
    assert_eq!(globex.len(), 1, "{globex:?}");
    assert_eq!(text(&globex[0]["planVersionId"]), pro_eu);
    assert_eq!(text(&globex[0]["startAt"]), "2026-10-15T00:00:00Z");
    assert!(
        subscriptions_of("cus_1Hooli").is_empty(),
        "an unmapped price is not guessed"
    );
    assert!(
        subscriptions_of("cus_1Initech").is_empty(),
        "ended in Stripe"
    );

    let requests = stripe.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|request| request.method.as_str() == "GET"),
        "the import only reads Stripe"
    );
    let _ = std::fs::remove_dir_all(&directory);
}
