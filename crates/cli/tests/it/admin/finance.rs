//! `tally finance` against `tally dev`: a month billed by invoicing is in
//! the books, balanced and to the cent; fees are recognised day by day; the
//! journal exports as CSV; closing the books needs `admin`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::types::Decimal;

use super::support::{create_key, run, run_with_stdin, text};
use super::usage::{events, poll, subscribed_customer};

/// `check` until it answers, at most `limit`.
fn poll_or<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(found) = check() {
            return Some(found);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().unwrap_or("0").parse().unwrap()
}

/// The USD trial balance as account code → balance, checking it balances.
fn balances(dev: &super::support::Dev, key: &str) -> BTreeMap<String, Decimal> {
    let trial = dev.json(key, &["finance", "trial-balance", "--currency", "USD"]);
    let usd = &trial["balances"][0];
    assert_eq!(usd["currency"], "USD", "{trial}");
    assert_eq!(
        decimal(&usd["totalDebits"]["amount"]),
        decimal(&usd["totalCredits"]["amount"]),
        "debits equal credits: {trial}"
    );
    usd["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|account| {
            (
                text(&account["code"]),
                decimal(&account["balance"]["amount"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_month_billed_by_invoicing_is_in_the_books_to_the_cent() {
    let (dev, key, customer, _subscription, database) = subscribed_customer().await;
    let address = dev.address.as_str();
    // 1,000,000 tokens: 2.10 of usage in November.
    run_with_stdin(
        &key,
        &["events", "send", "--wait-rated", "--address", address],
        Some(&events(&[(
            "f1",
            &customer,
            "llm_tokens",
            "{\"tokens\": \"1000000\"}",
        )])),
    )
    .expect(0);
    run(
        &key,
        &["clock", "set", "2026-12-01T00:10:00Z", "--address", address],
    )
    .expect(0);

    // Every invoice of the customer finalized (none paid: no Stripe in dev)
    // is receivable; finance has booked them all (the opening one for
    // November's fee, the cycle one for December's and November's tokens).
    let mut seen = String::new();
    let booked = poll_or(Duration::from_secs(60), || {
        let invoices = dev.json(&key, &["invoices", "list", "--customer", &customer]);
        let open: Vec<Value> = invoices
            .as_array()
            .unwrap()
            .iter()
            .filter(|invoice| invoice["status"] == "INVOICE_STATUS_FINALIZED")
            .cloned()
            .collect();
        let cycle = open
            .iter()
            .any(|invoice| invoice["billingReason"] == "BILLING_REASON_SUBSCRIPTION_CYCLE");
        let books = balances(&dev, &key);
        let receivable: Decimal = open
            .iter()
            .map(|invoice| decimal(&invoice["amountDue"]["amount"]))
            .sum();
        seen = format!("receivable {receivable}, books {books:?}, invoices {invoices}");
        (cycle && books.get("1100") == Some(&receivable)).then_some((open, books))
    });
    let (invoices, books) =
        booked.unwrap_or_else(|| panic!("finance did not book the invoices within 60 s: {seen}"));
    // November's fee (in advance, on the opening invoice) and December's
    // (on the cycle invoice), November's tokens in arrears.
    assert_eq!(
        books.get("4200/llm_tokens"),
        Some(&Decimal::new(210, 2)),
        "{books:?}"
    );
    assert_eq!(
        books.get("1150"),
        Some(&Decimal::ZERO),
        "usage moved from unbilled to revenue: {books:?}"
    );
    let fees: Decimal = [books.get("2100"), books.get("4000")]
        .into_iter()
        .flatten()
        .sum();
    assert_eq!(
        fees,
        Decimal::new(99_800, 2),
        "two months of a 499.00 fee: {books:?}"
    );

    // The cycle invoice's fee is recognised day by day once days end.
    let cycle = invoices
        .iter()
        .find(|invoice| invoice["billingReason"] == "BILLING_REASON_SUBSCRIPTION_CYCLE")
        .unwrap();
    let cycle_id = text(&cycle["id"]);
    run(
        &key,
        &["clock", "set", "2026-12-03T00:00:00Z", "--address", address],
    )
    .expect(0);
    let schedule = poll(
        Duration::from_secs(60),
        "two December days recognised",
        || {
            let schedule = dev.json(&key, &["finance", "schedule", &cycle_id]);
            let days = schedule["lines"][0]["days"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let recognised = days.iter().filter(|day| day["recognised"] == true).count();
            (recognised == 2).then_some(schedule)
        },
    );
    let fee = &schedule["lines"][0];
    assert_eq!(fee["amount"]["amount"], "499.00", "{schedule}");
    assert_eq!(fee["days"].as_array().unwrap().len(), 31);
    // 499.00 over 31 days: 16.09 a day, and the 21 cents left over go to
    // the first 21 days: 1 and 2 December recognise 16.10 each.
    assert_eq!(fee["recognised"]["amount"], "32.20", "{schedule}");
    assert_eq!(fee["deferred"]["amount"], "466.80", "{schedule}");

    // The journal as CSV, one row per entry, balanced per transaction.
    let csv = run(
        &key,
        &[
            "finance",
            "journal",
            "--source",
            &cycle_id,
            "--format",
            "csv",
            "--address",
            address,
        ],
    )
    .expect(0);
    let mut lines = csv.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("date,transaction,account,debit,credit,currency,memo,source_kind,source_id")
    );
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert!(rows.len() >= 4, "{}", csv.stdout);
    let debits: Decimal = rows
        .iter()
        .filter_map(|row| row[3].parse::<Decimal>().ok())
        .sum();
    let credits: Decimal = rows
        .iter()
        .filter_map(|row| row[4].parse::<Decimal>().ok())
        .sum();
    assert_eq!(debits, credits, "{}", csv.stdout);
    assert!(rows.iter().all(|row| row[8] == cycle_id), "{}", csv.stdout);

    // Closing needs admin; a read key is refused, the admin key closes.
    let reader = create_key(&database.url, "read");
    let refused = poll(Duration::from_secs(30), "the new key is known", || {
        let refused = run(
            &reader,
            &[
                "finance",
                "close",
                "--through",
                "2026-12-01T00:00:00Z",
                "--address",
                address,
            ],
        );
        (!refused.stderr.contains("Unauthenticated")).then_some(refused)
    });
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("admin"), "{}", refused.stderr);
    let closed = run(
        &key,
        &[
            "finance",
            "close",
            "--through",
            "2026-12-01T00:00:00Z",
            "--memo",
            "November",
            "--address",
            address,
        ],
    )
    .expect(0);
    assert!(
        closed
            .stdout
            .contains("books closed before 2026-12-01T00:00:00Z"),
        "{}",
        closed.stdout
    );
    let listed = run(&key, &["finance", "closes", "--address", address]).expect(0);
    assert!(listed.stdout.contains("November"), "{}", listed.stdout);

    // The close report: November, then December so far.
    let report = |from: &str, to: &str| {
        let report = dev.json(
            &key,
            &[
                "finance",
                "report",
                "--from",
                from,
                "--to",
                to,
                "--currency",
                "USD",
            ],
        );
        let lines: BTreeMap<String, Decimal> = report["currencies"]["USD"]
            .as_object()
            .unwrap_or_else(|| panic!("{report}"))
            .iter()
            .map(|(line, amount)| (line.clone(), decimal(amount)))
            .collect();
        lines
    };
    let november = report("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
    let expect = |lines: &BTreeMap<String, Decimal>, line: &str, cents: i64| {
        assert_eq!(
            lines.get(line),
            Some(&Decimal::new(cents, 2)),
            "{line}: {lines:?}"
        );
    };
    expect(&november, "invoiced to receivables", 49_900);
    expect(&november, "— recurring fees", 49_900);
    expect(&november, "— usage", 0);
    expect(&november, "deferred revenue at the end", 0);
    expect(&november, "receivable at the end", 49_900);
    let december = report("2026-12-01T00:00:00Z", "2026-12-03T00:00:00Z");
    expect(&december, "invoiced to receivables", 50_110);
    expect(&december, "— recurring fees", 3_220);
    expect(&december, "— usage", 210);
    expect(&december, "revenue recognised", 3_430);
    expect(&december, "deferred revenue at the end", 46_680);
    expect(&december, "receivable at the end", 100_010);
    expect(&december, "collected (cash in)", 0);

    // Rebuilt from the kept facts: the same books.
    let before = balances(&dev, &key);
    let rebuilt = run(&key, &["finance", "rebuild", "--address", address]).expect(0);
    assert!(
        rebuilt.stdout.contains("books rebuilt: "),
        "{}",
        rebuilt.stdout
    );
    assert_eq!(balances(&dev, &key), before);
}
