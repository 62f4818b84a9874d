//! `tally finance mrr|movements|retention` against `tally dev`: the MRR of a
//! subscription comes from the fee invoicing invoiced for it (Inference Pro's
//! 499.00 platform fee a month), as a table and as JSON.

use std::time::Duration;

use super::support::{run, text};
use super::usage::{poll, subscribed_customer};

#[tokio::test]
async fn mrr_and_its_movements_from_what_invoicing_invoiced() {
    let (dev, key, customer, _subscription, _database) = subscribed_customer().await;
    let address = dev.address.as_str();
    let at = "2026-11-10T12:00:00Z";

    // The opening invoice bills November's fee in advance; once finance has
    // it, the fee is MRR from 1 November.
    let mrr = poll(
        Duration::from_secs(60),
        "MRR from the opening invoice",
        || {
            let mrr = dev.json(&key, &["finance", "mrr", "--currency", "USD", "--at", at]);
            (mrr["mrr"]["amount"] == "499.00").then_some(mrr)
        },
    );
    assert_eq!(mrr["arr"]["amount"], "5988.00", "{mrr}");
    assert_eq!(mrr["payingCustomers"], "1", "{mrr}");
    assert_eq!(mrr["arpa"]["amount"], "499.00", "{mrr}");

    let table = run(
        &key,
        &["finance", "mrr", "--currency", "USD", "--address", address],
    )
    .expect(0);
    assert_eq!(
        table.rows(),
        vec![vec!["USD", "499.00", "5988.00", "1", "499.00"]],
        "{}",
        table.stdout
    );

    let november = [
        "--from",
        "2026-11-01T00:00:00Z",
        "--to",
        "2026-12-01T00:00:00Z",
    ];
    let mut args = vec!["finance", "movements", "--currency", "USD"];
    args.extend(november);
    let movements = dev.json(&key, &args);
    let listed = movements["movements"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{movements}");
    assert_eq!(text(&listed[0]["customerId"]), customer);
    assert_eq!(listed[0]["kind"], "MOVEMENT_KIND_NEW");
    assert_eq!(listed[0]["change"]["amount"], "499.00");
    assert_eq!(movements["startingMrr"]["amount"], "0.00");
    assert_eq!(movements["endingMrr"]["amount"], "499.00");
    assert!(movements.get("grossMrrChurnRate").is_none(), "{movements}");

    args.extend(["--address", address]);
    let table = run(&key, &args).expect(0);
    assert!(table.stdout.contains("new"), "{}", table.stdout);
    assert!(table.stdout.contains("ending MRR"), "{}", table.stdout);

    // November's cohort, measured at the end of November: one customer, all retained.
    let mut args = vec!["finance", "retention", "--currency", "USD"];
    args.extend(november);
    args.extend(["--at", "2026-12-01T00:00:00Z"]);
    let retention = dev.json(&key, &args);
    let cohorts = retention["cohorts"].as_array().unwrap();
    assert_eq!(cohorts.len(), 1, "{retention}");
    assert_eq!(cohorts[0]["customers"], "1", "{retention}");
    assert_eq!(cohorts[0]["startingMrr"]["amount"], "499.00", "{retention}");
    let months = cohorts[0]["months"].as_array().unwrap();
    assert_eq!(months.len(), 1, "{retention}");
    assert_eq!(months[0]["netRetention"]["value"], "1", "{retention}");
    assert_eq!(months[0]["grossRetention"]["value"], "1", "{retention}");
    args.extend(["--address", address]);
    let table = run(&key, &args).expect(0);
    assert_eq!(
        table.rows(),
        vec![vec![
            "2026-11", "1", "499.00", "2026-11", "0", "1", "499.00", "100.00", "%", "100.00", "%"
        ]],
        "{}",
        table.stdout
    );

    // A currency that is not one is refused, naming the field.
    let refused = run(
        &key,
        &["finance", "mrr", "--currency", "usd", "--address", address],
    )
    .expect(1);
    assert!(refused.stderr.contains("currency"), "{}", refused.stderr);
}
