//! `tally invoices finalize|void|credit-note` and `tally subscriptions
//! pause|resume` against `tally dev` on a manual clock, with a grace period so
//! that an invoice billing usage stays a draft until finalized by hand (one of
//! in-advance fees only has no grace period: it is finalized at once).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Dev, create_key, run, text};

/// Waits for the customer's invoice billed for `reason` and returns it.
async fn invoice_billed_for(dev: &Dev, key: &str, customer: &str, reason: &str) -> Value {
    let started = Instant::now();
    loop {
        let invoices = dev.json(key, &["invoices", "list", "--customer", customer]);
        let found = invoices
            .as_array()
            .unwrap()
            .iter()
            .find(|invoice| invoice["billingReason"] == reason)
            .cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no {reason} invoice: {invoices}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Panics with `text` unless it contains every one of `parts`.
#[track_caller]
fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no `{part}` in:\n{text}");
    }
}

#[tokio::test]
async fn invoices_are_finalized_credited_and_voided_and_subscriptions_paused_from_the_terminal() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    // Bill runs follow the clock moves below (the scheduler's ticker hears
    // a move made while a run is under way).
    let dev = Dev::start(
        &database.url,
        &[("TALLY_INVOICING__GRACE_PERIOD_HOURS", "48")],
    )
    .await;
    let address = dev.address.as_str();
    let (customer, subscription) = dev.acme_on_inference_pro(&key);

    // November's platform fee, in advance: fees only, so no grace period —
    // finalized (numbered, and sent to payments) by the bill run at once.
    run(&key, &["clock", "advance", "1h", "--address", address]).expect(0);
    let first =
        invoice_billed_for(&dev, &key, &customer, "BILLING_REASON_SUBSCRIPTION_CREATE").await;
    assert_eq!(first["status"], "INVOICE_STATUS_FINALIZED", "{first}");
    let first_id = text(&first["id"]);
    // Finalizing a finalized invoice by hand returns it as it is.
    let finalized = dev.json(&key, &["invoices", "finalize", &first_id]);
    assert_eq!(
        finalized["status"], "INVOICE_STATUS_FINALIZED",
        "{finalized}"
    );
    let number = text(&finalized["number"]);
    assert!(!number.is_empty(), "{finalized}");
    assert_eq!(finalized["number"], first["number"], "{finalized}");
    assert_eq!(finalized["total"]["amount"], "499.00", "{finalized}");
    // Again, as text.
    let again = run(
        &key,
        &["invoices", "finalize", &first_id, "--address", address],
    )
    .expect(0);
    assert!(again.stdout.contains(&number), "{}", again.stdout);
    assert!(again.stdout.contains("finalized"), "{}", again.stdout);

    // A partial credit note against the invoice, then one against its fee line.
    let note = dev.json(
        &key,
        &[
            "invoices",
            "credit-note",
            &first_id,
            "--amount",
            "100.00",
            "--reason",
            "product-unsatisfactory",
            "--memo",
            "outage on the 3rd",
        ],
    );
    assert_eq!(note["creditNote"]["total"]["amount"], "100.00", "{note}");
    assert_eq!(note["creditNote"]["memo"], "outage on the 3rd", "{note}");
    assert_eq!(
        note["invoice"]["amountCredited"]["amount"], "100.00",
        "{note}"
    );
    assert_eq!(note["invoice"]["amountDue"]["amount"], "399.00", "{note}");
    let fee_line = text(&finalized["lines"][0]["id"]);
    assert!(fee_line.starts_with("il_"), "{finalized}");
    // `tally invoices credit-note <first> <args> --address …`.
    let credit_note = |args: &[&str]| {
        let mut all = vec!["invoices", "credit-note", first_id.as_str()];
        all.extend(args);
        all.extend(["--address", address]);
        run(&key, &all)
    };
    let on_line = credit_note(&[
        "--amount",
        "50.00",
        "--line",
        &fee_line,
        "--reason",
        "billing-error",
    ])
    .expect(0);
    assert_mentions(&on_line.stdout, &[&fee_line, "50.00 USD", "349.00 USD"]);

    // More than remains creditable: refused by the service, exit 1, and said why.
    let over = credit_note(&["--amount", "1000.00", "--reason", "billing-error"]).expect(1);
    assert_mentions(
        &over.stderr,
        &[
            "CreateCreditNote",
            "FailedPrecondition",
            "1000.00 requested, 349.00 creditable",
            "hint: ",
        ],
    );
    // A zero amount: refused by the service naming the field.
    let zero = credit_note(&["--amount", "0", "--reason", "billing-error"]).expect(1);
    assert_mentions(
        &zero.stderr,
        &["InvalidArgument", "amount: must be positive"],
    );
    // Ambiguous or malformed arguments: exit 2 before anything is sent.
    let reason = ["--reason", "billing-error"];
    for args in [
        [
            &["--amount", "1.00", "--line", "il_a", "--line", "il_b"][..],
            &reason,
        ]
        .concat(),
        [&["--amount", "12,34"][..], &reason].concat(),
        [&["--full", "--amount", "1.00"][..], &reason].concat(),
        vec!["--amount", "1.00"], // no --reason
    ] {
        let refused = credit_note(&args).expect(2);
        assert!(!refused.stderr.is_empty(), "{args:?}");
    }

    // December: the cycle invoice bills November's usage, so it is a draft
    // for 48 hours, which cannot be voided yet.
    run(
        &key,
        &["clock", "set", "2026-12-01T00:10:00Z", "--address", address],
    )
    .expect(0);
    let cycle =
        invoice_billed_for(&dev, &key, &customer, "BILLING_REASON_SUBSCRIPTION_CYCLE").await;
    assert_eq!(cycle["status"], "INVOICE_STATUS_DRAFT", "{cycle}");
    let cycle_id = text(&cycle["id"]);
    let void = || {
        run(
            &key,
            &[
                "invoices",
                "void",
                &cycle_id,
                "--reason",
                "sent twice",
                "--address",
                address,
            ],
        )
    };
    let draft_void = void().expect(1);
    assert_mentions(
        &draft_void.stderr,
        &[
            "VoidInvoice",
            "FailedPrecondition",
            "hint: only a finalized, unpaid invoice",
        ],
    );
    // --reason is required.
    run(&key, &["invoices", "void", &cycle_id, "--address", address]).expect(2);
    // Finalized by hand before its grace period is over: numbered after November's.
    let finalized_cycle = dev.json(&key, &["invoices", "finalize", &cycle_id]);
    assert_eq!(
        finalized_cycle["status"], "INVOICE_STATUS_FINALIZED",
        "{finalized_cycle}"
    );
    let cycle_number = text(&finalized_cycle["number"]);
    assert!(
        !cycle_number.is_empty() && cycle_number != number,
        "{finalized_cycle}"
    );
    assert!(
        finalized_cycle["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line["kind"] == "INVOICE_LINE_KIND_USAGE"),
        "{finalized_cycle}"
    );
    let voided = void().expect(0);
    assert_mentions(
        &voided.stdout,
        &["status:        void", "void reason:   sent twice"],
    );
    let shown = dev.json(&key, &["invoices", "show", &cycle_id]);
    assert_eq!(shown["status"], "INVOICE_STATUS_VOID", "{shown}");
    assert_eq!(shown["voidReason"], "sent twice", "{shown}");

    // A pause now, resumed a day later: both shown by `subscriptions show`.
    let paused = dev.json(&key, &["subscriptions", "pause", &subscription]);
    assert_eq!(paused["status"], "SUBSCRIPTION_STATUS_PAUSED", "{paused}");
    // The table's status and pause rows.
    let shown_rows = || {
        let shown = run(
            &key,
            &["subscriptions", "show", &subscription, "--address", address],
        )
        .expect(0);
        let row = |name: &str| {
            shown
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} row:\n{}", shown.stdout))
        };
        (row("status:"), row("pause:"))
    };
    assert_eq!(
        shown_rows(),
        (
            "paused".to_owned(),
            "2026-12-01T00:10:00Z → (until resumed)".to_owned()
        )
    );
    run(&key, &["clock", "advance", "1d", "--address", address]).expect(0);
    let resumed = dev.json(&key, &["subscriptions", "resume", &subscription]);
    assert_eq!(resumed["status"], "SUBSCRIPTION_STATUS_ACTIVE", "{resumed}");
    assert_eq!(
        shown_rows(),
        (
            "active".to_owned(),
            "2026-12-01T00:10:00Z → 2026-12-02T00:10:00Z".to_owned()
        )
    );
    // Resuming what is not paused is refused; a resume before the pause names the field.
    let not_paused = run(
        &key,
        &[
            "subscriptions",
            "resume",
            &subscription,
            "--address",
            address,
        ],
    )
    .expect(1);
    assert!(
        not_paused
            .stderr
            .contains("neither paused nor scheduled to cancel"),
        "{}",
        not_paused.stderr
    );
    let backwards = run(
        &key,
        &[
            "subscriptions",
            "pause",
            &subscription,
            "--at",
            "2026-12-20T00:00:00Z",
            "--resume-at",
            "2026-12-10T00:00:00Z",
            "--address",
            address,
        ],
    )
    .expect(1);
    assert!(
        backwards.stderr.contains("resume_at"),
        "{}",
        backwards.stderr
    );
    run(
        &key,
        &[
            "subscriptions",
            "pause",
            &subscription,
            "--at",
            "tomorrow",
            "--address",
            address,
        ],
    )
    .expect(2);
}
